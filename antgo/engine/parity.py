"""ONNX ↔ PyTorch parity on real samples: per-output differences, decoded predictions and the metric.

Raw outputs are compared element-wise (and by channel argmax for models without a post-process); the decoded
predictions of torch and onnxruntime (the model's ``onnx_postprocess``, one per task form) are compared by the
comparators of ``antgo.engine.prediction_parity`` chosen by the metrics' ``keys()['pred']``; the metric is
computed from both (streaming metrics per batch, the design document's ``keys()`` + ``__call__`` ones once). A
model without ``onnx_postprocess`` whose outputs are not score maps or class scores (boxes, keypoints of its own
form) gets the raw comparison only; ``parity.json`` says why (``metrics.skipped``).

``verify_parity(cfg, onnx_path, checkpoint)`` runs ``model.onnx_export(image)`` and onnxruntime on the same
batches of ``data.test`` (fallback ``data.val``), writes ``parity.json`` and raises ``ParityError`` when a
threshold fails. See ``docs/export.md``.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from antgo.engine.evaluation import _batch_size, _split, is_streaming, to_numpy
from antgo.engine.exporter import build_export_model, load_config
from antgo.engine.loading import resolve_in_run
from antgo.engine.prediction_parity import PREDICTION_THRESHOLDS, compare_predictions, prediction_failures
from antgo.engine.runlock import ensure_held
from antgo.fileio import atomic_write_text
from antgo.predict.metadata import task_of_pred_key

logger = logging.getLogger(__name__)

__all__ = ["verify_parity", "ParityError", "DEFAULT_THRESHOLDS"]

DEFAULT_THRESHOLDS = {"max_abs_diff": 1e-3, "mean_abs_diff": 1e-4, "min_argmax_agreement": 0.999,
                      "max_metric_diff": 1e-3, **PREDICTION_THRESHOLDS}
_PARITY_KEYS = {*DEFAULT_THRESHOLDS, "num_samples", "batch_size"}
_REL_EPS = 1e-6


class ParityError(RuntimeError):
    """ONNX outputs differ from PyTorch beyond a threshold; ``.report`` holds the full report."""

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report


def _parity_options(cfg: Any, thresholds: Mapping[str, float] | None) -> tuple[dict[str, float], dict[str, Any]]:
    section = dict(cfg.get("parity") or {})
    for key in section:
        if key not in _PARITY_KEYS:
            raise ValueError(f"parity.{key} is not a parity option; known: {', '.join(sorted(_PARITY_KEYS))}")
    for key in thresholds or {}:
        if key not in DEFAULT_THRESHOLDS:
            raise ValueError(f"thresholds['{key}'] is not a threshold; known: {', '.join(DEFAULT_THRESHOLDS)}")
    merged = {**DEFAULT_THRESHOLDS, **{k: float(v) for k, v in section.items() if k in DEFAULT_THRESHOLDS},
              **{k: float(v) for k, v in (thresholds or {}).items()}}
    return merged, section


def _test_reader(cfg: Any) -> tuple[Any, str]:
    from antgo.data import build_dataset

    data = cfg.get("data") or {}
    for key in ("test", "val"):
        if isinstance(data.get(key), Mapping):
            return build_dataset(data[key], key_path=f"data.{key}"), f"data.{key}"
    raise ValueError("parity needs real samples: the config has neither data.test nor data.val")


def _batches(reader: Any, num_samples: int, batch_size: int) -> list[dict[str, Any]]:
    """Evenly spaced samples; the first batch holds one sample and the others up to ``batch_size`` (so
    both batch 1 and the dynamic batch axis are exercised). Samples of different sizes go to different batches."""
    from antgo.data import collate

    n = min(int(num_samples), len(reader))
    if n <= 0:
        raise ValueError(f"parity: the data set is empty or num_samples={num_samples}")
    indices = sorted({int(i) for i in np.linspace(0, len(reader) - 1, n).round()})
    groups: list[list[dict[str, Any]]] = []
    for i in indices:
        sample = reader[i]
        shape = tuple(np.shape(sample.get("image")))
        last = groups[-1] if groups else None
        limit = 1 if len(groups) == 1 else batch_size
        if last is None or len(last) >= limit or tuple(np.shape(last[0].get("image"))) != shape:
            groups.append([sample])
        else:
            last.append(sample)
    return [collate(g) for g in groups]


def _default_predictions(outputs: list[np.ndarray], image: torch.Tensor, pred_keys: list[str]
                         ) -> dict[str, Any] | None:
    """Predictions of a model without ``onnx_postprocess``, from the first output's shape: a 4-D score map
    (upsampled to the image, arg-maxed: segmentation) or 2-D (B, C) scores (classification), under the metrics'
    one prediction key. ``None`` when the outputs have neither form or the metrics read other predictions (boxes,
    keypoints): those need the model's own decoding."""
    out = torch.from_numpy(np.ascontiguousarray(outputs[0])).float()
    form = {4: "segmentation", 2: "classification"}.get(out.ndim)
    if form is None or len(pred_keys) > 1:
        return None
    key = pred_keys[0] if pred_keys else {"segmentation": "pred_segments", "classification": "pred"}[form]
    if task_of_pred_key(key) not in (None, form):  # e.g. keypoint heat maps for 'pred_joints2d'
        return None
    if form == "classification":
        return {key: out.numpy()}
    if tuple(out.shape[2:]) != tuple(image.shape[2:]):
        out = F.interpolate(out, size=image.shape[2:], mode="bilinear", align_corners=False)
    return {key: out.argmax(1).numpy()}


