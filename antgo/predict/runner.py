"""``antgo predict``: an image, a folder or a video through an ONNX file or a checkpoint.

Writes ``<out_dir>/<name>.png`` overlays (masks, boxes, keypoints or the top classes; ``<name>_mask.png``
class-index masks for segmentation) and ``<out_dir>/predictions.json``. The ONNX path imports onnxruntime, numpy and OpenCV only, never torch.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from antgo.predict.metadata import read_metadata
from antgo.predict.overlay import overlay_panels, prediction_overlay, save_rgb
from antgo.predict.processing import DECODED_TASKS, postprocess, preprocess

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")


class OnnxModel:
    """An exported ONNX file run with onnxruntime; preprocessing comes from the file's metadata."""

    def __init__(self, path: str | os.PathLike, providers: list[str] | None = None) -> None:
        import onnxruntime as ort

        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"ONNX file {self.path} not found; export one with `antgo export CONFIG`")
        self.session = ort.InferenceSession(self.path, providers=providers or ["CPUExecutionProvider"])
        self.meta = read_metadata(self.session)
        self.input_name = self.meta.get("input_name") or self.session.get_inputs()[0].name

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        return list(self.session.run(None, {self.input_name: x}))


class CheckpointModel:
    """The config's model with a checkpoint (full training state or weights only), run with PyTorch."""

    def __init__(self, cfg: Any, checkpoint: str, device: str | None = None) -> None:
        import torch

        from antgo.engine.exporter import build_export_model, export_spec, load_config
        from antgo.predict.metadata import describe_model

        self._torch = torch
        self.cfg = load_config(cfg)
        spec = export_spec(self.cfg)
        self.model = build_export_model(self.cfg, checkpoint, device or "cpu")
        self.device = next(self.model.parameters()).device
        self.meta = describe_model(self.cfg, spec["input_name_list"], spec["input_shape_list"],
                                   spec["output_name_list"] or ["output"],
                                   overrides=(self.cfg.get("export") or {}).get("metadata"))

    def decode(self, outputs: list[np.ndarray], x: np.ndarray) -> dict[str, np.ndarray] | None:
        """The model's own torch post-process (``onnx_postprocess``) on the first sample, in input pixels, in
        the form of ``antgo.predict.decode.decode_outputs``; ``None`` for tasks decoded by the file's rules."""
        post = getattr(self.model, "onnx_postprocess", None)
        task = self.meta.get("task")
        if not callable(post) or task not in DECODED_TASKS:
            return None
        with self._torch.no_grad():
            result = post([self._torch.from_numpy(o) for o in outputs], self._torch.from_numpy(x))
        if task == "detection":
            return {k: result[k][0].cpu().numpy() for k in ("box", "score", "label")}
        if task == "keypoints":
            return {"keypoints": result["pred_joints2d"][0, 0].cpu().numpy()}
        return {"probs": result["pred"][0].double().cpu().numpy()}

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        with self._torch.no_grad():
            out = self.model.onnx_export(self._torch.from_numpy(x).to(self.device))
        items = [out] if isinstance(out, self._torch.Tensor) else list(out.values() if isinstance(out, Mapping)
                                                                       else out)
        return [t.detach().float().cpu().numpy() for t in items]


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as RGB uint8."""
    image = cv2.imread(os.fspath(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"cannot decode image {path} (corrupt or not an image)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def iter_source(source: str | os.PathLike, max_frames: int | None = None) -> Iterator[tuple[str, np.ndarray]]:
    """``(name, RGB image)`` for an image, every image of a folder (sorted) or the frames of a video."""
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder {path}")
        for file in files:
            yield file.stem, read_image(file)
    elif path.suffix.lower() in VIDEO_SUFFIXES:
        capture = cv2.VideoCapture(str(path))
        if not capture.isOpened():
            raise ValueError(f"cannot open video {path}")
        try:
            index = 0
            while max_frames is None or index < max_frames:
                ok, frame = capture.read()
                if not ok:
                    break
                yield f"{path.stem}_{index:05d}", cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                index += 1
        finally:
            capture.release()
    elif path.is_file():
        yield path.stem, read_image(path)
    else:
        raise FileNotFoundError(f"predict source {path} is neither an image, a video nor a folder")


def predict_image(model: Any, image: np.ndarray) -> dict[str, Any]:
    """One RGB image through ``model`` (OnnxModel or CheckpointModel): the post-processed prediction."""
    x = preprocess(image, model.meta)
    outputs = model(x)
    decode = getattr(model, "decode", None)  # a checkpoint decodes with the model's torch post-process
    decoded = decode(outputs, x) if callable(decode) else None
    return postprocess(outputs, model.meta, image.shape[:2], x.shape[2:4], decoded=decoded)


def run_predict(model: Any, source: str | os.PathLike, out_dir: str | os.PathLike,
                max_frames: int | None = None) -> list[dict[str, Any]]:
    """Predict every image of ``source``; write overlays, masks and ``predictions.json`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = list(model.meta.get("class_names") or [])
    records = []
    for name, image in iter_source(source, max_frames):
        pred = predict_image(model, image)
        record = {"source": name, "height": int(image.shape[0]), "width": int(image.shape[1]),
                  **{k: v for k, v in pred.items() if k != "mask"}}
        if "mask" in pred:
            mask_file = out / f"{name}_mask.png"
            cv2.imwrite(str(mask_file), pred["mask"])
            record["mask"] = mask_file.name
            record["overlay"] = Path(save_rgb(str(out / f"{name}.png"),
                                              overlay_panels(image, [("prediction", pred["mask"])], names))).name
        elif pred.get("task") in DECODED_TASKS:
            record["overlay"] = Path(save_rgb(str(out / f"{name}.png"),
                                              prediction_overlay(image, pred, model.meta))).name
        records.append(record)
    result = {"model": getattr(model, "path", None) or "checkpoint", "task": model.meta.get("task"),
              "class_names": names, "predictions": records}
    (out / "predictions.json").write_text(json.dumps(result, indent=2))
    logger.info("predicted %d image(s) from %s: %s", len(records), source, out / "predictions.json")
    return records


def overlay_samples(model: Any, dataset: Any, count: int, out_dir: str | os.PathLike) -> list[str]:
    """``image | ground truth | prediction`` overlays with a legend for the first ``count`` samples of a data set
    (``sample(i)`` with ``image`` and, when present, ``segments``); returns the PNG paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = list(model.meta.get("class_names") or [])
    files = []
    for index in range(min(int(count), len(dataset))):
        sample = dataset.sample(index)
        image = np.asarray(sample["image"])
        pred = predict_image(model, image)
        if "mask" not in pred:
            break  # only segmentation masks have an overlay form here
        panels = [("prediction", pred["mask"])]
        if sample.get("segments") is not None:
            panels.insert(0, ("ground truth", np.asarray(sample["segments"])))
        files.append(save_rgb(str(out / f"{index:05d}.png"), overlay_panels(image, panels, names)))
    return files
