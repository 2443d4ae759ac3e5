"""Where MLflow data lives: the tracking URI, the artifact root and the experiment.

Default store: ``<project>/mlruns/mlflow.db`` (SQLite) with artifacts in ``<project>/mlruns/artifacts``,
both absolute so that runs started from any working directory land in the same place and ``mlflow ui``
finds the artifacts. ``MLFLOW_TRACKING_URI`` (or an explicit URI) overrides it.
"""
from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

logger = logging.getLogger(__name__)

#: Repository root (antgo/tracking/store.py -> parents[2]); the default store lives beside the code.
PROJECT_ROOT = Path(__file__).resolve().parents[2]

# Telemetry is opt-in for this project; setdefault keeps whatever the user exported.
TELEMETRY_OFF = {
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}


def _env_defaults(values: dict[str, str]) -> None:
    for key, value in values.items():
        os.environ.setdefault(key, value)


def disable_telemetry() -> None:
    """Turn MLflow/Prefect telemetry off unless the user set these variables explicitly."""
    _env_defaults(TELEMETRY_OFF)


# MLflow's defaults (120 s timeout, 7 retries, backoff factor 2) make one call to a dead server take minutes.
# Bounded instead: a refused connection fails in ~3 s, a hung server in at most ~35 s per call (and the
# background queue in antgo.tracking.transport keeps even that out of the training loop).
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
}


def bound_http_retries() -> None:
    """Short MLflow HTTP timeout/retries unless the user exported their own (read per request by MLflow)."""
    _env_defaults(HTTP_DEFAULTS)


def default_store_dir(root: str | os.PathLike | None = None) -> Path:
    """``<root>/mlruns``: the folder holding the SQLite database and the artifacts."""
    return Path(root or PROJECT_ROOT).resolve() / "mlruns"


def sqlite_uri(db_path: str | os.PathLike) -> str:
    """``sqlite:////abs/path.db`` for an absolute database path."""
    return "sqlite:///" + str(Path(db_path).resolve())


def resolve_tracking_uri(tracking_uri: str | None = None, root: str | os.PathLike | None = None) -> str:
    """Explicit URI, else ``MLFLOW_TRACKING_URI``, else the project's SQLite store (created on demand)."""
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        if "://" not in uri and not uri.startswith("databricks"):
            # A bare path means a SQLite database file, never MLflow's retired file store.
            uri = sqlite_uri(uri if uri.endswith(".db") else Path(uri) / "mlflow.db")
        return uri
    store = default_store_dir(root)
    store.mkdir(parents=True, exist_ok=True)
    ignore = store / ".gitignore"
    if not ignore.exists():  # keep run data out of version control without touching the project's .gitignore
        ignore.write_text("*\n")
    return sqlite_uri(store / "mlflow.db")


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, else None."""
    if not uri.startswith("sqlite:"):
        return None
    path = unquote(urlparse(uri).path)
    # sqlite:////abs/x.db parses to path '//abs/x.db'; sqlite:///rel.db to '/rel.db'
    if uri.startswith("sqlite:////"):
        return Path("/" + path.lstrip("/"))
    return Path(path.lstrip("/")).resolve()


def open_client(uri: str) -> Any:
    """An ``MlflowClient`` on ``uri`` whose store is ready to use.

    The first time a process opens a new SQLite store, MLflow creates its tables through a migration of many
    steps; two processes doing that at once break each other and can leave the file half-migrated (three
    pipelines started together on a new store: two failed). So processes of this project open a local store one
    at a time, under a lock file beside it; opening a store that is ready costs one query.
    """
    from mlflow.tracking import MlflowClient

    db = sqlite_path(uri)
    if db is None:
        return MlflowClient(tracking_uri=uri)
    db.parent.mkdir(parents=True, exist_ok=True)
    with _store_lock(db):
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)  # the tables are created by then, whichever call made them
    return client


@contextmanager
def _store_lock(db: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``.<db name>.lock`` beside ``db`` (released when the process ends, however)."""
    with open(db.parent / f".{db.name}.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def artifact_root_for(uri: str) -> str | None:
    """Absolute artifact location for local stores (``<db folder>/artifacts``); None lets a server decide."""
    db = sqlite_path(uri)
    if db is None:
        return None
    root = db.parent / "artifacts"
    root.mkdir(parents=True, exist_ok=True)
    return root.as_uri()


# MLflow 3's UI opens experiments on a GenAI (traces) overview unless they are marked as model training.
EXPERIMENT_KIND_TAG = ("mlflow.experimentKind", "custom_model_development")


class TrackingUnavailableError(ConnectionError):
    """The MLflow tracking store cannot be reached (names the URI and what to do)."""


def is_remote(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def check_reachable(uri: str, timeout: float = 5.0) -> str | None:
    """None when ``uri`` answers (a server's ``/health``, a local store's folder is writable), else why not.

    One bounded request, no retries: the pipeline calls it before it creates anything, so that an unreachable
    server fails (or degrades) in seconds instead of after MLflow's retries.
    """
    if is_remote(uri):
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as resp:
                return None if resp.status == 200 else f"/health answered HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            return f"/health answered HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            return str(getattr(exc, "reason", exc))
    db = sqlite_path(uri)
    if db is not None:
        folder = db.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return f"cannot create {folder}: {exc.strerror}"
        return None if os.access(folder, os.W_OK) else f"{folder} is not writable"
    return None  # databricks, postgresql+...: left to the MLflow client


def interrupted_migration(uri: str) -> str | None:
    """Why a local sqlite store cannot be opened because a killed process left an MLflow schema migration
    half done (``_alembic_tmp_<table>`` tables: SQLite migrations are not transactional), with the fix; else None.
    """
    import sqlite3
    from contextlib import closing

    db = sqlite_path(uri)
    if db is None or not db.is_file():
        return None
    try:  # under the lock of open_client: a migration that a live process is making is not judged
        with _store_lock(db), closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=5.0)) as conn:
            tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            leftovers = sorted(t for t in tables if t.startswith("_alembic_tmp_"))
            runs = conn.execute("SELECT count(*) FROM runs").fetchone()[0] if "runs" in tables else 0
    except (sqlite3.Error, OSError):
        return None  # not ours to judge: MLflow reports what is wrong with the file
    if not leftovers:
        return None
    found = f"MLflow store {db} was left half-migrated: {', '.join(leftovers)} remain from a schema migration " \
            f"that a killed process did not finish, and MLflow cannot open it."
    if not runs:
        return f"{found} It holds no runs yet: delete {db} and run again."
    steps = "; ".join(f"`DROP TABLE {t};` if table {t[len('_alembic_tmp_'):]} exists, else "
                      f"`ALTER TABLE {t} RENAME TO {t[len('_alembic_tmp_'):]};`" for t in leftovers)
    return f"{found} It holds {runs} run(s): back the file up, then in `sqlite3 {db}` run {steps}; then run again."


