"""Numpy decodes of the raw ONNX head tensors (no torch), the same arithmetic as the models' torch post-process.

- detection: :func:`decode_centernet` mirrors ``antgo.models.detectors.postprocess.decode_centernet``;
- keypoints: :func:`decode_heatmaps` mirrors ``antgo.models.heads.heatmap_head.decode_heatmaps``;
- classification: :func:`class_probabilities` (softmax when the file says the output is logits; ``auto`` for
  models whose export is not known: only the rows that are not probabilities yet).

All results are in network-input pixels; ``antgo.predict.processing`` maps them back to the image. The
parameters come from the file's ``decode`` metadata (``antgo.predict.metadata``); a test checks each decode
against the torch post-process on the same tensors.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

CENTERNET_DEFAULTS = {"topk": 100, "score_thr": 0.05, "nms_iou": 0.6, "max_per_img": 100}


def _max_pool3x3(x: np.ndarray) -> np.ndarray:
    """3x3 stride-1 max-pool with -inf padding over the last two axes (``F.max_pool2d(x, 3, 1, 1)``)."""
    padded = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(1, 1), (1, 1)], constant_values=-np.inf)
    h, w = x.shape[-2:]
    return np.max([padded[..., dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)], axis=0)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of xyxy boxes ``a`` (N, 4) and ``b`` (M, 4)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(axis=1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, np.float32(1e-12))


def batched_nms(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices kept by greedy class-wise NMS, highest score first."""
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    # each class shifted into its own range so boxes of different classes never overlap
    shifted = boxes + labels.astype(boxes.dtype)[:, None] * (boxes.max() - boxes.min() + 1)
    order = np.argsort(-scores, kind="stable")
    overlaps = box_iou(shifted[order], shifted[order]) > iou_threshold
    suppressed = np.zeros(len(order), bool)
    keep = []
    for i in range(len(order)):
        if not suppressed[i]:
            keep.append(i)
            suppressed |= overlaps[i]
    return order[np.asarray(keep, np.int64)]


def decode_centernet(heatmap: np.ndarray, wh: np.ndarray, offset: np.ndarray, input_hw: Sequence[int],
                     topk: int = 100, score_thr: float = 0.05, nms_iou: float = 0.6, max_per_img: int = 100
                     ) -> dict[str, list[np.ndarray]]:
    """Heat-map peaks → top-k → boxes in input pixels → score filter → class-wise NMS (per-sample lists)."""
    heatmap, wh, offset = (np.asarray(t, np.float32) for t in (heatmap, wh, offset))
    b, c, h, w = heatmap.shape
    stride_y, stride_x = np.float32(input_hw[0] / h), np.float32(input_hw[1] / w)
    peaks = np.where(_max_pool3x3(heatmap) == heatmap, heatmap, np.float32(0)).reshape(b, -1)
    out: dict[str, list[np.ndarray]] = {"box": [], "score": [], "label": []}
    for i in range(b):
        index = np.argsort(-peaks[i], kind="stable")[:min(topk, c * h * w)]
        scores, labels, cell = peaks[i][index], index // (h * w), index % (h * w)
        ys, xs = (cell // w).astype(np.float32), (cell % w).astype(np.float32)
        size, shift = wh[i].reshape(2, -1)[:, cell], offset[i].reshape(2, -1)[:, cell]
        cx, cy = (xs + shift[0]) * stride_x, (ys + shift[1]) * stride_y
        bw, bh = np.clip(size[0], 0, None) * stride_x, np.clip(size[1], 0, None) * stride_y
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
        boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, input_hw[1])
        boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, input_hw[0])
        keep = scores > score_thr
        kept = batched_nms(boxes[keep], scores[keep], labels[keep], nms_iou)[:max_per_img]
        out["box"].append(boxes[keep][kept])
        out["score"].append(scores[keep][kept])
        out["label"].append(labels[keep][kept])
    return out


