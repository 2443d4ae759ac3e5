"""Run folders: the lock, atomic writes and clean-up, safe loading by default, masked secrets, self-contained
folders, CLI overrides in config.py, and the one checkpoint finder of CLI and flow."""
from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from antgo.cli import main
from antgo.config import Config
from antgo.config.secrets import MASK
from antgo.engine import Trainer
from antgo.engine.checkpoint import UNSAFE_LOAD_ENV
from antgo.engine.loading import find_checkpoint
from antgo.engine.runlock import LOCK_NAME, RunFolderLocked, RunLock
from tests.reliability.cases import MARKER, Ctx, crafted_checkpoint, legacy_checkpoint

REPO = Path(__file__).resolve().parents[2]


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_lock_is_reentrant_and_released(tmp_path: Path) -> None:
    with RunLock(tmp_path / "run") as lock:
        holder = json.loads(Path(lock.path).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname() and holder["started"]
        with RunLock(tmp_path / "run"):  # the flow holds it, the Trainer inside takes it again
            pass
        assert Path(lock.path).is_file()
    assert not (tmp_path / "run" / LOCK_NAME).exists()
    assert not (tmp_path / "run").exists()  # created for the lock and left empty: removed


def test_stale_lock_is_taken_over_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    run = tmp_path / "run"
    (run / "output").mkdir(parents=True)
    pid = dead_pid()
    (run / LOCK_NAME).write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "started": "yesterday"}))
    leftovers = [run / "output" / ".tmp_x1.pth", run / "best.json.tmp", run / "output" / "latest.pth.tmp77",
                 run / ".config.py.tmp9"]
    for path in leftovers:
        path.write_text("half")
    (run / "output" / "latest.pth").write_text("kept")
    with caplog.at_level(logging.WARNING, logger="antgo.engine.runlock"), RunLock(run):
        assert json.loads((run / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert f"stale lock of pid {pid}" in caplog.text and "temporary file" in caplog.text
    assert not any(p.exists() for p in leftovers) and (run / "output" / "latest.pth").read_text() == "kept"


def test_lock_left_under_our_own_pid_counts_as_stale(tmp_path: Path) -> None:
    """A restarted container often gets the pid its killed predecessor had."""
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    with RunLock(tmp_path):
        assert "started" in json.loads((tmp_path / LOCK_NAME).read_text())


def test_a_lock_from_another_host_is_stale_once_its_heartbeat_stops(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """A shared volume (a pod restarted on another node): the other host's process cannot be checked, but its
    holder touches the lock file; silent for longer than ANTGO_LOCK_STALE_S (default 120 s), it is stale."""
    import time

    lock = tmp_path / LOCK_NAME
    other = {"pid": 4242, "host": "node-that-crashed", "started": "08:00", "heartbeat": 30.0}
    lock.write_text(json.dumps(other))
    with pytest.raises(RunFolderLocked, match=r"node-that-crashed.*last sign of life \d+ s ago.*more than 120 s"):
        RunLock(tmp_path).acquire()  # touched just now: alive
    old = time.time() - 121
    os.utime(lock, (old, old))
    with caplog.at_level(logging.WARNING, logger="antgo.engine.runlock"), RunLock(tmp_path):
        assert json.loads(lock.read_text())["host"] == socket.gethostname()
    assert "stale lock of pid 4242 on host node-that-crashed" in caplog.text
    assert "not touched it for 121 s" in caplog.text
    # a lock written without a heartbeat (an older antgo) is never judged stale from another host
    lock.write_text(json.dumps({k: v for k, v in other.items() if k != "heartbeat"}))
    os.utime(lock, (old, old))
    with pytest.raises(RunFolderLocked, match="node-that-crashed"):
        RunLock(tmp_path).acquire()


def test_the_holder_keeps_its_lock_alive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from antgo.engine import runlock

    monkeypatch.setattr(runlock, "HEARTBEAT_S", 0.02)
    with RunLock(tmp_path / "run") as held:
        old = time.time() - 1000
        os.utime(held.path, (old, old))
        deadline = time.monotonic() + 30
        while os.stat(held.path).st_mtime < old + 500 and time.monotonic() < deadline:  # polls the file
            time.sleep(0.01)
        assert time.time() - os.stat(held.path).st_mtime < 100


def _take_over_from_another_host(lock: Path) -> dict:
    """What another host does once this holder has been silent past the stale limit: its own lock in place."""
    theirs = {"pid": 777, "host": "node-b", "started": "09:00", "heartbeat": 30.0}
    (lock.parent / ".their.lock").write_text(json.dumps(theirs))
    os.replace(lock.parent / ".their.lock", lock)
    return theirs


def test_a_run_whose_folder_was_taken_over_stops_without_writing(ctx: Ctx) -> None:
    """Paused past ANTGO_LOCK_STALE_S, a holder finds its folder taken over by another host: its next
    checkpoint is refused, what the other run wrote stays, and its lock is not removed."""
    from antgo.engine.hooks import Hook
    from antgo.engine.runlock import RunFolderLost

    work = ctx.tmp / "run"
    taken: list[dict] = []

    class TakenOverWhilePaused(Hook):
        def before_iter(self, trainer: Trainer) -> None:
            if not taken:
                taken.append(_take_over_from_another_host(work / LOCK_NAME))
                (work / "output").mkdir(exist_ok=True)
                (work / "output" / "latest.pth").write_bytes(b"the other run's checkpoint")

    trainer = Trainer(ctx.cfg, work_dir=str(work), device="cpu")
    trainer.config_dataloader()
    trainer.config_model()
    trainer.register_hook(TakenOverWhilePaused())
    with pytest.raises(RunFolderLost, match=r"no longer this run's: its lock now names pid 777 on host node-b.*"
                                            r"ANTGO_LOCK_STALE_S.*refused so that the two runs do not mix"):
        trainer.start_train()
    assert (work / "output" / "latest.pth").read_bytes() == b"the other run's checkpoint"
    assert sorted(p.name for p in (work / "output").iterdir()) == ["latest.pth"]  # no best/epoch file of ours
    assert json.loads((work / LOCK_NAME).read_text()) == taken[0]  # the new holder's lock stays
    log = (work / "train.log").read_text()
    assert "Epoch [1][3/3]" in log and "RunFolderLost" not in log  # nothing logged there once it was known


def test_test_export_and_verify_refuse_a_folder_taken_over(ctx: Ctx) -> None:
    """The stages after training (the flow runs them holding the lock) write nothing there either."""
    from antgo.engine import Exporter, Tester
    from antgo.engine.parity import verify_parity
    from antgo.engine.runlock import RunFolderLost

    best = str(ctx.run / "output" / "best.pth")
    onnx_path = Exporter(ctx.cfg, str(ctx.tmp / "export")).export(checkpoint=best)
    work = ctx.tmp / "run"
    with RunLock(work) as held:
        _take_over_from_another_host(Path(held.path))
        tester = Tester(ctx.cfg, str(work), device="cpu")
        tester.config_model(best)
        with pytest.raises(RunFolderLost, match="Writing .*eval_results.json refused"):
            tester.evaluate()
        with pytest.raises(RunFolderLost, match="Exporting .*onnx refused"):
            Exporter(ctx.cfg, str(work)).export(checkpoint=best)
        with pytest.raises(RunFolderLost, match="Writing .*parity.json refused"):
            verify_parity(ctx.cfg, onnx_path, best, work_dir=str(work), num_samples=2)
        assert sorted(p.name for p in work.iterdir()) == [LOCK_NAME]


def test_a_pipeline_whose_folder_was_taken_over_writes_no_summary_there(tmp_path: Path) -> None:
    """The flow's closing step keeps the new holder's summary.json as it is (no rename, no overwrite)."""
    pytest.importorskip("prefect")
    from antgo.engine.runlock import RunFolderLost
    from antgo.tracking.runs import PipelineTracker
    from flows.train_flow import _finish

    run = tmp_path / "run"
    with RunLock(run, purpose="flow") as held:
        _take_over_from_another_host(Path(held.path))
        (run / "summary.json").write_text('{"flow_run_id": "theirs"}')
        summary = {"run_dir": str(run), "status": "Failed", "flow_run_id": "ours", "config": "cfg.py"}
        _finish(PipelineTracker.disabled(str(tmp_path / "mlflow.db")), summary, RunFolderLost("taken over"))
    assert sorted(p.name for p in run.iterdir()) == [LOCK_NAME, "summary.json"]
    assert json.loads((run / "summary.json").read_text()) == {"flow_run_id": "theirs"}


_LOCK_DURING_TRAINING = """
import json, socket, subprocess, sys
from pathlib import Path
from antgo.data.datasets.synthetic import make_voc_tree
from antgo.engine import Trainer
from antgo.engine.hooks import Hook
from antgo.engine.runlock import LOCK_NAME, RunLock
from tests.conftest import MINI_CLASSES, make_tiny_seg_cfg

tmp = Path(sys.argv[1])
voc = make_voc_tree(tmp / "voc", splits={"train": 4, "val": 2}, size_range=(32, 40), num_classes=len(MINI_CLASSES),
                    seed=0, class_names=MINI_CLASSES)
other = tmp / "other"
other.mkdir()
dead = subprocess.Popen([sys.executable, "-c", "pass"])
dead.wait()
(other / LOCK_NAME).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": "08:00"}))


class TakesAnotherLock(Hook):
    def before_iter(self, trainer):
        with RunLock(other):  # a stale lock: its takeover logs a warning while the registry is held
            pass


trainer = Trainer(make_tiny_seg_cfg(voc, max_epochs=1), work_dir=str(tmp / "run"), device="cpu")
trainer.config_dataloader()
trainer.config_model()
trainer.register_hook(TakesAnotherLock())
trainer.start_train()
print("TRAINED")
"""


def test_a_lock_taken_during_training_logs_into_train_log_without_a_deadlock(tmp_path: Path) -> None:
    """train.log's filter asks the lock registry; a record logged while the registry is held must pass."""
    run = subprocess.run([sys.executable, "-c", _LOCK_DURING_TRAINING, str(tmp_path)], capture_output=True,
                         text=True, timeout=120, cwd=REPO)
    assert run.returncode == 0 and "TRAINED" in run.stdout, run.stderr[-2000:]
    assert "taking over a stale lock" in (tmp_path / "run" / "train.log").read_text()


def test_the_heartbeat_leaves_a_lock_taken_over_alone(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import time

    from antgo.engine.runlock import folder_lost, touch_held_locks

    with RunLock(tmp_path / "run") as held:
        old = time.time() - 1000
        os.utime(held.path, (old, old))
        touch_held_locks()
        assert time.time() - os.stat(held.path).st_mtime < 100  # still ours: touched
        _take_over_from_another_host(Path(held.path))
        os.utime(held.path, (old, old))
        with caplog.at_level(logging.ERROR, logger="antgo.engine.runlock"):
            touch_held_locks()
        assert os.stat(held.path).st_mtime == pytest.approx(old, abs=1)  # theirs: not kept alive on our behalf
        assert "no longer this process's (pid 777 on host node-b" in caplog.text
        assert folder_lost(Path(held.path).parent / "output" / "x.pth")  # train.log's filter asks this
    assert not folder_lost(held.path)  # released
    assert json.loads(Path(held.path).read_text())["host"] == "node-b"  # released without removing theirs


def test_unreadable_lock_file_counts_as_stale(tmp_path: Path) -> None:
    (tmp_path / LOCK_NAME).write_text("{half")
    with RunLock(tmp_path):
        pass


_CHILD = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("runlock", sys.argv[1])  # no torch import: fast
runlock = importlib.util.module_from_spec(spec)
spec.loader.exec_module(runlock)
runlock.RunLock(sys.argv[2]).acquire().release()
"""


def test_processes_started_by_the_holder_share_its_lock(tmp_path: Path) -> None:
    """torchrun started from the flow: its rank 0 Trainer takes the flow's lock; an unrelated process cannot."""
    import antgo.engine.runlock as runlock

    run = tmp_path / "run"
    argv = [sys.executable, "-c", _CHILD, runlock.__file__, str(run)]
    with RunLock(run):
        child = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert child.returncode == 0, child.stderr
        assert json.loads((run / LOCK_NAME).read_text())["pid"] == os.getpid()  # still ours
        env = {k: v for k, v in os.environ.items() if k != runlock.LOCKS_ENV}
        other = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
        assert other.returncode != 0 and f"in use by pid {os.getpid()}" in other.stderr
    assert runlock.LOCKS_ENV not in os.environ and not (run / LOCK_NAME).exists()


def test_refused_run_leaves_no_empty_folder(tmp_path: Path, ctx: Ctx) -> None:
    fresh = tmp_path / "fresh"
    assert main(["train", ctx.write_cfg("optimzer = 1\n"), "--work-dir", str(fresh)]) == 1
    assert not fresh.exists()


def test_flow_refuses_a_run_folder_in_use(ctx: Ctx) -> None:
    pytest.importorskip("prefect")
    from flows.train_flow import _run_pipeline

    (ctx.run / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": socket.gethostname(), "started": "08:00"}))
    with pytest.raises(RunFolderLocked, match="pid 1 on host"):
        _run_pipeline(ctx.write_cfg(), None, str(ctx.tmp), 1, "cpu", None, str(ctx.tmp / "nowhere.db"), None,
                      None, 0, "champion", str(ctx.run), None)


def test_flow_and_cli_share_the_checkpoint_rule(ctx: Ctx) -> None:
    """The seed's out_dir='./output/': `antgo test --work-dir D` and the flow's resume both find D/output."""
    cfg = Config(ctx.cfg)
    assert find_checkpoint(ctx.run, cfg) == str(ctx.run / "output" / "best.pth")
    assert find_checkpoint(ctx.run, cfg, names=("latest.pth",)) == str(ctx.run / "output" / "latest.pth")
    pytest.importorskip("prefect")
    from flows.tasks import _resume_checkpoint

    assert _resume_checkpoint(str(ctx.run), cfg) == str(ctx.run / "output" / "latest.pth")


def test_cli_train_then_test_with_seed_layout_masks_secrets_and_records_overrides(ctx: Ctx, tmp_path: Path) -> None:
    secrets = {"api_token": "tok-123456", "aws_secret_access_key": "AKIA-SECRET-9"}
    cfg = dict(ctx.cfg, **secrets)
    cfg["data"] = dict(cfg["data"], train=dict(cfg["data"]["train"], ext_params=dict(
        cfg["data"]["train"]["ext_params"], password="hunter2-pw")))
    path = ctx.write_cfg(cfg=cfg)
    work = tmp_path / "D"
    assert main(["train", path, "--work-dir", str(work), "--seed", "3", "--max-epochs", "1"]) == 0
    dumped = (work / "config.py").read_text()
    assert "seed = 3" in dumped and "max_epochs = 1" in dumped
    meta = torch.load(work / "output" / "latest.pth", weights_only=True)["meta"]  # plain types only
    for text in (dumped, meta["config"], json.dumps(meta, default=str)):
        assert not any(s in text for s in ("tok-123456", "AKIA-SECRET-9", "hunter2-pw"))
    assert f"api_token = '{MASK}'" in dumped and f"password='{MASK}'" in meta["config"]
    assert meta["best_checkpoint"] == os.path.join("output", "best.pth") and meta["checkpoint_dir"] == "output"
    assert json.loads((work / "output" / "best.json").read_text())["checkpoint"] == os.path.join("output", "best.pth")
    assert not (work / LOCK_NAME).exists()
    assert main(["test", path, "--work-dir", str(work)]) == 0  # finds output/best.pth
    assert (work / "eval_results.json").is_file()


def test_moved_run_folder_resumes_and_reports_its_own_files(ctx: Ctx, tmp_path: Path) -> None:
    moved = tmp_path / "moved"
    shutil.move(str(ctx.run), moved)
    trainer = Trainer(ctx.cfg, work_dir=str(moved), device="cpu")
    trainer.config_dataloader()
    trainer.config_model(resume_from=str(moved / "output" / "latest.pth"))
    result = trainer.start_train(max_epochs=1)
    assert result["best_checkpoint"] == str(moved / "output" / "best.pth")
    assert result["latest_checkpoint"] == str(moved / "output" / "latest.pth")


def test_unsafe_checkpoint_needs_the_explicit_opt_in(ctx: Ctx, capsys: pytest.CaptureFixture) -> None:
    legacy = legacy_checkpoint(ctx)
    argv = ["test", ctx.write_cfg(), "--work-dir", str(ctx.run), "--checkpoint", legacy]
    assert main(argv) == 1
    assert "LegacyNote" in capsys.readouterr().err
    assert main([*argv, "--unsafe-load"]) == 0
    assert UNSAFE_LOAD_ENV not in os.environ  # allowed for that command only


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def test_crafted_checkpoint_creates_nothing_in_a_real_process(ctx: Ctx) -> None:
    """`--resume-from` / `--load-from` / `export` run the same reader: in-process cases in cases.py."""
    crafted = crafted_checkpoint(ctx)
    proc = subprocess.run([sys.executable, "-m", "antgo", "test", ctx.write_cfg(), "--work-dir", str(ctx.run),
                           "--checkpoint", crafted], capture_output=True, text=True, env=_env(), timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "UnsafeCheckpointError" in proc.stderr and crafted in proc.stderr and "--unsafe-load" in proc.stderr
    assert not (ctx.tmp / MARKER).exists()


def test_moved_export_folder_verifies_with_its_own_checkpoint(ctx: Ctx, tmp_path: Path) -> None:
    from antgo.engine import verify_parity

    cfg_path = ctx.write_cfg()
    assert main(["export", cfg_path, "--work-dir", str(ctx.run)]) == 0  # finds output/best.pth
    info = json.loads((ctx.run / "export.json").read_text())
    assert info["onnx"] == "cfg.onnx" and info["checkpoint"] == os.path.join("output", "best.pth")
    moved = tmp_path / "moved"
    shutil.move(str(ctx.run), moved)
    report = verify_parity(cfg_path, str(moved / "cfg.onnx"), work_dir=str(tmp_path / "report"))
    assert report["passed"] and report["checkpoint"] == str(moved / "output" / "best.pth")
