"""Run-folder lock: one training (or pipeline) per work dir at a time.

``with RunLock(work_dir): ...`` creates ``<work_dir>/.antgo.lock`` (JSON: pid, host, start time, command)
with ``O_CREAT | O_EXCL``. A second process refuses at once with :class:`RunFolderLocked` naming the holder.
A lock left by a process that no longer runs (same host) is stale: it is taken over with a warning. A process
on another machine (a shared volume: a Kubernetes pod restarted elsewhere, another node) cannot be checked;
instead its holder touches the file every ``HEARTBEAT_S`` seconds, and a lock from another host that has been
silent for more than ``ANTGO_LOCK_STALE_S`` seconds (default 120) is stale too. The lock is
re-entrant within a process (the flow holds it around its stages; the Trainer inside takes it again) and
shared with the processes the holder starts (``torchrun`` launched from the flow): the holder lists its locks in
the environment variable ``ANTGO_RUN_LOCKS``, which only its descendants inherit.
Taking the lock also removes temporary files that an interrupted write left behind (``.tmp_*.pth``, ...).

A holder paused for longer than the stale limit (SIGSTOP, a suspended VM) may find, once it runs again, that
another host took its folder over. It must not write there any more: :func:`ensure_held` (called before every
checkpoint, test-result, ONNX and parity-report write) raises :class:`RunFolderLost` then, and the heartbeat
stops touching a lock that is no longer its own.
"""
from __future__ import annotations

import glob
import json
import logging
import os
import socket
import sys
import tempfile
import threading
import time
from types import TracebackType
from typing import Any

from antgo.config.env import env_seconds

logger = logging.getLogger(__name__)

__all__ = ["RunLock", "RunFolderLocked", "RunFolderLost", "RunFolderUnwritable", "LOCK_NAME", "clean_temp_files",
           "ensure_held", "folder_lost", "require_writable_folder"]

LOCK_NAME = ".antgo.lock"
# what atomic writers leave when killed between writing and os.replace
TEMP_PATTERNS = (".tmp_*.pth", "*.pth.tmp*", "*.json.tmp", "*.json.tmp*", ".*.tmp[0-9]*")

LOCKS_ENV = "ANTGO_RUN_LOCKS"  # JSON {lock path: holder pid}, inherited by the processes the holder starts
HEARTBEAT_S = 30.0  # the holder refreshes the lock file's mtime this often
DEFAULT_STALE_AFTER_S = 120.0  # a lock from another host silent for longer is stale (clocks may differ a little)

_held: dict[str, int] = {}  # lock path -> nesting depth in this process
_owners: dict[str, dict[str, Any]] = {}  # lock path -> the holder record that makes it ours (see _is_ours)
_shared: set[str] = set()  # locks this process uses on behalf of the parent that holds them
_lost: set[str] = set()  # held locks found taken over by another process (see folder_lost)
# re-entrant: a record logged while it is held (a takeover's warning) passes train.log's filter, which takes it
_guard = threading.RLock()
_beating: set[str] = set()  # lock files this process created: the heartbeat thread touches them
_heartbeat: threading.Thread | None = None
_wake = threading.Event()  # a new lock: touch it now and wait HEARTBEAT_S (as set now) from there


def stale_after_s() -> float:
    return env_seconds("ANTGO_LOCK_STALE_S", DEFAULT_STALE_AFTER_S)


def _beat() -> None:
    """Touch every lock this process holds until it holds none (then the thread ends; the next lock restarts it)."""
    global _heartbeat
    while True:
        _wake.wait(HEARTBEAT_S)
        _wake.clear()
        with _guard:
            if not _beating:
                _heartbeat = None
                return
        touch_held_locks()


def touch_held_locks() -> None:
    """One heartbeat: refresh the mtime of each lock file this process created and still owns. A lock taken
    over meanwhile (this process was paused past the stale limit) is left alone: touching it would keep the
    new holder's lock alive on this process's behalf."""
    with _guard:
        paths = {path: _owners.get(path, {}) for path in _beating}
    for path, mine in paths.items():
        holder = _read_holder(path)
        if not _is_ours(holder, mine):
            with _guard:
                _beating.discard(path)
                _lost.add(path)
            logger.error("run folder %s: the lock is no longer this process's (%s); not writing there any "
                         "more", os.path.dirname(path), _describe(holder) if holder else "the lock file is gone")
            continue
        try:
            os.utime(path)
        except OSError:  # removed meanwhile (released, or taken over): nothing to refresh
            pass


def _start_beating(path: str) -> None:
    """Called with ``_guard`` held."""
    global _heartbeat
    _beating.add(path)
    if _heartbeat is None or not _heartbeat.is_alive():
        _heartbeat = threading.Thread(target=_beat, name="antgo-runlock-heartbeat", daemon=True)
        _heartbeat.start()
    else:
        _wake.set()


def _silent_for(path: str) -> float | None:
    try:
        return time.time() - os.stat(path).st_mtime
    except OSError:
        return None


