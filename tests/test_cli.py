"""``python -m antgo train|test|export|verify``: outputs, exit codes, error messages."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from antgo.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def cfg_file(tiny_seg_cfg: dict, tmp_path: Path) -> Path:
    path = tmp_path / "tiny_seg.py"
    path.write_text("\n".join(f"{k} = {v!r}" for k, v in tiny_seg_cfg.items()) + "\n")
    return path


def test_train_test_export_verify(cfg_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    work = tmp_path / "work"
    assert main(["train", str(cfg_file), "--work-dir", str(work), "--device", "cpu", "--max-epochs", "2",
                 "--cfg-options", "optimizer.lr=0.02"]) == 0
    assert (work / "best.pth").is_file() and (work / "latest.pth").is_file() and (work / "config.py").is_file()
    assert "lr=0.02" in (work / "config.py").read_text().replace(" ", "")
    # test picks WORK_DIR/best.pth when no checkpoint is given
    assert main(["test", str(cfg_file), "--work-dir", str(work), "--device", "cpu", "--num-vis", "2"]) == 0
    metrics = json.loads((work / "eval_results.json").read_text())
    assert 0.0 <= metrics["miou"] <= 1.0 and len(list((work / "vis").glob("*.png"))) == 2
    onnx_path = tmp_path / "m.onnx"
    assert main(["export", str(cfg_file), "--work-dir", str(work), "--checkpoint", str(work / "best.pth"),
                 "--onnx", str(onnx_path)]) == 0
    assert onnx_path.is_file()
    assert main(["verify", str(cfg_file), "--work-dir", str(work), "--onnx", str(onnx_path),
                 "--checkpoint", str(work / "best.pth")]) == 0
    assert (work / "parity.json").is_file()


def test_resume_through_the_cli(cfg_file: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    work = tmp_path / "work"
    with caplog.at_level(logging.INFO, logger="antgo"):
        assert main(["train", str(cfg_file), "--work-dir", str(work), "--device", "cpu", "--max-epochs", "1",
                     "--no-validate"]) == 0
    assert "no best checkpoint (no validation ran)" in caplog.text and "None=None" not in caplog.text
    assert main(["train", str(cfg_file), "--work-dir", str(work), "--device", "cpu", "--max-epochs", "2",
                 "--no-validate", "--resume-from", str(work / "epoch_1.pth")]) == 0
    assert (work / "epoch_2.pth").is_file() and not (work / "best.pth").exists()


def test_a_failing_run_exits_1_with_the_message(cfg_file: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    code = main(["train", str(cfg_file), "--work-dir", str(tmp_path / "w"), "--device", "cpu",
                 "--cfg-options", "model.type=NoSuchModel"])
    assert code == 1
    err = capsys.readouterr().err
    assert "error: RegistryError: MODELS has no type 'NoSuchModel'" in err


def test_missing_checkpoint_is_explained(cfg_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["test", str(cfg_file), "--work-dir", str(tmp_path / "empty"), "--device", "cpu"]) == 1
    assert "--checkpoint" in capsys.readouterr().err


def run_module(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), ANTGO_PROGRESS="0")
    return subprocess.run([sys.executable, "-m", "antgo", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_python_m_antgo_exit_codes(tiny_seg_cfg: dict, tmp_path: Path) -> None:
    tiny_seg_cfg["model"]["backbone"]["type"] = "ExplodesInForward"
    plugin = tmp_path / "exploding_plugin.py"
    plugin.write_text(
        "import torch\n"
        "from antgo.registry import MODELS\n"
        "@MODELS.register_module()\n"
        "class ExplodesInForward(torch.nn.Module):\n"
        "    def __init__(self, **kw):\n"
        "        super().__init__(); self.conv = torch.nn.Conv2d(3, 16, 1)\n"
        "    def forward(self, x):\n"
        "        raise RuntimeError('forward exploded')\n")
    tiny_seg_cfg["custom_imports"] = dict(imports=["exploding_plugin"])
    cfg = tmp_path / "bad.py"
    cfg.write_text("\n".join(f"{k} = {v!r}" for k, v in tiny_seg_cfg.items()) + "\n")
    env_path = f"{tmp_path}{os.pathsep}{REPO}"
    proc = subprocess.run([sys.executable, "-m", "antgo", "train", str(cfg), "--work-dir", str(tmp_path / "w"),
                           "--device", "cpu", "--max-epochs", "1"], cwd=tmp_path, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=env_path, ANTGO_PROGRESS="0"), timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "forward exploded" in proc.stderr
    usage = run_module("train", cwd=tmp_path)
    assert usage.returncode == 2 and "usage" in usage.stderr
    missing = run_module("train", str(tmp_path / "nope.py"), cwd=tmp_path)
    assert missing.returncode == 1 and "does not exist" in missing.stderr


def test_a_launched_rank_ends_without_teardown_and_keeps_its_output_and_code(tmp_path: Path) -> None:
    """Under torchrun (TORCHELASTIC_RUN_ID set) the process ends with os._exit: everything it printed or
    logged must still arrive, with the command's exit code; a folder a finalizer removes is removed."""
    code = ("import gc, sys, tempfile, weakref, shutil\n"
            "gc.disable()  # no automatic collection: only exit_rank's own can free the cycle\n"
            "from antgo.cli import run\n"
            "folder = tempfile.mkdtemp(dir=sys.argv[1])\n"
            "class Cyclic: pass\n"
            "c = Cyclic(); c.me = c  # freed only by the collector, like a trainer and its hooks\n"
            "weakref.finalize(c, shutil.rmtree, folder)\n"
            "del c\n"
            "sys.argv = ['antgo'] + sys.argv[2:]\n"
            "run()\n")
    env = dict(os.environ, TORCHELASTIC_RUN_ID="test", PYTHONPATH=str(REPO))
    listing = subprocess.run([sys.executable, "-c", code, str(tmp_path), "list", "models"], cwd=tmp_path,
                             capture_output=True, text=True, env=env, timeout=120)
    assert listing.returncode == 0, listing.stderr
    assert "EncoderDecoder" in listing.stdout and listing.stdout.endswith("\n")
    assert not list(tmp_path.iterdir())  # the finalizer ran before the exit
    failing = subprocess.run([sys.executable, "-c", code, str(tmp_path), "train", str(tmp_path / "nope.py")],
                             cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120)
    assert failing.returncode == 1 and "does not exist" in failing.stderr


