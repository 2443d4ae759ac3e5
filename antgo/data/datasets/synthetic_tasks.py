"""Embedded demo sets for detection, keypoints and classification, generated offline and deterministically.

The same coloured shapes on textured backgrounds as the segmentation demo (``demo.py``), written in the
layouts the real readers expect, so the demos exercise ``COCO2017`` and ``ImageFolder`` themselves:

- ``make_demo_det``: 1-4 shapes per image (5% empty), COCO layout, ``instances_{train,val}2017.json``;
- ``make_demo_kp``: one "house" (a pentagon whose 5 corners are the keypoints, with a left/right flip pair
  each for eaves and base) among smaller distractor shapes that may hide a corner (visibility 1), COCO
  keypoints layout, ``person_keypoints_{train,val}2017.json`` with a skeleton;
- ``make_demo_cls``: one shape per image, ``dir/<split>/<class_name>/*.jpg``;
- ``make_voc_det_tree``: a small VOC detection tree (XML annotations, some objects ``difficult``) for tests.

Each sample has its own generator seeded from ``(seed, task, index)``; ``antgo_demo.json`` is written
last and a complete tree is not written again.
"""
from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from antgo.data.datasets._task_writers import coco_box, write_coco_json, write_voc_xml
from antgo.data.datasets._voc_writer import hsv_colour, shape_mask, write_ids, write_rgb_jpeg
from antgo.data.datasets.demo import (_HUE_BANDS, DEMO_CLASS_NAMES, MANIFEST, _background, finish_image,
                                      make_demo_voc, paint_object)

logger = logging.getLogger(__name__)

SHAPE_CLASS_NAMES = DEMO_CLASS_NAMES[1:]  # circle, square, triangle, cross (no background class)
KEYPOINT_NAMES = ("roof", "left_eave", "right_eave", "left_base", "right_base")
SKELETON = ((1, 2), (1, 3), (2, 4), (3, 5), (4, 5))  # 1-based keypoint indices, as in COCO
FLIP_PAIRS = ((1, 3), (2, 4))  # 0-based [left_ids, right_ids]: RandomFlipImage(swap_ids=FLIP_PAIRS)
SIZE_RANGE = (96, 128)
COUNTS = {"det": {"train": 300, "val": 100}, "kp": {"train": 300, "val": 100}, "cls": {"train": 400, "val": 100}}
VERSION = 1
_TASK_SEED = {"det": 11, "kp": 12, "cls": 13, "voc_det": 14}
_SPLIT_OFFSET = {"train": 0, "val": 1_000_000, "test": 2_000_000}
# The house in units of its radius (y down): corners in KEYPOINT_NAMES order, and their polygon order.
_HOUSE = np.array([[0, -1], [-0.75, -0.2], [0.75, -0.2], [-0.75, 0.9], [0.75, 0.9]], np.float32)
_HOUSE_POLYGON = [0, 2, 4, 3, 1]


def _rng(seed: int, task: str, split: str, k: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), _TASK_SEED[task], _SPLIT_OFFSET[split] + k])


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _place(rng: np.random.Generator, h: int, w: int, r: float, taken: list[tuple[float, ...]],
           margin: float = 1.0, max_iou: float = 0.15) -> tuple[float, float] | None:
    """A centre whose box of radius ``r`` overlaps every ``taken`` box by less than ``max_iou`` (20 tries)."""
    for _ in range(20):
        cx, cy = rng.uniform(margin * r, w - margin * r), rng.uniform(margin * r, h - margin * r)
        if all(_iou((cx - r, cy - r, cx + r, cy + r), b) < max_iou for b in taken):
            taken.append((cx - r, cy - r, cx + r, cy + r))
            return cx, cy
    return None


def _shape_colour(rng: np.random.Generator, cls: int | None) -> np.ndarray:
    """The class's hue band of the segmentation demo (``cls`` indexes SHAPE_CLASS_NAMES), any hue for None."""
    band = (0.0, 180.0) if cls is None else _HUE_BANDS[cls + 1]
    return hsv_colour(rng, band, (130, 255), (120, 255))


