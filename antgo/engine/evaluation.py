"""The evaluation loop shared by ``EvalHook`` (validation during training) and ``Tester``.

Ground truth never reaches ``forward_test``: the batch fields named by the metrics' ``keys()['gt']`` are
held back, unless ``forward_test`` names such a key in its signature. Streaming metrics get one
``update(preds, gts)`` per batch; metrics that only implement ``__call__(preds, gts)`` (the design
document's contract) get per-sample lists once, at the end.
"""
from __future__ import annotations

import contextlib
import inspect
import logging
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

BatchCallback = Callable[[int, dict[str, Any], dict[str, Any], dict[str, Any]], None]


def progress_enabled() -> bool:
    """Progress bars only on a terminal, and never with ``ANTGO_PROGRESS=0``."""
    if os.environ.get("ANTGO_PROGRESS", "").strip() == "0":
        return False
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def move_to_device(batch: Mapping[str, Any], device: torch.device | str, channels_last: bool = False,
                   transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> dict[str, Any]:
    """Tensors of ``batch`` moved to ``device``; metadata untouched.

    Copies are ``non_blocking`` on CUDA (asynchronous from pinned memory, so uint8 images travel as bytes
    while the device works). ``transform`` (the device batch transform of ``split_for_device``) runs right
    after the copy; then 4-D float tensors become channels_last when asked.
    """
    out: dict[str, Any] = {}
    non_blocking = torch.device(device).type == "cuda"
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device, non_blocking=non_blocking)
        elif isinstance(value, list) and value and all(isinstance(v, torch.Tensor) for v in value):
            value = [v.to(device, non_blocking=non_blocking) for v in value]  # per-instance fields (boxes, ...)
        out[key] = value
    if transform is not None:
        out = transform(out)
    if channels_last:
        for key, value in out.items():
            if isinstance(value, torch.Tensor) and value.dim() == 4 and value.is_floating_point():
                out[key] = value.contiguous(memory_format=torch.channels_last)
    return out


def amp_context(device: torch.device | str, amp: bool, dtype: str | torch.dtype = "bfloat16"
                ) -> contextlib.AbstractContextManager:
    """Autocast (bf16 by default) on CUDA when ``amp``; a no-op elsewhere (the trainer warns once)."""
    if not amp:
        return contextlib.nullcontext()
    from antgo.engine.device import autocast_context

    return autocast_context(device, True, dtype)


def to_numpy(value: Any) -> Any:
    """Tensors → numpy (bf16/fp16 → float32); lists/tuples of tensors → lists of arrays; rest unchanged."""
    if isinstance(value, torch.Tensor):
        value = value.detach()
        if value.dtype in (torch.bfloat16, torch.float16):
            value = value.float()
        return value.cpu().numpy()
    if isinstance(value, (list, tuple)):
        return [to_numpy(v) for v in value]
    return value


def is_streaming(metric: Any) -> bool:
    return all(callable(getattr(metric, name, None)) for name in ("reset", "update", "compute"))


def gt_keys_of(metrics: Iterable[Any]) -> list[str]:
    """Union of ``keys()['gt']`` over ``metrics``, in first-seen order."""
    keys: list[str] = []
    for metric in metrics:
        spec = metric.keys() if callable(getattr(metric, "keys", None)) else {}
        for key in spec.get("gt", []) if isinstance(spec, Mapping) else []:
            if key not in keys:
                keys.append(key)
    return keys


