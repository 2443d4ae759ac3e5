"""Real training processes: SIGKILL after the first checkpoint then resume gives the uninterrupted weights;
a second training on a work dir in use refuses and leaves the first untouched."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from antgo.cli import main
from antgo.config import Config
from antgo.engine.runlock import LOCK_NAME

REPO = Path(__file__).resolve().parents[2]
EPOCHS = 6


def _env() -> dict[str, str]:
    # one thread everywhere: the same float reduction order in every process, so weights compare exactly
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _train(cfg: str, work: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "antgo", "train", cfg, "--work-dir", str(work), "--device", "cpu",
                             *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())


def _wait_for(condition: Any, proc: subprocess.Popen, what: str, timeout: float = 120.0) -> None:
    """Poll ``condition()`` (no fixed sleeps); fail when the process ends first or the deadline passes."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"training ended (rc {proc.returncode}) before {what}: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"no {what} within {timeout} s")
        time.sleep(0.005)  # polling interval, not synchronisation


@pytest.fixture
def cfg_file(tmp_path: Path, reliability_cfg: dict[str, Any]) -> str:
    path = tmp_path / "cfg.py"
    path.write_text(Config(dict(reliability_cfg, max_epochs=EPOCHS)).pretty_text)
    return str(path)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def test_sigkill_after_first_checkpoint_then_resume_matches_uninterrupted(cfg_file: str, tmp_path: Path) -> None:
    killed, reference = tmp_path / "killed", tmp_path / "reference"
    latest = killed / "output" / "latest.pth"
    proc = _train(cfg_file, killed)
    ref = _train(cfg_file, reference)  # runs meanwhile: the uninterrupted baseline
    _wait_for(latest.is_file, proc, "first checkpoint")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    epoch = torch.load(latest, weights_only=True)["meta"]["epoch"]
    assert epoch < EPOCHS, "the run finished before the kill: the test proves nothing"
    assert json.loads((killed / LOCK_NAME).read_text())["pid"] == proc.pid  # left behind by the dead process
    resumed = subprocess.run([sys.executable, "-m", "antgo", "train", cfg_file, "--work-dir", str(killed),
                              "--device", "cpu", "--resume-from", str(latest)],
                             capture_output=True, text=True, env=_env(), timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"stale lock of pid {proc.pid}" in resumed.stderr
    assert ref.wait(timeout=300) == 0, ref.stderr.read()
    got, want = _weights(killed / "output" / "latest.pth"), _weights(reference / "output" / "latest.pth")
    assert torch.load(killed / "output" / "latest.pth", weights_only=True)["meta"]["epoch"] == EPOCHS
    assert got.keys() == want.keys()
    for key in want:
        assert torch.equal(got[key], want[key]), key
    assert not list(killed.rglob(".tmp_*")) and not (killed / LOCK_NAME).exists()


def test_second_training_on_a_work_dir_in_use_refuses(cfg_file: str, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    work = tmp_path / "shared"
    first = _train(cfg_file, work)
    lock = work / LOCK_NAME

    def held_by_first() -> bool:
        try:
            return json.loads(lock.read_text())["pid"] == first.pid
        except (OSError, ValueError):
            return False

    _wait_for(held_by_first, first, "lock of the first training")
    capsys.readouterr()
    assert main(["train", cfg_file, "--work-dir", str(work), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "RunFolderLocked" in err and f"pid {first.pid} on host {socket.gethostname()}" in err
    assert "started" in err and "use another --work-dir" in err
    assert first.wait(timeout=300) == 0, first.stderr.read()
    log = (work / "train.log").read_text()
    assert log.count("Training EncoderDecoder") == 1  # one run's log, not two interleaved
    meta = torch.load(work / "output" / "latest.pth", weights_only=True)["meta"]
    best = json.loads((work / "output" / "best.json").read_text())
    assert meta["epoch"] == EPOCHS and best["epoch"] <= EPOCHS and meta["best_score"] == best["score"]
    assert not lock.exists()