def render_det_sample(rng: np.random.Generator, size_range: tuple[int, int] = SIZE_RANGE, max_objects: int = 4
                      ) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """An image and its objects as ``(class index, visible mask)``; boxes barely overlap (IoU < 0.15)."""
    h, w = (int(v) for v in rng.integers(size_range[0], size_range[1] + 1, size=2))
    image = _background(rng, h, w)
    owner = np.full((h, w), -1, np.int32)
    classes: list[int] = []
    taken: list[tuple[float, ...]] = []
    n = 0 if rng.random() < 0.05 else int(rng.integers(1, max_objects + 1))
    for _ in range(n):
        cls = int(rng.integers(len(SHAPE_CLASS_NAMES)))
        r = rng.uniform(0.12, 0.24) * min(h, w)
        centre = _place(rng, h, w, r, taken)
        if centre is None:
            continue
        m = shape_mask(SHAPE_CLASS_NAMES[cls], h, w, centre[0], centre[1], r, rng.uniform(0, 360))
        paint_object(rng, image, m, _shape_colour(rng, cls), r)
        owner[m] = len(classes)
        classes.append(cls)
    return finish_image(rng, image), [(c, owner == i) for i, c in enumerate(classes)]


def render_kp_sample(rng: np.random.Generator, size_range: tuple[int, int] = SIZE_RANGE, num_houses: int = 1,
                     max_distractors: int = 2
                     ) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """An image and its houses as ``(whole mask, visible mask, keypoints (K, 3) x, y, v)``.

    Distractor shapes are drawn behind the houses, or (30%) one in front, where it can hide a corner:
    that corner keeps its position with visibility 1; the others have 2.
    """
    h, w = (int(v) for v in rng.integers(size_range[0], size_range[1] + 1, size=2))
    image = _background(rng, h, w)
    owner = np.full((h, w), -1, np.int32)
    taken: list[tuple[float, ...]] = []
    behind = int(rng.integers(0, max_distractors + 1))
    layers = ["distractor"] * behind + ["house"] * num_houses + ["distractor"] * int(rng.random() < 0.3)
    houses: list[tuple[np.ndarray, np.ndarray]] = []
    for layer in layers:
        if layer == "distractor":
            r = rng.uniform(0.1, 0.18) * min(h, w)
            cls = int(rng.integers(len(SHAPE_CLASS_NAMES)))
            m = shape_mask(SHAPE_CLASS_NAMES[cls], h, w, rng.uniform(r, w - r), rng.uniform(r, h - r), r,
                           rng.uniform(0, 360))
            paint_object(rng, image, m, _shape_colour(rng, None), r)
            owner[m] = -1
            continue
        r = rng.uniform(0.25, 0.38) * min(h, w)
        centre = _place(rng, h, w, r, taken, margin=1.2, max_iou=0.3)  # every corner inside the image
        if centre is None:
            continue
        t = np.deg2rad(rng.uniform(-35, 35))
        rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]], np.float32)
        points = (_HOUSE * r) @ rot.T + np.array(centre, np.float32)
        m = np.zeros((h, w), np.uint8)
        cv2.fillPoly(m, [np.round(points[_HOUSE_POLYGON]).astype(np.int32)], 1)
        paint_object(rng, image, m.astype(bool), _shape_colour(rng, None), r)
        owner[m.astype(bool)] = len(houses)
        houses.append((m.astype(bool), points))
    out = []
    for i, (whole, points) in enumerate(houses):
        px = np.clip(np.round(points).astype(int), 0, [w - 1, h - 1])
        visible = owner[px[:, 1], px[:, 0]] == i
        keypoints = np.concatenate([points, np.where(visible, 2, 1)[:, None]], 1).astype(np.float32)
        out.append((whole, owner == i, keypoints))
    return finish_image(rng, image), out


def render_cls_sample(rng: np.random.Generator, cls: int, size_range: tuple[int, int] = SIZE_RANGE) -> np.ndarray:
    """An image with one shape of class ``cls`` near the centre."""
    h, w = (int(v) for v in rng.integers(size_range[0], size_range[1] + 1, size=2))
    image = _background(rng, h, w)
    r = rng.uniform(0.22, 0.34) * min(h, w)
    cx, cy = w / 2 + rng.uniform(-0.15, 0.15) * w, h / 2 + rng.uniform(-0.15, 0.15) * h
    m = shape_mask(SHAPE_CLASS_NAMES[cls], h, w, cx, cy, r, rng.uniform(0, 360))
    paint_object(rng, image, m, _shape_colour(rng, cls), r)
    return finish_image(rng, image)


def _det_annotations(image_id: int, objects: list[tuple[int, np.ndarray]]) -> list[dict[str, Any]]:
    anns = []
    for cls, mask in objects:
        box, area = coco_box(mask), int(mask.sum())
        if box is not None and area >= 16:  # an object hidden almost entirely is not annotated
            anns.append({"image_id": image_id, "category_id": cls + 1, "bbox": box, "area": float(area),
                         "iscrowd": 0})
    return anns


