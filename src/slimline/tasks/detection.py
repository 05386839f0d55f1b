"""Detection: letterbox preprocessing, decoding of the common output layouts, NMS, mAP and detection fidelity.

Layouts decoded by :func:`decode` (boxes come out as ``x1, y1, x2, y2`` in the model's input pixels):

* ``yolov8`` -- one output ``(batch, 4 + C, N)``: ``cx, cy, w, h`` then C class scores (no objectness);
* ``yolov5`` -- one output ``(batch, N, 5 + C)``: ``cx, cy, w, h, objectness`` then C class scores
  (score = objectness x class score);
* ``ssd``    -- two outputs: boxes ``(batch, N, 4)`` as ``x1, y1, x2, y2`` and scores ``(batch, N, C)``.

``layout="auto"`` picks by the number and shapes of the outputs (one output whose middle axis is the smaller is
``yolov8``; one whose last axis is the smaller is ``yolov5``; two outputs are ``ssd``).

Detections above ``conf`` go through class-aware non-maximum suppression (OpenCV's ``cv2.dnn.NMSBoxesBatched``)
at ``iou`` overlap. :func:`letterbox` resizes keeping the aspect ratio and pads bottom/right (the scale is
returned, so boxes map back to the photo by dividing by it).

Scoring: :func:`mean_ap` is COCO's evaluation (``pycocotools``): mAP@0.5 and mAP@0.5:0.95 over ground-truth boxes
given per image; :func:`detection_fidelity` compares a candidate's detections with the fp32 model's: the share of
reference detections that the candidate matches at IoU >= 0.5 with the same class (one-to-one, highest score
first) and the absolute score differences of the matched pairs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from slimline.errors import SlimlineError
from slimline.tasks.base import TASKS, Outputs

LAYOUTS = ("auto", "yolov8", "yolov5", "ssd")


class DetectionError(SlimlineError):
    """Outputs that no detection layout decodes, or labels that cannot score them."""


@dataclass(frozen=True)
class Detections:
    """One image's detections: ``boxes`` [n, 4] ``x1, y1, x2, y2``; ``scores`` [n]; ``classes`` [n] int."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    def to_dict(self) -> dict[str, list[Any]]:
        return {
            "boxes": self.boxes.round(2).tolist(),
            "scores": self.scores.round(4).tolist(),
            "classes": self.classes.tolist(),
        }


def _needs_cv2() -> Any:
    try:
        import cv2
    except ImportError as e:
        raise SlimlineError("detection needs OpenCV: pip install 'slimline[detect]'") from e
    return cv2


