"""In-memory COCO ground truth / results and a quiet ``COCOeval`` run (pycocotools, the reference users trust).

The metrics stream per-sample boxes and keypoints into compact lists and build the COCO structures only in
``compute()``; pycocotools' progress prints go to the debug log instead of stdout.
"""
from __future__ import annotations

import contextlib
import io
import logging
from typing import Any, Mapping, Sequence

import numpy as np

logger = logging.getLogger(__name__)


def per_sample(values: Any) -> list[np.ndarray]:
    """A batch field as one array per sample: per-sample lists (the collate form of variable-length
    annotations) and batch-first arrays (``(B, N, ...)``) both work."""
    from antgo.metrics.base import to_numpy

    if isinstance(values, (list, tuple)):
        return [to_numpy(v) for v in values]
    array = to_numpy(values)
    return [array[i] for i in range(array.shape[0])]


def sample_field(data: Mapping[str, Any], key: str, what: str, owner: str) -> list[np.ndarray]:
    """``per_sample(data[key])`` with an error naming the missing key."""
    if key not in data:
        raise KeyError(f"{owner}: {what} has no key '{key}' (got {sorted(data)})")
    return per_sample(data[key])


def xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


def _quiet(fn: Any, *args: Any) -> Any:
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        result = fn(*args)
    if buffer.getvalue().strip():
        logger.debug("pycocotools: %s", buffer.getvalue().strip())
    return result


def coco_ground_truth(images: Sequence[dict], annotations: Sequence[dict], category_ids: Sequence[int]) -> Any:
    """A ``pycocotools.coco.COCO`` built from dicts (no file)."""
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = {"images": list(images), "annotations": list(annotations),
                    "categories": [{"id": int(c), "name": str(c)} for c in category_ids]}
    _quiet(coco.createIndex)
    return coco


def coco_results(gt: Any, detections: Sequence[dict]) -> Any:
    """``gt.loadRes`` for a non-empty list of detection dicts (``image_id``, ``category_id``, ``score``, ...)."""
    return _quiet(gt.loadRes, list(detections))


def run_cocoeval(gt: Any, detections: Sequence[dict], iou_type: str, sigmas: np.ndarray | None = None,
                 max_dets: Sequence[int] | None = None) -> Any | None:
    """``evaluate`` + ``accumulate`` + ``summarize``; ``None`` when there is no detection at all
    (pycocotools' ``loadRes`` cannot take an empty list; every AP is then 0)."""
    from pycocotools.cocoeval import COCOeval

    if not detections:
        return None
    dt = coco_results(gt, detections)
    evaluator = COCOeval(gt, dt, iou_type)
    if sigmas is not None:
        evaluator.params.kpt_oks_sigmas = np.asarray(sigmas, dtype=np.float64)
    if max_dets is not None:
        evaluator.params.maxDets = [int(m) for m in max_dets]
    _quiet(evaluator.evaluate)
    _quiet(evaluator.accumulate)
    _quiet(evaluator.summarize)
    return evaluator


def per_class_ap(evaluator: Any, category_ids: Sequence[int]) -> dict[int, float]:
    """AP@[.5:.95] per category (area 'all', the largest maxDets); NaN for a category without ground truth."""
    precision = evaluator.eval["precision"]  # (T, R, K, A, M); -1 where undefined
    out: dict[int, float] = {}
    for k, cat in enumerate(evaluator.params.catIds):
        p = precision[:, :, k, 0, -1]
        valid = p[p > -1]
        out[int(cat)] = float(valid.mean()) if valid.size else float("nan")
    return {int(c): out.get(int(c), float("nan")) for c in category_ids}
