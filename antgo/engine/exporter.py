"""ONNX export of ``model.onnx_export`` with a dynamic batch axis, checked by ``onnx.checker``.

``Exporter(cfg, work_dir).export(checkpoint)`` writes ``<work_dir>/<name>.onnx`` (one self-contained file)
and ``export.json`` (names, shapes, opset, exporter, checkpoint, sha256). See ``docs/export.md``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from antgo.config import load_config
from antgo.engine.device import resolve_device
from antgo.engine.loading import run_relative
from antgo.engine.runlock import ensure_held
from antgo.fileio import atomic_write_text, replace_when_written

logger = logging.getLogger(__name__)

__all__ = ["Exporter", "ExportError", "load_config", "build_export_model", "export_spec", "switch_to_deploy",
           "sha256_of"]

DEFAULT_OPSET = 17
DYNAMO_OPSET = 18
_EXPORT_KEYS = {"input_shape_list", "input_name_list", "output_name_list", "opset_version", "dynamo", "name",
                "deploy", "metadata"}
_EXAMPLE = "export=dict(input_shape_list=[[1, 3, 256, 256]], input_name_list=['image'], output_name_list=['heatmap'])"


class ExportError(ValueError):
    """A missing or malformed ``export`` config, or a model that cannot be exported."""


def export_spec(cfg: Any) -> dict[str, Any]:
    """Validate ``cfg.export`` and return its fields with defaults filled in."""
    spec = cfg.get("export")
    if not isinstance(spec, Mapping):
        raise ExportError(f"the config has no 'export' dict; add one, e.g. {_EXAMPLE}")
    unknown = sorted(set(spec) - _EXPORT_KEYS)
    if unknown:
        raise ExportError(f"export.{unknown[0]} is not a known export key; known: {', '.join(sorted(_EXPORT_KEYS))}")
    shapes = spec.get("input_shape_list")
    _check_shapes(shapes)
    names = spec.get("input_name_list") or (["image"] if len(shapes) == 1 else None)
    if names is None or len(names) != len(shapes):
        raise ExportError(f"export.input_name_list {names!r} must name each of the {len(shapes)} input(s) in "
                          f"export.input_shape_list; make both lists the same length")
    outputs = spec.get("output_name_list")
    if outputs is not None and (isinstance(outputs, str) or not outputs):
        raise ExportError(f"export.output_name_list must be a non-empty list of names, got {outputs!r}")
    if "deploy" in spec:
        logger.warning("export.deploy (post-conversion to rknn/snpe/tensorrt/tnn) is not supported; ignored")
    return {"input_shape_list": [list(s) for s in shapes], "input_name_list": list(names),
            "output_name_list": list(outputs) if outputs is not None else None,
            "opset_version": spec.get("opset_version"), "dynamo": bool(spec.get("dynamo", False)),
            "name": spec.get("name"), "metadata": dict(spec.get("metadata") or {})}


def _is_image_shape(shape: Any) -> bool:
    return (isinstance(shape, Sequence) and not isinstance(shape, str) and len(shape) == 4
            and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape))


def _check_shapes(shapes: Any) -> None:
    """Each example input is an image batch: 4 positive ints (the metadata and predict read it so)."""
    if not isinstance(shapes, Sequence) or isinstance(shapes, str) or not shapes:
        raise ExportError(f"export.input_shape_list must be a list of shapes, one per input, e.g. "
                          f"[[1, 3, 256, 256]]; got {shapes!r}")
    for index, shape in enumerate(shapes):
        if not _is_image_shape(shape):
            raise ExportError(f"export.input_shape_list[{index}] is {shape!r}: each shape must be 4 positive ints "
                              f"[batch, channels, height, width] matching the training input, e.g. [1, 3, 256, 256]")


def _input_channels(model: nn.Module) -> int | None:
    """The input channels of the model's first convolution (what an example input must have), if it has one."""
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return int(first.in_channels) if first is not None else None


def _refuse_unsafe_output(path: str, checkpoint: str | None) -> None:
    """The ONNX file must not replace the checkpoint it is exported from, nor be named like something else."""
    if checkpoint and os.path.exists(path) and os.path.exists(checkpoint) and os.path.samefile(path, checkpoint):
        raise ExportError(f"the ONNX output path {path} is the checkpoint being exported ({checkpoint}): exporting "
                          f"would overwrite it; pass another output path ending in .onnx (--onnx / path=), e.g. "
                          f"{os.path.join(os.path.dirname(path), 'model.onnx')}")
    if not path.lower().endswith(".onnx"):
        raise ExportError(f"the ONNX output path {path} does not end in .onnx; pass a path ending in .onnx "
                          f"(--onnx / path=), e.g. {os.path.splitext(path)[0]}.onnx")


