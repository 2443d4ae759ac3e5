"""Keypoint metrics: ``KeypointAP`` (COCO OKS AP through pycocotools) and ``PCK``, streamed per sample.

Ground truth per sample: ``joints2d`` (M, K, 3) = x, y, visibility (0 = not labelled, >0 = labelled) in pixels
and ``bboxes`` (M, 4) xyxy (the object scale). Predictions: ``pred_joints2d`` (N, K, 3) = x, y, confidence.
"""
from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import numpy as np

from antgo.metrics._coco import coco_ground_truth, run_cocoeval, sample_field, xyxy_to_xywh
from antgo.metrics.base import BaseMetric
from antgo.registry import METRICS

logger = logging.getLogger(__name__)

COCO_PERSON_SIGMAS = (0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107,
                      0.087, 0.087, 0.089, 0.089)


class _KeypointStore(BaseMetric):
    """Shared streaming state: per image the gt joints, gt boxes and predicted joints."""

    def __init__(self, pred_key: str = "pred_joints2d", gt_keys: Sequence[str] = ("joints2d", "bboxes"),
                 area_key: str | None = None) -> None:
        if len(gt_keys) != 2:
            raise ValueError(f"{type(self).__name__}: gt_keys names (joints, boxes), got {gt_keys!r}")
        self.pred_key = pred_key
        self.gt_keys = tuple(gt_keys)
        self.area_key = area_key
        self.reset()

    def keys(self) -> dict[str, list[str]]:
        return {"pred": [self.pred_key], "gt": list(self.gt_keys) + ([self.area_key] if self.area_key else [])}

    def reset(self) -> None:
        self.images: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.areas: list[np.ndarray] = []  # object areas (the OKS scale): ``area_key`` or the box area

    def update(self, preds: Mapping[str, Any], gts: Mapping[str, Any]) -> None:
        owner = type(self).__name__
        pred = sample_field(preds, self.pred_key, "preds", owner)
        joints, boxes = (sample_field(gts, k, "gts", owner) for k in self.gt_keys)
        if not len(pred) == len(joints) == len(boxes):
            raise ValueError(f"{owner}: {len(pred)} predictions, {len(joints)} joints2d, {len(boxes)} bboxes")
        areas = sample_field(gts, self.area_key, "gts", owner) if self.area_key else [None] * len(boxes)
        for p, j, b, area in zip(pred, joints, boxes, areas):
            j = np.asarray(j, np.float64)
            k = j.shape[-2] if j.ndim >= 2 else 0
            j = j.reshape(-1, k, 3) if j.size else np.zeros((0, k, 3))
            p = np.asarray(p, np.float64)
            p = p.reshape(-1, p.shape[-2], 3) if p.size else np.zeros((0, k, 3))
            b = np.asarray(b, np.float64).reshape(-1, 4)
            if len(b) != len(j):
                raise ValueError(f"{owner}: sample {len(self.images)} has {len(j)} joint sets but {len(b)} boxes")
            if len(p) and p.shape[1] != k and k:
                raise ValueError(f"{owner}: sample {len(self.images)}: {p.shape[1]} predicted keypoints, {k} in gt")
            self.images.append((j, b, p))
            box_area = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
            self.areas.append(box_area if area is None else np.asarray(area, np.float64).reshape(-1))


