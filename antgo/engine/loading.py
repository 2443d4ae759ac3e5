"""One way to do each loading step, shared by Trainer, Tester, Exporter, parity, the CLI and the flow:

- :func:`antgo.config.load_config` — file, dict or ``Config`` → validated ``Config`` (re-exported here);
- :func:`antgo.engine.checkpoint.read_checkpoint` — the one checkpoint reader (``weights_only=True``);
- :func:`build_model_from_checkpoint` — ``build_model(cfg.model)`` + strict, finite weights;
- :func:`find_checkpoint` — where a run folder keeps its checkpoints (the rule the Trainer writes by);
- :func:`resolve_out_dir`, :func:`run_relative`, :func:`resolve_in_run`, :func:`resolve_beside_checkpoint` —
  paths inside a run folder;
- :func:`require_samples` — an empty split fails before training, naming the split and its file;
- :func:`preflight_images` — a truncated or missing image/mask file fails before training, naming the file,
  the split and the index (:func:`check_split` runs both for the Trainer).
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from antgo.config import load_config
from antgo.engine.checkpoint import load_checkpoint

logger = logging.getLogger(__name__)

__all__ = ["load_config", "build_model_from_checkpoint", "find_checkpoint", "checkpoint_folders",
           "resolve_out_dir", "run_relative", "resolve_in_run", "resolve_beside_checkpoint", "require_samples",
           "preflight_images", "check_split", "EmptySplitError"]

CHECKPOINT_NAMES = ("best.pth", "latest.pth")


class EmptySplitError(ValueError):
    """A data split with no samples; the message names the split key and the file that lists it."""


def build_model_from_checkpoint(cfg: Any, checkpoint: str | os.PathLike, device: str | torch.device = "cpu",
                                strict: bool = True, require_finite: bool = True) -> nn.Module:
    """The config's model with ``checkpoint``'s weights, in eval mode on ``device``.

    A checkpoint with NaN/inf weights is refused by name (``NonFiniteCheckpointError``) unless
    ``require_finite=False``: evaluating or exporting a diverged model only hides the problem.
    """
    import antgo.models  # noqa: F401  (registers the built-in models)
    from antgo.models.builder import build_model

    if "model" not in cfg:
        raise KeyError("config has no 'model'; add model=dict(type=..., ...)")
    model = build_model(cfg["model"])
    load_checkpoint(checkpoint, model, map_location="cpu", strict=strict, require_finite=require_finite)
    return model.to(device).eval()


def resolve_out_dir(work_dir: str | os.PathLike, out_dir: str | None) -> str:
    """``None`` → ``work_dir``; a relative path → under ``work_dir``, unless ``work_dir`` already is it
    (``out_dir='./output/'`` with ``work_dir='./output'`` is not doubled)."""
    work_dir = os.path.abspath(os.fspath(work_dir))
    if not out_dir:
        return work_dir
    if os.path.isabs(out_dir):
        return os.path.normpath(out_dir)
    rel = os.path.normpath(out_dir)
    if rel == "." or os.path.abspath(rel) == work_dir or work_dir.endswith(os.sep + rel):
        return work_dir
    return os.path.join(work_dir, rel)


def checkpoint_folders(cfg: Any, work_dir: str | os.PathLike) -> list[str]:
    """Where training into ``work_dir`` writes: ``evaluation.out_dir`` (best.pth), ``checkpoint_config.out_dir``
    (latest.pth, epoch_N.pth), then ``work_dir`` itself; duplicates removed, order kept."""
    folders = []
    for section in ("evaluation", "checkpoint_config"):
        value = (cfg.get(section) or {}) if cfg is not None else {}
        folders.append(resolve_out_dir(work_dir, value.get("out_dir") if isinstance(value, Mapping) else None))
    folders.append(os.path.abspath(os.fspath(work_dir)))
    return list(dict.fromkeys(folders))


def find_checkpoint(work_dir: str | os.PathLike, cfg: Any = None, explicit: str | None = None,
                    names: Sequence[str] = CHECKPOINT_NAMES, use_config: bool = True) -> str:
    """The checkpoint to use: ``explicit``, else the config's ``checkpoint``, else the first of ``names``
    found in the folders training into ``work_dir`` writes to (:func:`checkpoint_folders`).

    The one rule of the CLI (``test``/``export``/``verify``) and the flow (``--resume``).
    """
    if explicit:
        return os.fspath(explicit)
    if use_config and cfg is not None and cfg.get("checkpoint"):
        return str(cfg["checkpoint"])
    folders = checkpoint_folders(cfg, work_dir)
    for name in names:
        for folder in folders:
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                logger.info("using checkpoint %s", path)
                return path
    raise FileNotFoundError(f"no checkpoint in {os.fspath(work_dir)}: looked for {' / '.join(names)} in "
                            f"{', '.join(folders)}. Pass --checkpoint PATH, set checkpoint='…' in the config, or "
                            f"train into --work-dir {os.fspath(work_dir)} first.")


def run_relative(path: str | None, work_dir: str | os.PathLike) -> str | None:
    """``path`` relative to the run folder when it lies inside it (so a copied folder stays valid)."""
    if not path:
        return path
    work_dir = os.path.abspath(os.fspath(work_dir))
    absolute = os.path.abspath(path)
    if os.path.commonpath([absolute, work_dir]) == work_dir:
        return os.path.relpath(absolute, work_dir)
    return absolute


def resolve_in_run(path: str | None, work_dir: str | os.PathLike) -> str | None:
    """Inverse of :func:`run_relative`: a relative path is taken inside ``work_dir``."""
    if not path:
        return path
    return path if os.path.isabs(path) else os.path.join(os.path.abspath(os.fspath(work_dir)), path)


_SOURCE_FILES = (("split_file", "split file"), ("ann_file", "annotation file"), ("list_file", "list file"))


def resolve_beside_checkpoint(stored: str | None, checkpoint_path: str, meta: Mapping[str, Any]) -> str | None:
    """A run-folder-relative path from a checkpoint's meta, resolved in the run folder that checkpoint lies in
    now (its ``checkpoint_dir`` says where it sits inside that folder): a moved folder finds its own files."""
    if not stored or os.path.isabs(stored):
        return stored
    inside = str(meta.get("checkpoint_dir") or ".")
    folder = os.path.dirname(os.path.abspath(checkpoint_path))
    root = folder if os.path.isabs(inside) else os.path.normpath(os.path.join(folder, os.path.relpath(".", inside)))
    return resolve_in_run(stored, root)


def _source(reader: Any) -> str:
    """' (its split file …/val.txt lists no samples)' for the data sets that say where they read from."""
    dataset = getattr(reader, "dataset", reader)
    for attr, kind in _SOURCE_FILES:
        value = getattr(dataset, attr, None)
        if value:
            return f" (its {kind} {value} lists no samples)"
    return ""


def require_samples(reader: Any, key_path: str) -> None:
    """Raise :class:`EmptySplitError` when the split ``key_path`` (``data.train``) has no samples."""
    if len(reader) > 0:
        return
    where = _source(reader)
    fill = "Fill the split file, point" if where else "Point"
    raise EmptySplitError(f"{key_path} has no samples{where}. {fill} {key_path}.dir at the right folder, or "
                          f"remove {key_path} from the config.")


PREFLIGHT_BAR_MIN = 2000  # samples: smaller splits are checked in well under a second, without a bar


def preflight_images(reader: Any, key_path: str, enabled: Any = True) -> list[int]:
    """Check every image/mask file of the split ``key_path`` (``data.train``) before training: the head and
    tail of each file (:func:`antgo.data.image_io.check_image_file`, no decode), so a truncated JPEG/PNG or a
    missing file fails now instead of mid-epoch.

    Only data sets with ``image_files(id)`` are checked (for others one info line says the check was skipped);
    ``enabled=False`` (``data.<split>.preflight=False``) switches it off. The first bad file raises its error
    naming the split key and the sample index; a reader with ``skip_bad_samples=True`` instead gets a warning
    with the count, and its bad samples are skipped from the start. Returns the bad indices.
    """
    if not isinstance(enabled, bool):
        raise ValueError(f"{key_path}.preflight must be True or False, got {enabled!r}")
    dataset = getattr(reader, "dataset", reader)
    files_of = getattr(dataset, "image_files", None)
    if not enabled:
        return []
    if not callable(files_of):
        logger.info("%s: pre-flight file check skipped: %s has no image_files(id) method (the files sample(id) "
                    "reads); add it to have truncated or missing files found before the first epoch", key_path,
                    type(dataset).__name__)
        return []
    from tqdm import tqdm

    from antgo.data.image_io import check_image_file
    from antgo.engine.evaluation import progress_enabled

    start, total, checked = time.perf_counter(), len(reader), 0
    bad: list[tuple[int, Exception]] = []
    for index in tqdm(range(total), desc=f"{key_path}: checking files", unit="sample", leave=False,
                      disable=total < PREFLIGHT_BAR_MIN or not progress_enabled()):
        for path in files_of(index):
            checked += 1
            try:
                check_image_file(path)
            except (OSError, ValueError) as exc:  # missing, empty or truncated
                bad.append((index, exc))
                break
    logger.info("%s: pre-flight checked %d files of %d samples in %.2f s, %d bad", key_path, checked, total,
                time.perf_counter() - start, len(bad))
    return _report_bad(reader, key_path, bad, total)


def _report_bad(reader: Any, key_path: str, bad: list[tuple[int, Exception]], total: int) -> list[int]:
    indices = [index for index, _ in bad]
    if not bad:
        return indices
    if getattr(reader, "skip_bad_samples", False):
        reader.mark_bad(indices)
        shown = "; ".join(f"sample {index}: {exc}" for index, exc in bad[:10])
        logger.warning("%s: skip_bad_samples: %d of %d samples have bad files and are skipped: %s%s", key_path,
                       len(bad), total, shown, " ..." if len(bad) > 10 else "")
        return indices
    index, exc = bad[0]
    others = (f" ({len(bad)} bad samples in all: {', '.join(map(str, indices[:10]))}"
              f"{' ...' if len(bad) > 10 else ''})" if len(bad) > 1 else "")
    fix = "" if "skip_bad_samples" in str(exc) else f"; restore it, or set {key_path}.skip_bad_samples=True"
    raise type(exc)(f"{key_path} sample {index}: {exc}{fix}{others}. Found before the first epoch by the "
                    f"pre-flight check ({key_path}.preflight=False switches it off).") from None


def check_split(reader: Any, split_cfg: Mapping[str, Any], key_path: str) -> None:
    """The Trainer's checks of a split before training: not empty, and no bad image/mask file."""
    require_samples(reader, key_path)
    preflight_images(reader, key_path, split_cfg.get("preflight", True))


