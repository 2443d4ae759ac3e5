"""Shared servers for the scale-out tests: one throw-away PostgreSQL cluster per session, an MLflow server
(basic-auth app) and a Prefect server (API auth string) on it, started by deployments/shared_servers.py.

Credentials are made up per session and reach clients only through the environment (``shared_env``)."""
from __future__ import annotations

import importlib.util
import os
import secrets
import shutil
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def _load_flow_helpers() -> Any:
    """The server helpers of tests/flows/conftest.py (conftests cannot be imported by name under importlib)."""
    spec = importlib.util.spec_from_file_location("antgo_flow_test_helpers", REPO / "tests" / "flows" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


helpers = _load_flow_helpers()
from deployments import shared_servers  # noqa: E402


@dataclass
class SharedServers:
    """Addresses and (session-made) credentials of the PostgreSQL-backed, authenticated servers."""

    mlflow_uri: str
    prefect_api: str
    mlflow_user: str
    mlflow_password: str
    prefect_auth: str
    postgres: Any
    root: Path
    logs: dict[str, Path] = field(default_factory=dict)

    def client_env(self, **extra: str) -> dict[str, str]:
        """Environment of a client process (flow script, CLI, serve) with credentials."""
        values = {"MLFLOW_TRACKING_URI": self.mlflow_uri, "PREFECT_API_URL": self.prefect_api,
                  "MLFLOW_TRACKING_USERNAME": self.mlflow_user, "MLFLOW_TRACKING_PASSWORD": self.mlflow_password,
                  "PREFECT_API_AUTH_STRING": self.prefect_auth, "PREFECT_HOME": str(self.root / "client")}
        return helpers.base_env(**{**values, **extra})

    def secrets(self) -> list[str]:
        return [self.mlflow_password, self.prefect_auth, self.prefect_auth.split(":", 1)[1]]

    def mlflow_client(self) -> Any:
        """An authenticated MlflowClient (credentials from this process's environment, see ``shared_env``)."""
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.mlflow_uri)


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A PostgreSQL cluster in a temp folder on 127.0.0.1 with the servers' databases.

    The folder is not under pytest's temp root: that is private to root, and the cluster's user (postgres,
    when the tests run as root) must reach it."""
    folder = tempfile.mkdtemp(prefix="antgo-pg-")
    cluster = shared_servers.PostgresCluster(folder, port=helpers.free_port())
    try:
        cluster.init()
        cluster.start()
        for name in ("mlflow", "mlflow_auth", "prefect"):
            cluster.create_database(name)
        yield cluster
    finally:
        try:
            cluster.stop()
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def _start(cmd: list[str], env: dict[str, str], log: Path, health: str, procs: list) -> None:
    proc = helpers.start_process(cmd, log, env=env)
    procs.append(proc)
    helpers.wait_http(health, proc, timeout=120, log=log)


@pytest.fixture(scope="session")
def shared_servers_up(postgres: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedServers]:
    """MLflow (basic auth, PostgreSQL, proxied artifacts) and Prefect (auth string, PostgreSQL), started in
    parallel through deployments/shared_servers.py."""
    root = tmp_path_factory.mktemp("shared")
    user, password = "antgo-ci", secrets.token_urlsafe(12)
    prefect_auth = f"antgo:{secrets.token_urlsafe(12)}"
    secret_env = {"MLFLOW_AUTH_ADMIN_USERNAME": user, "MLFLOW_AUTH_ADMIN_PASSWORD": password,
                  "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16), "PREFECT_SERVER_API_AUTH_STRING": prefect_auth}
    old = {k: os.environ.get(k) for k in secret_env}
    os.environ.update(secret_env)  # the set-up reads secrets from the environment only
    try:
        ml_port, pf_port = helpers.free_port(), helpers.free_port()
        ml_cmd, ml_env = shared_servers.mlflow_server(
            postgres.url("mlflow", "psycopg2"), str(root / "artifacts"), root, port=ml_port,
            auth_db=postgres.url("mlflow_auth", "psycopg2"))
        pf_cmd, pf_env = shared_servers.prefect_server(postgres.url("prefect", "asyncpg"), port=pf_port)
    finally:
        for key, value in old.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
    pf_env.update(PREFECT_HOME=str(root / "prefect_home"), PREFECT_UI_ENABLED="false",
                  PREFECT_SERVER_UI_ENABLED="false")
    for env in (ml_env, pf_env):
        env.pop("PREFECT_API_URL", None)
        env.pop("MLFLOW_TRACKING_URI", None)
    logs = {"mlflow": root / "mlflow.log", "prefect": root / "prefect.log"}
    procs: list = []
    try:
        with ThreadPoolExecutor(2) as pool:
            started = [pool.submit(_start, ml_cmd, ml_env, logs["mlflow"], f"http://127.0.0.1:{ml_port}/health", procs),
                       pool.submit(_start, pf_cmd, pf_env, logs["prefect"],
                                   f"http://127.0.0.1:{pf_port}/api/health", procs)]
            for future in started:
                future.result()
        yield SharedServers(f"http://127.0.0.1:{ml_port}", f"http://127.0.0.1:{pf_port}/api", user, password,
                            prefect_auth, postgres, root, logs)
    finally:
        with ThreadPoolExecutor(2) as pool:  # both at once: each may take seconds to shut down
            list(pool.map(helpers.stop_process, procs))


@pytest.fixture(scope="module")
def shared_env(shared_servers_up: SharedServers) -> Iterator[SharedServers]:
    """This process as an authenticated client of the shared servers, for one test module."""
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings
    from prefect.logging.handlers import APILogWorker

    s = shared_servers_up
    env = {"MLFLOW_TRACKING_URI": s.mlflow_uri, "MLFLOW_TRACKING_USERNAME": s.mlflow_user,
           "MLFLOW_TRACKING_PASSWORD": s.mlflow_password}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        with temporary_settings(updates={PREFECT_API_URL: s.prefect_api, PREFECT_API_AUTH_STRING: s.prefect_auth}):
            yield s
            APILogWorker.drain_all(timeout=10)
    finally:
        for key, value in old.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)


@pytest.fixture(scope="session")
def make_tiny_config():
    return helpers.write_tiny_config


@pytest.fixture(scope="module")
def processes() -> Iterator[Any]:
    manager = helpers.Processes()
    try:
        yield manager
    finally:
        manager.stop_all()
