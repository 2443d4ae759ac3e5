"""What an exported ONNX file says about itself: task, input, preprocessing, classes and output meaning.

The exporter writes these fields into the model's ``metadata_props`` (one JSON value per key), so that
``antgo predict --onnx model.onnx`` needs only the file. Reading uses onnxruntime (or onnx) and no torch;
:func:`describe_model` reads a config and runs where the config is (export, parity, ``predict --checkpoint``).
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

logger = logging.getLogger(__name__)

METADATA_VERSION = "1"
# Fields parity compares between the file and the config it was exported from.
CHECKED_FIELDS = ("task", "input_name", "input_size", "resize", "pixel_scale", "mean", "std", "colour_order",
                  "class_names", "decode", "keypoint_names", "skeleton")
# The prediction key a metric reads tells the task; models and metrics of new tasks only need matching keys.
_TASK_BY_PRED_KEY = {"pred_segments": "segmentation", "box": "detection", "pred_joints2d": "keypoints",
                     "pred": "classification", "pred_boxes": "detection", "pred_bboxes": "detection",
                     "pred_keypoints": "keypoints", "pred_joints": "keypoints", "pred_labels": "classification",
                     "pred_label": "classification", "pred_classes": "classification"}
OUTPUT_MEANING = {
    "segmentation": "per-class scores (N, C, h, w), h and w possibly a fraction of the input size: resize "
                    "bilinearly to the input size, argmax over C gives the class index of each pixel",
    "classification": "per-class scores (N, C): softmax over C gives class probabilities",
    "detection": "CenterNet heat map (N, C, h, w, sigmoid), size and offset maps (N, 2, h, w) in output cells: "
                 "3x3 peaks, top-k, score threshold, class-wise NMS (see 'decode') give xyxy boxes in input pixels",
    "keypoints": "keypoint heat maps (N, K, h, w): the argmax cell refined by a log-parabola fit gives x, y in "
                 "input pixels and the peak value as the score",
}
# Detection / keypoint outputs of models other than the built-ins (no decode rule) have the model's own layout.
_OWN_LAYOUT_TASKS = ("detection", "keypoints")
_OWN_LAYOUT = "see the model's onnx_export"
# Classification outputs of a model whose export is not known: probabilities or scores (``decode.output='auto'``).
_AUTO_CLASS_MEANING = ("per-class scores (N, C): rows that already are probabilities (in [0, 1], summing to 1) are "
                       "taken as they are, the others get a softmax over C")


class MetadataError(ValueError):
    """An ONNX file without antgo metadata, or metadata that does not match its config."""


def _test_split(cfg: Mapping[str, Any]) -> Mapping[str, Any]:
    data = cfg.get("data") or {}
    for key in ("test", "val", "train"):
        if isinstance(data.get(key), Mapping):
            return data[key]
    return {}


def preprocessing_from_pipeline(pipeline: Sequence[Mapping[str, Any]], input_hw: Sequence[int]
                                ) -> dict[str, Any]:
    """Resize policy, pixel scale, mean and std from a test pipeline (the transforms that touch the image).

    The network input is ``(pixel * pixel_scale - mean) / std``; ``Normalize`` before ``ToTensor`` works on
    0-255 values (scale 1), after it on 0-1 values (scale 1/255).
    """
    resize: dict[str, Any] = {"policy": "stretch", "size": [int(input_hw[1]), int(input_hw[0])]}
    scale, mean, std, normalised, other = 1.0, [0.0, 0.0, 0.0], [1.0, 1.0, 1.0], False, []
    for step in pipeline or []:
        kind = str(step.get("type", ""))
        if kind == "ResizeS":
            dim = step.get("target_dim", (256, 256))
            w, h = (dim, dim) if isinstance(dim, int) else (dim[0], dim[1])
            resize = {"policy": "stretch", "size": [int(w), int(h)]}
        elif kind == "ResizeByShort":
            resize = {"policy": "short_side", "short_size": int(step["short_size"]),
                      "max_size": step.get("max_size")}
        elif kind == "ToTensor":
            if not normalised:  # uint8 in: divided by 255; Normalize already made floats: left as they are
                scale = 1.0 / 255.0
        elif kind == "Normalize":
            mean = [float(v) for v in step.get("mean", mean)]
            std = [float(v) for v in step.get("std", std)]
            normalised = True
        elif kind not in ("UnSqueeze", "Rename", "Collect"):
            other.append(kind)
    return {"resize": resize, "pixel_scale": scale, "mean": mean, "std": std, "ignored_transforms": other}


def task_of_pred_key(key: str) -> str | None:
    """The task a metric's prediction key stands for (``box`` → detection), ``None`` for a key of a new task."""
    return _TASK_BY_PRED_KEY.get(key)


