"""Compare decoded predictions of two runs of one model (torch vs onnxruntime), one comparator per task form.

``compare_predictions(a, b, keys)`` runs every comparator whose prediction key appears in ``keys`` (the metrics'
``keys()['pred']`` plus what the model's post-process returns) and both prediction dicts:

- ``box`` and ``label`` (scores from ``score`` or the 5th column of (N, 5) boxes): detections are paired greedily
  by IoU within the same label; reports the fraction of detections (of the larger set) that found a partner with
  IoU >= 0.5, the mean IoU of the pairs, the largest score difference and the label agreement of the best-IoU
  pairs ignoring the label (IoU on boxes grown by half a pixel, so that identical zero-width boxes compare as
  equal);
- ``pred_joints2d``: keypoint distance in pixels (max and mean over all keypoints);
- ``pred``: top-1 class agreement;
- ``pred_segments``: pixel agreement.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from antgo.metrics._coco import per_sample
from antgo.metrics.detection import box_iou, split_box_scores

__all__ = ["compare_predictions", "prediction_failures", "PredictionStats", "COMPARATORS", "PREDICTION_THRESHOLDS"]

# Defaults (docs/tasks.md): decoded predictions of the same float32 graph agree far closer than these; the
# box-match fraction leaves room for a detection whose score sits on the threshold or ties in NMS.
PREDICTION_THRESHOLDS = {"min_box_match": 0.95, "min_box_iou": 0.99, "max_score_diff": 1e-3,
                         "min_label_agreement": 0.99, "max_keypoint_dist_px": 1.0, "max_mean_keypoint_dist_px": 0.1,
                         "min_class_agreement": 0.999, "min_pixel_agreement": 0.999}
# report entry → (threshold, True when the value must be at least the threshold)
_CHECKS = {"box_match": ("min_box_match", True), "mean_box_iou": ("min_box_iou", True),
           "max_score_diff": ("max_score_diff", False), "label_agreement": ("min_label_agreement", True),
           "max_keypoint_dist_px": ("max_keypoint_dist_px", False),
           "mean_keypoint_dist_px": ("max_mean_keypoint_dist_px", False),
           "max_keypoint_score_diff": ("max_score_diff", False),
           "class_agreement": ("min_class_agreement", True), "pixel_agreement": ("min_pixel_agreement", True)}


class PredictionStats:
    """Running sums for one comparator; ``as_dict()`` gives the report entries."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.maxima: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def add(self, name: str, total: float, count: int) -> None:
        self.sums[name] = self.sums.get(name, 0.0) + float(total)
        self.counts[name] = self.counts.get(name, 0) + int(count)

    def peak(self, name: str, value: float) -> None:
        self.maxima[name] = max(self.maxima.get(name, 0.0), float(value))

    def as_dict(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {k: (self.sums[k] / self.counts[k] if self.counts[k] else None)
                                        for k in self.sums}
        out.update(self.maxima)
        return out


def _scores_of(preds: Mapping[str, Any]) -> list[Any]:
    return per_sample(preds["score"]) if "score" in preds else [None] * len(per_sample(preds["box"]))


def _boxes(a: Mapping[str, Any], b: Mapping[str, Any], stats: PredictionStats) -> None:
    for boxes_a, boxes_b, scores_a, scores_b, labels_a, labels_b in zip(
            per_sample(a["box"]), per_sample(b["box"]), _scores_of(a), _scores_of(b),
            per_sample(a["label"]), per_sample(b["label"])):
        boxes_a, scores_a = split_box_scores(boxes_a, scores_a, "parity")
        boxes_b, scores_b = split_box_scores(boxes_b, scores_b, "parity")
        n = max(len(boxes_a), len(boxes_b))
        stats.add("detections_per_image", n, 1)  # shows whether there was anything to compare
        if n == 0:
            continue
        # padded by half a pixel: identical degenerate (zero-width) boxes, common early in training, compare as 1
        pad = np.array([-0.5, -0.5, 0.5, 0.5])
        iou = box_iou(boxes_a + pad, boxes_b + pad)
        same = labels_a.reshape(-1)[:, None] == labels_b.reshape(-1)[None, :]
        pairs = _greedy_pairs(np.where(same, iou, 0.0), 0.5)
        stats.add("box_match", len(pairs), n)
        stats.add("mean_box_iou", sum(iou[i, j] for i, j in pairs), len(pairs))
        for i, j in pairs:
            stats.peak("max_score_diff", abs(float(scores_a[i]) - float(scores_b[j])))
        # label-agnostic pairs; among equal boxes (CenterNet gives one per class at a centre) prefer the same label
        any_label = _greedy_pairs(iou + 1e-3 * same, 0.5)
        stats.add("label_agreement", sum(bool(same[i, j]) for i, j in any_label), len(any_label))


def _greedy_pairs(iou: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Highest-IoU pairs first, each box used once, IoU >= ``threshold``."""
    pairs = []
    if iou.size == 0:
        return pairs
    work = iou.copy()
    while True:
        i, j = np.unravel_index(int(np.argmax(work)), work.shape)
        if work[i, j] < threshold:
            return pairs
        pairs.append((int(i), int(j)))
        work[i, :] = -1.0
        work[:, j] = -1.0


def _keypoints(a: Mapping[str, Any], b: Mapping[str, Any], stats: PredictionStats) -> None:
    for ja, jb in zip(per_sample(a["pred_joints2d"]), per_sample(b["pred_joints2d"])):
        if ja.shape != jb.shape:
            stats.peak("max_keypoint_dist_px", float("inf"))
            continue
        dist = np.linalg.norm(ja[..., :2].astype(np.float64) - jb[..., :2].astype(np.float64), axis=-1)
        stats.add("mean_keypoint_dist_px", float(dist.sum()), dist.size)
        stats.peak("max_keypoint_dist_px", float(dist.max(initial=0.0)))
        stats.peak("max_keypoint_score_diff", float(np.abs(ja[..., 2:] - jb[..., 2:]).max(initial=0.0)))


def _top1(values: Any) -> np.ndarray:
    array = np.asarray(values)
    return array.argmax(-1) if array.ndim >= 2 else array


def _classes(a: Mapping[str, Any], b: Mapping[str, Any], stats: PredictionStats) -> None:
    ca, cb = _top1(a["pred"]), _top1(b["pred"])
    stats.add("class_agreement", float((ca == cb).sum()), ca.size)


def _segments(a: Mapping[str, Any], b: Mapping[str, Any], stats: PredictionStats) -> None:
    sa, sb = np.asarray(a["pred_segments"]), np.asarray(b["pred_segments"])
    stats.add("pixel_agreement", float((sa == sb).sum()), sa.size)


COMPARATORS: dict[str, Callable[[Mapping[str, Any], Mapping[str, Any], PredictionStats], None]] = {
    "box": _boxes, "pred_joints2d": _keypoints, "pred": _classes, "pred_segments": _segments,
}
_NEEDS = {"box": ("box", "label")}  # scores: ``score`` or the 5th box column


def compare_predictions(a: Mapping[str, Any], b: Mapping[str, Any], keys: Iterable[str],
                        stats: dict[str, PredictionStats]) -> None:
    """Add one batch's comparison to ``stats`` (comparator name → running stats), for each comparable key."""
    for key in dict.fromkeys(keys):
        fn = COMPARATORS.get(key)
        needed = _NEEDS.get(key, (key,))
        if fn is None or not all(k in a and k in b for k in needed):
            continue
        fn(a, b, stats.setdefault(key, PredictionStats()))


def prediction_failures(report: Mapping[str, Mapping[str, float | None]], thr: Mapping[str, float]) -> list[str]:
    """One message per decoded-prediction check that fails, with the measured value and the threshold."""
    failures = []
    for key, entries in report.items():
        for name, value in entries.items():
            if value is None or name not in _CHECKS:
                continue
            limit_key, at_least = _CHECKS[name]
            limit = thr[limit_key]
            if not (value >= limit if at_least else value <= limit):
                failures.append(f"predictions '{key}': {name} {value:.6g} {'<' if at_least else '>'} {limit:.6g} "
                                f"({limit_key})")
    return failures