def switch_to_deploy(module: nn.Module) -> int:
    """Call ``switch_to_deploy()`` on every module that has it, outermost first; a module that has it is
    trusted to handle its own children (so re-parameterisation never runs twice). Returns the count."""
    fn = getattr(module, "switch_to_deploy", None)
    if callable(fn):
        fn()
        return 1
    return sum(switch_to_deploy(child) for child in module.children())


def build_export_model(cfg: Any, checkpoint: str | None, device: str | torch.device = "cpu") -> nn.Module:
    """``build_model(cfg.model)`` + strict checkpoint load + eval + ``switch_to_deploy`` (what export and
    parity both run)."""
    from antgo.engine.loading import build_model_from_checkpoint

    if not checkpoint:
        raise ExportError("no checkpoint to export: pass checkpoint='…/best.pth' or set checkpoint=… in the config")
    model = build_model_from_checkpoint(cfg, checkpoint, "cpu")  # strict, and refuses NaN/inf weights by name
    if not callable(getattr(model, "onnx_export", None)):
        raise ExportError(f"{type(model).__name__} has no onnx_export(image) method: add one that returns the "
                          f"tensors to export")
    count = switch_to_deploy(model)
    if count:
        logger.info("switch_to_deploy() called on %d module(s)", count)
    return model.to(resolve_device(device))


