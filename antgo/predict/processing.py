"""Pre- and post-processing driven by the ONNX metadata (numpy + OpenCV only: no torch)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np

from antgo.predict.decode import decode_outputs


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


def _name(index: int, names: Sequence[str]) -> str:
    return str(names[index]) if 0 <= index < len(names) else str(index)


def to_image_pixels(values: np.ndarray, image_hw: Sequence[int], input_hw: Sequence[int]) -> np.ndarray:
    """x, y (and x2, y2 for boxes) in network-input pixels → original-image pixels: the recorded resize
    (stretch or short side) scales each axis by image size / input size."""
    out = np.asarray(values, np.float64).copy()
    sx, sy = image_hw[1] / input_hw[1], image_hw[0] / input_hw[0]
    out[..., 0] *= sx
    out[..., 1] *= sy
    if out.shape[-1] == 4:
        out[..., 2] *= sx
        out[..., 3] *= sy
    return out


def keypoint_instances(joints: Any) -> np.ndarray:
    """One sample's keypoints in any task form, (N, K, 3), (K, 3) or (K, 2), as (N, K, 3) x, y, score (1 where the
    model gives no score)."""
    array = np.asarray(joints, np.float64)
    if array.ndim < 2 or array.shape[-1] not in (2, 3):
        raise ValueError(f"keypoints of shape {array.shape}: expected (K, 2) x, y or (K, 3) x, y, score per "
                         f"instance ('pred_joints2d' (B, 1, K, 3), (B, K, 3) or (B, K, 2))")
    array = array.reshape(-1, *array.shape[-2:])
    if array.shape[-1] == 2:
        array = np.concatenate([array, np.ones((*array.shape[:2], 1))], axis=-1)
    return array


def prediction_record(decoded: Mapping[str, np.ndarray], meta: Mapping[str, Any], image_hw: Sequence[int],
                      input_hw: Sequence[int]) -> dict[str, Any]:
    """A decoded prediction (input pixels, ``antgo.predict.decode`` form) → JSON fields in image pixels."""
    task, names = meta.get("task"), list(meta.get("class_names") or [])
    if task == "detection":
        boxes = to_image_pixels(np.asarray(decoded["box"]).reshape(-1, 4), image_hw, input_hw)
        labels = np.asarray(decoded["label"]).reshape(-1).astype(int)
        return {"task": task, "boxes": [[round(float(v), 3) for v in b] for b in boxes],
                "labels": [int(v) for v in labels], "label_names": [_name(int(v), names) for v in labels],
                "scores": [round(float(v), 6) for v in np.asarray(decoded["score"]).reshape(-1)]}
    if task == "keypoints":
        joints = np.asarray(decoded["keypoints"], np.float64).reshape(-1, 3)
        xy = to_image_pixels(joints[:, :2], image_hw, input_hw)
        kp_names = list(meta.get("keypoint_names") or [])
        return {"task": task, "keypoints": [{"name": _name(i, kp_names) if kp_names else f"keypoint_{i}",
                                             "x": round(float(x), 3), "y": round(float(y), 3),
                                             "score": round(float(s), 6)}
                                            for i, ((x, y), s) in enumerate(zip(xy, joints[:, 2]))]}
    probs = np.asarray(decoded["probs"], np.float64).reshape(-1)
    top_k = int((meta.get("decode") or {}).get("top_k", 5))
    order = np.argsort(-probs, kind="stable")[:top_k]
    return {"task": "classification", "top": [{"class": _name(int(i), names), "index": int(i),
                                               "probability": round(float(probs[i]), 6)} for i in order]}


DECODED_TASKS = ("detection", "keypoints", "classification")


def postprocess(outputs: Sequence[np.ndarray], meta: Mapping[str, Any], image_hw: tuple[int, int],
                input_hw: tuple[int, int], decoded: Mapping[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Raw network outputs (or an already ``decoded`` prediction) → a prediction in original-image pixels
    (``mask`` for segmentation; boxes, keypoints or top classes for the other tasks)."""
    first = np.asarray(outputs[0])
    task = meta.get("task")
    if task in (None, "unknown"):  # files without a task: guess from the output shape
        task = "segmentation" if first.ndim == 4 else "classification" if first.ndim == 2 else task
        meta = {**meta, "task": task}
    if task == "segmentation":
        return _segmentation(first, meta, image_hw, input_hw)
    if task in DECODED_TASKS:
        return prediction_record(decoded or decode_outputs(outputs, meta, input_hw), meta, image_hw, input_hw)
    return {"task": task, "outputs": {name: list(np.shape(o)) for name, o in
                                      zip(meta.get("output_names") or range(len(outputs)), outputs)}}
