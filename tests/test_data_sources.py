"""Data sources and tasks for any model: imagefolder's declared preprocessing, text files, data factories and
user metrics, on tiny files written in tmp_path."""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from slimline.data import DataSpec, imagefolder, load_dataset, load_factory
from slimline.data.arrays import NamedSamples
from slimline.data.preprocess import IMAGENET, Preprocess, parse_preprocess
from slimline.data.text import TextSamples, is_text_path, load_text
from slimline.errors import DataError, RecipeError, SlimlineError

# ================================================================ helpers


def _image(path: Path, size: tuple[int, int], color: tuple[int, int, int] = (200, 100, 50)) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def _mixed_tree(root: Path) -> Path:
    """Two classes, images of different sizes (W x H)."""
    _image(root / "train" / "cat" / "a.png", (16, 12))
    _image(root / "train" / "dog" / "b.png", (20, 10), (10, 20, 30))
    _image(root / "test" / "cat" / "c.png", (8, 8))
    _image(root / "test" / "dog" / "d.png", (12, 16), (10, 20, 30))
    return root


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A module ``ud_<test>`` in tmp_path with a data factory, a model factory and metrics."""
    name = f"ud_{abs(hash(str(tmp_path))) % 10**8}"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent("""
        import numpy as np
        import torch
        from slimline.data import ArrayDataset, DataSpec
        from slimline.data.arrays import NamedSamples

        def images(n=6, split="train"):
            rng = np.random.default_rng(0 if split == "train" else 1)
            spec = DataSpec("mine", (3, 4, 4), 2, ("a", "b"), (0.0,) * 3, (1.0,) * 3)
            return ArrayDataset(rng.integers(0, 256, (n, 4, 4, 3), dtype=np.uint8), np.arange(n) % 2, spec, split)

        def arrays():
            return NamedSamples({"x": np.ones((3, 2), np.float32)}, np.zeros(3, np.int64))

        def nothing():
            return [1, 2]

        def net():
            return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 2))

        def mean_out(outputs, labels):
            return {"mean_out": float(np.mean(outputs["output"])), "labels_seen": len(labels)}

        def not_a_dict(outputs, labels):
            return 3.0

        def words(outputs, labels):
            return {"grade": "good"}

        def first(outputs, labels):
            return {"first_y": float(outputs["y"][0, 0]), "n_labels": len(labels)}
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    yield name
    sys.modules.pop(name, None)


# ================================================================ the Preprocess spec


def test_preprocess_parse_forms_and_describe(tmp_path: Path) -> None:
    pp = parse_preprocess("{scale: 1/255, mean: [0, 0, 0], std: [1, 1, 1], resize: [320, 320]}")
    assert pp == Preprocess(resize=(320, 320), scale=1 / 255, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    assert pp.describe() == "resize 320x320, scale 1/255, mean 0,0,0, std 1,1,1, RGB, NCHW"
    assert parse_preprocess('{"scale": 0.00392156862745098}').describe() == "scale 1/255, mean/std none, RGB, NCHW"
    f = tmp_path / "pp.yaml"
    f.write_text("channels: bgr\nlayout: nhwc\nresize: 256\ncenter_crop: 224\n")
    pp = parse_preprocess(str(f))
    assert (pp.channels, pp.layout, pp.resize, pp.center_crop) == ("BGR", "NHWC", 256, 224)
    assert pp.describe() == "resize shortest side 256, center crop 224x224, scale 1/255, mean/std none, BGR, NHWC"
    assert (
        parse_preprocess({"letterbox": True, "resize": [8, 8], "channels": "gray"})
        .describe()
        .startswith("letterbox 8x8 (pad 114)")
    )
    assert parse_preprocess(None) is None and parse_preprocess(IMAGENET) is IMAGENET
    # every field written out, so the recorded spec hides nothing
    assert set(IMAGENET.to_dict()) == {
        "resize",
        "center_crop",
        "letterbox",
        "pad_value",
        "scale",
        "mean",
        "std",
        "layout",
        "channels",
    }
    assert Preprocess.from_dict(IMAGENET.to_dict()) == IMAGENET


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{layout: NCWH}", "layout 'NCWH' is not valid; give NCHW or NHWC"),
        ("{channels: CMYK}", "channels 'CMYK' is not valid"),
        ("{mean: [0.5, 0.5]}", r"mean \[0.5, 0.5\] is not valid; give one value, or one per channel"),
        ("{std: [0]}", "std .* non-zero"),
        ("{scale: -1}", "scale -1.0 is not valid"),
        ("{scale: abc}", "scale 'abc' is not valid"),
        ("{resize: [0, 3]}", r"resize \[0, 3\] is not valid; give \[H, W\]"),
        ("{letterbox: true}", "letterbox fits images into resize"),
        ("{sizee: 3}", "unknown field.*sizee"),
        ("[1, 2]", "is not a mapping"),
        ("{a: [", "is not YAML/JSON"),
        ("missing.yaml", "preprocess file missing.yaml does not exist"),
    ],
)
def test_preprocess_errors_are_one_line(value: str, message: str) -> None:
    with pytest.raises(DataError, match=message) as e:
        parse_preprocess(value)
    assert "\n" not in str(e.value)