def _predictions(model: Any, outputs: list[np.ndarray], image: torch.Tensor, pred_keys: list[str]
                 ) -> dict[str, Any] | None:
    """The model's post-process when it has one (``onnx_postprocess``), else a default by output shape (``None``
    when there is none)."""
    post = getattr(model, "onnx_postprocess", None)
    if not callable(post):
        return _default_predictions(outputs, image, pred_keys)
    preds = post([torch.from_numpy(np.ascontiguousarray(o)) for o in outputs], image)
    missing = [k for k in pred_keys if k not in preds]
    if missing:
        raise KeyError(f"parity: {type(model).__name__}.onnx_postprocess returned {sorted(map(str, preds))}, but the "
                       f"metrics read {missing} (their keys()['pred']); return {missing} from onnx_postprocess, in "
                       f"the form forward_test returns them")
    return {k: to_numpy(v) for k, v in preds.items()}


def _skip_reason(model: Any, outputs: list[np.ndarray], pred_keys: list[str]) -> str:
    shapes = ", ".join(str(tuple(np.shape(o))) for o in outputs)
    return (f"{type(model).__name__} has no onnx_postprocess and its outputs ({shapes}) are not (B, C, h, w) or "
            f"(B, C) scores for the metrics' predictions {pred_keys}: only the raw outputs were compared; define "
            f"onnx_postprocess(outputs, image) to compare decoded predictions and the metric")


class _Stats:
    """Running per-output difference statistics."""

    def __init__(self, name: str, onnx_path: str) -> None:
        self.name, self.onnx_path = name, onnx_path
        self.max_abs = self.max_rel = self.abs_sum = 0.0
        self.count = self.agree = self.positions = 0
        self.shape: list[int] = []

    def update(self, ref: np.ndarray, got: np.ndarray, argmax: bool = True) -> None:
        if ref.shape != got.shape:
            raise ValueError(f"parity: output '{self.name}' of {self.onnx_path} has shape {got.shape} in onnxruntime "
                             f"but {ref.shape} from the model's onnx_export: the ONNX file was most likely exported "
                             f"from another config or checkpoint; export it again from this config and checkpoint "
                             f"(antgo export CONFIG --checkpoint CKPT) or verify it with the ones it came from")
        ref64, got64 = ref.astype(np.float64), got.astype(np.float64)
        diff = np.abs(ref64 - got64)
        self.shape = list(ref.shape[1:])
        self.max_abs = max(self.max_abs, float(diff.max(initial=0.0)))
        self.max_rel = max(self.max_rel, float((diff / (np.abs(ref64) + _REL_EPS)).max(initial=0.0)))
        self.abs_sum += float(diff.sum())
        self.count += diff.size
        if argmax and ref.ndim >= 2 and ref.shape[1] >= 2:
            same = ref.argmax(1) == got.argmax(1)
            self.agree += int(same.sum())
            self.positions += same.size

    def as_dict(self) -> dict[str, Any]:
        return {"max_abs_diff": self.max_abs, "mean_abs_diff": self.abs_sum / max(self.count, 1),
                "max_rel_error": self.max_rel,
                "argmax_agreement": self.agree / self.positions if self.positions else None,
                "argmax_positions": self.positions, "values": self.count, "shape": ["batch", *self.shape]}


