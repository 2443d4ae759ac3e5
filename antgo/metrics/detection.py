"""``DetMAP``: COCO-style box AP through pycocotools, plus the Pascal VOC AP@0.5, streamed per sample."""
from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import numpy as np

from antgo.metrics._coco import coco_ground_truth, per_class_ap, per_sample, run_cocoeval, sample_field, xyxy_to_xywh
from antgo.metrics.base import BaseMetric
from antgo.registry import METRICS

logger = logging.getLogger(__name__)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of xyxy boxes ``a`` (N, 4) and ``b`` (M, 4) (continuous coordinates, as pycocotools)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(axis=1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def split_box_scores(boxes: Any, scores: Any = None, owner: str = "detections", required: bool = True
                     ) -> tuple[np.ndarray, np.ndarray | None]:
    """One sample's detections as (N, 4) xyxy boxes and (N,) scores, in either task form: ``scores`` (the
    ``score`` prediction) when given, else the 5th column of (N, 5) boxes (the design document's
    ``{'box', 'label'}`` form). Without either, an error, or ``None`` scores when not ``required``."""
    array = np.asarray(boxes)
    width = array.shape[-1] if array.ndim >= 2 else 4  # 1-D: one flattened box, or none
    if width not in (4, 5):
        raise ValueError(f"{owner}: 'box' has shape {array.shape}; expected (N, 4) xyxy boxes or (N, 5) with the "
                         f"score as 5th column")
    array = array.reshape(-1, width)
    if scores is not None:
        return array[:, :4], np.asarray(scores).reshape(-1)
    if width == 5:
        return array[:, :4], array[:, 4]
    if not required:
        return array, None
    if np.ndim(boxes) < 2 and len(array) == 0:  # an empty 1-D array: no detection, of either form
        return array, np.zeros(0, array.dtype)
    raise ValueError(f"{owner}: the detections have no scores: return 'score' (N,) beside 'box' (N, 4), or 'box' "
                     f"(N, 5) whose 5th column is the score, from forward_test (and onnx_postprocess)")


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the interpolated PR curve at every recall point (VOC 2010 and later)."""
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]
    steps = np.nonzero(r[1:] != r[:-1])[0]
    return float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1]))


@METRICS.register_module()
class DetMAP(BaseMetric):
    """Box average precision.

    Predictions (``forward_test``), either task form: the design document's ``box`` (per sample (N, 5): xyxy
    pixels and the score) and ``label`` (N,), or ``box`` (N, 4) with ``score`` (N,) beside it (``CenterNet``);
    ``pred_keys`` names (boxes, labels) or (boxes, scores, labels); with two names the score is read from
    ``score`` when the predictions have it, else from the 5th box column.
    Ground truth: ``bboxes`` (M, 4) xyxy pixels, ``labels`` (M,), and, with ``ignore_key`` (``'iscrowd'`` for
    COCO, ``'difficult'`` for Pascal), a per-box flag: such boxes are COCO crowd regions (a detection on them is
    neither a hit nor a false positive) and VOC "difficult" boxes. ``area_key`` (COCO2017's ``'areas'``) gives the
    object areas for COCO's small/medium/large ranges (default: the box areas).

    Reports ``mAP`` (AP@[.5:.95]), ``mAP_50``, ``mAP_75``, ``mAP_s/m/l``, ``AR_100`` (pycocotools' numbers),
    ``AP_<class>`` per class (AP@[.5:.95], NaN for a class without ground truth) and, with ``voc=True``,
    ``voc_mAP_50`` (VOC all-point AP at IoU 0.5). Labels are the category ids; ``class_num`` fixes the class
    list (default: every label seen in the ground truth).
    """

    def __init__(self, class_num: int | None = None, class_names: Sequence[str] | None = None,
                 ignore_key: str | None = None, voc: bool = False, max_dets: int = 100, area_key: str | None = None,
                 pred_keys: Sequence[str] = ("box", "label"), gt_keys: Sequence[str] = ("bboxes", "labels"),
                 ) -> None:
        if class_names is not None and class_num is not None and len(class_names) != class_num:
            raise ValueError(f"DetMAP: {len(class_names)} class_names for class_num={class_num}")
        if len(pred_keys) not in (2, 3) or len(gt_keys) != 2:
            raise ValueError(f"DetMAP: pred_keys {list(pred_keys)}, gt_keys {list(gt_keys)}: pred_keys names (boxes, "
                             f"labels) or (boxes, scores, labels), gt_keys names (boxes, labels)")
        self.class_num = class_num if class_num is None else int(class_num)
        self.class_names = list(class_names) if class_names is not None else None
        self.ignore_key = ignore_key
        self.area_key = area_key
        self.voc = bool(voc)
        self.max_dets = int(max_dets)
        self.pred_keys = tuple(pred_keys)
        self.score_key = self.pred_keys[1] if len(self.pred_keys) == 3 else "score"
        self.gt_keys = tuple(gt_keys)
        self.reset()

    def keys(self) -> dict[str, list[str]]:
        gt = list(self.gt_keys) + [k for k in (self.ignore_key, self.area_key) if k]
        return {"pred": list(self.pred_keys), "gt": gt}

    def reset(self) -> None:
        # one tuple per image: (gt boxes, gt labels, gt ignore flags, det boxes, det scores, det labels)
        self.images: list[tuple[np.ndarray, ...]] = []
        self.pr_curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.areas: list[np.ndarray | None] = []  # per image: ``area_key`` values (COCO's area ranges), or None

    def update(self, preds: Mapping[str, Any], gts: Mapping[str, Any]) -> None:
        boxes, labels = (sample_field(preds, k, "preds", "DetMAP") for k in (self.pred_keys[0], self.pred_keys[-1]))
        scores = per_sample(preds[self.score_key]) if self.score_key in preds else [None] * len(boxes)
        gt_boxes, gt_labels = (sample_field(gts, k, "gts", "DetMAP") for k in self.gt_keys)
        ignore = sample_field(gts, self.ignore_key, "gts", "DetMAP") if self.ignore_key else [None] * len(gt_boxes)
        areas = sample_field(gts, self.area_key, "gts", "DetMAP") if self.area_key else [None] * len(gt_boxes)
        if not len(boxes) == len(scores) == len(labels) == len(gt_boxes) == len(gt_labels) == len(ignore):
            raise ValueError(f"DetMAP: batch sizes differ: {len(boxes)} box, {len(scores)} score, {len(labels)} "
                             f"label predictions, {len(gt_boxes)} bboxes, {len(gt_labels)} labels")
        for i in range(len(boxes)):
            gb = np.asarray(gt_boxes[i], np.float64).reshape(-1, 4)
            gl = np.asarray(gt_labels[i]).reshape(-1).astype(np.int64)
            gi = (np.zeros(len(gb), bool) if ignore[i] is None else np.asarray(ignore[i]).reshape(-1).astype(bool))
            db, ds = (v.astype(np.float64) for v in split_box_scores(boxes[i], scores[i], "DetMAP"))
            dl = np.asarray(labels[i]).reshape(-1).astype(np.int64)
            if len(gl) != len(gb) or len(gi) != len(gb) or not len(db) == len(ds) == len(dl):
                raise ValueError(f"DetMAP: sample {len(self.images)}: {len(gb)} gt boxes, {len(gl)} labels, "
                                 f"{len(gi)} ignore flags; {len(db)} boxes, {len(ds)} scores, {len(dl)} labels")
            keep = dl >= 0  # padded predictions carry label -1
            self.images.append((gb, gl, gi, db[keep], ds[keep], dl[keep]))
            self.areas.append(None if areas[i] is None else np.asarray(areas[i], np.float64).reshape(-1))

    def _category_ids(self) -> list[int]:
        if self.class_num is not None:
            return list(range(self.class_num))
        return sorted({int(c) for img in self.images for c in img[1]})

    def _coco(self, cats: list[int]) -> tuple[Any, list[dict]]:
        images, annotations, detections = [], [], []
        for image_id, ((gb, gl, gi, db, ds, dl), areas) in enumerate(zip(self.images, self.areas), 1):
            images.append({"id": image_id})
            boxes = xyxy_to_xywh(gb)
            areas = boxes[:, 2] * boxes[:, 3] if areas is None else areas
            for box, cat, crowd, area in zip(boxes, gl, gi, areas):
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(cat),
                                    "bbox": box.tolist(), "area": float(area), "iscrowd": int(crowd)})
            for box, score, cat in zip(xyxy_to_xywh(db), ds, dl):
                detections.append({"image_id": image_id, "category_id": int(cat), "bbox": box.tolist(),
                                   "score": float(score)})
        return coco_ground_truth(images, annotations, cats), detections

    def _name(self, cat: int) -> str:
        return self.class_names[cat] if self.class_names and 0 <= cat < len(self.class_names) else str(cat)

    def compute(self) -> dict[str, float]:
        cats = self._category_ids()
        result = {k: 0.0 for k in ("mAP", "mAP_50", "mAP_75", "mAP_s", "mAP_m", "mAP_l", "AR_100")}
        per_class = {c: float("nan") if not any((img[1] == c).any() for img in self.images) else 0.0 for c in cats}
        if self.images and cats:
            gt, detections = self._coco(cats)
            evaluator = run_cocoeval(gt, detections, "bbox", max_dets=[1, 10, self.max_dets])
            if evaluator is not None:
                stats = evaluator.stats
                for key, idx in (("mAP", 0), ("mAP_50", 1), ("mAP_75", 2), ("mAP_s", 3), ("mAP_m", 4), ("mAP_l", 5),
                                 ("AR_100", 8)):
                    # -1: no ground truth (in that area range): NaN, as a class without ground truth, so that it
                    # is not read as a model that finds none of them
                    result[key] = float(stats[idx]) if stats[idx] >= 0 else (float("nan") if idx in (3, 4, 5) else 0.0)
                per_class = per_class_ap(evaluator, cats)
                # precision over COCO's 101 recall points at IoU 0.5 per class (the pipeline plots it)
                precision = evaluator.eval["precision"][0, :, :, 0, -1]
                self.pr_curves = {self._name(c): (np.asarray(evaluator.params.recThrs), precision[:, k])
                                  for k, c in enumerate(evaluator.params.catIds) if (precision[:, k] > -1).all()}
        result.update({f"AP_{self._name(c)}": v for c, v in per_class.items()})
        if self.voc:
            result["voc_mAP_50"] = self.voc_map(cats)
        logger.info("DetMAP over %d images: mAP %.4f, mAP_50 %.4f", len(self.images), result["mAP"],
                    result["mAP_50"])
        return result

    def voc_map(self, cats: Sequence[int], iou_threshold: float = 0.5) -> float:
        """Mean over classes with (non-ignored) ground truth of the VOC all-point AP at ``iou_threshold``."""
        aps = [ap for ap in (self.voc_class_ap(c, iou_threshold) for c in cats) if not np.isnan(ap)]
        return float(np.mean(aps)) if aps else 0.0

    def voc_class_ap(self, cat: int, iou_threshold: float = 0.5) -> float:
        """VOC AP of one class: detections sorted by score, each matched to the best-overlapping unmatched
        ground truth; a match to an ignored ("difficult") box counts as neither hit nor false positive."""
        records, n_pos = [], 0
        for image_index, (gb, gl, gi, db, ds, dl) in enumerate(self.images):
            n_pos += int(((gl == cat) & ~gi).sum())
            for score, box in zip(ds[dl == cat], db[dl == cat]):
                records.append((-score, image_index, box))
        if n_pos == 0:
            return float("nan")
        records.sort(key=lambda r: r[0])
        used = [np.zeros(int((img[1] == cat).sum()), bool) for img in self.images]
        tp, fp = np.zeros(len(records)), np.zeros(len(records))
        for d, (_, image_index, box) in enumerate(records):
            gb, gl, gi = self.images[image_index][:3]
            mask = gl == cat
            ious = box_iou(box[None], gb[mask])[0] if mask.any() else np.zeros(0)
            best = int(ious.argmax()) if ious.size else -1
            if best < 0 or ious[best] < iou_threshold:
                fp[d] = 1
            elif gi[mask][best]:
                continue  # difficult: ignored
            elif not used[image_index][best]:
                used[image_index][best] = True
                tp[d] = 1
            else:
                fp[d] = 1  # duplicate
        tp, fp = np.cumsum(tp), np.cumsum(fp)
        recall = tp / n_pos
        precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        return voc_ap(recall, precision)
