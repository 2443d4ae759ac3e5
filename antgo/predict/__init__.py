"""Prediction with an exported model (``OnnxModel``: onnxruntime, no torch) or a checkpoint (``CheckpointModel``).

``antgo predict --onnx model.onnx SOURCE`` needs only the file: the export stores the preprocessing, the class
names and what the outputs mean in the ONNX metadata (:mod:`antgo.predict.metadata`).
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "OnnxModel": "antgo.predict.runner",
    "CheckpointModel": "antgo.predict.runner",
    "run_predict": "antgo.predict.runner",
    "predict_image": "antgo.predict.runner",
    "describe_model": "antgo.predict.metadata",
    "read_metadata": "antgo.predict.metadata",
    "write_metadata": "antgo.predict.metadata",
    "overlay_panels": "antgo.predict.overlay",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'antgo.predict' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
