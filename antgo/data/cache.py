"""A decoded-sample cache shared by DataLoader workers: ``dataset.sample(i)`` kept as files in RAM.

Decoding a JPEG and its PNG mask is most of a sample's CPU cost; for a data set that fits in memory the
decoded ``uint8`` arrays are kept in a folder on a RAM-backed file system (``/dev/shm`` where it exists with
2 GiB free; else the temp folder, whose files the page cache keeps in RAM), one file per sample, written
atomically (temp file + rename). Every worker process reads what any worker wrote, with fork and spawn
alike, across epochs and worker restarts; the ranks of a torchrun job on one machine share one folder (named
by the job's run id), so the data is in RAM once, not once per rank. Only the dataset's output is cached,
never the augmented sample. When the file system runs low on space, caching stops (with one warning) and
samples are decoded as before. A cache folder the cache created itself is removed when the process that
created it ends (each rank of a job removes the shared one at its end; one still reading then decodes);
a folder given in the config is kept and can be reused by later runs.
"""
from __future__ import annotations

import hashlib
import logging
import os
import pickle
import shutil
import tempfile
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

RAM_DIR = Path("/dev/shm")
RAM_DIR_MIN_FREE = 2 * 2 ** 30  # containers often mount a 64 MiB /dev/shm: then the temp folder is used
MIN_FREE_BYTES = 512 * 2 ** 20  # stop caching when less than this (or a tenth of a small file system) is left


def _reserve(folder: Path) -> int:
    return min(MIN_FREE_BYTES, shutil.disk_usage(folder).total // 10)


def _default_base() -> Path | None:
    """/dev/shm when it is there, writable and roomy; else None (the system's temp folder)."""
    try:
        if RAM_DIR.is_dir() and os.access(RAM_DIR, os.W_OK) and shutil.disk_usage(RAM_DIR).free >= RAM_DIR_MIN_FREE:
            return RAM_DIR
    except OSError:
        pass
    return None


def _launched_job() -> str | None:
    """torchrun's run id (made safe for a file name) when this process is one of several ranks on this machine."""
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    if not run_id or int(os.environ.get("LOCAL_WORLD_SIZE", "1")) < 2:
        return None
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in run_id)


def _remove_if_owner(folder: str, owner_pid: int) -> None:
    if os.getpid() == owner_pid:  # forked workers inherit the finalizer; only the creator cleans up
        shutil.rmtree(folder, ignore_errors=True)


def _fingerprint(dataset: Any) -> str:
    """Names a data set's cache subfolder, so one folder given in configs never mixes data sets."""
    text = f"{type(dataset).__module__}.{type(dataset).__qualname__}|{dataset!r}|{len(dataset)}"
    return hashlib.sha1(text.encode()).hexdigest()[:16]


class SampleCache:
    """``get(index, load)``: the cached sample, or ``load(index)`` stored for every process to reuse."""

    def __init__(self, folder: str | Path, owned: bool = False) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.full = False
        self.reserve = _reserve(self.folder)
        self._finalizer = weakref.finalize(self, _remove_if_owner, str(self.folder), os.getpid()) if owned else None

    @classmethod
    def create(cls, spec: bool | str | Path | None, dataset: Any) -> SampleCache | None:
        """From the config value: None/False = no cache, True = a new folder in RAM, a path = that folder."""
        if spec is None or spec is False:
            return None
        if spec is True:
            run_id = _launched_job()
            if run_id is not None:  # the ranks on this machine share one folder: one copy in RAM, not one per rank
                folder = str(Path(_default_base() or tempfile.gettempdir())
                             / f"antgo-sample-cache-{run_id}-{_fingerprint(dataset)}")
            else:
                folder = tempfile.mkdtemp(prefix="antgo-sample-cache-", dir=_default_base())
            logger.info("sample cache for %s in %s", type(dataset).__name__, folder)
            # every rank removes it at its end (none leaks it); a rank still reading then decodes instead
            return cls(folder, owned=True)
        if isinstance(spec, (str, Path)):
            return cls(Path(spec).expanduser() / _fingerprint(dataset))
        raise ValueError(f"cache must be True, False or a folder path, got {spec!r}")

    def _path(self, index: int) -> Path:
        return self.folder / f"{index}.pkl"

    def get(self, index: int, load: Callable[[int], Any]) -> Any:
        path = self._path(index)
        try:
            with open(path, "rb") as f:
                return pickle.load(f)
        except FileNotFoundError:
            pass
        sample = load(index)
        if not self.full:
            self._put(path, sample)
        return sample

    def _put(self, path: Path, sample: Any) -> None:
        data = pickle.dumps(sample, protocol=5)
        try:
            if shutil.disk_usage(self.folder).free - len(data) < self.reserve:
                self.full = True
                logger.warning("sample cache %s: file system nearly full; decoding the remaining samples each time",
                               self.folder)
                return
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)  # atomic: a reader sees the whole file or none
        except FileNotFoundError:  # another rank of the job ended and removed the shared folder: decode from now on
            self.full = True

    def __len__(self) -> int:
        return sum(1 for _ in self.folder.glob("*.pkl"))

    def close(self) -> None:
        """Remove a folder this cache created (a no-op for a folder given in the config)."""
        if self._finalizer is not None:
            self._finalizer()

    def __getstate__(self) -> dict[str, Any]:  # spawned workers get the folder, not the clean-up duty
        return {"folder": self.folder, "full": self.full, "reserve": self.reserve, "_finalizer": None}
