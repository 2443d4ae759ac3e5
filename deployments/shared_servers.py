"""Servers that many pipelines share: PostgreSQL, an MLflow tracking server and a Prefect API server.

Both servers keep their state in PostgreSQL and let nobody in without credentials: MLflow runs its
``basic-auth`` app, Prefect checks ``PREFECT_SERVER_API_AUTH_STRING``. Every secret comes from the
environment (never from a file in the repository, a config, a flow parameter or a log line); the servers bind
127.0.0.1 unless ``--host`` says otherwise. Usage, one terminal each (docs/scale-out.md)::

    python deployments/shared_servers.py postgres --dir /srv/antgo/pg --port 5432   # a local cluster
    python deployments/shared_servers.py mlflow --db postgresql+psycopg2://mlflow@127.0.0.1:5432/mlflow \\
        --auth-db postgresql+psycopg2://mlflow@127.0.0.1:5432/mlflow_auth --artifacts /srv/antgo/artifacts
    python deployments/shared_servers.py prefect --db postgresql+asyncpg://prefect@127.0.0.1:5432/prefect

Environment: ``PGPASSWORD`` (read by both PostgreSQL drivers; keep it out of the URLs), for MLflow
``MLFLOW_AUTH_ADMIN_USERNAME`` / ``MLFLOW_AUTH_ADMIN_PASSWORD`` / ``MLFLOW_FLASK_SERVER_SECRET_KEY``, for
Prefect ``PREFECT_SERVER_API_AUTH_STRING`` (``user:password``). Clients then set ``MLFLOW_TRACKING_USERNAME`` /
``MLFLOW_TRACKING_PASSWORD`` and ``PREFECT_API_AUTH_STRING``.
"""
from __future__ import annotations

import argparse
import glob
import logging
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

logger = logging.getLogger("antgo.deployments")

LOCALHOST = "127.0.0.1"
MLFLOW_SECRETS = ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY")
PREFECT_SECRET = "PREFECT_SERVER_API_AUTH_STRING"
# Debian's `postgresql` package keeps the server programs off PATH.
PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"


class SetupError(RuntimeError):
    """A server cannot be set up as asked; the message says what is missing and how to provide it."""


def pg_program(name: str) -> str:
    """Path of a PostgreSQL program (``initdb``, ``pg_ctl``, ``psql``): PATH, then Debian's versioned folder."""
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(glob.glob(f"{PG_BIN_GLOB}/{name}"), key=lambda p: int(Path(p).parts[-3]) if
                      Path(p).parts[-3].isdigit() else 0)
    if versions:
        return versions[-1]
    raise SetupError(f"PostgreSQL program {name!r} not found on PATH or in {PG_BIN_GLOB}; install the "
                     f"'postgresql' package (apt-get install postgresql)")


def _as_user(user: str | None) -> list[str]:
    """Prefix that runs a command as ``user`` (initdb and postgres refuse to run as root)."""
    if user is None:
        return []
    return [shutil.which("runuser") or "runuser", "-u", user, "--"]


def require_env(names: tuple[str, ...], what: str) -> None:
    """Fail naming every variable of ``names`` that is unset or empty."""
    missing = [n for n in names if not os.environ.get(n)]
    if missing:
        raise SetupError(f"{what} needs {', '.join(missing)} in the environment (secrets are never read from "
                         f"files or arguments); export them and start again")


