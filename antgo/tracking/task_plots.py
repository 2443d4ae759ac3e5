"""Task-specific figures for the evaluate stage: PR curves and box overlays (detection), keypoint overlays.

``task_plots(tester, out_dir, num_vis)`` looks at what the Tester's metrics and model produce (the prediction
keys, not a task name) and returns ``(png path, MLflow artifact folder)`` pairs. Classification needs nothing
here: ``Accuracy.confusion_matrix`` goes through the pipeline's confusion-matrix plot. Overlays run the model on
the first ``num_vis`` test samples and draw on the raw images, predictions scaled back from the network input
(the demos stretch with ``ResizeS``); ground truth in green, predictions in red/orange.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

_GT, _PRED = (0, 200, 0), (230, 40, 40)


def _pred_keys(metrics: Any) -> set[str]:
    keys: set[str] = set()
    for metric in metrics or []:
        spec = metric.keys() if callable(getattr(metric, "keys", None)) else {}
        keys.update(spec.get("pred", []))
    return keys


def plot_pr_curves(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path,
                   title: str = "Precision-recall at IoU 0.5") -> Path:
    """One precision-recall line per class (COCO's interpolated precision on 101 recall points)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5))
    try:
        for name, (recall, precision) in curves.items():
            ax.plot(recall, precision, label=f"{name} (AP50 {float(np.mean(precision)):.3f})")
        ax.set_xlim(0, 1), ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall"), ax.set_ylabel("precision"), ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left", fontsize=8)
        fig.tight_layout()
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=100)
    finally:
        plt.close(fig)
    return out


def draw_boxes(image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, colour: tuple[int, int, int],
               names: list[str] | None = None, scores: np.ndarray | None = None) -> np.ndarray:
    """Boxes (xyxy pixels) with class names (and scores) on an RGB uint8 image (a copy)."""
    import cv2

    out = image.copy()
    for k, (box, label) in enumerate(zip(np.asarray(boxes).reshape(-1, 4), np.asarray(labels).reshape(-1))):
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, 1)
        text = names[int(label)] if names and 0 <= int(label) < len(names) else str(int(label))
        if scores is not None:
            text += f" {float(np.asarray(scores).reshape(-1)[k]):.2f}"
        cv2.putText(out, text, (x1, max(y1 - 2, 8)), cv2.FONT_HERSHEY_SIMPLEX, 0.3, colour, 1, cv2.LINE_AA)
    return out


def draw_keypoints(image: np.ndarray, joints: np.ndarray, colour: tuple[int, int, int],
                   skeleton: list[list[int]] | None = None) -> np.ndarray:
    """Keypoints (N, K, 3: x, y, visibility/score > 0 drawn) and 1-based skeleton edges (COCO style)."""
    import cv2

    out = image.copy()
    for inst in np.asarray(joints, np.float64).reshape(-1, *np.asarray(joints).shape[-2:]):
        for a, b in skeleton or []:
            if inst[a - 1, 2] > 0 and inst[b - 1, 2] > 0:
                cv2.line(out, tuple(int(round(v)) for v in inst[a - 1, :2]),
                         tuple(int(round(v)) for v in inst[b - 1, :2]), colour, 1, cv2.LINE_AA)
        for x, y, v in inst[:, :3]:
            if v > 0:
                cv2.circle(out, (int(round(x)), int(round(y))), 2, colour, -1, cv2.LINE_AA)
    return out


def _overlay(tester: Any, index: int, keys: set[str]) -> np.ndarray | None:
    import torch

    from antgo.engine.evaluation import to_numpy
    from antgo.metrics.detection import split_box_scores
    from antgo.predict.processing import keypoint_instances, to_image_pixels

    dataset = tester.reader.dataset
    raw = dataset.sample(index)
    sample = tester.reader[index]
    image = sample["image"]
    if not isinstance(image, torch.Tensor) or image.dim() != 3:
        return None
    with torch.no_grad():
        pred = tester.model.forward_test(image[None].to(tester.device))
    pred = {k: to_numpy(v)[0] for k, v in pred.items()}
    picture = np.ascontiguousarray(np.asarray(raw["image"], np.uint8))
    picture_hw, input_hw = picture.shape[:2], tuple(image.shape[1:3])
    names = list(getattr(dataset, "class_names", None) or [])
    if "box" in keys and "box" in pred:
        picture = draw_boxes(picture, raw.get("bboxes", np.zeros((0, 4))), raw.get("labels", np.zeros(0)), _GT, names)
        boxes, scores = split_box_scores(pred["box"], pred.get("score"), "box overlay", required=False)
        picture = draw_boxes(picture, to_image_pixels(boxes, picture_hw, input_hw), pred["label"], _PRED, names,
                             scores)
    if "pred_joints2d" in keys and "pred_joints2d" in pred:
        skeleton = getattr(dataset, "skeleton", None)
        if raw.get("joints2d") is not None:
            picture = draw_keypoints(picture, raw["joints2d"], _GT, skeleton)
        joints = to_image_pixels(keypoint_instances(pred["pred_joints2d"]), picture_hw, input_hw)
        picture = draw_keypoints(picture, joints, _PRED, skeleton)
    return picture


def task_plots(tester: Any, out_dir: str | Path, num_vis: int = 4) -> list[tuple[str, str]]:
    """Figures for the prediction kinds the Tester's metrics use; an empty list for segmentation and
    classification (their plots exist already)."""
    import cv2

    out_dir = Path(out_dir)
    keys = _pred_keys(getattr(tester, "metrics", None))
    files: list[tuple[str, str]] = []
    for metric in getattr(tester, "metrics", None) or []:
        curves = getattr(metric, "pr_curves", None)
        if curves:
            files.append((str(plot_pr_curves(curves, out_dir / "pr_curve.png")), "plots"))
    if not keys & {"box", "pred_joints2d"} or getattr(tester, "reader", None) is None or tester.model is None:
        return files
    (out_dir / "overlays").mkdir(parents=True, exist_ok=True)
    for index in range(min(int(num_vis), len(tester.reader))):
        try:
            picture = _overlay(tester, index, keys)
        except Exception:  # a figure must never fail the stage
            logger.exception("overlay of test sample %d failed", index)
            continue
        if picture is not None:
            path = out_dir / "overlays" / f"{index:05d}.png"
            cv2.imwrite(str(path), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
            files.append((str(path), "predictions"))
    return files