def test_parser_lists_the_commands() -> None:
    from antgo.cli import build_parser

    help_text = build_parser().format_help()
    for command in ("train", "test", "export", "verify"):
        assert command in help_text
    args: Any = build_parser().parse_args(["verify", "c.py", "--onnx", "m.onnx", "--checkpoint", "b.pth"])
    assert args.onnx == "m.onnx" and args.work_dir == "./output"


def test_max_epochs_and_max_iters_exclude_each_other(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        main(["train", "c.py", "--max-epochs", "1", "--max-iters", "1"])
    assert info.value.code == 2
    assert "antgo train: error: --max-epochs and --max-iters exclude each other" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["predict", "c.py", "--checkpoint", "b.pth", "img.png"],
                                  ["predict", "--checkpoint", "b.pth", "c.py", "img.png"],
                                  ["predict", "c.py", "img.png", "--checkpoint", "b.pth", "--out-dir", "o"]])
def test_predict_takes_its_options_between_the_positionals(argv: list[str]) -> None:
    from antgo.cli import parse_args

    args = parse_args(argv)
    assert args.command == "predict" and args.paths == ["c.py", "img.png"] and args.checkpoint == "b.pth"
    onnx = parse_args(["predict", "--onnx", "m.onnx", "img.png", "--max-frames", "2"])
    assert onnx.paths == ["img.png"] and onnx.onnx == "m.onnx" and onnx.max_frames == 2


@pytest.fixture
def untrained_checkpoint(tiny_seg_cfg: dict, tmp_path: Path) -> str:
    """The tiny model's initial weights as a checkpoint (no training needed to test or export it)."""
    import antgo.models  # noqa: F401  (registers the built-in models)
    from antgo.engine.checkpoint import save_checkpoint
    from antgo.models.builder import build_model

    return save_checkpoint(tmp_path / "init.pth", build_model(tiny_seg_cfg["model"]))


def test_vis_dir_without_num_vis_draws_a_default_number(cfg_file: Path, tmp_path: Path, untrained_checkpoint: str,
                                                        capsys: pytest.CaptureFixture) -> None:
    from antgo.cli import DEFAULT_NUM_VIS, parse_args

    with pytest.raises(SystemExit):
        parse_args(["test", "--help"])
    assert f"or {DEFAULT_NUM_VIS} with --vis-dir" in " ".join(capsys.readouterr().out.split())
    vis = tmp_path / "vis"
    assert main(["test", str(cfg_file), "--work-dir", str(tmp_path / "w"), "--device", "cpu", "--checkpoint",
                 untrained_checkpoint, "--vis-dir", str(vis)]) == 0
    assert len(list(vis.glob("*.png"))) == 4  # the test split's 4 images, fewer than the default


def test_a_work_dir_that_is_a_file_is_one_clear_error_for_every_command(
        cfg_file: Path, tmp_path: Path, untrained_checkpoint: str, capsys: pytest.CaptureFixture) -> None:
    afile = tmp_path / "out"
    afile.write_text("x")
    fix = f"--work-dir {afile} is a file, not a folder. Pass another --work-dir"
    weights = ["--checkpoint", untrained_checkpoint]
    for command, extra in (("train", []), ("test", weights), ("export", weights)):
        assert main([command, str(cfg_file), "--work-dir", str(afile), "--device", "cpu", *extra]) == 1, command
        assert f"error: RunFolderUnwritable: {fix}" in capsys.readouterr().err, command
    assert main(["export", str(cfg_file), "--checkpoint", untrained_checkpoint, "--onnx", str(afile / "m.onnx")]) == 1
    assert f"--onnx {afile} is a file" in capsys.readouterr().err
    assert afile.read_text() == "x"