def _metric_info(cfg: Mapping[str, Any]) -> tuple[str, list[str]]:
    """(task, class names) from the evaluation metric; names fall back to ``class_<i>``."""
    from antgo.metrics import build_metrics

    metrics = build_metrics((cfg.get("evaluation") or {}).get("metric"))
    task, names = "unknown", []
    for metric in metrics:
        keys = metric.keys() if callable(getattr(metric, "keys", None)) else {}
        for key in keys.get("pred", []):
            task = task_of_pred_key(key) or task
        names = names or [str(n) for n in (getattr(metric, "class_names", None) or [])]
        if not names and getattr(metric, "class_num", None):
            names = [f"class_{i}" for i in range(int(metric.class_num))]
    return task, names


def _built_in_layout(cfg: Mapping[str, Any]) -> str | None:
    """The built-in model whose outputs ``cfg.model.type`` has (that class or a subclass, looked up in
    ``MODELS``): ``CenterNet``, ``HeatmapPose`` or ``ImageClassifier``; ``None`` for any other model."""
    import antgo.models as built_in  # importing it registers the built-in models
    from antgo.registry import MODELS

    kind = (cfg.get("model") or {}).get("type")
    cls = kind if isinstance(kind, type) else MODELS.get(kind) if isinstance(kind, str) else None
    for name in ("CenterNet", "HeatmapPose", "ImageClassifier"):
        if isinstance(cls, type) and issubclass(cls, getattr(built_in, name)):
            return name
    return None


def _model_name(cfg: Mapping[str, Any]) -> str:
    kind = (cfg.get("model") or {}).get("type")
    return getattr(kind, "__name__", None) or str(kind)


def decode_spec(cfg: Mapping[str, Any], task: str, input_hw: Sequence[int],
                output_shapes: Sequence[Sequence[int]] | None) -> dict[str, Any] | None:
    """How ``antgo.predict.decode`` turns the outputs into predictions (the model's post-process parameters).

    Box and keypoint rules only for the models whose outputs have that layout (``CenterNet``, ``HeatmapPose`` and
    their subclasses); other models get none (``export.metadata`` may describe one). Classification: the
    probabilities of ``ImageClassifier``; scores of other models are told apart per row (``auto``).
    """
    model = cfg.get("model") or {}
    layout = _built_in_layout(cfg)
    stride = None
    if output_shapes and len(output_shapes[0]) == 4 and all(isinstance(d, int) for d in output_shapes[0][2:]):
        # input pixels per output cell (symbolic sizes of a dynamic-size export give none)
        stride = [float(input_hw[0]) / output_shapes[0][2], float(input_hw[1]) / output_shapes[0][3]]
    if task == "detection" and layout == "CenterNet":
        from antgo.predict.decode import CENTERNET_DEFAULTS

        test_cfg = dict(model.get("test_cfg") or {})
        return {"type": "centernet", **{k: test_cfg.get(k, v) for k, v in CENTERNET_DEFAULTS.items()},
                "stride": stride}
    if task == "keypoints" and layout == "HeatmapPose":
        return {"type": "heatmap_argmax", "refine": "log_parabola", "stride": stride}
    if task == "classification":
        output = "probabilities" if layout == "ImageClassifier" else "auto"
        return {"type": "softmax_topk", "output": output, "top_k": 5}
    return None


def _output_meaning(task: str, decode: Mapping[str, Any] | None) -> str:
    if decode is None and task in _OWN_LAYOUT_TASKS:
        return _OWN_LAYOUT
    if decode is not None and decode.get("output") == "auto":
        return _AUTO_CLASS_MEANING
    return OUTPUT_MEANING.get(task, _OWN_LAYOUT)


