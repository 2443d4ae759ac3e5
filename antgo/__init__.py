"""antgo: config-driven PyTorch experiments — train, evaluate, export to ONNX and verify.

``import antgo`` stays light: heavy pieces (torch, the engine) load on first attribute access, and
prefect / mlflow are never imported by the core (the pipeline layer in ``flows/`` uses them).
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "Config": "antgo.config",
    "ConfigError": "antgo.config",
    "Registry": "antgo.registry",
    "Trainer": "antgo.engine",
    "Tester": "antgo.engine",
    "Exporter": "antgo.engine",
    "verify_parity": "antgo.engine",
    "ParityError": "antgo.engine",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'antgo' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = ["__version__", *_LAZY]
