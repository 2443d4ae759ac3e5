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
    metadata = {p.key: p.value for p in model.metadata_props}
    mlflow.set_tracking_uri(tracker.ctx.tracking_uri)
    with mlflow.start_run(run_id=run_id, nested=True):
        info = mlflow.onnx.log_model(model, name=artifact_name, registered_model_name=registered_model_name,
                                     await_registration_for=60, signature=onnx_signature(model),
                                     metadata=metadata or None)
    version = getattr(info, "registered_model_version", None)
    logger.info("logged ONNX model %s%s", info.model_uri,
                f" as {registered_model_name} v{version}" if version else "")
    return RegisteredOnnx(info.model_uri, registered_model_name, str(version) if version else None)


def onnx_signature(model: Any) -> Any:
    """An MLflow ``ModelSignature`` from the ONNX graph's inputs and outputs (names, dtypes, shapes; -1 = dynamic)."""
    import numpy as np
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec
    from onnx import helper

    def spec(value: Any) -> Any:
        tensor = value.type.tensor_type
        shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim)
        return TensorSpec(np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type)), shape, value.name)

    initializers = {i.name for i in model.graph.initializer}
    inputs = [spec(v) for v in model.graph.input if v.name not in initializers]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema([spec(v) for v in model.graph.output]))


def set_version_alias(tracker: PipelineTracker, name: str, version: str, alias: str) -> None:
    """Point ``models:/name@alias`` at ``version`` (called only for a version that passed parity)."""
    if tracker.enabled and name and version and alias:
        tracker.client.set_registered_model_alias(name, alias, str(version))
        logger.debug("models:/%s@%s -> version %s", name, alias, version)


def tag_version(tracker: PipelineTracker, name: str | None, version: str | None, tags: dict[str, Any]) -> None:
    """Tags on a model version (e.g. ``parity=passed``) so the registry shows why a version has no alias."""
    if not (tracker.enabled and name and version):
        return
    for key, value in tags.items():
        tracker.client.set_model_version_tag(name, str(version), key, str(value))


def version_tags(test_metrics: dict[str, float], parity: dict[str, float], config_hash: str | None,
                 score_metric: str | None, score_rule: str | None) -> dict[str, Any]:
    """What a registered version carries: test metrics, parity numbers, config hash and how it is ranked."""
    tags: dict[str, Any] = {f"test/{k}": f"{v:.6g}" for k, v in test_metrics.items()}
    tags.update({f"parity/{k}": f"{v:.6g}" for k, v in parity.items()})
    if config_hash:
        tags["antgo.config_hash"] = config_hash
    if score_metric:
        tags.update({"antgo.score_metric": score_metric, "antgo.score_rule": score_rule or "greater"})
    return tags


def _score(version: Any, key: str) -> float | None:
    try:
        value = float((version.tags or {})[f"test/{key}"])
    except (KeyError, TypeError, ValueError):
        return None
    return None if value != value else value  # NaN never wins


def choose_champion(tracker: PipelineTracker, name: str, metric: str, rule: str = "greater",
                    alias: str = "champion") -> str | None:
    """Point ``alias`` at the version with the best ``test/<metric>`` among those that passed parity.

    A new version that scores lower than the current champion leaves the alias where it is. Returns the
    version the alias points at (None when no version qualifies).
    """
    if not (tracker.enabled and name and metric):
        return None
    versions = tracker.client.search_model_versions(f"name = '{name}'")
    ranked = [(score, int(v.version)) for v in versions
              if (v.tags or {}).get("parity") == "passed" and (score := _score(v, metric)) is not None]
    if not ranked:
        return None
    sign = 1.0 if rule == "greater" else -1.0
    best = max(ranked, key=lambda item: (sign * item[0], item[1]))  # ties: the newer version
    set_version_alias(tracker, name, str(best[1]), alias)
    logger.info("models:/%s@%s -> version %d (test %s %.4f, best of %d verified version(s))", name, alias, best[1],
                metric, best[0], len(ranked))
    return str(best[1])
