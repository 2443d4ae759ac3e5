"""Real servers for the pipeline tests: a Prefect API server and an MLflow tracking server as subprocesses
(127.0.0.1, free ports, bounded readiness polling, process-group teardown), a SQLite MLflow store in a temp
folder, and a tiny VOC data set + config that trains in seconds."""
from __future__ import annotations

import os

# Before prefect/mlflow are imported anywhere in this process.
for _key, _value in {"DO_NOT_TRACK": "true", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                     "MLFLOW_DISABLE_TELEMETRY": "true", "PREFECT_LOGGING_EXTRA_LOGGERS": "antgo",
                     "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
                     "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90"}.items():
    os.environ.setdefault(_key, _value)

import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import urllib.error  # noqa: E402
import urllib.request  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Iterator  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen | None, timeout: float, log: Path | None = None) -> None:
    """Poll ``url`` until it answers 200 (bounded); fail early when the process exits."""
    deadline = time.monotonic() + timeout
    delay = 0.1
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"server exited with {proc.returncode} before {url} answered:\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(delay)
        delay = min(delay * 1.5, 1.0)
    tail = log.read_text()[-3000:] if log and log.exists() else ""
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s:\n{tail}")


def start_process(cmd: list[str], log: Path, env: dict[str, str] | None = None,
                  cwd: Path | None = None) -> subprocess.Popen:
    """A subprocess in its own process group (so teardown reaches its children), output to ``log``."""
    out = open(log, "wb")
    try:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                start_new_session=True)
    finally:
        out.close()


def stop_process(proc: subprocess.Popen, timeout: float = 15) -> None:
    """SIGTERM the whole process group, then SIGKILL what is left."""
    if proc.poll() is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGTERM, signal.SIGKILL):  # Prefect workers need SIGTERM twice
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=timeout / 3)
            return
        except subprocess.TimeoutExpired:
            continue


