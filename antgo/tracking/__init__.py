"""MLflow tracking for antgo pipelines.

The only package that imports mlflow, and only inside functions: importing ``antgo.tracking`` costs nothing
on machines without mlflow. Names are resolved lazily so that ``antgo.tracking.hooks`` (which needs the
engine) is imported only when asked for.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "PipelineTracker": "antgo.tracking.runs",
    "StageRun": "antgo.tracking.runs",
    "TrackingContext": "antgo.tracking.runs",
    "file_sha256": "antgo.tracking.runs",
    "flatten": "antgo.tracking.runs",
    "git_commit": "antgo.tracking.runs",
    "is_rank_zero": "antgo.tracking.runs",
    "MlflowLoggerHook": "antgo.tracking.hooks",
    "class_pixel_histogram": "antgo.tracking.plots",
    "plot_confusion_matrix": "antgo.tracking.plots",
    "disable_telemetry": "antgo.tracking.store",
    "resolve_tracking_uri": "antgo.tracking.store",
    "ui_command": "antgo.tracking.store",
    "run_url": "antgo.tracking.store",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'antgo.tracking' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