def _feed(session: Any, batch: Mapping[str, Any]) -> tuple[list[str], list[torch.Tensor]]:
    names = [i.name for i in session.get_inputs()]
    tensors = []
    for name in names:
        value = batch.get(name, batch.get("image") if len(names) == 1 else None)
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"parity: ONNX input '{name}' has no tensor field in the test samples "
                             f"(fields: {sorted(batch)}); list it in data.test.inputs_def.fields")
        tensors.append(value.float())
    return names, tensors


class _MetricSide:
    """One copy of the metrics (the torch or the onnxruntime side), fed as the evaluation loop feeds them:
    streaming metrics one ``update`` per batch, the design document's (``keys()`` + ``__call__`` only) the
    per-sample lists once, at the end."""

    def __init__(self, metrics: list[Any]) -> None:
        self.metrics = metrics
        self.preds: list[dict[str, Any]] = []
        self.gts: list[dict[str, Any]] = []
        for metric in metrics:
            if is_streaming(metric):
                metric.reset()

    def add(self, preds: dict[str, Any], gts: dict[str, Any]) -> None:
        for metric in self.metrics:
            if is_streaming(metric):
                metric.update(preds, gts)
        if not all(is_streaming(m) for m in self.metrics):
            n = _batch_size(preds)
            self.preds.extend(_split(preds, n))
            self.gts.extend(_split(gts, n))

    def values(self) -> dict[str, float]:
        values: dict[str, float] = {}
        for metric in self.metrics:
            result = metric.compute() if is_streaming(metric) else metric(self.preds, self.gts)
            for key, value in result.items():
                if isinstance(value, (int, float, np.number)):
                    values[f"{type(metric).__name__}.{key}"] = float(value)
        return values


def _ground_truth(batch: Mapping[str, Any], metrics: list[Any]) -> dict[str, Any]:
    gts = {}
    for metric in metrics:
        for key in metric.keys().get("gt", []):
            if key not in batch:
                raise ValueError(f"parity: {type(metric).__name__} needs ground truth '{key}' but the test samples "
                                 f"hold {sorted(batch)}; add it to data.test.inputs_def.fields")
            gts[key] = to_numpy(batch[key])  # per-sample lists (boxes, keypoints) stay lists
    return gts


def _metric_diff(a: float, b: float) -> float:
    if math.isnan(a) and math.isnan(b):
        return 0.0
    return abs(a - b) if not (math.isnan(a) or math.isnan(b)) else math.inf


def _torch_outputs(model: Any, tensors: list[torch.Tensor], device: torch.device) -> list[np.ndarray]:
    with torch.no_grad():
        ref = model.onnx_export(*[t.to(device) for t in tensors])
    ref_list = [ref] if isinstance(ref, torch.Tensor) else list(ref.values() if isinstance(ref, Mapping) else ref)
    return [r.detach().float().cpu().numpy() for r in ref_list]


