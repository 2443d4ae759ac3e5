"""Pre- and post-processing driven by the ONNX metadata (numpy + OpenCV only: no torch)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np


def resize_for_input(image: np.ndarray, meta: Mapping[str, Any]) -> np.ndarray:
    """``image`` resized as the training pipeline did (``resize.policy``: stretch or short_side)."""
    resize = meta.get("resize") or {"policy": "stretch", "size": meta["input_size"]}
    h, w = image.shape[:2]
    if resize.get("policy") == "short_side":
        ratio = resize["short_size"] / min(h, w)
        if resize.get("max_size"):
            ratio = min(ratio, resize["max_size"] / max(h, w))
        size = (max(1, round(w * ratio)), max(1, round(h * ratio)))
    else:
        size = tuple(int(v) for v in resize.get("size") or meta["input_size"])
    return cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)


def preprocess(image: np.ndarray, meta: Mapping[str, Any]) -> np.ndarray:
    """An RGB ``uint8`` ``(H, W, 3)`` image → the network input ``(1, 3, h, w)`` float32."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"predict: expected an RGB image (H, W, 3), got shape {image.shape}")
    if str(meta.get("colour_order", "RGB")).upper() == "BGR":
        image = image[:, :, ::-1]
    x = resize_for_input(image, meta).astype(np.float32) * float(meta.get("pixel_scale", 1.0))
    x = (x - np.asarray(meta.get("mean", 0.0), np.float32)) / np.asarray(meta.get("std", 1.0), np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _segmentation(scores: np.ndarray, meta: Mapping[str, Any], image_hw: tuple[int, int],
                  input_hw: tuple[int, int]) -> dict[str, Any]:
    chw = scores[0].astype(np.float32)
    hwc = cv2.resize(chw.transpose(1, 2, 0), (input_hw[1], input_hw[0]), interpolation=cv2.INTER_LINEAR)
    labels = (hwc.argmax(-1) if hwc.ndim == 3 else np.zeros(input_hw, np.int64)).astype(np.uint8)
    mask = cv2.resize(labels, (image_hw[1], image_hw[0]), interpolation=cv2.INTER_NEAREST)
    names = list(meta.get("class_names") or [])
    counts = np.bincount(mask.reshape(-1), minlength=chw.shape[0])
    fractions = {(names[i] if i < len(names) else str(i)): round(float(c) / mask.size, 6)
                 for i, c in enumerate(counts) if c}
    return {"task": "segmentation", "mask": mask, "class_fractions": fractions}


def _classification(scores: np.ndarray, meta: Mapping[str, Any], top_k: int = 5) -> dict[str, Any]:
    probs = _softmax(scores[0].astype(np.float64).reshape(-1), 0)
    names = list(meta.get("class_names") or [])
    order = np.argsort(-probs)[:top_k]
    return {"task": "classification",
            "top": [{"class": names[i] if i < len(names) else str(i), "index": int(i),
                     "probability": round(float(probs[i]), 6)} for i in order]}


def postprocess(outputs: Sequence[np.ndarray], meta: Mapping[str, Any], image_hw: tuple[int, int],
                input_hw: tuple[int, int]) -> dict[str, Any]:
    """Raw network outputs → a prediction in original-image pixels (``mask`` for segmentation)."""
    first = np.asarray(outputs[0])
    task = meta.get("task")
    if task == "segmentation" or (task in (None, "unknown") and first.ndim == 4):
        return _segmentation(first, meta, image_hw, input_hw)
    if task == "classification" or (task in (None, "unknown") and first.ndim == 2):
        return _classification(first, meta)
    return {"task": task, "outputs": {name: list(np.shape(o)) for name, o in
                                      zip(meta.get("output_names") or range(len(outputs)), outputs)}}
