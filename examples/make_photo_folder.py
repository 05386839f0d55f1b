"""An imagefolder of 224x224 RGB crops of the photos bundled with scikit-image (offline).

For recipes that only need real inputs of the model's size, not labels: int8 calibration of an
ImageNet model in ``examples/resnet18_latency.yaml``. Each photo becomes one "class" folder holding
``--crops`` random crops (a random square of 50-100% of the shorter side, resized to ``--size``),
written as PNG. The layout is the ``imagefolder`` dataset's train split:
``OUT/train/<photo>/<k>.png``. The same seed gives the same files. ``--test`` also writes a test split: each
photo whole and mirrored (``OUT/test/<photo>/``), e.g. for a detector's fidelity in ``examples/detect.yaml``.

    .venv/bin/python examples/make_photo_folder.py --out data/photos-224

Needs scikit-image and Pillow (``pip install -e .[dev]`` has both).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

# RGB photos that ship inside scikit-image (no download); grey, binary and RGBA images are left out
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field", "retina")


def crops(image: np.ndarray, n: int, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    from PIL import Image

    h, w = image.shape[:2]
    out = []
    for _ in range(n):
        side = int(rng.uniform(0.5, 1.0) * min(h, w))
        top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        patch = Image.fromarray(image[top : top + side, left : left + side])
        out.append(np.asarray(patch.resize((size, size), Image.Resampling.BILINEAR)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("data/photos-224"))
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--crops", type=int, default=48, help="crops per photo")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--test", action="store_true", help="also write OUT/test/<photo>/: the photo whole and mirrored")
    args = ap.parse_args()
    import skimage.data
    from PIL import Image

    rng = np.random.default_rng(args.seed)
    total = 0
    for name in PHOTOS:
        folder = args.out / "train" / name
        folder.mkdir(parents=True, exist_ok=True)
        for k, c in enumerate(crops(getattr(skimage.data, name)(), args.crops, args.size, rng)):
            Image.fromarray(c).save(folder / f"{k:03d}.png")
            total += 1
        if args.test:
            (args.out / "test" / name).mkdir(parents=True, exist_ok=True)
            photo = getattr(skimage.data, name)()
            Image.fromarray(photo).save(args.out / "test" / name / "whole.png")
            Image.fromarray(np.ascontiguousarray(photo[:, ::-1])).save(args.out / "test" / name / "mirror.png")
            total += 2
    print(f"wrote {total} images ({args.size}x{args.size} crops) in {len(PHOTOS)} folders under {args.out}")


if __name__ == "__main__":
    main()