def letterbox(image: np.ndarray, size: int | tuple[int, int], pad_value: float = 114.0) -> tuple[np.ndarray, float]:
    """``image`` (H, W), (H, W, 3) or (H, W, 4) uint8/float, resized (aspect kept, OpenCV bilinear) into a
    ``size`` square (or (height, width)) and padded bottom/right with ``pad_value``; returns the float32 NCHW-ready
    (3, h, w) array scaled to [0, 1] and the scale (model pixels per photo pixel)."""
    cv2 = _needs_cv2()
    h_out, w_out = (size, size) if isinstance(size, int) else size
    img = np.asarray(image)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    img = img[:, :, :3]
    if img.dtype != np.uint8:
        img = np.clip(img * (255.0 if img.max(initial=0) <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    h, w = img.shape[:2]
    scale = min(h_out / h, w_out / w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    resized = cv2.resize(np.ascontiguousarray(img), (nw, nh), interpolation=cv2.INTER_LINEAR)
    out = np.full((h_out, w_out, 3), pad_value, dtype=np.float32)
    out[:nh, :nw] = resized
    return (out / 255.0).transpose(2, 0, 1).astype(np.float32), float(scale)


def _layout(outputs: Sequence[np.ndarray], layout: str) -> str:
    if layout not in LAYOUTS:
        raise DetectionError(f"no detection layout {layout!r}; layouts: {', '.join(LAYOUTS)}")
    if layout != "auto":
        return layout
    if len(outputs) == 2:
        return "ssd"
    if len(outputs) == 1 and outputs[0].ndim == 3:
        return "yolov8" if outputs[0].shape[1] < outputs[0].shape[2] else "yolov5"
    shapes = ", ".join(str(tuple(o.shape)) for o in outputs)
    raise DetectionError(
        f"outputs {shapes} match no detection layout (one (batch, 4+C, N) or (batch, N, 5+C) "
        "array, or boxes (batch, N, 4) + scores (batch, N, C)); name the layout with layout=..."
    )


def nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, conf: float, iou: float) -> np.ndarray:
    """Indices kept by class-aware NMS (OpenCV ``NMSBoxesBatched``) among boxes (``x1, y1, x2, y2``) scoring at
    least ``conf``, highest score first."""
    cv2 = _needs_cv2()
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    xywh = np.column_stack([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]]).astype(np.float64)
    keep = cv2.dnn.NMSBoxesBatched(
        xywh.tolist(), scores.astype(float).tolist(), classes.astype(int).tolist(), float(conf), float(iou)
    )
    keep = np.asarray(keep, dtype=np.int64).reshape(-1)
    return keep[np.argsort(-scores[keep], kind="stable")]


def decode(
    outputs: Sequence[np.ndarray], layout: str = "auto", conf: float = 0.25, iou: float = 0.45, max_det: int = 300
) -> list[Detections]:
    """Detections per image of a batch of raw outputs (see the module docstring for the layouts)."""
    outs = [np.asarray(o, dtype=np.float32) for o in outputs]
    kind = _layout(outs, layout)
    per: list[Detections] = []
    for b in range(len(outs[0])):
        if kind == "ssd":
            boxes, cls_scores = outs[0][b], outs[1][b]
        else:
            a = outs[0][b].T if kind == "yolov8" else outs[0][b]
            if a.shape[1] < (6 if kind == "yolov5" else 5):
                raise DetectionError(
                    f"a {kind} output needs at least {6 if kind == 'yolov5' else 5} values per "
                    f"box but has {a.shape[1]}; name the right layout"
                )
            cx, cy, w, h = a[:, 0], a[:, 1], a[:, 2], a[:, 3]
            boxes = np.column_stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
            cls_scores = a[:, 5:] * a[:, 4:5] if kind == "yolov5" else a[:, 4:]
        classes = cls_scores.argmax(1)
        scores = cls_scores[np.arange(len(classes)), classes]
        sel = scores >= conf
        boxes, scores, classes = boxes[sel], scores[sel], classes[sel]
        keep = nms(boxes, scores, classes, conf, iou)[:max_det]
        per.append(
            Detections(boxes[keep].astype(np.float32), scores[keep].astype(np.float32), classes[keep].astype(np.int64))
        )
    return per


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix [len(a), len(b)] of ``x1, y1, x2, y2`` boxes (``pycocotools.mask.iou``)."""
    from pycocotools import mask as mask_utils

    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))

    def xywh(x: np.ndarray) -> np.ndarray:
        return np.column_stack([x[:, :2], x[:, 2:] - x[:, :2]]).astype(np.float64)

    return np.asarray(mask_utils.iou(xywh(a), xywh(b), [0] * len(b))).reshape(len(a), len(b))


def detection_fidelity(got: Sequence[Detections], ref: Sequence[Detections], iou: float = 0.5) -> dict[str, Any]:
    """How many of the reference's detections the candidate reproduces: each reference detection (highest score
    first) takes the unmatched candidate detection of the same class with the highest IoU, when that IoU is at
    least ``iou``. ``det_match`` is the matched share (0..1) of all reference detections; also the counts and the
    mean and max absolute score difference of the matched pairs."""
    if len(got) != len(ref):
        raise DetectionError(
            f"{len(got)} images of detections against {len(ref)} reference images; compare the same images"
        )
    matched = total = extra = 0
    diffs: list[float] = []
    for g, r in zip(got, ref, strict=True):
        total += len(r)
        used = np.zeros(len(g), dtype=bool)
        m = box_iou(r.boxes, g.boxes)
        for i in np.argsort(-r.scores, kind="stable"):
            if len(g) == 0:
                break
            cand = np.where((g.classes == r.classes[i]) & ~used, m[i], -1.0)
            j = int(cand.argmax())
            if cand[j] >= iou:
                used[j] = True
                matched += 1
                diffs.append(abs(float(g.scores[j]) - float(r.scores[i])))
        extra += int((~used).sum())
    return {
        "det_match": matched / total if total else float("nan"),
        "reference_detections": total,
        "matched": matched,
        "unmatched_candidate_detections": extra,
        "score_diff_mean": float(np.mean(diffs)) if diffs else float("nan"),
        "score_diff_max": float(np.max(diffs)) if diffs else float("nan"),
    }


def mean_ap(preds: Sequence[Detections], truth: Sequence[Mapping[str, np.ndarray]]) -> dict[str, float]:
    """COCO mAP (``pycocotools.cocoeval``) of ``preds`` against per-image ground truth ``{"boxes": [n, 4] x1, y1,
    x2, y2, "classes": [n]}``: ``map50`` (IoU 0.5) and ``map50_95`` (mean over IoU 0.5:0.05:0.95), 0..1; -1 where
    no ground truth exists."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if len(preds) != len(truth):
        raise DetectionError(
            f"{len(preds)} images of detections against labels for {len(truth)}; give one label set per image"
        )
    images: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
    dets: list[dict[str, Any]] = []
    cats: set[int] = set()
    for i, (p, t) in enumerate(zip(preds, truth, strict=True)):
        images.append({"id": i + 1})
        for box, c in zip(
            np.asarray(t["boxes"], dtype=float).reshape(-1, 4), np.asarray(t["classes"]).reshape(-1), strict=True
        ):
            w, h = box[2] - box[0], box[3] - box[1]
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i + 1,
                    "category_id": int(c) + 1,
                    "iscrowd": 0,
                    "bbox": [float(box[0]), float(box[1]), float(w), float(h)],
                    "area": float(w * h),
                }
            )
            cats.add(int(c) + 1)
        for box, s, c in zip(p.boxes, p.scores, p.classes, strict=True):
            dets.append(
                {
                    "image_id": i + 1,
                    "category_id": int(c) + 1,
                    "score": float(s),
                    "bbox": [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])],
                }
            )
            cats.add(int(c) + 1)
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": c} for c in sorted(cats)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        if not dets:
            return {"map50": 0.0 if anns else -1.0, "map50_95": 0.0 if anns else -1.0}
        dt = gt.loadRes(dets)
        ev = COCOeval(gt, dt, "bbox")
        ev.params.maxDets = [1, 10, 100]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"map50_95": float(ev.stats[0]), "map50": float(ev.stats[1])}