@METRICS.register_module()
class KeypointAP(_KeypointStore):
    """COCO keypoint AP (object keypoint similarity) through pycocotools.

    OKS uses the object area as the scale (``area_key``, e.g. COCO2017's ``'areas'`` = the segment area as
    COCO uses; default the ground-truth box area) and ``sigmas`` per keypoint (default: COCO's for 17
    keypoints, else 0.05 for each). The instance score is the mean predicted confidence. Reports ``kp_AP``
    (AP@OKS[.5:.95]), ``kp_AP_50``, ``kp_AP_75`` and ``kp_AR``.
    """

    def __init__(self, sigmas: Sequence[float] | None = None, pred_key: str = "pred_joints2d",
                 gt_keys: Sequence[str] = ("joints2d", "bboxes"), area_key: str | None = None) -> None:
        super().__init__(pred_key, gt_keys, area_key)
        self.sigmas = None if sigmas is None else np.asarray(sigmas, np.float64)

    def _sigmas(self, k: int) -> np.ndarray:
        if self.sigmas is not None:
            if len(self.sigmas) != k:
                raise ValueError(f"KeypointAP: {len(self.sigmas)} sigmas for {k} keypoints")
            return self.sigmas
        return np.asarray(COCO_PERSON_SIGMAS if k == 17 else [0.05] * k, np.float64)

    def compute(self) -> dict[str, float]:
        result = {"kp_AP": 0.0, "kp_AP_50": 0.0, "kp_AP_75": 0.0, "kp_AR": 0.0}
        k = next((j.shape[1] for j, _, _ in self.images if j.shape[1]), 0)
        images, annotations, detections = [], [], []
        for image_id, ((joints, boxes, pred), areas) in enumerate(zip(self.images, self.areas), 1):
            images.append({"id": image_id})
            for j, box, area in zip(joints, xyxy_to_xywh(boxes), areas):
                visible = int((j[:, 2] > 0).sum())
                flat = np.concatenate([j[:, :2], (j[:, 2:] > 0) * 2.0], axis=1).reshape(-1)
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1,
                                    "bbox": box.tolist(), "area": float(area), "iscrowd": 0,
                                    "keypoints": flat.tolist(), "num_keypoints": visible})
            for p in pred:
                flat = np.concatenate([p[:, :2], np.ones((len(p), 1))], axis=1).reshape(-1)
                detections.append({"image_id": image_id, "category_id": 1, "keypoints": flat.tolist(),
                                   "score": float(np.mean(p[:, 2]))})
        if not annotations or not k:
            return result
        evaluator = run_cocoeval(coco_ground_truth(images, annotations, [1]), detections, "keypoints",
                                 sigmas=self._sigmas(k))
        if evaluator is not None:
            for key, idx in (("kp_AP", 0), ("kp_AP_50", 1), ("kp_AP_75", 2), ("kp_AR", 5)):
                result[key] = max(float(evaluator.stats[idx]), 0.0)
        logger.info("KeypointAP over %d images: AP %.4f", len(self.images), result["kp_AP"])
        return result


@METRICS.register_module()
class PCK(_KeypointStore):
    """Percentage of correct keypoints: a labelled keypoint is correct when the prediction lies within
    ``thr × max(box width, box height)`` of it. Ground-truth instances and predictions pair up greedily, the
    smallest mean distance over labelled keypoints first (a missing prediction counts every keypoint wrong).
    Reports ``pck`` (over all labelled keypoints), ``pck_<k>`` per keypoint index and ``mean_dist_px``.
    """

    def __init__(self, thr: float = 0.1, pred_key: str = "pred_joints2d",
                 gt_keys: Sequence[str] = ("joints2d", "bboxes")) -> None:
        if not thr > 0:
            raise ValueError(f"PCK: thr must be > 0, got {thr}")
        super().__init__(pred_key, gt_keys)
        self.thr = float(thr)

    @staticmethod
    def _match(joints: np.ndarray, pred: np.ndarray) -> list[np.ndarray | None]:
        """Greedy matching on the mean distance over labelled keypoints, closest pair first."""
        cost = np.full((len(joints), len(pred)), np.inf)
        for g, j in enumerate(joints):
            vis = j[:, 2] > 0
            if vis.any():
                for i, p in enumerate(pred):
                    cost[g, i] = np.linalg.norm(p[vis, :2] - j[vis, :2], axis=1).mean()
        matched: list[np.ndarray | None] = [None] * len(joints)
        while cost.size and np.isfinite(cost).any():
            g, i = np.unravel_index(int(np.argmin(cost)), cost.shape)
            matched[g] = pred[i]
            cost[g, :] = np.inf
            cost[:, i] = np.inf
        return matched

    def compute(self) -> dict[str, float]:
        k = next((j.shape[1] for j, _, _ in self.images if j.shape[1]), 0)
        correct, labelled, dist_sum, dist_n = np.zeros(k), np.zeros(k), 0.0, 0
        for joints, boxes, pred in self.images:
            for j, box, p in zip(joints, boxes, self._match(joints, pred)):
                vis = j[:, 2] > 0
                labelled += vis
                if p is None:
                    continue
                scale = max(box[2] - box[0], box[3] - box[1], 1e-6)
                dist = np.linalg.norm(p[:, :2] - j[:, :2], axis=1)
                correct += vis & (dist <= self.thr * scale)
                dist_sum += float(dist[vis].sum())
                dist_n += int(vis.sum())
        result = {"pck": float(correct.sum() / labelled.sum()) if labelled.sum() else 0.0,
                  "mean_dist_px": dist_sum / dist_n if dist_n else float("nan")}
        result.update({f"pck_{i}": float(correct[i] / labelled[i]) if labelled[i] else float("nan") for i in range(k)})
        logger.info("PCK@%.2f over %d images: %.4f", self.thr, len(self.images), result["pck"])
        return result
