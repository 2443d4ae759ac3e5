"""A run never replaces what it must not: the config file being trained, an earlier run's checkpoints, or the
config.py of a folder when it fails before its first step; an output folder that cannot be written is one
clear error at the start."""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from antgo.config import load_config
from antgo.engine import Tester, Trainer
from antgo.engine.runlock import RunFolderUnwritable
from antgo.engine.trainer import RunFolderConflict

REPO = Path(__file__).resolve().parents[2]


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def out_dir_cfg(seg_cfg_factory: Any) -> dict[str, Any]:
    """The seed's layout: checkpoints and best.json in <work_dir>/output."""
    cfg = seg_cfg_factory(max_epochs=1)
    cfg["checkpoint_config"]["out_dir"] = "output"
    cfg["evaluation"]["out_dir"] = "output"
    return cfg


def trainer(cfg: Any, work_dir: Path, **model_kw: Any) -> Trainer:
    run = Trainer(cfg, work_dir=str(work_dir), device="cpu")
    run.config_dataloader()
    run.config_model(**model_kw)
    return run


@pytest.fixture(scope="module")
def earlier_run(seg_cfg_factory: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished one-epoch run: config.py, train.log, output/{latest,best,epoch_1}.pth, output/best.json."""
    work = tmp_path_factory.mktemp("earlier") / "run"
    trainer(out_dir_cfg(seg_cfg_factory), work).start_train()
    return work


@pytest.mark.parametrize("start", ["fresh", "load_from"])
def test_a_new_run_into_a_folder_with_checkpoints_is_refused_and_changes_nothing(
        earlier_run: Path, seg_cfg_factory: Any, start: str) -> None:
    before = digests(earlier_run)
    load_from = str(earlier_run / "output" / "latest.pth") if start == "load_from" else None
    run = trainer(out_dir_cfg(seg_cfg_factory), earlier_run, load_from=load_from)
    with pytest.raises(RunFolderConflict) as info:
        run.start_train()
    message = str(info.value)
    assert f"{earlier_run / 'output'} holds the checkpoints of an earlier run" in message
    assert "latest.pth (epoch 1, iter 3)" in message and "best.pth (best.json: miou " in message
    assert "epoch_1.pth" in message
    assert f"--resume-from {earlier_run / 'output' / 'latest.pth'}" in message
    assert "another --work-dir" in message and f"delete {earlier_run / 'output'}" in message
    assert digests(earlier_run) == before  # not even a line of train.log, and no lock left


def test_a_folder_without_checkpoints_is_reused_and_its_dumped_config_trained(
        seg_cfg_factory: Any, tmp_path: Path) -> None:
    """What an earlier run that failed before its first checkpoint leaves (the flow's layout: its config.py,
    dumped by antgo, is the config trained into the folder)."""
    work = tmp_path / "run"
    work.mkdir()
    load_config(seg_cfg_factory(max_epochs=1)).dump(str(work / "config.py"))
    (work / "train.log").write_text("an earlier attempt that failed\n")
    result = trainer(str(work / "config.py"), work).start_train()
    assert result["iters"] == 3 and (work / "latest.pth").is_file()
    assert (work / "train.log").read_text().startswith("an earlier attempt that failed\n")  # appended to


def test_the_config_file_being_trained_is_never_replaced(seg_cfg_factory: Any, tmp_path: Path) -> None:
    work = tmp_path / "project"
    work.mkdir()
    config = work / "config.py"
    config.write_text("# my config\n" + "".join(f"{k} = {v!r}\n" for k, v in seg_cfg_factory(max_epochs=1).items()))
    before = digests(work)
    with pytest.raises(RunFolderConflict) as info:
        trainer(str(config), work).start_train()
    assert f"{config} is the config file being trained" in str(info.value)
    assert "Train into another --work-dir (e.g. --work-dir work_dirs/config)" in str(info.value)
    assert digests(work) == before and sorted(os.listdir(work)) == ["config.py"]


def test_a_resume_failing_its_preflight_keeps_the_folders_config(earlier_run: Path, seg_cfg_factory: Any,
                                                                  tmp_path: Path) -> None:
    work = tmp_path / "run"
    shutil.copytree(earlier_run, work)
    cfg = out_dir_cfg(seg_cfg_factory)
    cfg["evaluation"]["save_best"] = "mIoU"  # not a metric key: the validation check before training fails
    before = (work / "config.py").read_bytes()
    run = trainer(cfg, work, resume_from=str(work / "output" / "latest.pth"))
    with pytest.raises(KeyError, match="evaluation.save_best='mIoU' is not a metric key"):
        run.start_train(max_epochs=2)
    assert (work / "config.py").read_bytes() == before


def test_a_run_failing_at_its_first_step_leaves_the_config_py_there(seg_cfg_factory: Any, tmp_path: Path) -> None:
    work = tmp_path / "run"
    work.mkdir()
    (work / "config.py").write_text("max_epochs = 1\n")  # an earlier attempt's, which never got a checkpoint
    cfg = seg_cfg_factory(max_epochs=1)
    cfg["data"]["train"]["inputs_def"] = dict(fields=["image", "segments"], alias=["image", "mask"])
    run = Trainer(cfg, work_dir=str(work), device="cpu")
    run.config_dataloader(with_validate=False)
    with pytest.raises(TypeError, match="forward_train cannot take the training batch"):
        run.start_train()
    assert (work / "config.py").read_text() == "max_epochs = 1\n"


def test_a_work_dir_that_is_a_file_is_one_clear_error(seg_cfg_factory: Any, tmp_path: Path) -> None:
    afile = tmp_path / "results"
    afile.write_text("not a folder")
    with pytest.raises(RunFolderUnwritable, match=f"--work-dir {afile} is a file, not a folder. Pass another "
                                                  f"--work-dir"):
        Trainer(seg_cfg_factory(max_epochs=1), work_dir=str(afile), device="cpu").start_train()
    with pytest.raises(RunFolderUnwritable, match=f"--work-dir {afile / 'run'} cannot be created: {afile} is a file"):
        Trainer(seg_cfg_factory(max_epochs=1), work_dir=str(afile / "run"), device="cpu").start_train()
    assert afile.read_text() == "not a folder"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
def test_a_read_only_work_dir_is_one_clear_error(seg_cfg_factory: Any, tmp_path: Path) -> None:
    work = tmp_path / "ro"
    work.mkdir()
    work.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        with pytest.raises(RunFolderUnwritable, match=f"--work-dir {work} is not writable"):
            Trainer(seg_cfg_factory(max_epochs=1), work_dir=str(work), device="cpu").start_train()
    finally:
        work.chmod(stat.S_IRWXU)


_TRAIN_INTO = """
import sys
from pathlib import Path
from antgo.data.datasets.synthetic import make_voc_tree
from antgo.engine import Trainer
from antgo.engine.runlock import RunFolderUnwritable
from tests.conftest import MINI_CLASSES, make_tiny_seg_cfg

voc = make_voc_tree(Path(sys.argv[2]), splits={"train": 4, "val": 2}, size_range=(32, 40),
                    num_classes=len(MINI_CLASSES), seed=0, class_names=MINI_CLASSES)
try:
    Trainer(make_tiny_seg_cfg(voc, max_epochs=1), work_dir=sys.argv[1], device="cpu").start_train()
except RunFolderUnwritable as exc:
    print("REFUSED:", exc)
"""


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1)")
def test_a_read_only_file_system_is_one_clear_error(tmp_path: Path) -> None:
    """A real read-only mount (EROFS stops root too), in a mount namespace of its own where the machine allows."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mount = f"mount -t tmpfs -o size=1m tmpfs {disk} && mkdir {disk}/run && mount -o remount,ro {disk}"
    probe = subprocess.run(["unshare", "-m", "sh", "-c", mount], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"no mount namespace here: {probe.stderr.strip()}")
    run = subprocess.run(["unshare", "-m", "sh", "-c", f'{mount} && "$0" -c "$1" {disk}/run {tmp_path}/voc',
                          sys.executable, _TRAIN_INTO], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert run.returncode == 0, run.stderr
    assert f"REFUSED: --work-dir {disk}/run is not writable" in run.stdout, run.stdout + run.stderr


def test_the_tester_checks_its_folders_first_and_logs_the_metrics_before_writing(
        earlier_run: Path, seg_cfg_factory: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    tester = Tester(seg_cfg_factory(), work_dir=str(tmp_path / "test"), device="cpu")
    tester.config_model(str(earlier_run / "output" / "best.pth"))
    with pytest.raises(RunFolderUnwritable, match=f"--json {afile} is a file"):
        tester.evaluate(json_file=str(afile / "m.json"))
    with pytest.raises(RunFolderUnwritable, match=f"--vis-dir {afile} is a file"):
        tester.evaluate(vis_dir=str(afile), num_vis=1)
    blocked = tmp_path / "a_folder.json"  # the write fails after the evaluation: the metrics are in the log
    blocked.mkdir()
    with caplog.at_level(logging.INFO, logger="antgo"), pytest.raises(OSError):
        tester.evaluate(json_file=str(blocked))
    assert "Test metrics: miou=" in caplog.text