def decode_heatmaps(heatmaps: np.ndarray, input_hw: Sequence[int]) -> np.ndarray:
    """(B, K, h, w) heat maps → (B, 1, K, 3): x, y in input pixels (log-parabola sub-pixel refinement) and peak."""
    heatmaps = np.asarray(heatmaps, np.float32)
    b, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(b, k, -1)
    index = flat.argmax(axis=2)
    score = np.take_along_axis(flat, index[..., None], 2)[..., 0]
    ys, xs = index // w, index % w
    padded = np.pad(np.log(np.maximum(heatmaps, np.float32(1e-10))), [(0, 0), (0, 0), (1, 1), (1, 1)],
                    mode="edge").reshape(b, k, -1)
    pw = w + 2

    def at(dy: int, dx: int) -> np.ndarray:
        return np.take_along_axis(padded, ((ys + 1 + dy) * pw + (xs + 1 + dx))[..., None], 2)[..., 0]

    centre = at(0, 0)
    shifts = []
    inside = ((xs > 0) & (xs < w - 1), (ys > 0) & (ys < h - 1))
    for (lo, hi), ok in zip(((at(0, -1), at(0, 1)), (at(-1, 0), at(1, 0))), inside):
        curvature = lo - 2 * centre + hi
        refine = ok & (curvature < -1e-6)
        delta = np.where(refine, 0.5 * (lo - hi) / np.minimum(curvature, np.float32(-1e-6)), np.float32(0))
        shifts.append(np.clip(delta, -0.5, 0.5))
    sy, sx = np.float32(input_hw[0] / h), np.float32(input_hw[1] / w)
    x = (xs.astype(np.float32) + shifts[0] + 0.5) * sx - 0.5
    y = (ys.astype(np.float32) + shifts[1] + 0.5) * sy - 0.5
    return np.stack([x, y, score], axis=2)[:, None].astype(np.float32)


def _is_probability_row(rows: np.ndarray, tolerance: float = 1e-4) -> np.ndarray:
    return ((rows >= -tolerance) & (rows <= 1 + tolerance)).all(axis=1) & (np.abs(rows.sum(axis=1) - 1) <= tolerance)


def class_probabilities(scores: np.ndarray, output: str = "logits") -> np.ndarray:
    """(B, C) scores → probabilities: softmax over C for ``logits``, unchanged for ``probabilities``; ``auto``
    (models whose export is not known) keeps rows that already are probabilities (all in [0, 1], summing to 1
    within 1e-4) and applies the softmax to the others."""
    x = np.asarray(scores, np.float64).reshape(len(scores), -1)
    if output == "probabilities":
        return x
    e = np.exp(x - x.max(axis=1, keepdims=True))
    softmax = e / e.sum(axis=1, keepdims=True)
    if output == "auto":
        return np.where(_is_probability_row(x)[:, None], x, softmax)
    return softmax


def decode_outputs(outputs: Sequence[np.ndarray], meta: Mapping[str, Any], input_hw: Sequence[int]
                   ) -> dict[str, np.ndarray]:
    """The first sample's prediction in input pixels from raw ONNX outputs, as the file's ``decode`` says:
    ``box``/``score``/``label`` (``centernet``), ``keypoints`` (K, 3) (``heatmap_argmax``) or ``probs`` (C,)
    (``softmax_topk``; a classification file without ``decode`` counts as ``output='auto'``)."""
    task, decode = meta.get("task"), dict(meta.get("decode") or {})
    kind = decode.get("type") or ("softmax_topk" if task == "classification" else None)
    if kind == "centernet":
        params = {k: decode.get(k, v) for k, v in CENTERNET_DEFAULTS.items()}
        result = decode_centernet(*outputs[:3], input_hw, **params)
        return {k: v[0] for k, v in result.items()}
    if kind == "heatmap_argmax":
        return {"keypoints": decode_heatmaps(outputs[0], input_hw)[0, 0]}
    if kind == "softmax_topk":
        return {"probs": class_probabilities(outputs[0], decode.get("output", "auto"))[0]}
    owner = f"model {meta['model_type']}" if meta.get("model_type") else "this file"
    raise ValueError(f"the ONNX outputs of {owner} (task {task!r}, decode {meta.get('decode')!r}) have no "
                     f"known decode. Predict with the checkpoint and the config instead, which runs the model's own "
                     f"forward_test: `antgo predict CONFIG SOURCE --checkpoint CKPT`; or, when the outputs have the "
                     f"layout of a built-in decode, describe it in the config's export.metadata (e.g. "
                     f"decode=dict(type='centernet') or dict(type='heatmap_argmax')) and export again")
