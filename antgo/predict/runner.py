"""``antgo predict``: an image, a folder or a video through an ONNX file or a checkpoint.

Writes ``<out_dir>/<name>.png`` overlays (masks, boxes, keypoints or the top classes; ``<name>_mask.png``
class-index masks for segmentation) and ``<out_dir>/predictions.json``. The ONNX path imports onnxruntime, numpy and OpenCV only, never torch.
"""
from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np

from antgo.fileio import atomic_write_text
from antgo.predict.metadata import read_metadata
from antgo.predict.overlay import overlay_panels, prediction_overlay, save_rgb
from antgo.predict.processing import DECODED_TASKS, postprocess, preprocess

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")
PREDICTIONS_FILE = "predictions.json"
_ACCEPTED = (f"pass an image ({', '.join(IMAGE_SUFFIXES)}), a video ({', '.join(VIDEO_SUFFIXES)}) or a folder "
             f"of images")
# what onnxruntime raises for a file that is not a loadable ONNX model (text, empty, damaged)
_ORT_LOAD_ERRORS = ("InvalidProtobuf", "InvalidArgument", "InvalidGraph", "NoModel", "Fail")


class InvalidOnnxModel(ValueError):
    """A ``--onnx`` file that onnxruntime cannot load as a model."""


class PredictInputErrors(ValueError):
    """Some images of a folder could not be read: ``failed`` holds their ``{"source", "error"}`` records. Raised
    after the others were predicted and everything was written."""

    def __init__(self, failed: list[dict[str, Any]], total: int, predictions_file: str) -> None:
        self.failed = failed
        self.predictions_file = predictions_file
        listed = "; ".join(f"{r['source']}: {r['error']}" for r in failed[:5]) + ("; ..." if len(failed) > 5 else "")
        super().__init__(f"{len(failed)} of {total} input image(s) could not be read ({listed}); the others were "
                         f"predicted, and {predictions_file} records every image")


class SourceImage(NamedTuple):
    """One input of a predict run."""

    name: str  # the stem of its output files, unique in the run
    source: str  # the file it comes from, with its suffix
    image: np.ndarray | None  # RGB uint8; None when it could not be read
    error: str | None = None  # why it could not be read
    frame: int | None = None  # the frame index in a video


class OnnxModel:
    """An exported ONNX file run with onnxruntime; preprocessing comes from the file's metadata."""

    def __init__(self, path: str | os.PathLike, providers: list[str] | None = None) -> None:
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"ONNX file {self.path} not found; export one with `antgo export CONFIG`")
        self.session = _load_session(self.path, providers or ["CPUExecutionProvider"])
        self.meta = read_metadata(self.session)
        self.input_name = self.meta.get("input_name") or self.session.get_inputs()[0].name

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        return list(self.session.run(None, {self.input_name: x}))


def _load_session(path: str, providers: list[str]) -> Any:
    """An onnxruntime session; a file that is no ONNX model is named with how to make one."""
    import onnxruntime as ort
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

    errors = tuple(getattr(ort_state, name) for name in _ORT_LOAD_ERRORS if hasattr(ort_state, name))
    try:
        return ort.InferenceSession(path, providers=providers)
    except errors as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InvalidOnnxModel(f"{path} is not a valid ONNX model (onnxruntime: {reason}); make one with "
                               f"`antgo export CONFIG --checkpoint CHECKPOINT`") from exc


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
        """The model's own torch post-process on the first sample, in input pixels, in the form of
        ``antgo.predict.decode.decode_outputs``: ``onnx_postprocess(outputs, x)`` when the model has one, else its
        ``forward_test(image=x)`` (a model written from the design document); ``None`` for the tasks decoded by
        the file's rules (segmentation)."""
        task = self.meta.get("task")
        if task not in DECODED_TASKS:
            return None
        post = getattr(self.model, "onnx_postprocess", None)
        with self._torch.no_grad():
            if callable(post):
                result = post([self._torch.from_numpy(o) for o in outputs], self._torch.from_numpy(x))
            else:
                result = self.model.forward_test(image=self._torch.from_numpy(x).to(self.device))
        where = f"{type(self.model).__name__}.{'onnx_postprocess' if callable(post) else 'forward_test'}"
        return self._first_prediction(result, task, where)

    @staticmethod
    def _first_prediction(result: Mapping[str, Any], task: str, where: str) -> dict[str, np.ndarray]:
        """The first sample of a prediction in the task forms (per-sample lists or batch arrays) in the form of
        ``decode_outputs``: detection ``box`` (N, 4) + ``score`` (N,), or ``box`` (N, 5) whose 5th column is the
        score, + ``label``; keypoints ``pred_joints2d`` (B, 1, K, 3), (B, K, 3) or (B, K, 2) (score 1); classification
        ``pred`` (B, C) scores (rows that are not probabilities yet get a softmax)."""
        from antgo.metrics._coco import per_sample
        from antgo.metrics.detection import split_box_scores
        from antgo.predict.decode import class_probabilities
        from antgo.predict.processing import keypoint_instances

        needed = {"detection": ("box", "label"), "keypoints": ("pred_joints2d",), "classification": ("pred",)}[task]
        missing = [k for k in needed if k not in result]
        if missing:
            raise KeyError(f"{where} returned {sorted(map(str, result))}; {task} predictions need {missing}: return "
                           f"the task form of the design document ({', '.join(repr(k) for k in needed)})")
        if task == "detection":
            score = per_sample(result["score"])[0] if "score" in result else None
            boxes, scores = split_box_scores(per_sample(result["box"])[0], score, where)
            return {"box": boxes, "score": scores, "label": per_sample(result["label"])[0].reshape(-1)}
        if task == "keypoints":
            instances = keypoint_instances(per_sample(result["pred_joints2d"])[0])
            return {"keypoints": instances[0] if len(instances) else np.zeros((0, 3))}
        scores = per_sample(result["pred"])[0].reshape(1, -1)
        return {"probs": class_probabilities(scores, "auto")[0]}

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


