"""``build_metrics``: the ``evaluation.metric`` config (a dict or a list of dicts) → metric objects."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Sequence

from antgo.registry import METRICS


def build_metrics(cfg: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None) -> list[Any]:
    """Build every metric of ``cfg``; ``None`` gives an empty list. ``cfg`` is not modified."""
    if cfg is None:
        return []
    if isinstance(cfg, Mapping):
        return [METRICS.build(cfg, key_path="evaluation.metric")]
    return [METRICS.build(c, key_path=f"evaluation.metric[{i}]") for i, c in enumerate(cfg)]