def _run(model: Any, session: Any, batches: list[dict[str, Any]], cfg: Any, device: torch.device, onnx_path: str
         ) -> tuple[dict[str, _Stats], dict[str, Any], dict[str, Any]]:
    from antgo.metrics import build_metrics

    metric_cfg = (cfg.get("evaluation") or {}).get("metric")
    torch_metrics, ort_metrics = build_metrics(metric_cfg), build_metrics(metric_cfg)
    torch_side, ort_side = _MetricSide(torch_metrics), _MetricSide(ort_metrics)
    pred_keys = list(dict.fromkeys(k for m in torch_metrics for k in m.keys().get("pred", [])))
    # with a post-process the decoded predictions are compared instead of the raw maps' argmax
    has_post = callable(getattr(model, "onnx_postprocess", None))
    out_names = [o.name for o in session.get_outputs()]
    stats = {name: _Stats(name, onnx_path) for name in out_names}
    pred_stats: dict[str, Any] = {}
    skipped: str | None = None
    for batch in batches:
        names, tensors = _feed(session, batch)
        ref_np = _torch_outputs(model, tensors, device)
        got = [np.asarray(g) for g in session.run(None, {n: t.numpy() for n, t in zip(names, tensors)})]
        if len(got) != len(ref_np):
            raise ValueError(f"parity: {onnx_path} has {len(got)} outputs, onnx_export returns {len(ref_np)}: the "
                             f"file was most likely exported from another config; export it again")
        torch_preds = _predictions(model, ref_np, tensors[0], pred_keys)
        for name, r, g in zip(out_names, ref_np, got):
            stats[name].update(r, g, argmax=not has_post and torch_preds is not None)
        if torch_preds is None:  # outputs of the model's own form: the raw comparison is all there is
            skipped = _skip_reason(model, ref_np, pred_keys)
            continue
        ort_preds = _predictions(model, got, tensors[0], pred_keys)
        compare_predictions(torch_preds, ort_preds, [*pred_keys, *torch_preds], pred_stats)
        gts = _ground_truth(batch, torch_metrics)
        torch_side.add(torch_preds, gts)
        ort_side.add(ort_preds, gts)
    metrics: dict[str, Any] = {"torch": {}, "onnxruntime": {}, "max_diff": None}
    if skipped:
        logger.warning("parity: decoded predictions and the metric not compared: %s", skipped)
        metrics["skipped"] = skipped
    elif torch_metrics:
        t_vals, o_vals = torch_side.values(), ort_side.values()
        metrics.update(torch=t_vals, onnxruntime=o_vals,
                       max_diff=max((_metric_diff(t_vals[k], o_vals[k]) for k in t_vals), default=0.0))
    return stats, metrics, {k: v.as_dict() for k, v in pred_stats.items()}


def _checks(outputs: dict[str, dict[str, Any]], metrics: dict[str, Any], predictions: dict[str, Any],
            thr: dict[str, float]) -> list[str]:
    failures = prediction_failures(predictions, thr)
    for name, s in outputs.items():
        if not s["max_abs_diff"] <= thr["max_abs_diff"]:
            failures.append(f"output '{name}': max_abs_diff {s['max_abs_diff']:.3g} > {thr['max_abs_diff']:.3g}")
        if not s["mean_abs_diff"] <= thr["mean_abs_diff"]:
            failures.append(f"output '{name}': mean_abs_diff {s['mean_abs_diff']:.3g} > {thr['mean_abs_diff']:.3g}")
        agree = s["argmax_agreement"]
        if agree is not None and not agree >= thr["min_argmax_agreement"]:
            failures.append(f"output '{name}': argmax_agreement {agree:.6f} < {thr['min_argmax_agreement']}")
    if metrics["max_diff"] is not None and not metrics["max_diff"] <= thr["max_metric_diff"]:
        worst = max(metrics["torch"], key=lambda k: _metric_diff(metrics["torch"][k], metrics["onnxruntime"][k]))
        failures.append(f"metric {worst}: torch {metrics['torch'][worst]:.6g} vs onnxruntime "
                        f"{metrics['onnxruntime'][worst]:.6g} (|diff| {metrics['max_diff']:.3g} > "
                        f"{thr['max_metric_diff']:.3g})")
    return failures