def read_yolo_labels(path: str, width: float, height: float) -> dict[str, np.ndarray]:
    """A YOLO txt label file (``class cx cy w h`` per line, normalised 0..1) as ``x1, y1, x2, y2`` pixel boxes of
    a ``width`` x ``height`` image."""
    rows = np.loadtxt(path, ndmin=2) if open(path, encoding="utf-8").read().strip() else np.zeros((0, 5))
    if rows.shape[1] != 5:
        raise DetectionError(
            f"{path}: a YOLO label line is 'class cx cy w h' (5 numbers), this file has {rows.shape[1]}; fix the file"
        )
    cx, cy, w, h = rows[:, 1] * width, rows[:, 2] * height, rows[:, 3] * width, rows[:, 4] * height
    return {
        "boxes": np.column_stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]),
        "classes": rows[:, 0].astype(np.int64),
    }


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


@dataclass
class PhotoSet:
    """A folder of photos letterboxed for a detector: ``images`` [n, 3, H, W] in 0..1, the file ``names``, the
    letterbox ``scales`` (model pixels per photo pixel) and, when the folder has labels, ``labels`` per image
    (``{"boxes": [n, 4] x1, y1, x2, y2 in model pixels, "classes": [n]}``)."""

    images: np.ndarray
    names: list[str]
    scales: list[float]
    labels: list[dict[str, np.ndarray]] | None = None


def image_files(folder: str | Path) -> list[Path]:
    """The image files of ``folder`` (or of its ``images/`` subfolder, YOLO's layout), in name order."""
    root = Path(str(folder))
    where = root / "images" if (root / "images").is_dir() else root
    return sorted(f for f in where.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)


def is_photo_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding image files (directly or under ``images/``)."""
    p = Path(str(path))
    return p.is_dir() and bool(image_files(p))


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _coco_labels(files: Sequence[Path], json_path: Path) -> list[dict[str, np.ndarray]]:
    """Per-file boxes of a COCO-style JSON (``images[].file_name``, ``annotations[].bbox`` x, y, w, h in photo
    pixels); class index = position of ``category_id`` among the file's sorted category ids."""
    import contextlib
    import io

    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        try:
            coco = COCO(str(json_path))
        except (ValueError, KeyError, TypeError) as e:
            raise DetectionError(
                f"{json_path} is not COCO-style JSON ({e}); give images, annotations, categories"
            ) from e
    cat_ids = sorted(coco.getCatIds())
    index = {c: i for i, c in enumerate(cat_ids)}
    by_name = {Path(im["file_name"]).name: im["id"] for im in coco.dataset.get("images", [])}
    out = []
    for f in files:
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[by_name[f.name]])) if f.name in by_name else []
        unknown = sorted({a["category_id"] for a in anns} - set(index))
        if unknown:
            raise DetectionError(f"{json_path}: category_id {unknown[0]} is not in its categories; list it there")
        xywh = np.asarray([a["bbox"] for a in anns], dtype=float).reshape(-1, 4)
        out.append(
            {
                "boxes": np.column_stack([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]]),
                "classes": np.asarray([index[a["category_id"]] for a in anns], dtype=np.int64),
            }
        )
    return out