def _image_files(path: Path) -> list[Path] | None:
    """The images of a folder (sorted) or the one image ``path`` is; ``None`` for a video."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder {path}")
        return files
    if not path.exists():
        raise FileNotFoundError(f"predict source {path} does not exist; {_ACCEPTED}")
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return None
    if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
        return [path]
    raise ValueError(f"predict source {path} is neither an image, a video nor a folder; {_ACCEPTED}")


def _output_files(name: str) -> tuple[str, str]:
    """What a prediction named ``name`` may write: the overlay and the segmentation mask."""
    return f"{name}.png", f"{name}_mask.png"


def _unique_names(files: list[Path]) -> list[str]:
    """One output name per file: its stem where no other file has that stem, else stem_suffix (a.jpg, a.png:
    a_jpg, a_png); a number is added where an output file would still repeat (b.png's mask b_mask.png and
    b_mask.png's overlay: b_mask_2)."""
    stems = Counter(f.stem.casefold() for f in files)
    taken: set[str] = set()  # casefolded: one file on a case-insensitive disk
    names = []
    for file in files:
        base = file.stem if stems[file.stem.casefold()] == 1 else f"{file.stem}_{file.suffix[1:]}"
        name, number = base, 2
        while taken & {o.casefold() for o in _output_files(name)}:
            name, number = f"{base}_{number}", number + 1
        taken |= {o.casefold() for o in _output_files(name)}
        names.append(name)
    return names


def _file_id(path: Path) -> tuple[int, int] | None:
    """Device and inode: the same file through any link or spelling; ``None`` when it does not exist."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def _refuse_overwriting_sources(files: list[Path], names: list[str], out: Path) -> None:
    """No output file may replace a source image (``--out-dir`` the source folder, or a link to it)."""
    if not out.is_dir():
        return
    sources = {key: file for file in files if (key := _file_id(file)) is not None}
    for name in names:
        for output in (out / o for o in _output_files(name)):
            source = sources.get(_file_id(output))
            if source is not None:
                raise FileExistsError(f"predicting into --out-dir {out} would overwrite the source image {source} "
                                      f"with {output.name}; pass another --out-dir (e.g. "
                                      f"{out.parent / (out.name + '_predictions')})")


def _read_images(files: list[Path], names: list[str], strict: bool) -> Iterator[SourceImage]:
    """Each file read; one that cannot be read is an error when ``strict``, else a warning and an error entry."""
    for file, name in zip(files, names):
        try:
            image = read_image(file)
        except (ValueError, OSError, cv2.error) as exc:
            if strict:
                raise
            logger.warning("cannot read %s, skipped: %s", file, exc)
            yield SourceImage(name, file.name, None, str(exc))
            continue
        yield SourceImage(name, file.name, image)


def _video_frames(path: Path, max_frames: int | None) -> Iterator[SourceImage]:
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise ValueError(f"cannot open video {path}")
    try:
        index = 0
        while max_frames is None or index < max_frames:
            ok, frame = capture.read()
            if not ok:
                break
            yield SourceImage(f"{path.stem}_{index:05d}", path.name, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB),
                              frame=index)
            index += 1
    finally:
        capture.release()


def iter_source(source: str | os.PathLike, max_frames: int | None = None,
                out_dir: str | os.PathLike | None = None) -> Iterator[SourceImage]:
    """A :class:`SourceImage` for an image, every image of a folder (sorted) or the frames of a video.

    A missing or unsupported source, or a single image that cannot be read, is an error; an unreadable image of
    a folder comes with its ``error``. With ``out_dir``, refuses at once (before reading) when an output file
    there would replace a source image."""
    path = Path(source)
    files = _image_files(path)
    if files is None:
        return _video_frames(path, max_frames)
    names = _unique_names(files)
    if out_dir is not None:
        _refuse_overwriting_sources(files, names, Path(out_dir))
    return _read_images(files, names, strict=not path.is_dir())


def predict_image(model: Any, image: np.ndarray) -> dict[str, Any]:
    """One RGB image through ``model`` (OnnxModel or CheckpointModel): the post-processed prediction."""
    x = preprocess(image, model.meta)
    outputs = model(x)
    decode = getattr(model, "decode", None)  # a checkpoint decodes with the model's torch post-process
    decoded = decode(outputs, x) if callable(decode) else None
    return postprocess(outputs, model.meta, image.shape[:2], x.shape[2:4], decoded=decoded)


def _predict_record(model: Any, item: SourceImage, out: Path, class_names: list[str]) -> dict[str, Any]:
    """One image predicted; its overlay (and mask) written into ``out``; its ``predictions.json`` entry."""
    record: dict[str, Any] = {"source": item.source, **({} if item.frame is None else {"frame": item.frame})}
    if item.image is None:
        return {**record, "error": item.error}
    image = item.image
    overlay_file, mask_file = (out / f for f in _output_files(item.name))
    pred = predict_image(model, image)
    record.update({"height": int(image.shape[0]), "width": int(image.shape[1]),
                   **{k: v for k, v in pred.items() if k != "mask"}})
    if "mask" in pred:
        cv2.imwrite(str(mask_file), pred["mask"])
        record["mask"] = mask_file.name
        record["overlay"] = Path(save_rgb(str(overlay_file),
                                          overlay_panels(image, [("prediction", pred["mask"])], class_names))).name
    elif pred.get("task") in DECODED_TASKS:
        record["overlay"] = Path(save_rgb(str(overlay_file), prediction_overlay(image, pred, model.meta))).name
    return record


def run_predict(model: Any, source: str | os.PathLike, out_dir: str | os.PathLike,
                max_frames: int | None = None) -> list[dict[str, Any]]:
    """Predict every image of ``source``; write overlays, masks and ``predictions.json`` into ``out_dir``.

    Refuses before predicting when an output would replace a source image. An image of a folder that cannot be
    read is logged and recorded as ``{"source": ..., "error": ...}``; once the others are predicted and
    ``predictions.json`` is written (atomically), :class:`PredictInputErrors` names them."""
    out = Path(out_dir)
    items = iter_source(source, max_frames, out_dir=out)
    out.mkdir(parents=True, exist_ok=True)
    names = list(model.meta.get("class_names") or [])
    records = [_predict_record(model, item, out, names) for item in items]
    result = {"model": getattr(model, "path", None) or "checkpoint", "task": model.meta.get("task"),
              "class_names": names, "predictions": records}
    json_file = atomic_write_text(out / PREDICTIONS_FILE, json.dumps(result, indent=2))
    failed = [r for r in records if "error" in r]
    logger.info("predicted %d image(s) from %s: %s", len(records) - len(failed), source, json_file)
    if failed:
        raise PredictInputErrors(failed, len(records), json_file)
    return records


def overlay_samples(model: Any, dataset: Any, count: int, out_dir: str | os.PathLike) -> list[str]:
    """``image | ground truth | prediction`` overlays with a legend for the first ``count`` samples of a data set
    (``sample(i)`` with ``image`` and, when present, ``segments``); returns the PNG paths."""
    if model.meta.get("task") not in ("segmentation", "unknown"):  # "unknown": guessed from the output shape
        logger.info("no mask overlays for %s predictions (boxes and keypoints: antgo.tracking.task_plots)",
                    model.meta.get("task"))
        return []
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
