"""Figures and data summaries logged by the pipeline (matplotlib with the Agg backend: no display needed)."""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


def class_pixel_histogram(dataset: Any, num_classes: int | None = None, ignore_index: int = 255,
                          max_samples: int | None = None) -> dict[str, Any]:
    """Pixels per class over the raw ``segments`` masks of ``dataset`` (no pipeline, no augmentation).

    ``dataset`` is an ``antgo.data.dataset.Dataset`` (``size`` + ``sample(id)``). Returns counts per class
    index, the void pixel count and the fraction of each class among non-void pixels.
    """
    size = int(dataset.size)
    n = size if max_samples is None else min(size, int(max_samples))
    counts = np.zeros(max(int(num_classes or 0), 1), dtype=np.int64)
    void = 0
    for i in range(n):
        mask = dataset.sample(i).get("segments")
        if mask is None:
            continue
        mask = np.asarray(mask).reshape(-1)
        void += int((mask == ignore_index).sum())
        valid = mask[mask != ignore_index].astype(np.int64)
        binc = np.bincount(valid, minlength=counts.size)
        if binc.size > counts.size:  # more classes than the config says: keep them, the summary shows it
            counts = np.pad(counts, (0, binc.size - counts.size))
        counts += binc
    total = int(counts.sum())
    return {
        "samples": n,
        "counts": counts.tolist(),
        "void_pixels": void,
        "fractions": (counts / total).round(6).tolist() if total else [0.0] * counts.size,
    }


def plot_confusion_matrix(confusion: np.ndarray, path: str | os.PathLike,
                          class_names: Sequence[str] | None = None, normalize: bool = True,
                          title: str = "Confusion matrix (rows: ground truth)") -> Path:
    """Save a confusion-matrix heat map as PNG; rows are normalised to recall when ``normalize``."""
    import matplotlib

    matplotlib.use("Agg", force=True)  # headless: never pick an interactive backend
    import matplotlib.pyplot as plt

    cm = np.asarray(confusion, dtype=np.float64)
    shown = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1.0) if normalize else cm
    k = cm.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    side = min(3 + 0.45 * k, 16)
    fig, ax = plt.subplots(figsize=(side, side))
    try:
        im = ax.imshow(shown, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else None)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        ax.set_xticks(range(k), names, rotation=90 if k > 6 else 0)
        ax.set_yticks(range(k), names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("ground truth")
        ax.set_title(title)
        if k <= 25:  # numbers stay readable up to about VOC's 21 classes
            for i in range(k):
                for j in range(k):
                    ax.text(j, i, f"{shown[i, j]:.2f}" if normalize else f"{int(cm[i, j])}",
                            ha="center", va="center", fontsize=7,
                            color="white" if shown[i, j] > 0.5 * (shown.max() or 1) else "black")
        fig.tight_layout()
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=100)
    finally:
        plt.close(fig)
    return out


def find_confusion_matrix(metrics: Any) -> np.ndarray | None:
    """The first ``confusion_matrix`` among a Tester's metric objects (a list, a dict or a single one)."""
    if metrics is None:
        return None
    items = metrics.values() if isinstance(metrics, dict) else metrics if isinstance(metrics, (list, tuple)) \
        else [metrics]
    for metric in items:
        cm = getattr(metric, "confusion_matrix", None)
        if callable(cm):
            cm = cm()
        if cm is not None:
            return np.asarray(cm)
    return None
