"""The design document's Trainer use from a plain script, which sets up no logging, still shows the run's
progress and warnings on the console; a script that configured logging gets each line once."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

_SCRIPT = """
import logging, sys
from pathlib import Path
from antgo.data.datasets.synthetic import make_voc_tree
from antgo.engine import Trainer
from tests.conftest import MINI_CLASSES, make_tiny_seg_cfg

if sys.argv[2] == "configured":
    logging.basicConfig(level=logging.INFO)
voc = make_voc_tree(Path(sys.argv[1]) / "voc", splits={"train": 4, "val": 2}, size_range=(32, 40),
                    num_classes=len(MINI_CLASSES), seed=0, class_names=MINI_CLASSES)
trainer = Trainer(make_tiny_seg_cfg(voc, max_epochs=1), work_dir=str(Path(sys.argv[1]) / "run"), device="cpu")
trainer.config_dataloader()
trainer.config_model()
trainer.start_train()
logging.getLogger("antgo.after").warning("AFTER THE RUN")  # the run's console output is gone again
"""


@pytest.mark.parametrize("logging_setup", ["none", "configured"])
def test_a_script_sees_the_run_on_the_console_once(logging_setup: str, tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-c", _SCRIPT, str(tmp_path), logging_setup], capture_output=True,
                         text=True, timeout=120, cwd=REPO)
    assert run.returncode == 0, run.stderr
    headers = [line for line in run.stderr.splitlines() if "Training " in line and " on cpu for epochs 1..1" in line]
    assert len(headers) == 1, run.stderr
    assert run.stderr.count("AFTER THE RUN") == 1  # Python's last-resort output again, or basicConfig's
    assert "Training " in (tmp_path / "run" / "train.log").read_text()
