"""MLflow and Prefect on PostgreSQL with authentication: strangers are refused, pipelines with credentials
complete (in-process, served deployment, two at once) and no credential lands in MLflow."""
from __future__ import annotations

import base64
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow


def test_unauthenticated_clients_are_refused(shared_servers_up, monkeypatch):
    import asyncio

    import httpx
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    s = shared_servers_up
    for var in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(MlflowException, match="401|not authenticated|Unauthorized"):
        MlflowClient(tracking_uri=s.mlflow_uri).search_experiments()
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", s.mlflow_user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong-" + s.mlflow_password)
    with pytest.raises(MlflowException, match="401|not authenticated|Unauthorized"):
        MlflowClient(tracking_uri=s.mlflow_uri).search_experiments()
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", s.mlflow_password)
    assert MlflowClient(tracking_uri=s.mlflow_uri).search_experiments()  # the right password gets in

    async def read_flows(auth):
        with temporary_settings(updates={PREFECT_API_URL: s.prefect_api, PREFECT_API_AUTH_STRING: auth}):
            async with get_client() as client:
                return await client.read_flows()

    for auth in (None, "antgo:wrong"):
        with pytest.raises(httpx.HTTPStatusError, match="401"):
            asyncio.run(read_flows(auth))
    assert isinstance(asyncio.run(read_flows(s.prefect_auth)), list)


REPO = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).parent / "prefect")
WATCH_TIMEOUT = 240


def _artifact_files(client: Any, run_id: str, path: str | None = None) -> list[str]:
    out: list[str] = []
    for item in client.list_artifacts(run_id, path):
        out += _artifact_files(client, run_id, item.path) if item.is_dir else [item.path]
    return out


def _pipeline_runs(client: Any, experiment: str) -> list[Any]:
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], filter_string="tags.`antgo.pipeline` = 'true'")


def _children(client: Any, parent: Any) -> list[Any]:
    return client.search_runs([parent.info.experiment_id],
                              filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, make_tiny_config) -> Path:
    return make_tiny_config(tmp_path_factory.mktemp("shared_cfg"), model_name="tiny-shared")


def test_pipeline_with_credentials_completes_and_leaks_no_secret(shared_env, tiny, tmp_path):
    from flows.train_flow import antgo

    summary = antgo(config=str(tiny), work_dir=str(tmp_path / "wd"), experiment="shared-inprocess", num_vis=1,
                    tracking_uri=shared_env.mlflow_uri)
    assert summary["status"] == "Completed"
    client = shared_env.mlflow_client()
    [parent] = _pipeline_runs(client, "shared-inprocess")
    assert parent.info.status == "FINISHED"
    runs = [parent, *_children(client, parent)]
    assert {r.data.tags["antgo.stage"] for r in runs[1:]} >= {"train", "evaluate", "export", "verify"}
    assert client.get_model_version_by_alias("tiny-shared", "champion").run_id in {r.info.run_id for r in runs}
    leaks = []
    download = tmp_path / "artifacts"
    for run in runs:
        for key, value in [*run.data.params.items(), *run.data.tags.items()]:
            leaks += [f"{run.info.run_name} {key}" for s in shared_env.secrets() if s in f"{key}={value}"]
        for path in _artifact_files(client, run.info.run_id):
            local = Path(client.download_artifacts(run.info.run_id, path, str(download / run.info.run_id)))
            data = local.read_bytes()
            leaks += [f"{run.info.run_name} {path}" for s in shared_env.secrets() if s.encode() in data]
    assert not leaks, f"credentials found in MLflow: {leaks}"


def _wait_deployment(s: Any, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    """Poll the API (authenticated) until the served deployment exists; fail early if serve died."""
    request = urllib.request.Request(f"{s.prefect_api}/deployments/name/antgo/full-pipeline", headers={
        "Authorization": "Basic " + base64.b64encode(s.prefect_auth.encode()).decode()})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(request, timeout=5):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    raise TimeoutError(f"deployment not registered in {timeout} s:\n{log.read_text()[-3000:]}")


def test_served_deployment_runs_two_pipelines_at_once(shared_env, tiny, tmp_path, processes):
    env = shared_env.client_env(PREFECT_RUNNER_POLL_FREQUENCY="2")
    log = tmp_path / "serve.log"
    proc = processes.start([sys.executable, str(REPO / "flows" / "train_flow.py"), "--serve"], log, env=env,
                           cwd=tmp_path)
    _wait_deployment(shared_env, proc, log)
    cmd = [PREFECT, "deployment", "run", "antgo/full-pipeline", "--watch", "--watch-timeout", str(WATCH_TIMEOUT),
           "--param", f"config={tiny}", "--param", "experiment=shared-served", "--param", "num_vis=0"]
    runs = [subprocess.Popen(cmd + ["--param", f"work_dir={tmp_path / f'wd{i}'}"], env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for i in range(2)]
    outputs = [r.communicate(timeout=WATCH_TIMEOUT + 60)[0] for r in runs]
    errors = "\n".join(line for line in log.read_text().splitlines() if "Error" in line or "error" in line)
    for r, out in zip(runs, outputs):
        assert r.returncode == 0, out[-3000:] + "\nserve log errors:\n" + errors[-6000:]
    client = shared_env.mlflow_client()
    parents = _pipeline_runs(client, "shared-served")
    assert len(parents) == 2 and {p.info.status for p in parents} == {"FINISHED"}
    starts, ends = sorted(p.info.start_time for p in parents), sorted(p.info.end_time for p in parents)
    assert starts[1] < ends[0], "the two pipelines did not overlap in time"
    versions = {client.get_run(c.info.run_id).data.tags.get("antgo.model_version")
                for p in parents for c in _children(client, p) if c.data.tags["antgo.stage"] == "export"}
    assert len(versions) == 2 and None not in versions  # two registrations, no lost write
    assert "rror" not in shared_env.logs["prefect"].read_text().split("Uvicorn running")[-1].replace(
        "errors=0", ""), shared_env.logs["prefect"].read_text()[-3000:]
