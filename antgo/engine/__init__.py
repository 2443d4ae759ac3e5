"""Training, evaluation, export and parity: ``Trainer``, ``Tester``, ``Exporter``, ``verify_parity``.

``Exporter``, ``verify_parity`` and ``ParityError`` load on first use, so importing the trainer does not
import onnx/onnxruntime.
"""
from __future__ import annotations

from typing import Any

from antgo.engine.tester import Tester
from antgo.engine.trainer import Trainer

_LAZY = {"Exporter": "antgo.engine.exporter", "verify_parity": "antgo.engine.parity",
         "ParityError": "antgo.engine.parity"}

__all__ = ["Trainer", "Tester", "Exporter", "verify_parity", "ParityError"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'antgo.engine' has no attribute {name!r}")