def unreachable_message(uri: str, reason: str) -> str:
    """What failed and the three ways out (start the server, point elsewhere, or make tracking optional)."""
    return (f"MLflow tracking store {uri} is unreachable ({reason}). Start the server (e.g. `make ui`, or "
            f"`{ui_command(uri) if not is_remote(uri) else 'mlflow server --host 127.0.0.1 --port PORT'}`), "
            f"point --tracking-uri / MLFLOW_TRACKING_URI at a running one, or run without it: "
            f"--tracking optional (or mlflow=dict(tracking='optional') in the config, or "
            f"ANTGO_TRACKING=optional) keeps everything in the run folder.")


def ensure_experiment(client: Any, name: str, tracking_uri: str) -> str:
    """The id of experiment ``name``, created with an absolute artifact location when the store is local."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        if EXPERIMENT_KIND_TAG[0] not in (exp.tags or {}):
            client.set_experiment_tag(exp.experiment_id, *EXPERIMENT_KIND_TAG)
        return exp.experiment_id
    location = artifact_root_for(tracking_uri)
    if location is not None:
        location = f"{location}/{_safe_name(name)}"
    try:
        return client.create_experiment(name, artifact_location=location, tags=dict([EXPERIMENT_KIND_TAG]))
    except Exception:  # another process created it between the lookup and the create
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "experiment"


def ui_command(tracking_uri: str, port: int = 5000) -> str:
    """The shell command that opens the MLflow UI on this store (bounded resources, see STACK notes)."""
    db = sqlite_path(tracking_uri)
    if db is None:
        return f"open {tracking_uri} in a browser"
    artifacts = db.parent / "artifacts"
    return (f"MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow ui --backend-store-uri {sqlite_uri(db)} "
            f"--artifacts-destination {artifacts} --host 127.0.0.1 --port {port} --workers 1")


def ui_base_url(tracking_uri: str) -> str:
    """Base URL of the MLflow UI for links: the server itself, or ``ANTGO_MLFLOW_UI_URL`` / localhost:5000."""
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri.rstrip("/")
    return os.environ.get("ANTGO_MLFLOW_UI_URL", "http://127.0.0.1:5000").rstrip("/")


# MLflow 3.17 opens experiments as a GenAI (traces) dashboard; this query opens the training-runs view instead.
TRAINING_VIEW = "workflowType=machine_learning"


def run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """Link to a run page in the MLflow UI (training view)."""
    return f"{ui_base_url(tracking_uri)}/#/experiments/{experiment_id}/runs/{run_id}?{TRAINING_VIEW}"


def experiment_url(tracking_uri: str, experiment_id: str) -> str:
    """Link to the experiment's runs table in the MLflow UI (training view, not the GenAI overview)."""
    return f"{ui_base_url(tracking_uri)}/#/experiments/{experiment_id}/runs?{TRAINING_VIEW}"


def browse_hint(tracking_uri: str) -> str:
    """How to open the UI for this store: the server's address, or the command that starts one."""
    if tracking_uri.startswith(("http://", "https://")):
        return f"open {ui_base_url(tracking_uri)}"
    if sqlite_path(tracking_uri) == default_store_dir() / "mlflow.db":
        return f"start the UI with `make ui` (= {ui_command(tracking_uri)}), then open the link"
    return f"start the UI with `{ui_command(tracking_uri)}`, then open the link"
