"""Checkpoint files: atomic writes, CPU weights, metadata, RNG states; strict loading by default.

Layout of a checkpoint (a dict saved with ``torch.save``)::

    {'meta': {epoch, iter, best_score, config, torch_version, antgo_version, time, ...},
     'state_dict': model weights (CPU, no 'module.' prefix),
     'optimizer': ..., 'scheduler': ..., 'scaler': ...,   # only when given
     'rng': {'python', 'numpy', 'torch', 'cuda'}}
"""
from __future__ import annotations

import json
import logging
import math
import os
import pickle
import pprint
import random
import re
import shutil
import tempfile
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from antgo.engine.runlock import ensure_held
from antgo.fileio import write_uninterrupted

logger = logging.getLogger(__name__)

__all__ = ["CheckpointError", "UnsafeCheckpointError", "NonFiniteCheckpointError", "CheckpointWriteError",
           "save_checkpoint", "read_checkpoint", "load_checkpoint", "resume_checkpoint", "check_resume_optimizer",
           "describe_run_checkpoints", "check_finite", "get_state_dict", "unwrap_model", "rng_state", "restore_rng",
           "NUMBERED_CHECKPOINT_RE", "UNSAFE_LOAD_ENV"]

#: Set to 1 to allow checkpoints that need arbitrary unpickling (CLI: ``--unsafe-load``). Trusted files only:
#: unpickling such a file can run any code.
UNSAFE_LOAD_ENV = "ANTGO_UNSAFE_LOAD"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable, or does not match the model; the message names the file."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint that only loads with arbitrary unpickling (``weights_only=False``), refused by default."""


class NonFiniteCheckpointError(CheckpointError):
    """A checkpoint whose weights or buffers hold NaN/inf (a diverged training run)."""


class CheckpointWriteError(CheckpointError):
    """A checkpoint could not be written (most often: its disk is full); the files already there are kept."""


def _tensor_bytes(obj: Any) -> int:
    """Bytes of the tensors in a (nested) checkpoint: about the size of its file."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, Mapping):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def _write_error(path: str, checkpoint: Mapping[str, Any], exc: BaseException) -> CheckpointWriteError:
    folder = os.path.dirname(os.path.abspath(path))
    needed = _tensor_bytes(checkpoint)
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = None
    cause = _last_line(exc)
    if free is not None and free < needed + 2 ** 20:
        why = (f"its disk is full: {free / 2 ** 20:.1f} MiB free in {folder}, and this checkpoint needs about "
               f"{needed / 2 ** 20:.1f} MiB ({cause})")
        fix = "Free some space there, or set checkpoint_config.out_dir (and evaluation.out_dir) to a larger disk"
    else:
        why = cause
        fix = "Fix the cause"
    return CheckpointWriteError(
        f"could not write checkpoint {path}: {why}. Nothing there was replaced: the checkpoints written before "
        f"are as they were. {fix}, then continue from the last one with --resume-from (Trainer: "
        f"config_model(resume_from=...)).")


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel / DataParallel (or the model itself)."""
    while isinstance(getattr(model, "module", None), nn.Module):
        model = model.module
    return model


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return type(obj)((k, _to_cpu(v)) for k, v in obj.items()) if isinstance(obj, OrderedDict) \
            else {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def get_state_dict(model: nn.Module) -> OrderedDict[str, torch.Tensor]:
    """The unwrapped model's state dict with every tensor detached and on the CPU."""
    return OrderedDict((k, v.detach().cpu()) for k, v in unwrap_model(model).state_dict().items())


def rng_state() -> dict[str, Any]:
    """Python, numpy, torch CPU (and CUDA) generator states, stored as plain types and tensors so that a
    checkpoint loads with ``torch.load(weights_only=True)``."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Mapping[str, Any] | None) -> None:
    """Restore generator states saved by :func:`rng_state` (missing parts are left alone)."""
    if not state:
        return
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in state:
        np_state = state["numpy"]
        keys = np.asarray(np_state["keys"].numpy() if isinstance(np_state["keys"], torch.Tensor) else np_state["keys"],
                          dtype=np.uint32)
        np.random.set_state((np_state["name"], keys, np_state["pos"], np_state["has_gauss"],
                             np_state["cached_gaussian"]))
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") is not None and torch.cuda.is_available():
        cuda_states = [s.cpu() for s in state["cuda"]]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
        else:
            logger.warning("checkpoint holds %d CUDA RNG states but %d devices exist: CUDA RNG not restored",
                           len(cuda_states), torch.cuda.device_count())


def _config_text(config: Any) -> str:
    """The config as text with secrets masked (the checkpoint leaves the process)."""
    from antgo.config.secrets import mask_secrets

    masked_text = getattr(config, "masked_text", None)
    if callable(masked_text):
        return masked_text()
    if isinstance(config, Mapping):
        to_dict = getattr(config, "to_dict", None)
        return pprint.pformat(mask_secrets(to_dict() if callable(to_dict) else dict(config)), sort_dicts=False)
    return str(config)


def _plain(value: Any) -> Any:
    """numpy scalars → Python numbers, so that the metadata loads with weights_only=True."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


def save_checkpoint(path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    scheduler: Any = None, scaler: Any = None, meta: Mapping[str, Any] | None = None) -> str:
    """Write a checkpoint atomically (temporary file in the same folder + ``os.replace``); returns the path.

    ``meta`` usually carries ``epoch``, ``iter``, ``best_score`` and ``config`` (a Config, dict or text; it is
    stored as text). ``torch_version``, ``antgo_version`` and ``time`` are added.
    """
    from antgo import __version__ as antgo_version
    from antgo.config.secrets import mask_secrets

    path = os.fspath(path)
    ensure_held(path, f"writing {path}")  # a run folder taken over while this process was paused is not ours

    meta = dict(meta or {})
    config = meta.pop("config", None)
    meta = mask_secrets(meta)
    if config is not None:
        meta["config"] = config if isinstance(config, str) else _config_text(config)
    meta.setdefault("torch_version", str(torch.__version__))  # TorchVersion is not weights_only-safe
    meta.setdefault("antgo_version", antgo_version)
    meta.setdefault("time", time.strftime("%Y-%m-%d %H:%M:%S"))
    if optimizer is not None:  # a resume checks it: another optimizer's state fails deep inside torch's step
        meta.setdefault("optimizer_type", type(optimizer).__name__)
    checkpoint: dict[str, Any] = {"meta": _plain(meta), "state_dict": get_state_dict(model)}
    if optimizer is not None:
        checkpoint["optimizer"] = _to_cpu(optimizer.state_dict())
    if scheduler is not None:
        checkpoint["scheduler"] = scheduler.state_dict()
    if scaler is not None:
        checkpoint["scaler"] = scaler.state_dict()
    checkpoint["rng"] = rng_state()

    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=".pth", dir=folder)

    def write() -> None:
        with os.fdopen(fd, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # readers never see a half-written file

    try:
        write_uninterrupted(write)  # a SIGTERM or Ctrl-C now would break torch.save's writer: it waits
    except BaseException as exc:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(exc, (OSError, RuntimeError)):  # torch.save on a full disk: 'unexpected pos 64 vs 0'
            raise _write_error(path, checkpoint, exc) from exc
        raise
    logger.debug("saved checkpoint %s", path)
    return path


_UNSAFE_GLOBAL_RE = re.compile(r"GLOBAL (\S+) was not an allowed global")


def _last_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(("Check the documentation", "Please file"))]
    return (useful or lines or [type(exc).__name__])[-1]


def _unsafe_allowed(allow_unsafe: bool | None) -> bool:
    if allow_unsafe is not None:
        return allow_unsafe
    return os.environ.get(UNSAFE_LOAD_ENV, "").strip().lower() in ("1", "true", "yes")


def read_checkpoint(path: str | os.PathLike, map_location: Any = "cpu", allow_unsafe: bool | None = None,
                    mmap: bool | None = None) -> Any:
    """The one checkpoint reader: ``torch.load(weights_only=True)``, which never runs code from the file.

    A file that needs arbitrary unpickling is refused with :class:`UnsafeCheckpointError` unless
    ``allow_unsafe`` (default: the environment variable ``ANTGO_UNSAFE_LOAD=1``; CLI ``--unsafe-load``).
    ``mmap=True`` maps the tensors instead of reading them (to look at the metadata of a large file).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint file not found: {path}; check the path (relative paths are resolved "
                              f"from {os.getcwd()})")
    if os.path.getsize(path) == 0:  # antgo writes checkpoints atomically: an empty one comes from elsewhere
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): a copy or download that was interrupted "
                              f"leaves such a file. Copy it again from where it came from, or use another "
                              f"checkpoint (latest.pth, an epoch_N.pth)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        found = _UNSAFE_GLOBAL_RE.search(str(exc))
        if not found:  # garbage bytes fail the safe unpickler too, with "Unsupported operand"
            raise CheckpointError(f"checkpoint {path} is corrupt or not a torch checkpoint: "
                                  f"{_last_line(exc)}") from exc
        if not _unsafe_allowed(allow_unsafe):
            raise UnsafeCheckpointError(
                f"checkpoint {path} refused: it holds {found.group(1)}, which only arbitrary unpickling can "
                f"load, and unpickling a file can run any code. Checkpoints written by antgo load safely. If "
                f"you trust this file, allow it with {UNSAFE_LOAD_ENV}=1 (CLI: --unsafe-load).") from None
        logger.warning("checkpoint %s needs arbitrary unpickling: loading it with weights_only=False because "
                       "%s=1 / --unsafe-load allows it", path, UNSAFE_LOAD_ENV)
    except Exception as exc:  # a truncated or foreign file fails in many ways (EOFError, IndexError, ...)
        raise CheckpointError(f"checkpoint {path} is corrupt or not a torch checkpoint: {exc}") from exc
    try:
        return torch.load(path, map_location=map_location, weights_only=False, mmap=mmap)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} is corrupt or not a torch checkpoint: {exc}") from exc


def check_finite(state_dict: Mapping[str, Any], path: str, fix: str = "") -> None:
    """Raise :class:`NonFiniteCheckpointError` naming every weight/buffer holding NaN or inf."""
    bad = [k for k, v in state_dict.items()
           if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise NonFiniteCheckpointError(
            f"checkpoint {path} holds non-finite values (NaN/inf) in {len(bad)} tensor(s): {_list(bad, 10)}. "
            f"The training run that wrote it diverged; "
            + (fix or "use an earlier checkpoint (an epoch_N.pth from before the divergence) or retrain with a "
                      "lower learning rate / gradient clipping."))


def _extract_state_dict(checkpoint: Any, path: str) -> Mapping[str, torch.Tensor]:
    if isinstance(checkpoint, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(checkpoint.get(key), Mapping):
                return checkpoint[key]
        if checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
            return checkpoint  # a bare model.state_dict()
    raise CheckpointError(f"checkpoint {path} has no 'state_dict' (keys: {list(checkpoint)[:10]})"
                          if isinstance(checkpoint, Mapping) else f"checkpoint {path} is not a dict")


def _list(keys: Sequence[str], limit: int = 20) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", … ({len(keys) - limit} more)" if len(keys) > limit else "")


def _mismatch_hint(mismatched: Sequence[tuple[str, tuple[int, ...], tuple[int, ...]]], strict: bool) -> str:
    """The fix that fits: strict=False skips missing/unexpected keys, but never loads a tensor of another shape."""
    if not mismatched:
        return " (load with strict=False to ignore missing/unexpected keys)" if strict else ""
    key, ours, theirs = mismatched[0]
    return (f". The checkpoint was trained with other layer sizes (e.g. another number of classes): {key} is "
            f"{ours} there and {theirs} in this model. Use the config it was trained with (the config.py of its "
            f"run folder), or set the model's sizes (e.g. model.decode_head.out_channels) to the checkpoint's")


def load_checkpoint(path: str | os.PathLike, model: nn.Module, map_location: Any = "cpu", strict: bool = True,
                    revise_keys: Sequence[tuple[str, str]] = ((r"^module\.", ""),), require_finite: bool = False,
                    allow_unsafe: bool | None = None) -> dict[str, Any]:
    """Load weights into ``model`` (unwrapped) and return the whole checkpoint dict.

    ``revise_keys`` are ``(pattern, replacement)`` regex substitutions applied to every key. With ``strict``
    a missing or unexpected key raises ``CheckpointError`` listing them; otherwise they are logged. With
    ``require_finite`` a NaN/inf weight raises :class:`NonFiniteCheckpointError` naming the keys.
    """
    path = os.fspath(path)
    checkpoint = read_checkpoint(path, map_location, allow_unsafe)
    state_dict = _extract_state_dict(checkpoint, path)
    if require_finite:
        check_finite(state_dict, path)
    for pattern, repl in revise_keys:
        state_dict = OrderedDict((re.sub(pattern, repl, k), v) for k, v in state_dict.items())
    target = unwrap_model(model)
    expected = target.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [(k, tuple(v.shape), tuple(expected[k].shape))
                  for k, v in state_dict.items() if k in expected and tuple(v.shape) != tuple(expected[k].shape)]
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {_list(missing)}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {_list(unexpected)}")
    if mismatched:
        shown = [f"{k}: checkpoint {ours} vs model {theirs}" for k, ours, theirs in mismatched]
        problems.append(f"shape mismatches ({len(mismatched)}): {_list(shown)}")
    if problems and (strict or mismatched):
        raise CheckpointError(f"checkpoint {path} does not match {type(target).__name__}: " + "; ".join(problems)
                              + _mismatch_hint(mismatched, strict))
    if problems:
        logger.warning("checkpoint %s loaded non-strictly: %s", path, "; ".join(problems))
    target.load_state_dict(state_dict, strict=False)
    if not isinstance(checkpoint, Mapping) or "state_dict" not in checkpoint:
        checkpoint = {"state_dict": state_dict}
    return dict(checkpoint)


def resume_checkpoint(path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                      scheduler: Any = None, scaler: Any = None, map_location: Any = "cpu",
                      restore_rng_state: bool = True) -> dict[str, Any]:
    """Load the model strictly, then the optimizer / scheduler / scaler states and the RNG states."""
    checkpoint = load_checkpoint(path, model, map_location=map_location, strict=True)
    for name, obj in (("optimizer", optimizer), ("scheduler", scheduler), ("scaler", scaler)):
        if obj is None:
            continue
        if name not in checkpoint:
            raise CheckpointError(f"checkpoint {os.fspath(path)} has no '{name}' state to resume from")
        if name == "optimizer":
            check_resume_optimizer(checkpoint, obj, os.fspath(path))
        obj.load_state_dict(checkpoint[name])
    if restore_rng_state:
        restore_rng(checkpoint.get("rng"))
    return checkpoint


def _group_keys(groups: Sequence[Mapping[str, Any]]) -> set[str]:
    return {k for group in groups[:1] for k in group if k not in ("params", "initial_lr", "name")}


def check_resume_optimizer(checkpoint: Mapping[str, Any], optimizer: torch.optim.Optimizer, path: str) -> None:
    """Before ``optimizer.load_state_dict``: refuse the state of another optimizer type (SGD resumed from an
    AdamW checkpoint dies in torch's first step with ``KeyError: 'momentum'``); warn when the config's lr is
    not the checkpoint's, which the resume continues. A checkpoint without ``meta.optimizer_type`` (written
    before it was stored) is compared by its param-group keys."""
    current = type(optimizer).__name__
    saved_groups = list((checkpoint.get("optimizer") or {}).get("param_groups") or [])
    saved_type = (checkpoint.get("meta") or {}).get("optimizer_type")
    ours, theirs = _group_keys(optimizer.param_groups), _group_keys(saved_groups)
    # other torch versions add keys to a class: only keys missing on both sides mean another class
    foreign = saved_type is None and bool(ours - theirs) and bool(theirs - ours)
    if (saved_type is not None and saved_type != current) or foreign:
        what = saved_type or f"another optimizer (its settings {sorted(theirs - ours)} are not {current}'s)"
        raise CheckpointError(
            f"checkpoint {path} holds the optimizer state of {what}, but the config builds {current}: a resume "
            f"continues the checkpoint's optimizer, so its type must stay. "
            + (f"Set optimizer.type='{saved_type}' to resume" if saved_type else "Resume with the optimizer it was "
               "trained with (see the config.py of its run folder)")
            + f", or start from its weights with a fresh {current}: --load-from {path} (Trainer: "
              f"config_model(load_from=...)).")
    if not saved_groups:
        return
    mine, stored = (group.get("initial_lr", group.get("lr")) for group in (optimizer.param_groups[0],
                                                                              saved_groups[0]))
    if mine is not None and stored is not None and not math.isclose(float(mine), float(stored), rel_tol=1e-6):
        logger.warning("resuming from %s: the config's lr is %g, the checkpoint's %g. A resume continues the "
                       "checkpoint's optimizer and lr schedule, so training goes on at the checkpoint's lr; to "
                       "train its weights at the config's lr with a fresh schedule, use --load-from %s instead",
                       path, float(mine), float(stored), path)


#: the numbered checkpoints a training writes (``epoch_3.pth``, ``iter_500.pth``); group 1 is the number
NUMBERED_CHECKPOINT_RE = re.compile(r"(?:epoch|iter)_(\d+)\.pth")


def describe_run_checkpoints(folder: str) -> str:
    """What a training left in ``folder``: ``latest.pth (epoch 3, iter 36), best.pth (best.json: miou 0.4100 at
    epoch 2), epoch_1.pth … epoch_3.pth (3 files)``; '' when it holds none of those checkpoints."""
    try:
        names = [n for n in os.listdir(folder)
                 if n in ("latest.pth", "best.pth") or NUMBERED_CHECKPOINT_RE.fullmatch(n)]
    except OSError:  # no folder yet
        return ""
    parts = []
    if "latest.pth" in names:
        meta = _meta_or_empty(os.path.join(folder, "latest.pth"))
        parts.append("latest.pth" + (f" (epoch {meta.get('epoch')}, iter {meta.get('iter')})" if meta else ""))
    if "best.pth" in names:
        parts.append("best.pth" + _best_record(folder))
    numbered = sorted((n for n in names if n not in ("latest.pth", "best.pth")),
                      key=lambda n: (n.split("_")[0], int(NUMBERED_CHECKPOINT_RE.fullmatch(n).group(1))))
    if numbered:
        parts.append(numbered[0] if len(numbered) == 1 else f"{numbered[0]} … {numbered[-1]} ({len(numbered)} files)")
    return ", ".join(parts)


def _meta_or_empty(path: str) -> dict[str, Any]:
    try:  # mapped, not read: only the metadata is wanted
        checkpoint = read_checkpoint(path, mmap=True)
    except CheckpointError:
        return {}
    meta = checkpoint.get("meta") if isinstance(checkpoint, Mapping) else None
    return dict(meta) if isinstance(meta, Mapping) else {}


def _best_record(folder: str) -> str:
    try:
        with open(os.path.join(folder, "best.json"), encoding="utf-8") as f:
            record = json.load(f)
        return f" (best.json: {record['metric']} {float(record['score']):.4f} at epoch {record['epoch']})"
    except (OSError, ValueError, KeyError, TypeError):
        return ""