def _json_safe(value: Any) -> Any:
    """NaN/inf (a class absent from the samples, an infinite difference) → None: strict JSON readers reject them."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _checkpoint_from_export_json(onnx_path: str) -> str | None:
    info = os.path.join(os.path.dirname(os.path.abspath(onnx_path)), "export.json")
    if os.path.isfile(info):
        with open(info) as f:
            data = json.load(f)
        folder = os.path.dirname(info)  # paths inside the folder are stored relative to it (it may move)
        if os.path.abspath(resolve_in_run(data.get("onnx", ""), folder) or "") == os.path.abspath(onnx_path):
            return resolve_in_run(data.get("checkpoint"), folder)
    return None


def verify_parity(cfg: Any, onnx_path: str, checkpoint: str | None = None, work_dir: str | None = None,
                  num_samples: int | None = None, thresholds: Mapping[str, float] | None = None,
                  device: str | torch.device = "cpu") -> dict[str, Any]:
    """Compare onnxruntime with ``model.onnx_export`` on real samples; returns the report (also written to
    ``parity.json``) and raises ``ParityError`` when a check fails.

    ``checkpoint`` defaults to the one recorded in the ``export.json`` beside the ONNX file, then to
    ``cfg.checkpoint``. Thresholds: defaults < ``cfg.parity`` < ``thresholds``.
    """
    import onnxruntime as ort

    from antgo.engine.device import resolve_device

    start = time.perf_counter()
    cfg = load_config(cfg)
    onnx_path = os.fspath(onnx_path)
    if not os.path.isfile(onnx_path):
        raise FileNotFoundError(f"ONNX file not found: {onnx_path}; run the export first")
    thr, options = _parity_options(cfg, thresholds)
    checkpoint = checkpoint or _checkpoint_from_export_json(onnx_path) or cfg.get("checkpoint")
    dev = resolve_device(device)
    model = build_export_model(cfg, checkpoint, dev)
    reader, data_key = _test_reader(cfg)
    n = int(num_samples or options.get("num_samples", 16))
    batches = _batches(reader, n, int(options.get("batch_size", 4)))
    session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    stats, metrics, predictions = _run(model, session, batches, cfg, dev, os.path.abspath(onnx_path))
    outputs = {name: s.as_dict() for name, s in stats.items()}
    from antgo.predict.metadata import metadata_problems

    metadata = metadata_problems(session, cfg)  # what `antgo predict --onnx` will rely on
    failures = _checks(outputs, metrics, predictions, thr) + metadata
    report = {
        "passed": not failures, "failures": failures, "onnx": os.path.abspath(onnx_path),
        "checkpoint": os.path.abspath(checkpoint) if checkpoint else None, "data": data_key,
        "num_samples": sum(len(next(iter(b.values()))) for b in batches),
        "batch_sizes": [len(next(iter(b.values()))) for b in batches], "outputs": outputs,
        "predictions": predictions, "metrics": metrics, "metadata_problems": metadata, "thresholds": thr,
        "provider": "CPUExecutionProvider", "onnxruntime_version": ort.__version__,
        "torch_version": str(torch.__version__), "seconds": round(time.perf_counter() - start, 3),
    }
    out_dir = os.fspath(work_dir) if work_dir else os.path.dirname(os.path.abspath(onnx_path))
    os.makedirs(out_dir, exist_ok=True)
    report["report_file"] = os.path.join(out_dir, "parity.json")
    ensure_held(report["report_file"], f"writing {report['report_file']}")
    atomic_write_text(report["report_file"], json.dumps(_json_safe(report), indent=2))
    summary = ", ".join(f"{k}: max|Δ| {s['max_abs_diff']:.2e}, mean|Δ| {s['mean_abs_diff']:.2e}"
                        + (f", argmax {s['argmax_agreement']:.5f}" if s["argmax_agreement"] is not None else "")
                        for k, s in outputs.items())
    metric_note = f", metric |Δ| {metrics['max_diff']:.2e}" if metrics["max_diff"] is not None else ""
    metric_note += "".join(f", {key}: " + ", ".join(f"{n} {v:.4g}" for n, v in entries.items() if v is not None)
                           for key, entries in predictions.items())
    logger.info("parity %s on %d samples (%s%s)", "PASSED" if not failures else "FAILED", report["num_samples"],
                summary, metric_note)
    if failures:
        raise ParityError(f"ONNX parity failed for {onnx_path} ({report['num_samples']} samples from {data_key}):\n  "
                          + "\n  ".join(failures) + f"\nreport: {report['report_file']}", report)
    return report
