"""A checkpoint that cannot be written (a full disk; a file-size limit) fails with CheckpointWriteError naming
the file, the free space and the way on, and leaves the checkpoints written before as they were."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]

# Trains 3 epochs of the tiny model into argv[1] (a checkpoint each epoch); after epoch 1's checkpoint, argv[2]
# takes the room: 'fill' writes a file over the disk's free space, 'limit' caps the size of files written.
_TRAIN = """
import os, resource, shutil, signal, sys
from pathlib import Path
from antgo.data.datasets.synthetic import make_voc_tree
from antgo.engine import Trainer
from antgo.engine.hooks import PRIORITIES, Hook
from tests.conftest import MINI_CLASSES, make_tiny_seg_cfg

work, mode = sys.argv[1], sys.argv[2]
voc = make_voc_tree(Path(work).parent / "voc", splits={"train": 8, "val": 4}, size_range=(32, 40),
                    num_classes=len(MINI_CLASSES), seed=0, class_names=MINI_CLASSES)
cfg = make_tiny_seg_cfg(voc, max_epochs=3)
cfg["checkpoint_config"] = dict(interval=1, out_dir="./output/")


class TakeTheRoom(Hook):
    priority = PRIORITIES["VERY_HIGH"]  # before the checkpoint hook

    def after_epoch(self, trainer):
        if trainer.epoch != 1:
            return
        if mode == "fill":
            with open(os.path.join(work, "filler"), "wb") as f:
                f.write(bytes(shutil.disk_usage(work).free - 4096))
        else:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead
            resource.setrlimit(resource.RLIMIT_FSIZE, (2 ** 14, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))


trainer = Trainer(cfg, work_dir=work, device="cpu")
trainer.config_dataloader(with_validate=False)
trainer.config_model()
trainer.register_hook(TakeTheRoom())
trainer.start_train()
"""


def _check_kept(output: Path, stderr: str) -> None:
    assert "CheckpointWriteError: could not write checkpoint" in stderr and "epoch_2.pth" in stderr
    assert "Nothing there was replaced" in stderr and "--resume-from" in stderr
    assert f"the last good checkpoint is {output / 'latest.pth'}" in stderr
    assert sorted(p.name for p in output.iterdir()) == ["epoch_1.pth", "latest.pth"]  # no temp file left
    kept = torch.load(output / "latest.pth", weights_only=True)
    assert kept["meta"]["epoch"] == 1 and kept["state_dict"]


def test_a_file_size_limit_names_the_checkpoint_and_keeps_the_earlier_ones(tmp_path: Path) -> None:
    work = tmp_path / "run"
    run = subprocess.run([sys.executable, "-c", _TRAIN, str(work), "limit"], capture_output=True, text=True,
                         timeout=300, cwd=REPO)
    assert run.returncode != 0
    assert "File too large" in run.stderr or "file write failed" in run.stderr or "unexpected pos" in run.stderr
    _check_kept(work / "output", run.stderr)


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1)")
def test_a_full_disk_says_how_much_room_there_is_and_keeps_the_earlier_checkpoints(tmp_path: Path) -> None:
    """The run folder on a real 4 MiB tmpfs, in a mount namespace of its own (where this machine allows one)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=4m tmpfs {disk}"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"no mount namespace here: {probe.stderr.strip()}")
    # the tmpfs lives as long as the namespace: the run folder is read inside it too
    script = (f'mount -t tmpfs -o size=4m tmpfs {disk} && "$0" -c "$1" {disk}/run fill; rc=$?; '
              f'"$0" -c "$2" {disk}/run/output; exit $rc')
    run = subprocess.run(["unshare", "-m", "sh", "-c", script, sys.executable, _TRAIN, _REPORT],
                         capture_output=True, text=True, timeout=300, cwd=REPO)
    assert run.returncode != 0
    assert "its disk is full" in run.stderr and "MiB free in" in run.stderr
    assert "the checkpoints written before are as they were" in run.stderr
    assert "KEPT epoch 1: ['epoch_1.pth', 'latest.pth']" in run.stdout, run.stdout + run.stderr


_REPORT = """
import sys, torch
from pathlib import Path
output = Path(sys.argv[1])
print(f"KEPT epoch {torch.load(output / 'latest.pth', weights_only=True)['meta']['epoch']}:",
      sorted(p.name for p in output.iterdir()))
"""
