"""The exported ONNX file as an MLflow model, its registered version and the alias of a verified version."""
from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from typing import Any

from antgo.tracking.runs import PipelineTracker

logger = logging.getLogger(__name__)


@dataclass
class RegisteredOnnx:
    """Where the logged model is (``model_uri``) and which registry version it became."""

    model_uri: str | None
    name: str | None
    version: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def log_onnx_model(tracker: PipelineTracker, run_id: str | None, onnx_path: str | os.PathLike,
                   registered_model_name: str | None, artifact_name: str = "model") -> RegisteredOnnx:
    """``mlflow.onnx.log_model`` into ``run_id`` and register a version of ``registered_model_name``.

    ``mlflow.onnx.log_model`` has no run-id argument, so the child run is made active for the call (in this
    thread only) and left FINISHED/FAILED by the caller's stage context afterwards.
    """
    if not tracker.enabled or run_id is None:
        return RegisteredOnnx(None, registered_model_name, None)
    import mlflow
    import mlflow.onnx
    import onnx

    model = onnx.load(str(onnx_path))  # also loads a separate .onnx.data file when there is one
    mlflow.set_tracking_uri(tracker.ctx.tracking_uri)
    with mlflow.start_run(run_id=run_id, nested=True):
        info = mlflow.onnx.log_model(model, name=artifact_name, registered_model_name=registered_model_name,
                                     await_registration_for=60)
    version = getattr(info, "registered_model_version", None)
    logger.info("logged ONNX model %s%s", info.model_uri,
                f" as {registered_model_name} v{version}" if version else "")
    return RegisteredOnnx(info.model_uri, registered_model_name, str(version) if version else None)


def set_version_alias(tracker: PipelineTracker, name: str, version: str, alias: str) -> None:
    """Point ``models:/name@alias`` at ``version`` (called only for a version that passed parity)."""
    if tracker.enabled and name and version and alias:
        tracker.client.set_registered_model_alias(name, alias, str(version))
        logger.info("models:/%s@%s -> version %s", name, alias, version)


def tag_version(tracker: PipelineTracker, name: str | None, version: str | None, tags: dict[str, Any]) -> None:
    """Tags on a model version (e.g. ``parity=passed``) so the registry shows why a version has no alias."""
    if not (tracker.enabled and name and version):
        return
    for key, value in tags.items():
        tracker.client.set_model_version_tag(name, str(version), key, str(value))
