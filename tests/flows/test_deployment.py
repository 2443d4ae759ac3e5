"""Deployment antgo/full-pipeline through the real CLI: `--serve` and the prefect.yaml + process-worker path."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).parent / "prefect")
WATCH_TIMEOUT = 300


def wait_deployment(api_url: str, proc: subprocess.Popen, log: Path, timeout: float = 120) -> dict[str, Any]:
    """Poll the API until the deployment exists (bounded; fails early if the serving process died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{api_url}/deployments/name/antgo/full-pipeline", timeout=5) as resp:
                return json.load(resp)
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    raise TimeoutError(f"deployment antgo/full-pipeline not registered in {timeout} s:\n{log.read_text()[-3000:]}")


def run_deployment(env: dict[str, str], *params: str) -> subprocess.CompletedProcess:
    cmd = [PREFECT, "deployment", "run", "antgo/full-pipeline", "--watch", "--watch-timeout", str(WATCH_TIMEOUT)]
    for p in params:
        cmd += ["--param", p]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=WATCH_TIMEOUT + 60)


@pytest.fixture(scope="module")
def setup(prefect_server, mlflow_store, tmp_path_factory, make_tiny_config) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("deploy")
    config = make_tiny_config(folder / "cfg", model_name="tiny-deploy")
    broken = folder / "cfg" / "broken.py"
    broken.write_text("model = dict(type='EncoderDecoder'\n")  # syntax error: the parse stage must fail
    return {"folder": folder, "config": config, "broken": broken,
            # poll every 2 s instead of 10 (serve runner and worker): shorter trigger-to-start latency
            "env": prefect_server.env(MLFLOW_TRACKING_URI=mlflow_store.uri, PREFECT_RUNNER_POLL_FREQUENCY="2",
                                      PREFECT_WORKER_QUERY_SECONDS="2")}


@pytest.fixture(scope="module")
def served(setup, prefect_server, processes) -> dict[str, Any]:
    """`python flows/train_flow.py --serve` running from a scratch folder (relative outputs land there)."""
    log = setup["folder"] / "serve.log"
    proc = processes.start([sys.executable, str(REPO / "flows" / "train_flow.py"), "--serve"], log,
                           env=setup["env"], cwd=setup["folder"])
    deployment = wait_deployment(prefect_server.api_url, proc, log)
    return {"proc": proc, "log": log, "deployment": deployment}


def test_deployment_run_completes(setup, served, mlflow_store):
    assert served["deployment"]["parameter_openapi_schema"]["properties"]["max_epochs"]
    result = run_deployment(
        setup["env"], f"config={setup['config']}", f"work_dir={setup['folder'] / 'wd'}", "experiment=deploy",
        'cfg_options=["data.train_dataloader.workers_per_gpu=1"]', "num_vis=1")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output + served["log"].read_text()[-4000:]
    assert "Completed" in output
    runs = mlflow_store.pipeline_runs("deploy")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    parent = runs[0]
    assert parent.data.tags["prefect.flow_run_id"]
    run_dir = Path(parent.data.tags["antgo.run_dir"])
    # flow runs started by serve() are spawned: the loader workers must fork (set by the flow)
    assert "multiprocessing_context='fork'" in (run_dir / "config.py").read_text()
    client = mlflow_store.client()
    assert client.get_model_version_by_alias("tiny-deploy", "champion")