def load_photos(folder: str | Path, size: int | tuple[int, int], limit: int | None = None) -> PhotoSet:
    """The first ``limit`` (default: all) photos of ``folder`` letterboxed to ``size`` (:func:`letterbox`), with
    their labels when it has them: YOLO txt files (``labels/<stem>.txt`` beside ``images/``, or ``<stem>.txt`` next
    to each photo; a photo without one has no objects) or one COCO-style ``.json`` in ``folder``. Label boxes are
    mapped to model pixels by the letterbox scale."""
    root = Path(str(folder))
    files = (image_files(root) if root.is_dir() else [])[:limit]
    if not files:
        raise DetectionError(f"{root} holds no images ({', '.join(IMAGE_SUFFIXES)}); give a folder of photos")
    images, scales, sizes = [], [], []
    for f in files:
        photo = _read_image(f)
        img, scale = letterbox(photo, size)
        images.append(img)
        scales.append(scale)
        sizes.append(photo.shape[:2])
    txt = [root / "labels" / f"{f.stem}.txt" if (root / "labels").is_dir() else f.with_suffix(".txt") for f in files]
    jsons = sorted(root.glob("*.json"))
    labels: list[dict[str, np.ndarray]] | None = None
    if any(t.is_file() for t in txt):
        labels = [
            read_yolo_labels(str(t), w, h) if t.is_file() else {"boxes": np.zeros((0, 4)), "classes": np.zeros(0)}
            for t, (h, w) in zip(txt, sizes, strict=True)
        ]
    elif len(jsons) > 1:
        raise DetectionError(f"{root} holds {len(jsons)} .json files; keep one COCO-style label file there")
    elif jsons:
        labels = _coco_labels(files, jsons[0])
    if labels is not None:
        labels = [
            {"boxes": np.asarray(t["boxes"], dtype=float) * s, "classes": np.asarray(t["classes"], dtype=np.int64)}
            for t, s in zip(labels, scales, strict=True)
        ]
    return PhotoSet(np.stack(images), [f.name for f in files], scales, labels)


def evaluate_detector(
    run: Callable[[np.ndarray], Outputs],
    photos: PhotoSet,
    reference: Callable[[np.ndarray], Outputs] | None = None,
    task: DetectionTask | None = None,
) -> dict[str, Any]:
    """A detector (``run``: one image batch [1, 3, H, W] -> its outputs by name) on ``photos``: ``map50`` and
    ``map50_95`` when the photos have labels; ``det_match`` and the rest of :func:`detection_fidelity` against
    ``reference`` when given; ``detections`` (the count) always."""
    task = task or DetectionTask()
    if photos.labels is None and reference is None:
        raise DetectionError(
            "the photos have no labels (YOLO txt or COCO JSON), and without labels only fidelity can be "
            "measured: give --reference REF (the fp32 model)"
        )

    def detect(fn: Callable[[np.ndarray], Outputs]) -> list[Detections]:
        return [d for i in range(len(photos.images)) for d in task.detections(fn(photos.images[i : i + 1]))]

    got = detect(run)
    out: dict[str, Any] = {"n": len(photos.images), "detections": sum(len(d) for d in got)}
    if photos.labels is not None:
        out.update(mean_ap(got, photos.labels))
        out["labelled_boxes"] = sum(len(t["classes"]) for t in photos.labels)
    if reference is not None:
        out.update(detection_fidelity(got, detect(reference)))
    return out


class DetectionTask:
    """Detectors: samples are named arrays (letterboxed images); outputs are decoded (``layout``, ``conf``,
    ``iou``) and scored with mAP against per-image labels, or compared with a reference's detections."""

    name = "detection"

    def __init__(self, layout: str = "auto", conf: float = 0.25, iou: float = 0.45) -> None:
        self.layout, self.conf, self.iou = layout, conf, iou

    def detections(self, outputs: Outputs) -> list[Detections]:
        """The outputs decoded, in the outputs' order."""
        return decode(list(outputs.values()), self.layout, self.conf, self.iou)

    def feeds(self, samples: Any, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        return samples.batches(batch_size)

    def metric(self, outputs: Outputs, labels: Any) -> dict[str, Any]:
        if labels is None or isinstance(labels, np.ndarray) and labels.dtype != object:
            raise DetectionError(
                "detection labels are boxes per image ({'boxes', 'classes'} per image, e.g. from "
                "YOLO txt files); without them compare with the fp32 model: give --reference REF"
            )
        return mean_ap(self.detections(outputs), list(labels))

    def fidelity(self, outputs: Outputs, reference: Outputs) -> dict[str, Any]:
        return detection_fidelity(self.detections(outputs), self.detections(reference))


TASKS["detection"] = DetectionTask()