def forward_test_inputs(model: torch.nn.Module, batch_keys: Iterable[str], gt_keys: Iterable[str]) -> list[str]:
    """Batch fields to pass to ``forward_test``: all minus ground truth, unless the signature names a gt key.

    Without ``**kwargs`` in the signature only the named parameters are passed.
    """
    fn = getattr(model, "forward_test", None)
    if fn is None:
        raise AttributeError(f"{type(model).__name__} has no forward_test(); the evaluation loop needs it")
    params = inspect.signature(fn).parameters
    named = {n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    var_kw = any(p.kind == p.VAR_KEYWORD for p in params.values())
    gt = set(gt_keys)
    keys = [k for k in batch_keys if (k not in gt or k in named)]
    return keys if var_kw else [k for k in keys if k in named]


def _batch_size(values: Mapping[str, Any]) -> int:
    for value in values.values():
        if isinstance(value, (np.ndarray, list)):
            return len(value)
    raise ValueError(f"cannot infer the batch size from keys {sorted(values)}; predictions must be batch-first")


def _split(values: Mapping[str, Any], n: int) -> list[dict[str, Any]]:
    """Batch-first dict → n per-sample dicts."""
    out: list[dict[str, Any]] = [{} for _ in range(n)]
    for key, value in values.items():
        if isinstance(value, (np.ndarray, list)) and len(value) == n:
            for i in range(n):
                out[i][key] = value[i]
        else:
            for i in range(n):
                out[i][key] = value
    return out


def _as_float(name: str, value: Any) -> float | None:
    try:
        return float(np.asarray(value).item()) if np.size(value) == 1 else None
    except (TypeError, ValueError):
        return None


def json_safe(values: Mapping[str, float]) -> dict[str, float | None]:
    """NaN/inf (e.g. the IoU of an absent class) → None, so the file is strict JSON."""
    return {k: (v if isinstance(v, float) and np.isfinite(v) else None) for k, v in values.items()}


def merge_results(results: list[tuple[Any, Mapping[str, Any]]]) -> dict[str, float]:
    """One flat dict; a key produced by several metrics is prefixed with the metric class name."""
    counts: dict[str, int] = {}
    for _, res in results:
        for key in res:
            counts[key] = counts.get(key, 0) + 1
    merged: dict[str, float] = {}
    for metric, res in results:
        for key, value in res.items():
            value_f = _as_float(key, value)
            if value_f is None:
                logger.debug("metric %s: key '%s' is not a scalar; not reported", type(metric).__name__, key)
                continue
            name = key if counts[key] == 1 else f"{type(metric).__name__}.{key}"
            base, n = name, 1
            while name in merged:  # two metrics of the same class
                n += 1
                name = f"{base}_{n}"
            merged[name] = value_f
    return merged


def _gt_batch(batch: Mapping[str, Any], keys: list[str], device: torch.device | str) -> dict[str, Any]:
    missing = [k for k in keys if k not in batch]
    if missing:
        raise KeyError(f"the metrics need ground-truth fields {missing} but the batch has only {sorted(batch)}; "
                       f"add them to the dataset's inputs_def.fields")
    non_blocking = torch.device(device).type == "cuda"
    return {k: batch[k].to(device, non_blocking=non_blocking) if isinstance(batch[k], torch.Tensor) else batch[k]
            for k in keys}


def check_pred_keys(model: torch.nn.Module, out: Mapping[str, Any], metrics: Iterable[Any]) -> None:
    """Every metric's ``keys()['pred']`` must be among the outputs of ``forward_test``."""
    import difflib

    for metric in metrics:
        spec = metric.keys() if callable(getattr(metric, "keys", None)) else {}
        for key in spec.get("pred", []) if isinstance(spec, Mapping) else []:
            if key not in out:
                close = difflib.get_close_matches(key, [str(k) for k in out], n=2, cutoff=0.5)
                hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
                raise KeyError(f"metric {type(metric).__name__} reads prediction '{key}' (its keys()['pred']) but "
                               f"{type(model).__name__}.forward_test returned {sorted(map(str, out))}.{hint} Return "
                               f"'{key}' from forward_test or configure the metric's prediction key")


def _world() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _finish(metrics: list[Any], all_preds: list[dict[str, Any]], all_gts: list[dict[str, Any]],
            updates: list[tuple[dict[str, Any], dict[str, Any]]]) -> list[tuple[Any, Any]]:
    """compute() / __call__ per metric; under DDP the shards' states are combined first: ``all_reduce()``
    where the metric has it, else the ranks' batches (``updates``) or samples are gathered and replayed."""
    if _world() > 1:
        import torch.distributed as dist

        for metric in metrics:
            if is_streaming(metric) and callable(getattr(metric, "all_reduce", None)):
                metric.all_reduce()
        gathered: list[Any] = [None] * _world()
        dist.all_gather_object(gathered, (all_preds, all_gts, updates))  # the same call on every rank
        all_preds = [p for preds, _, _ in gathered for p in preds]
        all_gts = [g for _, gts, _ in gathered for g in gts]
        replay = [m for m in metrics if is_streaming(m) and not callable(getattr(m, "all_reduce", None))]
        for metric in replay:
            metric.reset()
            for _, _, rank_updates in gathered:
                for preds, gts in rank_updates:
                    metric.update(preds, gts)
    return [(m, m.compute() if is_streaming(m) else m(all_preds, all_gts)) for m in metrics]


@torch.no_grad()
def evaluate(model: torch.nn.Module, dataloader: Iterable[Mapping[str, Any]], metrics: list[Any],
             device: torch.device | str = "cpu", amp: bool = False, channels_last: bool = False,
             on_batch: BatchCallback | None = None, desc: str = "eval", amp_dtype: str = "bfloat16",
             batch_transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
             max_batches: int | None = None) -> dict[str, float]:
    """Run ``forward_test`` over ``dataloader`` and return the merged metric values.

    Metrics with ``accepts_tensors`` (``SegMIOU``) are updated with device tensors: nothing is copied to the
    host per batch and memory does not grow with the data set. Other streaming metrics get numpy copies;
    metrics with only ``__call__(preds, gts)`` get per-sample lists once, at the end. Under DDP each rank
    evaluates its shard and the states are combined (``all_reduce`` / gathered lists): the numbers of one
    process. ``on_batch(index, inputs, preds, gts)`` (numpy) is called per batch, e.g. to keep predictions
    for visualisation. ``max_batches`` stops early (a dry run that checks keys before training).
    """
    if not metrics:
        raise ValueError("evaluate: no metrics; set evaluation.metric in the config")
    gt_keys = gt_keys_of(metrics)
    streaming = [m for m in metrics if is_streaming(m)]
    sharded = _world() > 1
    mergeable = [m for m in streaming if callable(getattr(m, "all_reduce", None)) or not sharded]
    on_device = [m for m in mergeable if getattr(m, "accepts_tensors", False)]
    on_host = [m for m in streaming if m not in on_device]
    keep_updates = sharded and any(m not in mergeable for m in streaming)  # replayed after gathering
    updates: list[tuple[dict[str, Any], dict[str, Any]]] = []
    per_sample = [m for m in metrics if not is_streaming(m)]
    for metric in streaming:
        metric.reset()
    all_preds: list[dict[str, Any]] = []
    all_gts: list[dict[str, Any]] = []
    was_training = model.training
    model.eval()
    input_keys: list[str] | None = None
    try:
        from tqdm import tqdm
        batches = tqdm(dataloader, desc=desc, leave=False, disable=not progress_enabled())
        for index, batch in enumerate(batches):
            if max_batches is not None and index >= max_batches:
                break
            moved = move_to_device(batch, device, channels_last, batch_transform)
            if input_keys is None:  # from the batch as the device transform left it
                input_keys = forward_test_inputs(model, moved.keys(), gt_keys)
            with amp_context(device, amp, amp_dtype):
                out = model.forward_test(**{k: moved[k] for k in input_keys})
            if not isinstance(out, Mapping):
                raise TypeError(f"{type(model).__name__}.forward_test must return a dict of batch-first "
                                f"predictions, got {type(out).__name__}")
            if index == 0:
                check_pred_keys(model, out, metrics)
            gts = _gt_batch(moved, gt_keys, device)
            for metric in on_device:
                metric.update(out, gts)
            if on_host or per_sample or keep_updates or on_batch is not None:
                preds_np, gts_np = {k: to_numpy(v) for k, v in out.items()}, {k: to_numpy(v) for k, v in gts.items()}
                for metric in on_host:
                    metric.update(preds_np, gts_np)
                if keep_updates:
                    updates.append((preds_np, gts_np))
                if per_sample:
                    n = _batch_size(preds_np)
                    all_preds.extend(_split(preds_np, n))
                    all_gts.extend(_split(gts_np, n))
                if on_batch is not None:
                    on_batch(index, batch, preds_np, gts_np)
    finally:
        model.train(was_training)
    results = _finish(metrics, all_preds, all_gts, updates)
    for metric, res in results:
        if not isinstance(res, Mapping):
            raise TypeError(f"metric {type(metric).__name__} returned {type(res).__name__}; expected a dict")
    return merge_results(results)