class RunFolderLocked(RuntimeError):
    """The run folder is in use by another live process; the message names it (pid, host, start time)."""


class RunFolderLost(RuntimeError):
    """This process held the run folder's lock, but another process has taken it over since."""


class RunFolderUnwritable(OSError):
    """An output folder that cannot be created or written (a file of that name, a read-only disk)."""


def require_writable_folder(folder: str | os.PathLike, option: str = "--work-dir") -> str:
    """Create ``folder`` if needed and check that a file can be created in it, before any work is done: a
    read-only disk or a file of that name is one clear error naming the folder, not an ``OSError`` from the
    first write (after an evaluation, say). Returns the absolute folder."""
    folder = os.path.abspath(os.fspath(folder))
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        blocking = _existing_file_on(folder)
        if blocking == folder:
            why = "is a file, not a folder"
        elif blocking:
            why = f"cannot be created: {blocking} is a file"
        else:
            why = f"is not writable ({exc.strerror or exc})"
        raise RunFolderUnwritable(f"{option} {folder} {why}. Pass another {option} (a folder on a writable "
                                  f"disk)") from exc
    return folder


def _existing_file_on(folder: str) -> str | None:
    """``folder`` or the first of its parents that exists, when that is a file (it keeps the folder from being
    made)."""
    path = folder
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path if os.path.exists(path) and not os.path.isdir(path) else None


def _is_ours(holder: dict[str, Any], mine: dict[str, Any]) -> bool:
    """``holder`` (the lock file now) is the record ``mine`` this process wrote, or, for a lock shared with
    the parent that holds it, still names that parent."""
    keys = ("pid", "host", "started") if "started" in mine else ("pid", "host")
    return bool(mine) and all(holder.get(k) == mine[k] for k in keys)


def ensure_held(path: str | os.PathLike, action: str = "writing") -> None:
    """Raise :class:`RunFolderLost` when ``path`` lies in a run folder whose lock this process held and has
    lost to a takeover; do nothing for folders this process does not lock. One small file read per lock."""
    target = os.path.abspath(os.fspath(path))
    with _guard:
        held = [(p, _owners.get(p, {})) for p, depth in _held.items() if depth]
    for lock_path, mine in held:
        folder = os.path.dirname(lock_path)
        if os.path.commonpath([folder, target]) != folder:
            continue
        holder = _read_holder(lock_path)
        if _is_ours(holder, mine):
            continue
        with _guard:
            _lost.add(lock_path)
        now = _describe(holder) if holder else "nobody (its lock file is gone: a takeover in progress?)"
        raise RunFolderLost(
            f"run folder {folder} is no longer this run's: its lock now names {now}, not pid "
            f"{mine.get('pid')} on host {mine.get('host')}. Another host takes a lock over once its holder has "
            f"been silent for more than {stale_after_s():.0f} s (ANTGO_LOCK_STALE_S); this process was probably "
            f"paused or suspended that long. {action[:1].upper()}{action[1:]} refused so that the two runs do "
            f"not mix; this run stops here, and what it wrote before the takeover stays. Continue it in another "
            f"folder (copy this one and --resume-from its latest.pth), or raise ANTGO_LOCK_STALE_S on every host.")


def folder_lost(path: str | os.PathLike) -> bool:
    """Whether ``path`` lies in a run folder whose lock this process was found to have lost (by the heartbeat
    or :func:`ensure_held`); cheap enough for every log record (nothing to compare while none was lost)."""
    target = os.path.abspath(os.fspath(path))
    with _guard:
        lost = [os.path.dirname(p) for p in _lost]
    return any(os.path.commonpath([folder, target]) == folder for folder in lost)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return _not_zombie(pid)


def _not_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _env_locks() -> dict[str, int]:
    try:
        return {str(k): int(v) for k, v in json.loads(os.environ.get(LOCKS_ENV) or "{}").items()}
    except (ValueError, TypeError, AttributeError):
        return {}


def _set_env_lock(path: str, pid: int | None) -> None:
    locks = _env_locks()
    if pid is None:
        locks.pop(path, None)
    else:
        locks[path] = pid
    if locks:
        os.environ[LOCKS_ENV] = json.dumps(locks)
    else:
        os.environ.pop(LOCKS_ENV, None)


