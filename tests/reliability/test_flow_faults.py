"""Config and data faults through the flow script: ``python flows/train_flow.py`` exits non-zero, the message
names the key or file, the Prefect flow run ends Failed, and nothing an earlier attempt produced is lost.

The core table's config cases (``tests/reliability/cases.py``) run through the script's ``main`` in this process;
the flow-specific cases below run the script itself."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
FLOW = str(REPO / "flows" / "train_flow.py")

# The server helpers of tests/flows (real `prefect server start`, process-group teardown), loaded by path:
# that folder's conftest fixtures are not visible here.
_spec = importlib.util.spec_from_file_location("_flow_servers", REPO / "tests" / "flows" / "conftest.py")
servers = sys.modules.setdefault("_flow_servers", importlib.util.module_from_spec(_spec))
if not hasattr(servers, "write_tiny_config"):
    _spec.loader.exec_module(servers)


@pytest.fixture(scope="module")
def prefect_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """One Prefect API server for every case (the flow script would otherwise start one per case)."""
    home = tmp_path_factory.mktemp("prefect_faults")
    port = servers.free_port()
    proc = servers.start_process([str(servers.VENV_BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
                                  "--port", str(port)], home / "server.log",
                                 env=servers.base_env(PREFECT_HOME=str(home), PREFECT_SERVER_UI_ENABLED="false"))
    try:
        servers.wait_http(f"http://127.0.0.1:{port}/api/health", proc, timeout=90, log=home / "server.log")
        yield servers.base_env(PREFECT_API_URL=f"http://127.0.0.1:{port}/api", PREFECT_HOME=str(home))
        if "prefect.logging.handlers" in sys.modules:  # flows run in this process: send their logs first
            sys.modules["prefect.logging.handlers"].APILogWorker.drain_all(timeout=10)
    finally:
        servers.stop_process(proc)


@dataclass
class Case:
    name: str
    args: Callable[[Path, Path], list[str]]  # (config, work_dir) -> extra CLI arguments
    edit: Callable[[Path], None] | None  # changes the config file
    stage: str | None  # the failing stage (None: refused before the flow starts)
    names: Callable[[Path], list[str]]  # what the message must name
    tracking_off: bool = True  # MLflow plays no part in these faults


def _missing_data(config: Path) -> None:
    text = config.read_text()
    config.write_text(text.replace(str(config.parent / "voc"), str(config.parent / "no-such-voc")))


CASES = [
    Case("unknown override key", lambda c, w: ["--cfg-options", "optimizer.lrr=0.1"], None, "parse_config",
         lambda c: ["optimizer.lrr", "'lr'"]),
    Case("missing data folder", lambda c, w: [], _missing_data, "build_dataloaders",
         lambda c: ["no-such-voc"]),
    Case("config file not found", lambda c, w: [], lambda c: c.unlink(), None, lambda c: [c.name]),
    Case("invalid tracking mode in the config", lambda c, w: ["--cfg-options", "+mlflow.tracking=sometimes"],
         None, None, lambda c: ["tracking='sometimes'", "mlflow.tracking"], tracking_off=False),
]


def _flow_state(env: dict[str, str], flow_run_id: str) -> str:
    with urllib.request.urlopen(f"{env['PREFECT_API_URL']}/flow_runs/{flow_run_id}", timeout=30) as resp:
        return json.load(resp)["state"]["type"]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_fault_fails_the_flow_script_naming_the_cause(case, tmp_path, request, make_tiny_config_file, capsys):
    config = make_tiny_config_file(tmp_path / "cfg")
    if case.edit:
        case.edit(config)
    work_dir = tmp_path / "wd"
    prefect_env = request.getfixturevalue("prefect_env") if case.stage else None
    tracking = ["--tracking", "off"] if case.tracking_off else []
    argv = [str(config), "--work-dir", str(work_dir), "--device", "cpu", *tracking, *case.args(config, work_dir)]
    if case.stage is None:  # refused before Prefect starts: main() is what the script exits with
        from flows.train_flow import main

        assert main(argv) == 1
        stderr = capsys.readouterr().err
        assert "antgo pipeline Failed" in stderr and all(text in stderr for text in case.names(config)), stderr
        assert not work_dir.exists()  # nothing created
        return
    result = subprocess.run([sys.executable, FLOW, *argv], env=prefect_env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    assert "antgo pipeline Failed" in result.stderr
    for text in case.names(config):
        assert text in result.stderr, (text, result.stderr[-3000:])
    runs = list(work_dir.glob("*/summary.json"))
    (summary_file,) = runs
    summary = json.loads(summary_file.read_text())
    assert summary["status"] == "Failed" and summary["failed_stage"] == case.stage
    assert f"failed in stage {case.stage}" in result.stderr
    assert _flow_state(prefect_env, summary["flow_run_id"]) == "FAILED"


def test_failed_resume_keeps_what_the_folder_had(tmp_path, prefect_env, make_tiny_config_file):
    """A resume that fails (a typo in an override) leaves the checkpoints, log, config and summary as they were."""
    config = make_tiny_config_file(tmp_path / "cfg")
    run_dir = tmp_path / "wd" / "earlier-run"
    files = {"output/latest.pth": b"checkpoint bytes", "output/best.pth": b"best bytes",
             "config.py": b"max_epochs = 1\n", "train.log": b"epoch 1 done\n",
             "summary.json": json.dumps({"status": "Completed", "flow_run_id": "earlier"}).encode()}
    for name, data in files.items():
        (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / name).write_bytes(data)
    digests = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    result = subprocess.run([sys.executable, FLOW, str(config), "--work-dir", str(tmp_path / "wd"), "--resume",
                             "earlier-run", "--tracking", "off", "--cfg-options", "optimizer.lrr=0.1"],
                            env=prefect_env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "optimizer.lrr" in result.stderr, result.stderr[-3000:]
    for name, digest in digests.items():
        if name != "summary.json":
            assert hashlib.sha256((run_dir / name).read_bytes()).hexdigest() == digest, name
    (kept,) = run_dir.glob("summary.2*.json")  # the earlier attempt's summary, renamed, not overwritten
    assert hashlib.sha256(kept.read_bytes()).hexdigest() == digests["summary.json"]
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "Failed"


@pytest.fixture(scope="module")
def make_tiny_config_file() -> Callable[..., Path]:
    return servers.write_tiny_config


def _config_cases() -> list:
    from tests.reliability.cases import CONFIG_CASES

    return CONFIG_CASES


@pytest.mark.parametrize("case", _config_cases(), ids=lambda c: c.id)
def test_config_table_through_the_flow(case, ctx, prefect_env, capsys):
    """The core table's config faults, through the flow script's ``main``: exit 1, the same file/key and fix,
    the flow run Failed before any training, nothing written as a checkpoint."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.train_flow import main

    work_dir = ctx.tmp / "flow-runs"
    with temporary_settings(updates={PREFECT_API_URL: prefect_env["PREFECT_API_URL"]}):
        code = main([case.config(ctx), "--work-dir", str(work_dir), "--device", "cpu", "--tracking", "off"])
    stderr = capsys.readouterr().err
    assert code == 1, stderr[-3000:]
    for text in [*case.mentions(ctx), case.fix]:
        assert text in stderr, (text, stderr[-3000:])
    assert not list(work_dir.rglob("*.pth"))  # refused before training wrote anything
    for summary_file in work_dir.glob("*/summary.json"):
        summary = json.loads(summary_file.read_text())
        assert summary["status"] == "Failed" and summary["failed_stage"] in ("parse_config", "build_dataloaders",
                                                                             "train")
        assert _flow_state(prefect_env, summary["flow_run_id"]) == "FAILED"