def test_deployment_run_with_broken_config_fails(setup, served, mlflow_store):
    result = run_deployment(setup["env"], f"config={setup['broken']}", f"work_dir={setup['folder'] / 'wd'}",
                            "experiment=deploy")
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Failed" in output
    runs = mlflow_store.pipeline_runs("deploy")
    assert len(runs) == 2
    failed = runs[-1]
    assert failed.info.status == "FAILED" and failed.data.tags["error"]
    children = mlflow_store.client().search_runs(
        [failed.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{failed.info.run_id}'")
    assert [(c.data.tags["antgo.stage"], c.info.status) for c in children] == [("parse_config", "FAILED")]
    assert children[0].info.run_name == f"{failed.info.run_name}/parse_config"


def _flow_run_state(api_url: str, flow_run_id: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{api_url}/flow_runs/{flow_run_id}", timeout=30) as resp:
        return json.load(resp)["state"]


def test_cancelling_a_served_run_keeps_its_work_and_says_how_to_continue(setup, served, prefect_server,
                                                                         mlflow_store):
    """Cancel in Prefect (as the UI's button does) while the run trains: the flow run ends Cancelled, its MLflow
    runs KILLED, the folder keeps its checkpoints and is unlocked, the summary gives the command that continues
    it, the run's processes are gone and the serve process goes on serving."""
    import psutil

    work_dir = setup["folder"] / "wd-cancel"
    options = '["data.train_dataloader.workers_per_gpu=1", "evaluation.interval=1000"]'
    started = subprocess.run(
        [PREFECT, "deployment", "run", "antgo/full-pipeline", "--param", f"config={setup['config']}",
         "--param", f"work_dir={work_dir}", "--param", "experiment=deploy-cancel", "--param", "max_epochs=100000",
         "--param", "num_vis=0", "--param", f"cfg_options={options}"],
        env=setup["env"], capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stdout + started.stderr
    flow_run_id = re.search(r"UUID: ([0-9a-f-]{36})", started.stdout).group(1)
    client = mlflow_store.client()
    deadline = time.monotonic() + 240
    while True:  # training has logged a step: the run is inside the train stage
        assert time.monotonic() < deadline, served["log"].read_text()[-4000:]
        runs = mlflow_store.pipeline_runs("deploy-cancel")
        train = runs and client.search_runs([runs[0].info.experiment_id], "tags.`antgo.stage` = 'train'")
        if train and client.get_metric_history(train[0].info.run_id, "loss"):
            break
        time.sleep(0.2)
    serve = psutil.Process(served["proc"].pid)
    run_processes = [c for c in serve.children(recursive=True) if "resource_tracker" not in " ".join(c.cmdline())]
    assert len(run_processes) >= 2  # the flow run's process and its loader worker
    cancel = subprocess.run([PREFECT, "flow-run", "cancel", flow_run_id], env=setup["env"], capture_output=True,
                            text=True, timeout=120)
    assert cancel.returncode == 0, cancel.stdout + cancel.stderr
    while (state := _flow_run_state(prefect_server.api_url, flow_run_id))["type"] in ("RUNNING", "CANCELLING"):
        assert time.monotonic() < deadline, served["log"].read_text()[-4000:]
        time.sleep(0.2)
    assert state["type"] == "CANCELLED", state

    parent = mlflow_store.pipeline_runs("deploy-cancel")[0]
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert parent.info.status == "KILLED" and parent.data.tags["error"] == "TerminationSignal: SIGTERM"
    assert {c.data.tags["antgo.stage"]: c.info.status for c in children} == {
        "parse_config": "FINISHED", "build_dataloaders": "FINISHED", "train": "KILLED"}
    run_dir = Path(parent.data.tags["antgo.run_dir"])
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["status"], summary["failed_stage"]) == ("Cancelled", "train")
    assert list(run_dir.rglob("latest.pth")) and not (run_dir / ".antgo.lock").exists()
    assert summary["resume"].startswith("prefect deployment run antgo/full-pipeline --param config=")
    assert f"resume={run_dir}" in summary["resume"] and "evaluation.interval=1000" in summary["resume"]
    assert "max_epochs=100000" in summary["resume"] and "work_dir" not in summary["resume"]

    _, alive = psutil.wait_procs(run_processes, timeout=max(1.0, deadline - time.monotonic()))
    assert not alive, [c.cmdline() for c in alive]
    assert served["proc"].poll() is None


def test_prefect_yaml_deploys_to_a_process_pool_and_a_worker_runs_it(setup, served, prefect_server, processes,
                                                                   mlflow_store):
    processes.stop(served["proc"])  # the yaml deployment replaces the served one (same name)
    env = setup["env"]
    subprocess.run([PREFECT, "work-pool", "create", "antgo-process", "--type", "process", "--overwrite"],
                   env=env, check=True, capture_output=True, timeout=120)
    deploy = subprocess.run([PREFECT, "--no-prompt", "deploy", "--prefect-file", "deployments/prefect.yaml",
                             "--name", "full-pipeline"], env=env, cwd=REPO, capture_output=True, text=True,
                            timeout=180)
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    with urllib.request.urlopen(f"{prefect_server.api_url}/deployments/name/antgo/full-pipeline") as resp:
        deployment = json.load(resp)
    assert deployment["work_pool_name"] == "antgo-process"
    assert deployment["entrypoint"] == "flows/train_flow.py:antgo"
    assert deployment["parameters"]["config"] == "configs/demo/demo_seg.py"
    log = setup["folder"] / "worker.log"
    processes.start([PREFECT, "worker", "start", "--pool", "antgo-process"], log, env=env, cwd=setup["folder"])
    result = run_deployment(env, f"config={setup['config']}", f"work_dir={setup['folder'] / 'wd-worker'}",
                            "experiment=deploy-worker", "num_vis=0")
    assert result.returncode == 0, result.stdout + result.stderr + log.read_text()[-4000:]
    runs = mlflow_store.pipeline_runs("deploy-worker")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