def _kp_annotations(image_id: int, houses: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> list[dict[str, Any]]:
    # The whole house's box and area: a hidden corner stays inside the box.
    return [{"image_id": image_id, "category_id": 1, "bbox": coco_box(whole), "area": float(whole.sum()),
             "iscrowd": 0, "num_keypoints": int((keypoints[:, 2] > 0).sum()),
             "keypoints": [round(float(v), 2) for v in keypoints.reshape(-1)]} for whole, _, keypoints in houses]


_COCO_DEMOS: dict[str, dict[str, Any]] = {
    "det": dict(render=render_det_sample, annotate=_det_annotations, file="instances",
                description="antgo demo: shapes with boxes",
                categories=[{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(SHAPE_CLASS_NAMES)]),
    "kp": dict(render=render_kp_sample, annotate=_kp_annotations, file="person_keypoints",
               description="antgo demo: houses with corner keypoints",
               categories=[{"id": 1, "name": "house", "supercategory": "shape", "keypoints": list(KEYPOINT_NAMES),
                            "skeleton": [list(e) for e in SKELETON]}]),
}


def _write_coco_split(task: str, root: Path, split: str, n: int, seed: int) -> None:
    spec = _COCO_DEMOS[task]
    (root / f"{split}2017").mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for k in range(n):
        image, objects = spec["render"](_rng(seed, task, split, k))
        info = {"id": _SPLIT_OFFSET[split] + k + 1, "height": int(image.shape[0]), "width": int(image.shape[1])}
        info["file_name"] = f"{info['id']:012d}.jpg"
        write_rgb_jpeg(root / f"{split}2017" / info["file_name"], image, quality=92)
        images.append(info)
        anns += [{"id": len(anns) + i + 1, **a} for i, a in enumerate(spec["annotate"](info["id"], objects))]
    write_coco_json(root / "annotations" / f"{spec['file']}_{split}2017.json", images, anns, spec["categories"],
                    spec["description"])


def _write_cls_split(root: Path, split: str, n: int, seed: int) -> None:
    for name in SHAPE_CLASS_NAMES:
        (root / split / name).mkdir(parents=True, exist_ok=True)
    for k in range(n):
        cls = k % len(SHAPE_CLASS_NAMES)  # balanced classes
        image = render_cls_sample(_rng(seed, "cls", split, k), cls)
        write_rgb_jpeg(root / split / SHAPE_CLASS_NAMES[cls] / f"{k:05d}.jpg", image, quality=92)
    write_ids(root / "class_names.txt", SHAPE_CLASS_NAMES)


def _expected_files(task: str, counts: Mapping[str, int]) -> list[str]:
    if task == "cls":
        return [f"{s}/{SHAPE_CLASS_NAMES[k % len(SHAPE_CLASS_NAMES)]}/{k:05d}.jpg" for s, n in counts.items()
                for k in range(n)] + ["class_names.txt"]
    ann = "instances" if task == "det" else "person_keypoints"
    return [f"annotations/{ann}_{s}2017.json" for s in counts] + [
        f"{s}2017/{_SPLIT_OFFSET[s] + k + 1:012d}.jpg" for s, n in counts.items() for k in range(n)]


_WRITERS: dict[str, Callable[[Path, str, int, int], None]] = {
    "det": functools.partial(_write_coco_split, "det"), "kp": functools.partial(_write_coco_split, "kp"),
    "cls": _write_cls_split}
_LAYOUTS = {"det": "COCO2017 DETECTION", "kp": "COCO2017 KEYPOINTS", "cls": "ImageFolder"}


def _manifest(task: str, seed: int, counts: Mapping[str, int]) -> dict[str, Any]:
    out = {"version": VERSION, "task": task, "seed": int(seed), "counts": dict(counts),
           "size_range": list(SIZE_RANGE), "layout": _LAYOUTS[task]}
    if task == "kp":
        out.update(keypoints=list(KEYPOINT_NAMES), skeleton=[list(e) for e in SKELETON],
                   flip_pairs=[list(p) for p in FLIP_PAIRS], class_names=["house"])
    else:
        out["class_names"] = list(SHAPE_CLASS_NAMES)
    return out


def _is_complete(root: Path, manifest: dict[str, Any], expected: list[str]) -> bool:
    try:
        recorded = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    recorded.pop("seconds", None)
    return recorded == manifest and all((root / p).is_file() for p in expected)


def _make(task: str, root: str | Path, seed: int, counts: Mapping[str, int] | None, force: bool) -> Path:
    root = Path(root)
    counts = dict(COUNTS[task] if counts is None else counts)
    unknown = sorted(set(counts) - set(_SPLIT_OFFSET))
    if unknown:
        raise ValueError(f"demo {task}: counts has unknown splits {unknown}; use {sorted(_SPLIT_OFFSET)}")
    manifest = _manifest(task, seed, counts)
    if not force and _is_complete(root, manifest, _expected_files(task, counts)):
        logger.info("demo %s data set already complete in %s", task, root)
        return root
    start = time.perf_counter()
    root.mkdir(parents=True, exist_ok=True)
    (root / MANIFEST).unlink(missing_ok=True)  # an interrupted run must not look complete
    for split, n in counts.items():
        _WRITERS[task](root, split, int(n), seed)
    seconds = time.perf_counter() - start
    (root / MANIFEST).write_text(json.dumps({**manifest, "seconds": round(seconds, 2)}, indent=1))
    logger.info("demo %s data set written to %s in %.1f s (%s)", task, root, seconds, counts)
    return root


def make_demo_det(root: str | Path, seed: int = 0, counts: Mapping[str, int] | None = None,
                  force: bool = False) -> Path:
    """Shapes with boxes in COCO layout under ``root`` (read with ``COCO2017``, task_type='DETECTION').

    Default ``counts`` 300 train + 100 val images of 96-128 px per side; classes ``SHAPE_CLASS_NAMES``
    (category ids 1-4). Returns ``root``; idempotent unless ``force``.
    """
    return _make("det", root, seed, counts, force)


def make_demo_kp(root: str | Path, seed: int = 0, counts: Mapping[str, int] | None = None,
                 force: bool = False) -> Path:
    """Houses with 5 corner keypoints in COCO keypoints layout (``COCO2017``, task_type='KEYPOINTS').

    One house per image (radius 25-38% of the short side, turned up to 35 degrees, every corner inside
    the image); its box and area are the whole house's, so a corner hidden by a distractor (visibility 1)
    is still inside the box. ``FLIP_PAIRS`` are the left/right pairs for ``RandomFlipImage(swap_ids=...)``.
    """
    return _make("kp", root, seed, counts, force)


def make_demo_cls(root: str | Path, seed: int = 0, counts: Mapping[str, int] | None = None,
                  force: bool = False) -> Path:
    """Shape classification in an ``ImageFolder`` tree: ``root/{train,val}/<class_name>/*.jpg``, balanced."""
    return _make("cls", root, seed, counts, force)


DEMO_MAKERS: dict[str, Callable[..., Path]] = {"seg": make_demo_voc, "det": make_demo_det, "kp": make_demo_kp,
                                               "cls": make_demo_cls}


def make_demo(task: str, root: str | Path, seed: int = 0, force: bool = False) -> Path:
    """The embedded demo set of ``task`` ('seg', 'det', 'kp' or 'cls') under ``root``."""
    if task not in DEMO_MAKERS:
        raise ValueError(f"unknown demo task {task!r}; use one of {sorted(DEMO_MAKERS)}")
    return DEMO_MAKERS[task](root, seed=seed, force=force)


def make_voc_det_tree(root: str | Path, splits: Mapping[str, int] | None = None, seed: int = 0,
                      difficult_fraction: float = 0.2) -> Path:
    """A small VOC 2012 detection tree under ``root/VOCdevkit/VOC2012`` (``Pascal2012`` task_type='DETECTION').

    ``splits`` ids per split (default train 4, val 2) in ``ImageSets/Main``; classes ``SHAPE_CLASS_NAMES``
    in ``class_names.txt``; each object is ``difficult`` with probability ``difficult_fraction``.
    """
    root = Path(root)
    voc = root / "VOCdevkit" / "VOC2012"
    (voc / "JPEGImages").mkdir(parents=True, exist_ok=True)
    splits = dict(splits if splits is not None else {"train": 4, "val": 2})
    for split, n in splits.items():
        ids = [f"{2007 + list(_SPLIT_OFFSET).index(split)}_{k:06d}" for k in range(int(n))]
        for k, sid in enumerate(ids):
            rng = _rng(seed, "voc_det", split, k)
            image, objects = render_det_sample(rng, size_range=(48, 64))
            write_rgb_jpeg(voc / "JPEGImages" / f"{sid}.jpg", image)
            boxes = [(cls, coco_box(m)) for cls, m in objects if m.any()]
            write_voc_xml(voc / "Annotations" / f"{sid}.xml", f"{sid}.jpg", image.shape[:2], [
                {"name": SHAPE_CLASS_NAMES[cls], "box": (b[0], b[1], b[0] + b[2], b[1] + b[3]),
                 "difficult": bool(rng.random() < difficult_fraction)} for cls, b in boxes])
        write_ids(voc / "ImageSets" / "Main" / f"{split}.txt", ids)
    write_ids(voc / "class_names.txt", SHAPE_CLASS_NAMES)
    return root