def _read_holder(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            return dict(json.load(f))
    except (OSError, ValueError, TypeError):
        return {}  # half-written by a process killed while creating it: treated as stale


def _describe(holder: dict[str, Any], path: str | None = None) -> str:
    text = (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, started {holder.get('started', '?')}"
            + (f" ({holder['command']})" if holder.get("command") else ""))
    silent = _silent_for(path) if path and holder.get("host") != socket.gethostname() else None
    if silent is not None and holder.get("heartbeat"):
        text += (f", last sign of life {silent:.0f} s ago (taken over once silent for more than "
                 f"{stale_after_s():.0f} s)")
    return text


def clean_temp_files(folder: str) -> list[str]:
    """Remove leftovers of interrupted atomic writes in ``folder`` and one level below; returns them."""
    removed = []
    for pattern in TEMP_PATTERNS:
        for path in glob.glob(os.path.join(folder, pattern)) + glob.glob(os.path.join(folder, "*", pattern)):
            try:
                os.remove(path)
                removed.append(path)
            except OSError:
                pass
    if removed:
        logger.warning("removed %d temporary file(s) left by an interrupted write: %s", len(removed),
                       ", ".join(sorted(removed)))
    return removed


class RunLock:
    """Exclusive, re-entrant lock on a run folder (see the module docstring)."""

    def __init__(self, work_dir: str | os.PathLike, purpose: str = "train") -> None:
        self.work_dir = os.path.abspath(os.fspath(work_dir))
        self.path = os.path.join(self.work_dir, LOCK_NAME)
        self.purpose = purpose
        self._created_dir = False

    def _record(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "host": socket.gethostname(), "purpose": self.purpose,
                "started": time.strftime("%Y-%m-%d %H:%M:%S %z"), "command": " ".join(sys.argv)[:300],
                "heartbeat": HEARTBEAT_S}

    def _try_create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        record = self._record()
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(record, f)
        _owners[self.path] = record
        return True

    def _is_stale(self, holder: dict[str, Any]) -> bool:
        if not holder:
            return True
        if holder.get("host") != socket.gethostname():
            # no process check across machines: a holder that touches the file is alive until it goes silent
            # (a lock of a version without heartbeat is never judged stale here)
            silent = _silent_for(self.path)
            return bool(holder.get("heartbeat")) and silent is not None and silent > stale_after_s()
        pid = int(holder.get("pid", -1))
        # our own pid but not held here: an earlier process with the same pid (a restarted container) left it
        return pid == os.getpid() or not _pid_alive(pid)

    def acquire(self) -> "RunLock":
        with _guard:
            if _held.get(self.path):
                _held[self.path] += 1
                return self
            self._created_dir = not os.path.isdir(self.work_dir)
            require_writable_folder(self.work_dir)
            for _ in range(3):  # a racing process may take the stale lock first
                if self._try_create():
                    break
                holder = _read_holder(self.path)
                if self._held_by_parent(holder):
                    _held[self.path] = 1
                    _shared.add(self.path)
                    _owners[self.path] = {"pid": holder["pid"], "host": holder["host"]}
                    return self  # the parent's run: its files are being written, leave them alone
                if not self._is_stale(holder):
                    raise RunFolderLocked(
                        f"run folder {self.work_dir} is in use by {_describe(holder, self.path)}. Wait for that "
                        f"run to end, "
                        f"use another --work-dir, or, if that process is certainly gone (e.g. another machine "
                        f"that crashed), delete {self.path}.")
                self._take_over(holder)
            else:
                raise RunFolderLocked(f"could not take the lock {self.path}: other processes keep racing for it")
            _held[self.path] = 1
            _set_env_lock(self.path, os.getpid())
            _start_beating(self.path)
        clean_temp_files(self.work_dir)
        return self

    def _held_by_parent(self, holder: dict[str, Any]) -> bool:
        pid = holder.get("pid")
        return (pid is not None and _env_locks().get(self.path) == int(pid) and int(pid) != os.getpid()
                and holder.get("host") == socket.gethostname() and _pid_alive(int(pid)))

    def _take_over(self, holder: dict[str, Any]) -> None:
        if holder and holder.get("host") != socket.gethostname():
            why = f"its holder has not touched it for {_silent_for(self.path) or 0:.0f} s"
        else:
            why = "that process no longer runs"
        logger.warning("run folder %s: taking over a stale lock of %s (%s)", self.work_dir,
                       _describe(holder) if holder else "an unreadable lock file", why)
        stale = f"{self.path}.stale{os.getpid()}"
        try:
            os.replace(self.path, stale)  # only one racer gets the file; the others see it gone and retry
        except FileNotFoundError:
            return
        if _read_holder(stale) != holder:  # a racer's fresh lock, not the stale one we judged: put it back
            try:
                os.link(stale, self.path)
            except FileExistsError:
                pass
        os.remove(stale)

    def release(self) -> None:
        with _guard:
            depth = _held.get(self.path, 0)
            if depth > 1:
                _held[self.path] = depth - 1
                return
            _held.pop(self.path, None)
            _lost.discard(self.path)
            mine = _owners.pop(self.path, {})
            if self.path in _shared:
                _shared.discard(self.path)
                return
            if depth:
                _set_env_lock(self.path, None)
                _beating.discard(self.path)
            if depth and _is_ours(_read_holder(self.path), mine):
                try:
                    os.remove(self.path)
                except FileNotFoundError:
                    pass
                if self._created_dir and not os.listdir(self.work_dir):
                    os.rmdir(self.work_dir)  # a run refused before writing anything leaves no empty folder

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