class PostgresCluster:
    """A PostgreSQL cluster in ``folder`` listening on ``host:port`` (and a socket in the folder).

    As root the cluster belongs to ``os_user`` (default ``postgres``, the user Debian's package creates),
    because initdb refuses to run as root. Local connections are trusted: give the role a password and
    change ``pg_hba.conf`` to ``scram-sha-256`` before opening the port beyond this machine.
    """

    def __init__(self, folder: str | os.PathLike, port: int = 5432, host: str = LOCALHOST,
                 superuser: str = "antgo", os_user: str | None = None) -> None:
        self.folder = Path(folder).resolve()
        self.data = self.folder / "data"
        self.port, self.host, self.superuser = int(port), host, superuser
        self.os_user = os_user if os_user is not None else ("postgres" if os.geteuid() == 0 else None)

    def _run(self, cmd: list[str], timeout: float = 120) -> str:
        proc = subprocess.run(_as_user(self.os_user) + cmd, capture_output=True, text=True, timeout=timeout,
                              cwd=self.folder)
        if proc.returncode != 0:
            raise SetupError(f"{' '.join(cmd[:2])} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
        return proc.stdout

    def init(self) -> None:
        """``initdb`` once (an existing cluster is kept)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.os_user is not None:
            entry = pwd.getpwnam(self.os_user)
            os.chown(self.folder, entry.pw_uid, entry.pw_gid)
        if (self.data / "PG_VERSION").is_file():
            return
        self._run([pg_program("initdb"), "-D", str(self.data), "-U", self.superuser, "--auth=trust",
                   "--encoding=UTF8", "--no-sync"])

    def start(self) -> None:
        """Start the server and wait until it accepts connections (``pg_ctl -w``)."""
        options = f"-k {self.folder} -p {self.port} -h {self.host}"
        self._run([pg_program("pg_ctl"), "-D", str(self.data), "-l", str(self.folder / "postgres.log"),
                   "-o", options, "-w", "-t", "60", "start"])

    def stop(self) -> None:
        if (self.data / "postmaster.pid").is_file():
            self._run([pg_program("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"])

    def create_database(self, name: str) -> None:
        """``CREATE DATABASE name`` unless it exists."""
        psql = [pg_program("psql"), "-h", self.host, "-p", str(self.port), "-U", self.superuser, "-d", "postgres",
                "-v", "ON_ERROR_STOP=1", "-tAc"]
        if self._run(psql + [f"SELECT 1 FROM pg_database WHERE datname = '{name}'"]).strip() != "1":
            self._run(psql + [f'CREATE DATABASE "{name}"'])

    def url(self, database: str, driver: str) -> str:
        """SQLAlchemy URL without a password (``driver``: psycopg2 for MLflow, asyncpg for Prefect)."""
        return f"postgresql+{driver}://{self.superuser}@{self.host}:{self.port}/{database}"


def write_mlflow_auth_config(folder: str | os.PathLike, auth_db: str) -> Path:
    """The basic-auth app's ini: where users live and that nobody may read without a grant. No secrets:
    the admin user's password comes from ``MLFLOW_AUTH_ADMIN_PASSWORD``."""
    path = Path(folder) / "mlflow_basic_auth.ini"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("[mlflow]\ndefault_permission = NO_PERMISSIONS\n"
                    f"database_uri = {auth_db}\n"
                    "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
                    # each uncached check is a PBKDF2 hash (~0.1 s of CPU): a pipeline makes hundreds of calls
                    "auth_cache_ttl_seconds = 60\n")
    return path


def mlflow_server(db: str, artifacts: str, state_dir: str | os.PathLike, host: str = LOCALHOST,
                  port: int = 5000, auth_db: str | None = None, auth: bool = True,
                  workers: int = 1) -> tuple[list[str], dict[str, str]]:
    """Command and environment of ``mlflow server`` on ``db`` with artifacts proxied to ``artifacts``.

    ``auth``: the basic-auth app, users in ``auth_db`` (default: SQLite in ``state_dir``).
    """
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true",
           "DO_NOT_TRACK": "true"}
    cmd = [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", db,
           "--artifacts-destination", artifacts, "--host", host, "--port", str(port), "--workers", str(workers)]
    if auth:
        require_env(MLFLOW_SECRETS, "mlflow server --app-name basic-auth")
        auth_db = auth_db or "sqlite:///" + str(Path(state_dir).resolve() / "mlflow_auth.db")
        env["MLFLOW_AUTH_CONFIG_PATH"] = str(write_mlflow_auth_config(state_dir, auth_db))
        env.setdefault("MLFLOW_AUTH_ADMIN_USERNAME", "admin")
        cmd += ["--app-name", "basic-auth"]
    return cmd, env


def prefect_server(db: str, host: str = LOCALHOST, port: int = 4200,
                   auth: bool = True) -> tuple[list[str], dict[str, str]]:
    """Command and environment of ``prefect server start`` with its database ``db``.

    ``auth``: every API call needs ``PREFECT_SERVER_API_AUTH_STRING`` (health probes excepted).
    """
    if auth:
        require_env((PREFECT_SECRET,), "prefect server with API authentication")
    env = {**os.environ, "PREFECT_SERVER_DATABASE_CONNECTION_URL": db, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "DO_NOT_TRACK": "true"}
    if not auth:
        env.pop(PREFECT_SECRET, None)
    cmd = [str(Path(sys.executable).parent / "prefect"), "server", "start", "--host", host, "--port", str(port)]
    return cmd, env


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Start a shared server (PostgreSQL, MLflow, Prefect).")
    sub = p.add_subparsers(dest="server", required=True)
    pg = sub.add_parser("postgres", help="initialise (once) and start a PostgreSQL cluster")
    pg.add_argument("--dir", required=True, help="cluster folder")
    pg.add_argument("--databases", nargs="*", default=["mlflow", "mlflow_auth", "prefect"])
    ml = sub.add_parser("mlflow", help="MLflow tracking server (basic auth)")
    ml.add_argument("--db", required=True, help="backend store URI, e.g. postgresql+psycopg2://mlflow@db/mlflow")
    ml.add_argument("--auth-db", default=None, help="user store of the basic-auth app (default SQLite in --state)")
    ml.add_argument("--artifacts", required=True, help="shared folder or s3://bucket/prefix")
    ml.add_argument("--state", default=".", help="folder for the auth ini (and the default user store)")
    ml.add_argument("--workers", type=int, default=1)
    pf = sub.add_parser("prefect", help="Prefect API server (API auth string)")
    pf.add_argument("--db", required=True, help="e.g. postgresql+asyncpg://prefect@db/prefect")
    for sp, port in ((pg, 5432), (ml, 5000), (pf, 4200)):
        sp.add_argument("--host", default=LOCALHOST, help="bind address (default 127.0.0.1: this machine only)")
        sp.add_argument("--port", type=int, default=port)
    for sp in (ml, pf):
        sp.add_argument("--no-auth", action="store_true", help="no authentication (single-user machines only)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    args = _parse_args(argv)
    try:
        if args.server == "postgres":
            cluster = PostgresCluster(args.dir, args.port, args.host)
            cluster.init()
            cluster.start()
            for name in args.databases:
                cluster.create_database(name)
            logger.info("PostgreSQL on %s:%d; databases %s; stop: pg_ctl -D %s stop", args.host, args.port,
                        ", ".join(args.databases), cluster.data)
            return 0
        if args.server == "mlflow":
            cmd, env = mlflow_server(args.db, args.artifacts, args.state, args.host, args.port, args.auth_db,
                                     auth=not args.no_auth, workers=args.workers)
        else:
            cmd, env = prefect_server(args.db, args.host, args.port, auth=not args.no_auth)
    except SetupError as exc:
        logger.error("%s", exc)
        return 2
    os.execvpe(cmd[0], cmd, env)  # the server replaces this process: signals reach it directly
    return 0


if __name__ == "__main__":
    sys.exit(main())
