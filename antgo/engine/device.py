"""Device selection and mixed-precision helpers shared by the trainer, tester and exporter."""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ContextManager

import torch

logger = logging.getLogger(__name__)

__all__ = ["DeviceError", "resolve_device", "resolve_dtype", "autocast_context", "make_grad_scaler", "FastPath",
           "fast_path"]

_DTYPES = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16,
           "half": torch.float16, "float32": torch.float32, "fp32": torch.float32}


class DeviceError(RuntimeError):
    """The requested device does not exist on this machine."""


def resolve_device(device: str | torch.device | None = None, gpu_id: int | None = None) -> torch.device:
    """Pick the device to run on.

    ``device=None`` (or ``'auto'``) → ``cuda:0`` when CUDA is available, else ``cpu``. ``gpu_id < 0`` forces
    the CPU; ``gpu_id >= 0`` selects that CUDA device. Asking for CUDA where there is none raises ``DeviceError``.
    """
    if gpu_id is not None and int(gpu_id) < 0:
        return torch.device("cpu")
    if device is None or device == "auto":
        if gpu_id is None and not torch.cuda.is_available():
            return torch.device("cpu")
        device = "cuda"
    dev = torch.device(device)
    if dev.type == "cuda":
        index = int(gpu_id) if gpu_id is not None else (dev.index or 0)
        if not torch.cuda.is_available():
            raise DeviceError(f"device '{device}' was requested but CUDA is not available on this machine "
                              f"(torch {torch.__version__}); use device='cpu' or gpu_id=-1")
        if index >= torch.cuda.device_count():
            raise DeviceError(f"cuda:{index} was requested but only {torch.cuda.device_count()} CUDA device(s) exist")
        return torch.device("cuda", index)
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise DeviceError("device 'mps' was requested but MPS is not available; use device='cpu'")
    return dev


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """'bfloat16'/'bf16', 'float16'/'fp16', 'float32' (or a torch.dtype) → torch.dtype."""
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[str(dtype).lower()]
    except KeyError:
        raise ValueError(f"unknown autocast dtype {dtype!r}; use 'bfloat16' or 'float16'") from None


def autocast_context(device: str | torch.device, enabled: bool, dtype: str | torch.dtype = "bfloat16",
                     allow_cpu: bool = False) -> ContextManager[Any]:
    """``torch.autocast`` on CUDA when ``enabled``; on CPU only when ``allow_cpu`` is also set, because CPU
    autocast mostly slows training down and changes numerics without the user asking for it."""
    dev = torch.device(device)
    torch_dtype = resolve_dtype(dtype)
    if not enabled or torch_dtype == torch.float32:
        return contextlib.nullcontext()
    if dev.type == "cuda":
        return torch.autocast("cuda", dtype=torch_dtype)
    if dev.type == "cpu" and allow_cpu:
        return torch.autocast("cpu", dtype=torch_dtype)
    logger.debug("autocast requested on %s without allow_cpu: running in float32", dev)
    return contextlib.nullcontext()


def make_grad_scaler(device: str | torch.device, enabled: bool, dtype: str | torch.dtype = "bfloat16"
                     ) -> torch.amp.GradScaler:
    """A GradScaler that is active only where it is needed: float16 autocast on CUDA (bfloat16 has the
    float32 exponent range and needs no loss scaling). A disabled scaler is a cheap pass-through."""
    dev = torch.device(device)
    active = bool(enabled) and dev.type == "cuda" and resolve_dtype(dtype) == torch.float16
    return torch.amp.GradScaler(dev.type if dev.type == "cuda" else "cpu", enabled=active)


@dataclass(frozen=True)
class FastPath:
    """The speed settings a run uses (see :func:`fast_path`)."""

    amp: bool
    amp_dtype: str
    channels_last: bool
    cudnn_benchmark: bool
    prefetch: bool = False


def _switch(cfg: Mapping[str, Any], key: str, default: bool) -> bool:
    value = cfg.get(key)
    if value is None or value == "auto":
        return default
    if not isinstance(value, bool):
        raise TypeError(f"config key '{key}' must be True, False or None (auto), got {value!r}")
    return value


def fast_path(cfg: Mapping[str, Any], device: torch.device, deterministic: bool = False) -> FastPath:
    """Resolve ``amp`` (bf16 autocast), ``channels_last``, ``cudnn_benchmark`` and ``device_prefetch``
    (training batches copied and augmented one step ahead on a side stream) for ``device``.

    Each key is True/False, or None/absent for the default: on CUDA all four on (``cudnn_benchmark`` off with
    ``deterministic``), elsewhere off. ``amp=True`` off CUDA warns and runs float32. ``cudnn.benchmark`` is
    set here, process-wide, when the device is CUDA.
    """
    cuda = device.type == "cuda"
    amp = _switch(cfg, "amp", cuda)
    if amp and not cuda:
        logger.warning("amp=True needs CUDA (bf16 autocast); running in float32 on %s", device)
        amp = False
    amp_dtype = str(cfg.get("amp_dtype") or "bfloat16")
    resolve_dtype(amp_dtype)  # an unknown name fails here, before any training
    benchmark = _switch(cfg, "cudnn_benchmark", cuda and not deterministic)
    if cuda:
        torch.backends.cudnn.benchmark = benchmark and not deterministic
    return FastPath(amp=amp, amp_dtype=amp_dtype, channels_last=_switch(cfg, "channels_last", cuda),
                    cudnn_benchmark=benchmark, prefetch=_switch(cfg, "device_prefetch", cuda))