def base_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"DO_NOT_TRACK": "true", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONUNBUFFERED": "1"})
    env.pop("PREFECT_API_URL", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    env.update(extra)
    return env


@dataclass
class PrefectServer:
    api_url: str
    home: Path
    log: Path

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for a client subprocess (CLI, serve) talking to this server."""
        return base_env(PREFECT_API_URL=self.api_url, PREFECT_HOME=str(self.home), **extra)


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """``prefect server start`` on a free port with its own PREFECT_HOME (SQLite database inside)."""
    home = tmp_path_factory.mktemp("prefect_home")
    port = free_port()
    log = home / "server.log"
    env = base_env(PREFECT_HOME=str(home), PREFECT_UI_ENABLED="false", PREFECT_SERVER_UI_ENABLED="false")
    proc = start_process([str(VENV_BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
                          "--port", str(port)], log, env=env)
    try:
        wait_http(f"http://127.0.0.1:{port}/api/health", proc, timeout=90, log=log)
        yield PrefectServer(f"http://127.0.0.1:{port}/api", home, log)
    finally:
        stop_process(proc)


@pytest.fixture(scope="session")
def prefect_api(prefect_server: PrefectServer) -> Iterator[str]:
    """Point this process's Prefect client at the session's server (flows called in-process report there)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from prefect.logging.handlers import APILogWorker

    with temporary_settings(updates={PREFECT_API_URL: prefect_server.api_url}):
        yield prefect_server.api_url
        APILogWorker.drain_all(timeout=10)  # send buffered run logs while the server is still up


@dataclass
class MlflowStore:
    root: Path

    @property
    def db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def uri(self) -> str:
        return "sqlite:///" + str(self.db)

    def client(self):
        from antgo.tracking.store import open_client

        return open_client(self.uri)  # never migrates a new store while a pipeline's process does

    def pipeline_runs(self, experiment: str) -> list:
        """The parent runs of ``experiment``'s pipelines, oldest first ([] when it does not exist yet)."""
        client = self.client()
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            return []
        return client.search_runs([exp.experiment_id], filter_string="tags.`antgo.pipeline` = 'true'",
                                  order_by=["attributes.start_time ASC"])


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> MlflowStore:
    """A SQLite MLflow store shared by the session (tests use their own experiment names)."""
    return MlflowStore(tmp_path_factory.mktemp("mlruns"))


@pytest.fixture(scope="session")
def mlflow_server(mlflow_store: MlflowStore) -> Iterator[str]:
    """``mlflow server`` on the session store, lean flags (no job execution, one worker)."""
    port = free_port()
    log = mlflow_store.root / "mlflow-server.log"
    mlflow_store.artifacts.mkdir(parents=True, exist_ok=True)
    env = base_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    proc = start_process([str(VENV_BIN / "mlflow"), "server", "--backend-store-uri", mlflow_store.uri,
                          "--artifacts-destination", str(mlflow_store.artifacts), "--host", "127.0.0.1",
                          "--port", str(port), "--workers", "1"], log, env=env)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", proc, timeout=90, log=log)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc)


_PIPELINE = """[
        dict(type="ResizeS", target_dim=({size}, {size})),
        dict(type="ToTensor", keys=["image"]),
        dict(type="Normalize", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), keys=["image"]),
        dict(type="UnSqueeze", axis=0, keys=["segments"]),
    ]"""


TINY_CONFIG = '''
max_epochs = 1
seed = 0
num_classes = {num_classes}
optimizer = dict(type="SGD", lr=0.05, momentum=0.9, weight_decay=1e-4)
optimizer_config = dict(grad_clip=None)
lr_config = dict(policy="CosineAnnealing", min_lr=1e-4, warmup=None)
log_config = dict(interval=1, hooks=[dict(type="TextLoggerHook")])
model = dict(
    type="EncoderDecoder",
    backbone=dict(type="SimpleConvNet", in_channels=3, channels=(8, 16)),
    decode_head=dict(type="SimpleHead", in_channels=16, channels=8, out_channels={num_classes}, ignore_index=255),
)
{data}
evaluation = dict(out_dir="./output/", interval=1, metric=dict(type="SegMIOU", class_num={num_classes}),
                  save_best="miou", rule="greater")
checkpoint_config = dict(interval=1, out_dir="./output/")
export = dict(input_shape_list=[[1, 3, {size}, {size}]], input_name_list=["image"], output_name_list=["heatmap"])
mlflow = dict(registered_model_name="{model_name}")
'''


def write_tiny_config(folder: Path, model_name: str = "tiny-seg", size: int = 32, num_classes: int = 4,
                      data_dir: Path | None = None) -> Path:
    """A mini VOC tree (8 train / 4 val images) and a config that trains one epoch on it in seconds."""
    from antgo.data.datasets.synthetic import make_voc_tree

    folder.mkdir(parents=True, exist_ok=True)
    data_dir = data_dir or folder / "voc"
    if not data_dir.exists():
        make_voc_tree(data_dir, splits={"train": 8, "val": 4}, num_classes=num_classes, size_range=(32, 48))
    path = folder / "tiny_seg.py"
    pipeline = _PIPELINE.format(size=size)
    parts = []
    for split, name, shuffle in (("train", "train", True), ("val", "val", False), ("test", "val", False)):
        parts.append(f'    {split}=dict(type="Pascal2012", train_or_test="{name}", dir="{data_dir}",\n'
                     f'        ext_params=dict(task_type="SEGMENTATION", aug=False),\n'
                     f'        pipeline={pipeline},\n        inputs_def=dict(fields=["image", "segments"])),\n'
                     f'    {split}_dataloader=dict(samples_per_gpu=4, workers_per_gpu=0, drop_last=False, '
                     f'shuffle={shuffle}),')
    data = "data = dict(\n" + "\n".join(parts) + "\n)"
    path.write_text(TINY_CONFIG.format(num_classes=num_classes, size=size, data=data, model_name=model_name))
    return path


@pytest.fixture(scope="session")
def make_tiny_config():
    """``write_tiny_config`` as a fixture (test modules cannot import conftest under --import-mode=importlib)."""
    return write_tiny_config


class Processes:
    """Starts subprocesses for a test module and stops every one of them (process groups) at teardown."""

    wait_http = staticmethod(wait_http)
    free_port = staticmethod(free_port)

    def __init__(self) -> None:
        self.started: list[subprocess.Popen] = []

    def start(self, cmd: list[str], log: Path, env: dict[str, str] | None = None,
              cwd: Path | None = None) -> subprocess.Popen:
        proc = start_process(cmd, log, env=env, cwd=cwd)
        self.started.append(proc)
        return proc

    @staticmethod
    def stop(proc: subprocess.Popen, timeout: float = 15) -> None:
        stop_process(proc, timeout)

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            stop_process(proc)


@pytest.fixture(scope="module")
def processes() -> Iterator[Processes]:
    manager = Processes()
    try:
        yield manager
    finally:
        manager.stop_all()
