"""The data sets of a pipeline as MLflow dataset inputs (name, split, size, digest): the runs table's Dataset
column and the run page's inputs."""
from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

logger = logging.getLogger(__name__)


def dataset_digest(dataset: Any, split_cfg: Any) -> str:
    """A short content-free fingerprint: the data set's type, folder, split and sample ids (or count)."""
    ids = getattr(dataset, "ids", None)
    payload = {"type": type(dataset).__name__, "dir": str(getattr(dataset, "dir", "")),
               "split": getattr(dataset, "train_or_test", None), "size": len(dataset),
               "ids": list(map(str, ids)) if ids is not None else None,
               "pipeline": [dict(s).get("type") for s in (split_cfg or {}).get("pipeline") or []]}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def log_datasets(client: Any, run_id: str | None, readers: dict[str, Any], data_cfg: Any) -> None:
    """One ``DatasetInput`` per split on ``run_id`` (``mlflow.data.context`` = the split)."""
    if run_id is None or not readers:
        return
    from mlflow.entities import Dataset, DatasetInput, InputTag

    inputs = []
    for split, reader in readers.items():
        dataset = getattr(reader, "dataset", reader)
        split_cfg = (data_cfg or {}).get(split) or {}
        name = f"{type(dataset).__name__}-{split}"  # per config split: test may read the same files as val
        profile = json.dumps({"num_samples": len(dataset), "split": split,
                              "reads": getattr(dataset, "train_or_test", None)})
        entity = Dataset(name=name, digest=dataset_digest(dataset, split_cfg), source_type="local",
                         source=json.dumps({"uri": str(getattr(dataset, "dir", "") or "")}), profile=profile)
        inputs.append(DatasetInput(entity, tags=[InputTag("mlflow.data.context", split)]))
    client.log_inputs(run_id, datasets=inputs)
