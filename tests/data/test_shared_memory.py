"""A loader worker without room in shared memory (a container's small /dev/shm) fails with an error that says
so and names the fix, instead of PyTorch's bare 'unable to allocate shared memory'."""
from __future__ import annotations

import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from antgo.data.collate import SharedMemoryFull, collate

REPO = Path(__file__).resolve().parents[2]
FIX = ("--shm-size", "medium: Memory", "workers_per_gpu")


class Images(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> dict:
        return {"image": np.zeros((3, 256, 256), np.uint8), "label": index}


def _files_of_64_kib_at_most(_: int) -> None:
    """In the worker: shared-memory files (like any file) may not grow past 64 KiB."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the failed resize then returns an error, not a signal
    resource.setrlimit(resource.RLIMIT_FSIZE, (2 ** 16, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))


def test_a_worker_without_room_for_its_batch_says_what_to_change() -> None:
    loader = torch.utils.data.DataLoader(Images(), batch_size=4, num_workers=1, collate_fn=collate,
                                         worker_init_fn=_files_of_64_kib_at_most)
    with pytest.raises(SharedMemoryFull, match=r"tensor \[4, 3, 256, 256\] \(0.8 MiB\) in shared memory") as err:
        next(iter(loader))
    assert all(fix in str(err.value) for fix in FIX)


_SMALL_SHM = """
import torch
from antgo.data.collate import collate
from tests.data.test_shared_memory import Images
loader = torch.utils.data.DataLoader(Images(), batch_size=8, num_workers=2, collate_fn=collate)
list(loader)
"""


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1)")
def test_a_small_dev_shm_is_named_with_its_free_space() -> None:
    """A real 1 MiB tmpfs on /dev/shm, in a mount namespace of its own (where this machine allows one)."""
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /dev/shm"],
                           capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"no mount namespace here: {probe.stderr.decode().strip()}")
    mounted = 'mount -t tmpfs -o size=1m tmpfs /dev/shm && exec "$0" -c "$1"'
    run = subprocess.run(["unshare", "-m", "sh", "-c", mounted, sys.executable, _SMALL_SHM], capture_output=True,
                         text=True, timeout=120, cwd=REPO)
    assert run.returncode != 0
    assert "SharedMemoryFull" in run.stderr and "/dev/shm has" in run.stderr and "of 1 MiB" in run.stderr
    assert all(fix in run.stderr for fix in FIX)