class _OnnxExportWrapper(nn.Module):
    """Makes ``onnx_export`` the traced forward without patching the user's model."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *inputs: torch.Tensor) -> Any:
        return self.model.onnx_export(*inputs)


def _as_tuple(outputs: Any) -> tuple[torch.Tensor, ...]:
    if isinstance(outputs, torch.Tensor):
        return (outputs,)
    if isinstance(outputs, Mapping):
        return tuple(outputs.values())
    return tuple(outputs)


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class Exporter:
    """Exports the config's model (``onnx_export``) from a checkpoint to ONNX."""

    def __init__(self, cfg: Any, work_dir: str = "./output", device: str | torch.device = "cpu") -> None:
        self.cfg = load_config(cfg)
        self.work_dir = os.fspath(work_dir)
        self.device = resolve_device(device)

    def _default_name(self, spec: Mapping[str, Any]) -> str:
        if spec.get("name"):
            return str(spec["name"])
        filename = getattr(self.cfg, "filename", None)
        return os.path.splitext(os.path.basename(filename))[0] if filename else "model"

    def export(self, checkpoint: str | None = None, path: str | None = None, dynamo: bool | None = None,
               opset_version: int | None = None) -> str:
        """Export and check the model; returns the path of the ``.onnx`` file."""
        spec = export_spec(self.cfg)
        checkpoint = checkpoint or self.cfg.get("checkpoint")
        dynamo = spec["dynamo"] if dynamo is None else bool(dynamo)
        # each exporter's native opset unless asked: 17 (TorchScript), 18 (dynamo; lower ones need a conversion)
        opset = int(opset_version or spec["opset_version"] or (DYNAMO_OPSET if dynamo else DEFAULT_OPSET))
        path = os.fspath(path) if path else os.path.join(self.work_dir, f"{self._default_name(spec)}.onnx")
        _refuse_unsafe_output(path, checkpoint)
        model = build_export_model(self.cfg, checkpoint, self.device)
        ensure_held(path, f"exporting {path}")
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

        gen = torch.Generator().manual_seed(0)
        inputs = tuple(torch.randn(shape, generator=gen).to(self.device) for shape in spec["input_shape_list"])
        wrapper = _OnnxExportWrapper(model).eval()
        reference = self._reference_run(wrapper, inputs, spec["input_shape_list"])
        output_names = spec["output_name_list"] or (
            ["output"] if len(reference) == 1 else [f"output_{i}" for i in range(len(reference))])
        if len(output_names) != len(reference):
            raise ExportError(f"export.output_name_list has {len(output_names)} name(s) but onnx_export returns "
                              f"{len(reference)} tensor(s); list one name per returned tensor")
        input_names = spec["input_name_list"]
        dynamic_axes = {name: {0: "batch"} for name in [*input_names, *output_names]}

        def write(tmp: str) -> tuple[dict[str, Any], float]:  # checked and described before it replaces a file
            start = time.perf_counter()
            self._run_export(wrapper, inputs, tmp, input_names, output_names, dynamic_axes, opset, dynamo, path)
            seconds = time.perf_counter() - start
            self._check(tmp, input_names, output_names, path)
            return self._write_metadata(tmp, spec, output_names, reference), seconds

        # .onnx: onnx.save picks the format by suffix
        metadata, seconds = replace_when_written(path, write, suffix=".onnx")
        folder = os.path.dirname(os.path.abspath(path))  # export.json's paths are relative to it when inside
        info = {
            "onnx": run_relative(path, folder), "exporter": "dynamo" if dynamo else "torchscript", "opset_version": opset,
            "inputs": [{"name": n, "shape": ["batch", *s[1:]], "example_shape": s}
                       for n, s in zip(input_names, spec["input_shape_list"])],
            "outputs": [{"name": n, "shape": ["batch", *t.shape[1:]], "example_shape": list(t.shape)}
                        for n, t in zip(output_names, reference)],
            "checkpoint": run_relative(checkpoint, folder), "sha256": sha256_of(path), "bytes": os.path.getsize(path),
            "config": getattr(self.cfg, "filename", None), "model": type(model).__name__,
            "torch_version": str(torch.__version__), "export_seconds": round(seconds, 3),
            "time": time.strftime("%Y-%m-%d %H:%M:%S"), "metadata": metadata,
        }
        atomic_write_text(os.path.join(folder, "export.json"), json.dumps(info, indent=2))
        logger.info("exported %s (%s, opset %d, %.1f s): inputs %s, outputs %s", path, info["exporter"], opset,
                    seconds, [i["shape"] for i in info["inputs"]], [o["shape"] for o in info["outputs"]])
        return path

    @staticmethod
    def _reference_run(wrapper: _OnnxExportWrapper, inputs: tuple[torch.Tensor, ...],
                       shapes: list[list[int]]) -> tuple[torch.Tensor, ...]:
        """``onnx_export`` on the example inputs; a shape the model cannot take is named as config key."""
        try:
            with torch.no_grad():
                return _as_tuple(wrapper(*inputs))
        except Exception as exc:
            channels = _input_channels(wrapper.model)
            needs = f" (its first convolution takes {channels} channels)" if channels else ""
            raise ExportError(f"the model's onnx_export failed on example inputs of export.input_shape_list "
                              f"{shapes}: {type(exc).__name__}: {exc}. Each shape must be [batch, channels, height, "
                              f"width] matching the training input{needs}") from exc

    def _write_metadata(self, path: str, spec: Mapping[str, Any], output_names: list[str],
                        reference: tuple[torch.Tensor, ...]) -> dict[str, Any]:
        """Make the file self-describing (task, preprocessing, classes, outputs) for ``antgo predict --onnx``."""
        from antgo.predict.metadata import describe_model, write_metadata

        metadata = describe_model(self.cfg, spec["input_name_list"], spec["input_shape_list"], output_names,
                                  [list(t.shape) for t in reference], overrides=spec["metadata"])
        write_metadata(path, metadata)
        return metadata

    @staticmethod
    def _run_export(wrapper: nn.Module, inputs: tuple[torch.Tensor, ...], path: str, input_names: list[str],
                    output_names: list[str], dynamic_axes: dict[str, dict[int, str]], opset: int,
                    dynamo: bool, target: str) -> None:
        """Export into ``path``; errors name ``target``, the file it becomes."""
        kwargs: dict[str, Any] = dict(input_names=input_names, output_names=output_names, opset_version=opset,
                                      dynamic_axes=dynamic_axes, dynamo=dynamo)
        if dynamo:
            kwargs["external_data"] = False  # one self-contained file
            kwargs["verbose"] = False
            # forward(*inputs): the dynamo exporter wants dynamic_shapes nested like the arguments
            batch = torch.export.Dim("batch", min=1)
            kwargs["dynamic_shapes"] = (tuple({0: batch} for _ in inputs),)
            del kwargs["dynamic_axes"]
            # torch.export specialises dimensions of size 1, so trace with batch 2 (the graph is batch-agnostic)
            inputs = tuple(x.expand(2, *x.shape[1:]).contiguous() if x.shape[0] == 1 else x for x in inputs)
        else:
            kwargs["do_constant_folding"] = True
        with warnings.catch_warnings(), torch.no_grad():
            # the TorchScript exporter warns that it is deprecated; it is the fast (0.4 s) default here
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", message=".*TorchScript.*")
            try:
                torch.onnx.export(wrapper, inputs, path, **kwargs)
            except Exception as exc:
                raise ExportError(f"torch.onnx.export ({'dynamo' if dynamo else 'torchscript'}, opset {opset}) "
                                  f"failed for {target}: {exc}") from exc

    @staticmethod
    def _check(path: str, input_names: list[str], output_names: list[str], target: str) -> None:
        """``onnx.checker``, a dynamic batch axis and the output names of ``path``; errors name ``target``."""
        import onnx

        proto = onnx.load(path)
        onnx.checker.check_model(proto)
        graph_inputs = [i for i in proto.graph.input if i.name in input_names]
        for value in [*graph_inputs, *proto.graph.output]:
            dims = value.type.tensor_type.shape.dim
            if dims and not dims[0].dim_param:
                raise ExportError(f"{target}: '{value.name}' has a fixed batch dimension ({dims[0].dim_value}); "
                                  f"the exporter could not make it dynamic")
        got = [o.name for o in proto.graph.output]
        if got != output_names:
            raise ExportError(f"{target}: outputs are {got}, expected {output_names}")