# ================================================================ imagefolder with a preprocess


def test_imagefolder_default_preprocess_is_recorded_and_unchanged(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    for split, cls in (("train", "a"), ("train", "b"), ("test", "a"), ("test", "b")):
        _image(root / split / cls / "x.png", (6, 4), (10, 130, 250))
    ds = load_dataset("imagefolder", "train", root)
    assert ds.spec.preprocess == IMAGENET and ds.spec.mean == IMAGENET.mean and ds.spec.std == IMAGENET.std
    d = ds.spec.to_dict()
    assert d["preprocess"]["mean"] == list(IMAGENET.mean) and d["preprocess"]["scale"] == pytest.approx(1 / 255)
    assert DataSpec.from_dict(json.loads(json.dumps(d))) == ds.spec
    # what imagefolder always fed: (x / 255 - ImageNet mean) / ImageNet std, NCHW, bit for bit
    import torch

    t = torch.as_tensor(ds.x).permute(0, 3, 1, 2).float().div_(255.0)
    want = (t - torch.tensor(IMAGENET.mean).view(1, -1, 1, 1)) / torch.tensor(IMAGENET.std).view(1, -1, 1, 1)
    assert torch.equal(ds.normalize(ds.x), want)


def test_imagefolder_resize_makes_mixed_sizes_one(tmp_path: Path) -> None:
    root = _mixed_tree(tmp_path / "imgs")
    with pytest.raises(DataError, match=r"all images must share one size: declare preprocess: \{resize"):
        load_dataset("imagefolder", "train", root)
    pp = "{resize: [6, 8], scale: 1/255, mean: [0, 0, 0], std: [1, 1, 1]}"
    ds = load_dataset("imagefolder", "train", root, preprocess=pp)
    assert ds.x.shape == (2, 6, 8, 3) and ds.spec.input_shape == (3, 6, 8)
    x = ds.inputs()
    assert x.shape == (2, 3, 6, 8) and x.dtype == np.float32
    assert x[0, :, 0, 0] == pytest.approx([200 / 255, 100 / 255, 50 / 255])
    assert ds.spec.preprocess is not None and ds.spec.preprocess.mean == (0.0, 0.0, 0.0)
    test = load_dataset("imagefolder", "test", root, preprocess=pp)
    assert test.spec == ds.spec


def test_imagefolder_channels_layout_crop_and_letterbox(tmp_path: Path) -> None:
    root = _mixed_tree(tmp_path / "imgs")
    bgr = load_dataset(
        "imagefolder",
        "train",
        root,
        preprocess={
            "resize": 8,
            "center_crop": [8, 8],
            "channels": "BGR",
            "layout": "NHWC",
            "scale": 1,
            "mean": [1],
            "std": [2],
        },
    )
    assert bgr.x.shape == (2, 8, 8, 3) and bgr.x[0, 0, 0].tolist() == [50, 100, 200]
    assert bgr.spec.input_shape == (8, 8, 3)
    x = bgr.inputs()
    assert x.shape == (2, 8, 8, 3) and x[0, 0, 0].tolist() == pytest.approx([24.5, 49.5, 99.5])
    xb, _ = next(bgr.batches(2, augment=True))  # augmentation works in NCHW, the batch comes out NHWC
    assert tuple(xb.shape) == (2, 8, 8, 3)
    gray = load_dataset("imagefolder", "train", root, preprocess={"resize": [4, 4], "channels": "gray"})
    assert gray.x.shape == (2, 4, 4, 1) and gray.spec.input_shape == (1, 4, 4) and gray.inputs().shape == (2, 1, 4, 4)
    box = load_dataset("imagefolder", "train", root, preprocess={"resize": [10, 10], "letterbox": True, "pad_value": 0})
    # b.png is 20 x 10 (W x H): fitted to 10 x 5, padded above and below
    b = box.x[1]
    assert b.shape == (10, 10, 3) and b[0, 0].tolist() == [0, 0, 0] and b[5, 5].tolist() == [10, 20, 30]
    with pytest.raises(DataError, match=r"center_crop 30 x 30 \(H x W\) is larger than"):
        load_dataset("imagefolder", "train", root, preprocess={"center_crop": 30})


def test_preprocess_only_for_image_files() -> None:
    with pytest.raises(DataError, match="dataset digits has its own fixed preprocessing"):
        load_dataset("digits", "train", preprocess="{scale: 1}")
    with pytest.raises(DataError, match="kwargs are for a data factory"):
        load_dataset("digits", "train", kwargs={"n": 3})


def test_recipe_data_preprocess_is_validated_and_written_in_full() -> None:
    from slimline.recipe import parse_recipe

    raw: dict[str, Any] = {
        "model": "small_cnn",
        "steps": ["evaluate"],
        "data": {"name": "imagefolder", "data_dir": "x", "preprocess": {"resize": [32, 32]}},
    }
    r = parse_recipe(raw)
    assert r.data.preprocess is not None and r.data.preprocess["mean"] is None and r.data.preprocess["layout"] == "NCHW"
    raw["data"]["preprocess"] = {"layout": "CHW"}
    with pytest.raises(RecipeError, match="data.preprocess: .*layout 'CHW' is not valid"):
        parse_recipe(raw)


# ================================================================ text files


def test_text_sources(tmp_path: Path) -> None:
    txt = tmp_path / "a.txt"
    txt.write_text("first line\n\nsecond line\n")
    s = load_text(txt)
    assert s.texts == ["first line", "second line"] and s.labels is None and len(s) == 2
    jl = tmp_path / "b.jsonl"
    jl.write_text('{"text": "good", "y": "pos"}\n{"text": "bad", "y": "neg"}\n\n{"text": "fine", "y": "pos"}\n')
    s = load_text(jl, label_column="y")
    assert s.texts == ["good", "bad", "fine"] and s.label_names == ("neg", "pos") and s.labels.tolist() == [1, 0, 1]
    assert s.take(2).texts == ["good", "bad"] and s.subset(np.array([2])).labels.tolist() == [1]
    tsv = tmp_path / "c.tsv"
    tsv.write_text("id\tbody\tclass\n1\thello\t2\n2\tworld\t0\n")
    s = load_text(tsv, text_column="body", label_column="class")
    assert s.texts == ["hello", "world"] and s.labels.tolist() == [2, 0] and s.label_names == ("0", "1", "2")
    assert is_text_path(tsv) and not is_text_path("x.npz")
    assert isinstance(s, TextSamples)


def test_text_errors_are_one_line(tmp_path: Path) -> None:
    empty = tmp_path / "e.txt"
    empty.write_text("\n  \n")
    cases: list[tuple[Path, dict[str, str], str]] = [(empty, {}, r"e\.txt is empty; write one sample a line")]
    jl = tmp_path / "b.jsonl"
    jl.write_text('{"text": "a"}\n{"body": "b"}\n')
    cases.append((jl, {}, r"b\.jsonl:2 has no column 'text' \(columns: body\); name the right one with text_column"))
    jl2 = tmp_path / "c.jsonl"
    jl2.write_text('{"text": "a"}\n')
    cases.append((jl2, {"label_column": "y"}, r"c\.jsonl:1 has no column 'y'.*label_column"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a"}\nnot json\n')
    cases.append((bad, {}, r"bad\.jsonl:2 is not JSON"))
    head = tmp_path / "h.tsv"
    head.write_text("text\tlabel\n")
    cases.append((head, {}, "has a header line but no rows"))
    ragged = tmp_path / "r.tsv"
    ragged.write_text("text\tlabel\na\t1\nb\n")
    cases.append((ragged, {}, r"r\.tsv:3 has 1 tab-separated cells but the header has 2"))
    txt = tmp_path / "t.txt"
    txt.write_text("a\n")
    cases.append((txt, {"label_column": "y"}, "a .txt file holds one text a line and no columns"))
    cases.append((tmp_path / "none.jsonl", {}, "does not exist"))
    cases.append((tmp_path / "x.csv", {}, "is not a text file"))
    for path, kw, message in cases:
        with pytest.raises(DataError, match=message) as e:
            load_text(path, **kw)
        assert "\n" not in str(e.value)


# ================================================================ data factories


def test_data_factory(user_module: str) -> None:
    ds = load_dataset(f"{user_module}:images", "test", kwargs={"n": 5}, limit=4)
    assert len(ds) == 4 and ds.split == "test" and ds.spec.name == "mine"
    got = load_factory(f"{user_module}:arrays")
    assert isinstance(got, NamedSamples) and got.names == ["x"]
    with pytest.raises(DataError, match=r"returned named arrays, which only eval takes"):
        load_dataset(f"{user_module}:arrays")
    with pytest.raises(DataError, match=r":nothing returned list; return a slimline ArrayDataset or NamedSamples"):
        load_dataset(f"{user_module}:nothing")
    with pytest.raises(DataError, match=r"cannot import 'no_such_mod_x' for data factory"):
        load_dataset("no_such_mod_x:fn")
    with pytest.raises(DataError, match="has no callable 'absent'"):
        load_dataset(f"{user_module}:absent")
    with pytest.raises(DataError, match="preprocesses its own samples"):
        load_dataset(f"{user_module}:images", preprocess={"scale": 1})


def test_recipe_data_factory_is_trusted_and_loads(user_module: str) -> None:
    from slimline.recipe import parse_recipe, recipe_factories

    r = parse_recipe(
        {"model": "small_cnn", "steps": ["evaluate"], "data": {"factory": f"{user_module}:images", "kwargs": {"n": 8}}}
    )
    assert r.data.source == f"{user_module}:images" and f"{user_module}:images" in recipe_factories(r)
    assert len(r.data.load("train", None)) == 8
    short = parse_recipe({"model": "small_cnn", "steps": ["evaluate"], "data": f"{user_module}:images"})
    assert short.data.factory == f"{user_module}:images" and short.data.name is None
    for bad, message in (
        ({"name": "digits", "factory": "a.b:c"}, "one of the two"),
        ({}, "one of the two"),
        ({"factory": "not a factory"}, "must be written 'package.module:function'"),
        ({"name": "digits", "kwargs": {"n": 1}}, "kwargs are for a factory"),
    ):
        with pytest.raises(RecipeError, match=message):
            parse_recipe({"model": "small_cnn", "steps": ["evaluate"], "data": bad})


def test_cli_data_section_names_a_factory() -> None:
    from slimline.cli.common import data_section

    sec = data_section("pkg.mod:fn", None, preprocess=None)
    assert sec["factory"] == "pkg.mod:fn" and "name" not in sec
    sec = data_section("imagefolder", Path("d"), preprocess="{resize: [8, 8]}")
    assert sec["name"] == "imagefolder" and sec["preprocess"]["resize"] == [8, 8] and sec["preprocess"]["std"] is None


# ================================================================ user metrics


class _Session:
    """A stand-in runtime session: output = the input's sum per sample, as [batch, 1]."""

    signature = None

    def run_named(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"y": feeds["x"].reshape(len(feeds["x"]), -1).sum(1, keepdims=True)}


def test_user_metric_task(user_module: str) -> None:
    from slimline.evaluate import evaluate_named
    from slimline.tasks import TASKS, MetricTask, get_task

    task = get_task(f"{user_module}:mean_out")
    assert isinstance(task, MetricTask) and TASKS[f"{user_module}:mean_out"] is task
    assert task.metric({"output": np.array([[1.0, 3.0]])}, np.array([0])) == {"mean_out": 2.0, "labels_seen": 1}
    with pytest.raises(SlimlineError, match="returned float; return a dict of name -> number"):
        get_task(f"{user_module}:not_a_dict").metric({}, np.zeros(1))
    with pytest.raises(SlimlineError, match="returned non-numbers for grade"):
        get_task(f"{user_module}:words").metric({}, np.zeros(1))
    with pytest.raises(SlimlineError, match="no task 'nope'.*or a metric 'package.module:function'"):
        get_task("nope")

    samples = NamedSamples({"x": np.ones((3, 2), np.float32)}, np.zeros(3, np.int64))
    got = evaluate_named(_Session(), samples, metric=f"{user_module}:first")
    assert got["first_y"] == 2.0 and got["n_labels"] == 3 and "top1" not in got
    with pytest.raises(SlimlineError, match="the data has none; add a 'labels' array"):
        evaluate_named(_Session(), NamedSamples({"x": np.ones((3, 2), np.float32)}), metric=f"{user_module}:first")


def test_eval_with_factory_data_and_user_metric(user_module: str) -> None:
    from slimline.api import evaluate_model

    got = evaluate_model(f"{user_module}:net", f"{user_module}:images", metric=f"{user_module}:mean_out")
    assert got["n"] == 6 and got["labels_seen"] == 6 and "mean_out" in got and got["runtime"] == "torch"
    assert "preprocess" not in got


def test_eval_cli_shows_preprocess_and_metric(tmp_path: Path, user_module: str) -> None:
    from slimline.cli import app

    root = tmp_path / "imgs"
    for split, cls in (("train", "a"), ("train", "b"), ("test", "a"), ("test", "b")):
        _image(root / split / cls / "x.png", (7, 5))
    out = tmp_path / "m.json"
    res = CliRunner().invoke(
        app,
        [
            "eval",
            "-m",
            f"{user_module}:net",
            "-d",
            "imagefolder",
            "--data-dir",
            str(root),
            "--preprocess",
            "{resize: [4, 4], scale: 1/255}",
            "--metric",
            f"{user_module}:mean_out",
            "--json",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "preprocess: resize 4x4, scale 1/255, mean/std none, RGB, NCHW" in res.output
    assert f"{user_module}:mean_out: mean_out " in res.output
    data = json.loads(out.read_text())
    assert data["preprocess"]["resize"] == [4, 4] and data["preprocess"]["mean"] is None and "mean_out" in data
    res = CliRunner().invoke(app, ["eval", "-m", f"{user_module}:net", "-d", str(tmp_path / "t.txt")])
    assert res.exit_code == 1 and "no tokenizer" in res.output


def test_imagefolder_load_signature_keeps_old_callers(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    _image(root / "a" / "1.png", (4, 4))
    assert imagefolder.load("train", root, download=False).spec.preprocess == IMAGENET


def test_eval_uses_the_artifacts_recorded_preprocess(tmp_path: Path) -> None:
    from slimline.api import model_preprocess
    from slimline.artifact import Artifact

    pp = Preprocess(resize=(4, 4), mean=(0.5,), std=(0.5,))
    art = Artifact("onnx", tmp_path, {"model": "model.onnx"}, {"data": {"preprocess": pp.to_dict()}})
    assert model_preprocess(art) == pp
    assert model_preprocess(Artifact("onnx", tmp_path)) is None and model_preprocess("small_cnn") is None


def test_recipe_run_records_preprocess_and_eval_reuses_it(tmp_path: Path, user_module: str) -> None:
    import slimline
    from slimline.api import evaluate_model
    from slimline.artifact import Artifact

    root = tmp_path / "imgs"
    for split, cls in (("train", "a"), ("train", "b"), ("test", "a"), ("test", "b")):
        for i, size in enumerate(((9, 7), (5, 6))):
            _image(root / split / cls / f"{i}.png", size, (40 * i, 90, 200))
    pp = {"resize": [4, 4], "scale": "1/255", "mean": [0.5], "std": [0.25]}
    recipe = {
        "model": f"{user_module}:net",
        "output_dir": str(tmp_path / "run"),
        "steps": ["export_onnx"],
        "data": {"name": "imagefolder", "data_dir": str(root), "preprocess": pp, "val_size": 1},
    }
    slimline.run(recipe)
    art = Artifact.load(tmp_path / "run" / "01_export_onnx")
    recorded = art.meta["data"]["preprocess"]
    assert recorded["resize"] == [4, 4] and recorded["mean"] == [0.5] and recorded["layout"] == "NCHW"
    got = evaluate_model(art.path, "imagefolder", data_dir=root)  # no --preprocess: the artifact's own
    assert got["n"] == 4 and got["preprocess"] == recorded
    with pytest.raises(DataError, match="all images must share one size"):
        evaluate_model(art.path, "imagefolder", data_dir=root, preprocess=IMAGENET)
    fac = {
        "model": f"{user_module}:net",
        "output_dir": str(tmp_path / "run2"),
        "steps": ["evaluate"],
        "data": {"factory": f"{user_module}:images", "kwargs": {"n": 10}, "val_size": 2},
    }
    res = slimline.run(fac)
    assert res["stages"][-1]["record"]["metrics"]["n"] == 10


def test_list_datasets_shows_imagefolders_default_preprocess() -> None:
    from slimline.cli import app

    res = CliRunner().invoke(app, ["list", "datasets"])
    assert res.exit_code == 0, res.output
    assert f"imagefolder preprocess (default; --preprocess to declare yours): {IMAGENET.describe()}" in res.output
    assert "scale 1/255, mean 0.485,0.456,0.406, std 0.229,0.224,0.225, RGB, NCHW" in IMAGENET.describe()
