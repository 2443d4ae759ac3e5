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
    plt = _pyplot()
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
        return _save(fig, path)
    finally:
        plt.close(fig)


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


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)  # headless: never pick an interactive backend
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | os.PathLike) -> Path:
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return out


def _is_summary_key(key: str) -> bool:
    """Validation keys worth a curve: the summary scores, not one ``iou_<class>`` per class."""
    return not key.startswith(("iou_", "acc_", "ap_"))


def history_rows(history: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One flat row per epoch: ``epoch``, ``iter``, ``train/<key>``, ``val/<key>`` (the Trainer's history)."""
    rows = []
    for record in history:
        row: dict[str, Any] = {"epoch": record.get("epoch"), "iter": record.get("iter")}
        row.update({f"train/{k}": v for k, v in (record.get("train") or {}).items()})
        row.update({f"val/{k}": v for k, v in (record.get("val") or {}).items()})
        rows.append(row)
    return rows


def write_results_csv(history: Sequence[dict[str, Any]], path: str | os.PathLike) -> Path:
    """``results.csv``: one line per epoch with every train average and validation value (blank when absent)."""
    import csv

    rows = history_rows(history)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    return out


def plot_training_curves(history: Sequence[dict[str, Any]], path: str | os.PathLike) -> Path | None:
    """Train loss terms, learning rate and the validation scores against the epoch, as one PNG."""
    rows = history_rows(history)
    if not rows:
        return None
    plt = _pyplot()
    epochs = [r["epoch"] for r in rows]
    losses = [k for k in rows[-1] if k.startswith("train/") and "loss" in k]
    vals = [k for k in dict.fromkeys(k for r in rows for k in r) if k.startswith("val/") and _is_summary_key(k[4:])]
    panels = [("loss (train, epoch mean)", losses, False), ("learning rate", ["train/lr"], True),
              ("validation", vals, False)]
    panels = [p for p in panels if p[1]]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.4), squeeze=False)
    try:
        for ax, (title, keys, log) in zip(axes[0], panels):
            for key in keys:
                points = [(e, r.get(key)) for e, r in zip(epochs, rows) if r.get(key) is not None]
                if points:
                    ax.plot(*zip(*points), marker="o", markersize=3, label=key.split("/", 1)[1])
            ax.set_title(title)
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
            if log:
                ax.set_yscale("log")
            if len(keys) > 1:
                ax.legend(fontsize=7)
        return _save(fig, path)
    finally:
        plt.close(fig)


def per_class_values(metrics: dict[str, Any], prefix: str = "iou_") -> dict[str, float]:
    """``{class: value}`` from metric keys like ``iou_<class>`` (NaN = class absent, dropped)."""
    out = {}
    for key, value in metrics.items():
        if key.startswith(prefix) and isinstance(value, (int, float)) and value == value:
            out[key[len(prefix):]] = float(value)
    return out


def plot_per_class(values: dict[str, float], path: str | os.PathLike, title: str = "IoU per class",
                   xlabel: str = "IoU") -> Path | None:
    """Horizontal bars, one per class, with the value printed at the end of each bar."""
    if not values:
        return None
    plt = _pyplot()
    names = list(values)
    fig, ax = plt.subplots(figsize=(6, 1 + 0.32 * len(names)))
    try:
        bars = ax.barh(names, [values[n] for n in names], color="#4c72b0")
        ax.invert_yaxis()
        ax.set_xlim(0, max(1.0, max(values.values()) * 1.1))
        ax.set_xlabel(xlabel)
        ax.set_title(title)
        for bar, name in zip(bars, names):
            ax.text(bar.get_width() + 0.01, bar.get_y() + bar.get_height() / 2, f"{values[name]:.3f}",
                    va="center", fontsize=8)
        return _save(fig, path)
    finally:
        plt.close(fig)


def log_history_plots(run: Any, run_dir: str | os.PathLike, history: Sequence[dict[str, Any]]) -> list[Path]:
    """``results.csv`` and ``curves.png`` into ``run_dir`` and under ``plots/`` of ``run`` (a ``StageRun``)."""
    if not history:
        return []
    files = [write_results_csv(history, Path(run_dir) / "results.csv")]
    curves = plot_training_curves(history, Path(run_dir) / "curves.png")
    files += [curves] if curves is not None else []
    for path in files:
        run.log_artifact(path, "plots")
    return files


def log_per_class_plot(run: Any, metrics: dict[str, Any], out_dir: str | os.PathLike) -> list[str]:
    """Per-class IoU bars of the test metrics (``iou_<class>`` keys) under ``plots/`` of ``run``."""
    path = plot_per_class(per_class_values(metrics), Path(out_dir) / "per_class_iou.png", title="Test IoU per class")
    if path is None:
        return []
    run.log_artifact(path, "plots")
    return [str(path)]