def describe_model(cfg: Mapping[str, Any], input_names: Sequence[str], input_shapes: Sequence[Sequence[int]],
                   output_names: Sequence[str], output_shapes: Sequence[Sequence[int]] | None = None,
                   overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The metadata of a model exported from ``cfg`` (``overrides``: ``export.metadata`` of the config)."""
    shape = list(input_shapes[0])
    task, names = _metric_info(cfg)
    pre = preprocessing_from_pipeline(_test_split(cfg).get("pipeline") or [], shape[2:4])
    decode = decode_spec(cfg, task, shape[2:4], output_shapes)
    meta: dict[str, Any] = {
        "antgo_metadata": METADATA_VERSION, "task": task, "input_name": str(input_names[0]),
        "input_size": [int(shape[3]), int(shape[2])], "input_channels": int(shape[1]),
        "colour_order": "RGB",  # antgo data sets decode to RGB (antgo.data.dataset.Dataset)
        "class_names": names, "output_names": list(output_names),
        "output_shapes": [["batch", *s[1:]] for s in output_shapes or []],
        "output_meaning": _output_meaning(task, decode),
        **{k: pre[k] for k in ("resize", "pixel_scale", "mean", "std")},
    }
    if decode is not None:  # segmentation files stay as they were (argmax needs no parameters)
        meta["decode"] = decode
    elif task in _OWN_LAYOUT_TASKS:  # named in the error of `antgo predict --onnx` (no known decode)
        meta["model_type"] = _model_name(cfg)
    if task == "keypoints":
        joints = int(output_shapes[0][1]) if output_shapes else 0
        meta["keypoint_names"] = [f"keypoint_{i}" for i in range(joints)]
        meta["skeleton"] = []
    if pre["ignored_transforms"]:
        meta["ignored_transforms"] = pre["ignored_transforms"]
    meta.update(dict(overrides or {}))
    return meta


def write_metadata(onnx_path: str | os.PathLike, metadata: Mapping[str, Any]) -> None:
    """Store ``metadata`` in the file's ``metadata_props`` (JSON values), replacing earlier antgo keys."""
    import onnx

    path = os.fspath(onnx_path)
    proto = onnx.load(path)
    keep = [p for p in proto.metadata_props if p.key not in metadata]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    for key, value in metadata.items():
        proto.metadata_props.add(key=str(key), value=json.dumps(value))
    onnx.save(proto, path)


def _decode(props: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, text in props.items():
        try:
            out[key] = json.loads(text)
        except (TypeError, ValueError):
            out[key] = text
    return out


def read_metadata(source: Any) -> dict[str, Any]:
    """The metadata of an ONNX file path or an onnxruntime ``InferenceSession`` (no torch, no onnx needed)."""
    if isinstance(source, (str, os.PathLike)):
        import onnxruntime as ort

        source = ort.InferenceSession(os.fspath(source), providers=["CPUExecutionProvider"])
    meta = _decode(dict(source.get_modelmeta().custom_metadata_map))
    if "antgo_metadata" not in meta:
        raise MetadataError("the ONNX file carries no antgo metadata (task, input size, mean/std, classes); "
                            "export it again with `antgo export CONFIG` or predict with `--checkpoint` and the "
                            "config")
    return meta


def compare_metadata(found: Mapping[str, Any], expected: Mapping[str, Any]) -> list[str]:
    """Differences between the file's metadata and the config's, one message per field."""
    problems = []
    for key in CHECKED_FIELDS:
        if found.get(key) != expected.get(key):
            problems.append(f"ONNX metadata '{key}' is {found.get(key)!r}, the config says {expected.get(key)!r}")
    return problems


def metadata_problems(session: Any, cfg: Any) -> list[str]:
    """Parity's metadata check: the file must describe itself as ``cfg`` would (empty list = consistent)."""
    from antgo.engine.exporter import export_spec

    try:
        found = read_metadata(session)
    except MetadataError as exc:
        return [str(exc)]
    spec = export_spec(cfg)
    expected = describe_model(cfg, spec["input_name_list"], spec["input_shape_list"],
                              [o.name for o in session.get_outputs()], [o.shape for o in session.get_outputs()],
                              overrides=spec["metadata"])
    return compare_metadata(found, expected)
