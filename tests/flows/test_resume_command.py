"""The command a stopped pipeline prints to continue its run folder gives the run's own options back."""
from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

PARAMETERS = {"config": "cfg/my seg.py", "cfg_options": ["optimizer.lr=0.01", "model.name='a b'"], "work_dir": "wd",
              "max_epochs": 7, "device": "cpu", "experiment": None, "tracking_uri": "sqlite:////tmp/x.db",
              "parity_thresholds": {"max_abs_diff": 0.001}, "parity_samples": None, "num_vis": 4,
              "alias": "champion", "resume": None, "loader_context": "fork", "nproc_per_node": 2,
              "launch": None, "tracking": "optional"}


def test_the_command_line_form_parses_back_to_the_same_run() -> None:
    from flows import train_flow
    from flows.train_flow import _parse_args, resume_command

    command = shlex.split(resume_command(PARAMETERS, "/runs/20261201-run 1"))
    # runnable from any folder: this interpreter and the script by absolute paths
    assert command[:2] == [sys.executable, str(Path(train_flow.__file__).resolve())]
    args = _parse_args(command[2:])
    assert (args.config, args.resume, args.work_dir) == ("cfg/my seg.py", "/runs/20261201-run 1", None)
    assert args.cfg_options == PARAMETERS["cfg_options"] and args.parity == ["max_abs_diff=0.001"]
    assert (args.max_epochs, args.device, args.tracking_uri, args.nproc_per_node, args.tracking) == (
        7, "cpu", "sqlite:////tmp/x.db", 2, "optional")
    assert (args.num_vis, args.alias, args.experiment) == (4, "champion", None)


def test_the_deployment_form_passes_the_changed_parameters_and_the_folder() -> None:
    from flows.train_flow import resume_command

    command = shlex.split(resume_command(PARAMETERS, "/runs/r1", deployment="antgo/full-pipeline"))
    assert command[:4] == ["prefect", "deployment", "run", "antgo/full-pipeline"]
    assert command[4::2] == ["--param"] * (len(command) - 4 >> 1)
    given = dict(pair.split("=", 1) for pair in command[5::2])
    assert given.pop("config") == "cfg/my seg.py" and given.pop("resume") == "/runs/r1"
    assert {k: v if k in ("device", "tracking_uri", "tracking") else json.loads(v) for k, v in given.items()} == {
        "cfg_options": PARAMETERS["cfg_options"], "max_epochs": 7, "device": "cpu",
        "tracking_uri": "sqlite:////tmp/x.db", "parity_thresholds": {"max_abs_diff": 0.001},
        "nproc_per_node": 2, "tracking": "optional"}


def test_a_config_given_relative_to_the_working_folder_comes_back_absolute(tmp_path: Path, monkeypatch) -> None:
    from flows.train_flow import resume_command

    (tmp_path / "config.py").write_text("x = 1\n")
    monkeypatch.chdir(tmp_path)
    command = shlex.split(resume_command({**PARAMETERS, "config": "config.py"}, "/runs/r1"))
    assert command[2] == str(tmp_path / "config.py")