def _configured_class_names(cfg: Mapping[str, Any]) -> list[tuple[str, list[str]]]:
    """(config key, names) of the class lists a config gives: the metrics' and ``export.metadata``'s."""
    metric = (cfg.get("evaluation") or {}).get("metric")
    metrics = metric if isinstance(metric, (list, tuple)) else [metric]
    found = [(f"evaluation.metric{f'[{i}]' if len(metrics) > 1 else ''}.class_names", m["class_names"])
             for i, m in enumerate(metrics) if isinstance(m, Mapping) and m.get("class_names")]
    meta = ((cfg.get("export") or {}).get("metadata") or {})
    if isinstance(meta, Mapping) and meta.get("class_names"):
        found.append(("export.metadata.class_names", meta["class_names"]))
    return [(key, [str(n) for n in names]) for key, names in found]


def check_class_names(reader: Any, cfg: Mapping[str, Any], key_path: str) -> None:
    """The config's class lists name the data set's label indices in its order (COCO: by category id; an image
    folder: its sorted sub-folders). The same names in another order would put every metric and prediction under
    the wrong class: an error. Other differences (renamed classes, another count) get a warning."""
    data_names = getattr(getattr(reader, "dataset", reader), "class_names", None)
    if not data_names:
        return
    data_names = [str(n) for n in data_names]
    for key, names in _configured_class_names(cfg):
        if names == data_names:
            continue
        if sorted(names) == sorted(data_names):
            raise ValueError(f"{key} {names} lists {key_path}'s classes in another order than the data set's label "
                             f"indices {data_names}: metrics and predictions would name the wrong classes. List them "
                             f"in the data set's order")
        logger.warning("%s %s differ from %s's classes %s (label i is the data set's class i)", key, names, key_path,
                       data_names)
