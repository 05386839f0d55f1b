"""Detection task: box decoding of each layout and NMS against hand-computed boxes, letterbox, COCO mAP on a
3-image hand-labelled case, and detection fidelity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("cv2")
pytest.importorskip("pycocotools")

from slimline.errors import SlimlineError  # noqa: E402
from slimline.tasks import get_task  # noqa: E402
from slimline.tasks.detection import (  # noqa: E402
    Detections,
    box_iou,
    decode,
    detection_fidelity,
    letterbox,
    mean_ap,
    read_yolo_labels,
)

# three candidate boxes as cx, cy, w, h with two class scores each:
#   A (50, 50, 20, 20) class 0 at 0.9 -> 40, 40, 60, 60
#   B (52, 50, 20, 20) class 0 at 0.8 -> 42, 40, 62, 60: IoU with A = 360 / 440 = 0.818 > 0.45: suppressed
#   C (52, 50, 20, 20) class 1 at 0.7 -> another class: kept
#   D (90, 90, 10, 10) class 1 at 0.1 -> below conf 0.25: dropped
# plus four empty boxes (score 0), so that N = 8 > 4 + C and layout "auto" reads (1, 6, 8) as YOLOv8's
BOXES = np.array(
    [[50, 50, 20, 20], [52, 50, 20, 20], [52, 50, 20, 20], [90, 90, 10, 10]] + [[0, 0, 1, 1]] * 4, dtype=np.float32
)
SCORES = np.array([[0.9, 0.1], [0.8, 0.05], [0.1, 0.7], [0.0, 0.1]] + [[0.0, 0.0]] * 4, dtype=np.float32)
WANT_BOXES = np.array([[40, 40, 60, 60], [42, 40, 62, 60]], dtype=np.float32)


def check_expected(det: Detections) -> None:
    np.testing.assert_allclose(det.boxes, WANT_BOXES, atol=1e-5)
    np.testing.assert_allclose(det.scores, [0.9, 0.7], atol=1e-6)
    assert det.classes.tolist() == [0, 1]


def test_yolov8_layout_decodes_and_suppresses() -> None:
    out = np.concatenate([BOXES, SCORES], axis=1).T[None]  # (1, 4 + C, N)
    assert out.shape == (1, 6, 8)
    (det,) = decode([out], conf=0.25, iou=0.45)
    check_expected(det)
    (named,) = decode([out], layout="yolov8", conf=0.25, iou=0.45)
    check_expected(named)


def test_yolov5_layout_multiplies_objectness() -> None:
    # objectness 0.5 everywhere, class scores doubled: same products as SCORES
    out = np.concatenate([BOXES, np.full((8, 1), 0.5, np.float32), SCORES * 2], axis=1)[None]  # (1, N, 5 + C)
    out = np.concatenate([out] * 2)  # a batch of two identical images
    dets = decode([out], layout="yolov5", conf=0.25, iou=0.45)
    assert len(dets) == 2
    for det in dets:
        check_expected(det)


def test_ssd_layout_boxes_and_scores() -> None:
    xyxy = np.column_stack([BOXES[:, :2] - BOXES[:, 2:] / 2, BOXES[:, :2] + BOXES[:, 2:] / 2])
    (det,) = decode([xyxy[None], SCORES[None]], conf=0.25, iou=0.45)
    check_expected(det)


def test_nms_keeps_boxes_that_overlap_less_than_the_threshold() -> None:
    # two class-0 boxes 0,0,10,10 and 5,0,15,10: IoU 50 / 150 = 1/3
    v8 = np.array([[5, 5, 10, 10, 0.9], [10, 5, 10, 10, 0.8]], dtype=np.float32).T[None]  # (1, 4 + 1, 2)
    (kept,) = decode([v8], layout="yolov8", conf=0.25, iou=0.45)
    assert len(kept) == 2
    (one,) = decode([v8], layout="yolov8", conf=0.25, iou=0.3)
    assert len(one) == 1 and one.scores[0] == pytest.approx(0.9)


def test_box_iou_by_hand() -> None:
    iou = box_iou(np.array([[0, 0, 10, 10]], float), np.array([[5, 0, 15, 10], [20, 20, 30, 30]], float))
    np.testing.assert_allclose(iou, [[1 / 3, 0.0]], atol=1e-9)


def test_layout_errors_are_one_line() -> None:
    with pytest.raises(SlimlineError, match="no detection layout"):
        decode([np.zeros((1, 6, 4))], layout="yolox")
    with pytest.raises(SlimlineError, match="match no detection layout"):
        decode([np.zeros((1, 6))])


def test_letterbox_keeps_aspect_and_records_scale() -> None:
    img = np.full((100, 200, 3), 255, dtype=np.uint8)
    x, scale = letterbox(img, 320)
    assert x.shape == (3, 320, 320) and x.dtype == np.float32
    assert scale == pytest.approx(1.6)
    assert np.allclose(x[:, :160, :], 1.0)  # the photo: 160 rows
    assert np.allclose(x[:, 160:, :], 114 / 255)  # the padding below it
    gray, s2 = letterbox(np.zeros((64, 32), dtype=np.uint8), (128, 128))
    assert gray.shape == (3, 128, 128) and s2 == pytest.approx(2.0)


def dets(boxes: list[list[float]], scores: list[float], classes: list[int]) -> Detections:
    return Detections(
        np.array(boxes, np.float32).reshape(-1, 4), np.array(scores, np.float32), np.array(classes, np.int64)
    )


def test_map_on_three_hand_labelled_images() -> None:
    """Image 1: an exact hit (0.9). Image 2: a hit at IoU 0.62 (0.8). Image 3: a false alarm (0.7), its object
    missed. Ranked: TP, TP, FP with 3 objects -> the precision envelope is 1 up to recall 2/3: COCO's 101 recall
    points 0..0.66 (67 points) count: AP = 67/101 at IoU thresholds <= 0.62 (0.5, 0.55, 0.6). Above 0.62 the
    second is a false alarm: TP, FP, FP -> precision 1 up to recall 1/3: 34 points, AP = 34/101.
    mAP@0.5 = 67/101; mAP@0.5:0.95 = (3 * 67 + 7 * 34) / (10 * 101) = 439/1010."""
    truth = [
        {"boxes": np.array([[10, 10, 50, 50]]), "classes": np.array([0])},
        {"boxes": np.array([[0, 0, 100, 100]]), "classes": np.array([0])},
        {"boxes": np.array([[0, 0, 30, 30]]), "classes": np.array([0])},
    ]
    preds = [
        dets([[10, 10, 50, 50]], [0.9], [0]),
        dets([[0, 0, 100, 62]], [0.8], [0]),
        dets([[60, 60, 90, 90]], [0.7], [0]),
    ]
    got = mean_ap(preds, truth)
    assert got["map50"] == pytest.approx(67 / 101, abs=1e-6)
    assert got["map50_95"] == pytest.approx(439 / 1010, abs=1e-6)
    perfect = mean_ap([dets(t["boxes"].tolist(), [0.9], [0]) for t in truth], truth)
    assert perfect["map50"] == pytest.approx(1.0) and perfect["map50_95"] == pytest.approx(1.0)


def test_yolo_txt_labels(tmp_path) -> None:
    f = tmp_path / "a.txt"
    f.write_text("1 0.5 0.5 0.2 0.4\n")
    lab = read_yolo_labels(str(f), width=100, height=50)
    np.testing.assert_allclose(lab["boxes"], [[40, 15, 60, 35]])
    assert lab["classes"].tolist() == [1]
    bad = tmp_path / "b.txt"
    bad.write_text("1 0.5 0.5\n")
    with pytest.raises(SlimlineError, match="class cx cy w h"):
        read_yolo_labels(str(bad), 10, 10)


def test_detection_fidelity_matches_by_class_and_iou() -> None:
    ref = [dets([[0, 0, 10, 10], [20, 20, 30, 30]], [0.9, 0.6], [0, 1]), dets([[0, 0, 5, 5]], [0.5], [2])]
    got = [dets([[1, 0, 11, 10], [20, 20, 30, 30]], [0.8, 0.6], [0, 0]), dets([], [], [])]
    fid = detection_fidelity(got, ref)
    # only the first reference box is matched (IoU 90/110 with the same class); the second has the wrong class
    assert fid["reference_detections"] == 3 and fid["matched"] == 1
    assert fid["det_match"] == pytest.approx(1 / 3)
    assert fid["score_diff_mean"] == pytest.approx(0.1, abs=1e-6)
    assert fid["unmatched_candidate_detections"] == 1
    assert detection_fidelity(ref, ref)["det_match"] == 1.0


def test_task_is_registered_and_scores_raw_outputs() -> None:
    task = get_task("detection")
    out = {"output0": np.concatenate([BOXES, SCORES], axis=1).T[None]}
    assert task.fidelity(out, out)["det_match"] == 1.0
    with pytest.raises(SlimlineError, match="--reference"):
        task.metric(out, np.zeros(1))
    labels = np.empty(1, dtype=object)
    labels[0] = {"boxes": WANT_BOXES, "classes": np.array([0, 1])}
    assert task.metric(out, labels)["map50"] == pytest.approx(1.0)


# --- a detector through slimline eval: photo folders with YOLO txt / COCO JSON labels, fidelity vs a reference --


class TinyDetector(torch.nn.Module):
    """Detector-shaped (batch, 4 + 2, 8) YOLOv8 output: one class-0 box at cx, cy, w, h = 20, 20, 16, 16 (model
    pixels: 12, 12, 28, 28) scoring 0.9 x ``gain`` x the image's mean brightness (1 on a white image), seven
    empty boxes."""

    def __init__(self, gain: float = 1.0) -> None:
        super().__init__()
        scores = torch.zeros(2, 8)
        scores[0, 0] = 0.9 * gain
        self.register_buffer("boxes", torch.tensor([[20.0, 20.0, 16.0, 16.0]] + [[0.0, 0.0, 1.0, 1.0]] * 7).T)
        self.register_buffer("scores", scores)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bright = x.mean(dim=(1, 2, 3)).clamp(0, 1)[:, None, None]
        boxes = self.boxes[None].repeat(x.shape[0], 1, 1)
        return torch.cat([boxes, self.scores[None] * bright], 1)


def photo_folder(root: Path, label: str | None, coco: bool = False) -> Path:
    """Two white photos (64x64 and 128x128: letterbox scales 1 and 0.5 into 64x64) under images/; ``label`` (a
    YOLO txt line, normalised) for each under labels/, or the same boxes as one COCO JSON."""
    from PIL import Image

    (root / "images").mkdir(parents=True)
    for name, side in (("a", 64), ("b", 128)):
        Image.fromarray(np.full((side, side, 3), 255, np.uint8)).save(root / "images" / f"{name}.png")
    if label and not coco:
        (root / "labels").mkdir()
        for name in ("a", "b"):
            (root / "labels" / f"{name}.txt").write_text(label + "\n")
    if label and coco:
        c, cx, cy, w, h = (float(v) for v in label.split())
        images = [{"id": 1, "file_name": "a.png", "width": 64, "height": 64}]
        images.append({"id": 2, "file_name": "b.png", "width": 128, "height": 128})
        anns = [
            {
                "id": i["id"],
                "image_id": i["id"],
                "category_id": (7, 9)[int(c)],  # class index = rank among the file's category ids
                "bbox": [(cx - w / 2) * i["width"], (cy - h / 2) * i["height"], w * i["width"], h * i["height"]],
                "area": w * h * i["width"] * i["height"],
                "iscrowd": 0,
            }
            for i in images
        ]
        cats = [{"id": 7, "name": "zero"}, {"id": 9, "name": "one"}]
        (root / "labels.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return root


SIZE_64 = "{resize: [64, 64], letterbox: true}"
EXACT = "0 0.3125 0.3125 0.25 0.25"  # 12, 12, 28, 28 on the 64x64 photo; 24, 24, 56, 56 on the 128x128 one


@pytest.mark.parametrize("coco", [False, True])
def test_eval_detection_map_on_labelled_photos(tmp_path: Path, coco: bool) -> None:
    """The tiny detector's box is exactly the labelled box on both photos (labels scaled by the letterbox):
    mAP@0.5 = mAP@0.5:0.95 = 1; labelled as class 1 instead, the class-0 detections find nothing: 0."""
    from slimline.api import evaluate_model

    exact = photo_folder(tmp_path / "exact", EXACT, coco)
    got = evaluate_model(TinyDetector(), str(exact), metric="detection", preprocess=SIZE_64)
    assert got["n"] == 2 and got["detections"] == 2 and got["labelled_boxes"] == 2
    assert got["map50"] == pytest.approx(1.0) and got["map50_95"] == pytest.approx(1.0)
    wrong = photo_folder(tmp_path / "wrong", "1" + EXACT[1:], coco)
    got = evaluate_model(TinyDetector(), str(wrong), metric="detection", preprocess=SIZE_64)
    assert got["map50"] == pytest.approx(0.0)


def export_tiny(path: Path, gain: float = 1.0) -> Path:
    torch.onnx.export(TinyDetector(gain), (torch.zeros(1, 3, 64, 64),), str(path), input_names=["images"], dynamo=False)
    return path


def test_eval_cli_detection_fidelity_and_one_line_errors(tmp_path: Path) -> None:
    """slimline eval --metric detection on an .onnx detector: fidelity against a reference (itself: every
    detection matched), the input size read from the model; no labels and no reference: one line, exit 1."""
    from typer.testing import CliRunner

    from slimline.cli import app

    onnx_path = export_tiny(tmp_path / "det.onnx")
    photos = photo_folder(tmp_path / "photos", None)
    out = tmp_path / "eval.json"
    runner = CliRunner()
    res = runner.invoke(
        app,
        ["eval", "-m", str(onnx_path), "-d", str(photos), "--metric", "detection", "--reference", str(onnx_path)]
        + ["--json", str(out)],
    )
    assert res.exit_code == 0, res.output
    got = json.loads(out.read_text())
    assert got["det_match"] == 1.0 and got["reference_detections"] == 2 and got["size"] == [64, 64]
    res = runner.invoke(app, ["eval", "-m", str(onnx_path), "-d", str(photos), "--metric", "detection"])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "--reference" in res.output and len(res.output.strip().splitlines()) == 1


def test_eval_detection_on_named_arrays_against_a_weaker_candidate(tmp_path: Path) -> None:
    """Named arrays (letterboxed images in a .npz) and --metric detection: detection fidelity. A candidate whose
    score falls under the threshold (0.9 x 0.25 = 0.225 < 0.25) misses every reference box; one at 0.5 x keeps
    them, with score differences of 0.45."""
    from slimline.api import evaluate_model

    ref = export_tiny(tmp_path / "ref.onnx")
    data = tmp_path / "white.npz"
    np.savez(data, images=np.ones((3, 3, 64, 64), np.float32))
    got = evaluate_model(str(ref), str(data), metric="detection", reference=str(ref))
    assert got["det_match"] == 1.0 and got["reference_detections"] == 3 and got["score_diff_max"] == 0
    half = evaluate_model(
        str(export_tiny(tmp_path / "half.onnx", 0.5)), str(data), metric="detection", reference=str(ref)
    )
    assert half["det_match"] == 1.0 and half["score_diff_mean"] == pytest.approx(0.45, abs=1e-5)
    weak = evaluate_model(
        str(export_tiny(tmp_path / "weak.onnx", 0.25)), str(data), metric="detection", reference=str(ref)
    )
    assert weak["det_match"] == 0.0 and weak["detections"] == 0
    with pytest.raises(SlimlineError, match="--reference"):
        evaluate_model(str(ref), str(data), metric="detection")


def test_exclude_patterns_name_a_detect_head(tmp_path: Path) -> None:
    """Quantize's exclude takes fnmatch patterns of node names (a YOLO head's decoding: ``/model.22/dfl/*``);
    exact names still work, and a pattern that matches nothing is a one-line error."""
    from slimline.errors import RecipeError
    from slimline.quant.backends.base import FloatModel, resolve_onnx_nodes

    nodes = {"/model.22/dfl/Conv", "/model.22/dfl/Softmax", "/model.22/Concat_3", "/model.21/cv1/Conv", "/head"}
    src = FloatModel((3, 64, 64), tmp_path)
    got = resolve_onnx_nodes(["/model.22/dfl/*", "/model.22/Concat*", "/head"], src, nodes)
    assert got == ["/model.22/dfl/Conv", "/model.22/dfl/Softmax", "/model.22/Concat_3", "/head"]
    with pytest.raises(RecipeError, match=r"/model\.23/\*"):
        resolve_onnx_nodes(["/model.23/*"], src, nodes)


class ConvDetector(torch.nn.Module):
    """A small convolutional detector with a (batch, 4 + 2, 64) YOLOv8-style output on 64x64 images: boxes
    centred on an 8x8 grid (8 px cells) with convolution-made sizes and sigmoid class scores."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 8, stride=8)
        )
        ys, xs = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
        self.register_buffer("centres", torch.stack([xs, ys]).reshape(1, 2, 64) * 8 + 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x).flatten(2)  # (b, 4, 64)
        wh = 8 + 8 * torch.sigmoid(y[:, :2])
        return torch.cat([self.centres.expand(x.shape[0], -1, -1), wh, torch.sigmoid(2 * y[:, 2:])], 1)


def test_recipe_quantizes_a_detector_and_evaluates_detection_fidelity(tmp_path: Path) -> None:
    """A recipe like examples/detect.yaml on a tiny detector: an .onnx model, an imagefolder letterboxed to its
    input, int8 on ONNX Runtime, then evaluate with metric: detection -> detection fidelity of the int8 model
    against the baseline, equal to the figures computed here from both models' raw outputs; the fp32 model (dynamic
    height and width) exports to OpenVINO with its parity checked on the data's image shape."""
    from PIL import Image

    from slimline.api import run

    model = tmp_path / "det.onnx"
    torch.onnx.export(
        ConvDetector(),
        (torch.zeros(1, 3, 64, 64),),
        str(model),
        input_names=["images"],
        dynamic_axes={"images": {0: "batch", 2: "height", 3: "width"}},
        dynamo=False,
    )
    rng = np.random.default_rng(0)
    for split, n in (("train", 24), ("test", 6)):
        (tmp_path / "photos" / split / "x").mkdir(parents=True)
        for i in range(n):
            pixels = rng.integers(0, 255, (48, 80, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "photos" / split / "x" / f"{i}.png")
    recipe = {
        "name": "det",
        "model": str(model),
        "data": {
            "name": "imagefolder",
            "data_dir": str(tmp_path / "photos"),
            "preprocess": {"resize": [64, 64], "letterbox": True},
        },
        "steps": [
            {"quantize": {"backend": "onnxruntime", "calibration_size": 24}},
            {"evaluate": {"metric": "detection"}},
            {"export_openvino": {"input": "baseline"}},  # dynamic height and width: parity on the data's shape
        ],
        "output_dir": str(tmp_path / "run"),
    }
    res = run(recipe)
    assert res["stages"][3]["record"]["parity"]["max_rel_diff"] < 1e-3
    m = res["stages"][2]["record"]["metrics"]
    assert m["n"] == 6 and m["reference_detections"] > 0
    # the same figures by hand: both models on the test split (imagefolder's letterbox) through ONNX Runtime
    import onnxruntime as ort

    from slimline.data import load_dataset

    x = load_dataset("imagefolder", "test", tmp_path / "photos", preprocess=recipe["data"]["preprocess"]).inputs()
    int8 = tmp_path / "run" / res["stages"][1]["artifact"] / "model.onnx"

    def detect(path: Path) -> list[Detections]:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return [decode(sess.run(None, {sess.get_inputs()[0].name: x[i : i + 1]}))[0] for i in range(len(x))]

    want = detection_fidelity(detect(int8), detect(model))
    assert m["det_match"] == pytest.approx(want["det_match"]) and m["matched"] == want["matched"]
    assert m["reference_detections"] == want["reference_detections"]
    assert m["score_diff_mean"] == pytest.approx(want["score_diff_mean"], abs=1e-6)


def test_cli_quantize_takes_percentile_and_exclude_patterns(tmp_path: Path) -> None:
    """slimline quantize -m det.onnx -d calib.npz --calibration percentile --percentile 99.9 -x '/conv/conv.2*':
    the percentile is the one recorded, the pattern keeps the matching convolution in float; a pattern that
    matches no node is a one-line error."""
    import onnx
    from typer.testing import CliRunner

    from slimline.cli import app

    model = tmp_path / "det.onnx"
    torch.onnx.export(ConvDetector(), (torch.zeros(1, 3, 64, 64),), str(model), input_names=["images"], dynamo=False)
    np.savez(tmp_path / "calib.npz", images=np.random.default_rng(0).random((8, 3, 64, 64), dtype=np.float32))
    args = ["quantize", "-m", str(model), "-d", str(tmp_path / "calib.npz"), "--no-eval", "--calibration"]
    args += ["percentile", "--percentile", "99.9", "--calibration-size", "8"]
    res = CliRunner().invoke(app, [*args, "-x", "/conv/conv.2*", "-o", str(tmp_path / "q")])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "q" / "01_quantize" / "quantization.json").read_text())
    assert report["options"]["percentile"] == 99.9 and report["options"]["exclude"] == ["/conv/conv.2*"]

    def quantized_convs(path: Path) -> int:  # convolutions whose weights come through a DequantizeLinear
        graph = onnx.load(str(path)).graph
        dq = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
        return sum(1 for n in graph.node if n.op_type == "Conv" and n.input[1] in dq)

    assert quantized_convs(tmp_path / "q" / "01_quantize" / "model.onnx") == 1
    res = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "all")])
    assert res.exit_code == 0 and quantized_convs(tmp_path / "all" / "01_quantize" / "model.onnx") == 2
    res = CliRunner().invoke(app, [*args, "-x", "/nothing/*", "-o", str(tmp_path / "q2")])
    assert res.exit_code == 1 and "/nothing/*" in res.output and "Traceback" not in res.output
