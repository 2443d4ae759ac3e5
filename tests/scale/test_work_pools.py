"""What can be checked of the Docker and Kubernetes paths without a Docker daemon or a cluster: prefect.yaml
deploys every deployment against real docker/kubernetes pools (the server validates the job variables against
each pool's schema, and rejects a wrong one), and the Dockerfile names only files that exist."""
from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
import urllib.request
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).parent / "prefect")
IMAGE = "registry.example/antgo:cpu"
DOCKER_INSTRUCTIONS = {"FROM", "ARG", "ENV", "RUN", "WORKDIR", "COPY", "VOLUME", "CMD", "ENTRYPOINT", "LABEL",
                       "EXPOSE", "USER"}


def _prefect(env, *args, cwd=REPO, check=True) -> subprocess.CompletedProcess:
    proc = subprocess.run([PREFECT, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=240)
    assert not check or proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _deployment(s, name: str) -> dict:
    request = urllib.request.Request(f"{s.prefect_api}/deployments/name/{name}", headers={
        "Authorization": "Basic " + base64.b64encode(s.prefect_auth.encode()).decode()})
    with urllib.request.urlopen(request, timeout=10) as resp:
        return json.load(resp)


def test_prefect_yaml_deploys_to_process_docker_and_kubernetes_pools(shared_servers_up, tmp_path):
    s = shared_servers_up
    env = s.client_env(ANTGO_IMAGE=IMAGE, MLFLOW_TRACKING_URI="http://mlflow.antgo.svc:5000")
    pools = [["antgo-process", "--type", "process"], ["antgo-docker", "--type", "docker"],
             ["antgo-kubernetes", "--type", "kubernetes", "--base-job-template",
              "deployments/k8s-gpu-job-template.json"]]
    with ThreadPoolExecutor(3) as pool:  # the pools' default job templates come with Prefect, no plugin needed
        list(pool.map(lambda args: _prefect(env, "work-pool", "create", *args, "--overwrite"), pools))
    _prefect(env, "--no-prompt", "deploy", "--prefect-file", "deployments/prefect.yaml", "--all")
    docker = _deployment(s, "antgo/full-pipeline-docker")
    assert docker["work_pool_name"] == "antgo-docker" and docker["job_variables"]["image"] == IMAGE
    assert docker["pull_steps"] == [{"prefect.deployments.steps.set_working_directory": {"directory": "/opt/antgo"}}]
    k8s = _deployment(s, "antgo/full-pipeline-k8s")
    assert k8s["job_variables"]["gpu_limit"] == "1"
    assert k8s["job_variables"]["env"]["MLFLOW_TRACKING_URI"] == "http://mlflow.antgo.svc:5000"
    assert _deployment(s, "antgo-sweep/sweep")["entrypoint"] == "flows/sweep_flow.py:antgo_sweep"
    for job in (docker, k8s):  # credentials come from the worker's environment, never from the yaml
        assert not re.search(r"PASSWORD|AUTH_STRING|TOKEN", json.dumps(job["job_variables"]))

    bad = yaml.safe_load((REPO / "deployments" / "prefect.yaml").read_text())
    k8s_entry = next(d for d in bad["deployments"] if d["name"] == "full-pipeline-k8s")
    k8s_entry["work_pool"]["job_variables"]["gpu_limit"] = [1]  # the template says string
    bad_file = tmp_path / "prefect.yaml"
    bad_file.write_text(yaml.safe_dump(bad))
    proc = _prefect(env, "--no-prompt", "deploy", "--prefect-file", str(bad_file), "--name", "full-pipeline-k8s",
                    check=False)
    assert proc.returncode != 0 and "is not of type" in proc.stdout + proc.stderr


def test_dockerfile_names_existing_files_and_extras():
    lines, current = [], ""
    for raw in (REPO / "deployments" / "Dockerfile").read_text().splitlines():
        if raw.strip().startswith("#") or not raw.strip():
            continue
        current += raw.rstrip("\\").strip() + " "
        if not raw.endswith("\\"):
            lines.append(current.strip())
            current = ""
    assert {line.split()[0] for line in lines} <= DOCKER_INSTRUCTIONS
    assert [line.split()[0] for line in lines if line.split()[0] != "ARG"][0] == "FROM"
    for line in lines:
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (REPO / source).exists(), f"Dockerfile copies {source}, which is not in the repository"
    pyproject = (REPO / "pyproject.toml").read_text()  # (tomllib is Python 3.11+; the project allows 3.10)
    assert any('".[scale]"' in line for line in lines) and re.search(r"(?m)^scale = \[", pyproject)
    ignored = (REPO / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored
