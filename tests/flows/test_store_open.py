"""Pipelines that open a new SQLite store at the same moment all start, and leave the store whole.

MLflow creates a new store's tables through a migration of many steps the first time a process opens it; two
processes doing that at once break each other (``table _alembic_tmp_runs already exists``) and can leave the
file half-migrated.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from antgo.tracking.store import interrupted_migration, sqlite_uri

from .conftest import REPO, base_env

_OPEN_WHEN_TOLD = """
import sys
from antgo.tracking.store import open_client
sys.stdout.write("ready\\n")
sys.stdout.flush()
sys.stdin.readline()  # all of them are imported: open together
client = open_client(sys.argv[1])
client.create_experiment(sys.argv[2])
print("opened")
"""


def test_processes_opening_a_new_store_at_once_all_succeed(tmp_path):
    uri = sqlite_uri(tmp_path / "mlflow.db")
    env = base_env(PYTHONPATH=str(REPO))
    openers = [subprocess.Popen([sys.executable, "-c", _OPEN_WHEN_TOLD, uri, f"exp-{i}"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
               for i in range(3)]
    for proc in openers:
        assert proc.stdout.readline() == "ready\n", proc.stderr.read()
    for proc in openers:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    results = [proc.communicate(timeout=180) for proc in openers]
    assert [out.strip() for out, _ in results] == ["opened"] * 3, "\n".join(err[-2000:] for _, err in results)
    assert interrupted_migration(uri) is None
    from antgo.tracking.store import open_client

    names = {e.name for e in open_client(uri).search_experiments()}
    assert {"exp-0", "exp-1", "exp-2"} <= names


_MIGRATE_WHEN_TOLD = """
import sqlite3, sys
from antgo.tracking.store import _store_lock, sqlite_path
db = sqlite_path(sys.argv[1])
with _store_lock(db):  # as open_client holds it while MLflow migrates
    sys.stdout.write("migrating\\n")
    sys.stdout.flush()
    sys.stdin.readline()
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TABLE _alembic_tmp_runs")  # the migration step ends
"""


def _blocked_on_flock(lock_file) -> bool:
    """Whether /proc/locks shows a process waiting for an flock on ``lock_file`` (``->`` lines)."""
    inode = os.stat(lock_file).st_ino
    return any("->" in line and "FLOCK" in line and line.split()[-3].endswith(f":{inode}")
               for line in Path("/proc/locks").read_text().splitlines())


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="needs Linux /proc/locks")
def test_a_migration_in_progress_is_waited_for_not_called_half_done(tmp_path):
    """A pipeline starting while another process migrates a new store saw that migration's _alembic_tmp_
    table and refused the store as left half-migrated by a killed process."""
    import sqlite3

    db = tmp_path / "mlflow.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE _alembic_tmp_runs (run_uuid TEXT)")
    uri = sqlite_uri(db)
    migrator = subprocess.Popen([sys.executable, "-c", _MIGRATE_WHEN_TOLD, uri], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True, env=base_env(PYTHONPATH=str(REPO)))
    assert migrator.stdout.readline() == "migrating\n"
    verdict = []
    checker = threading.Thread(target=lambda: verdict.append(interrupted_migration(uri)))
    checker.start()
    deadline = time.monotonic() + 30
    while not _blocked_on_flock(tmp_path / ".mlflow.db.lock"):
        assert time.monotonic() < deadline and checker.is_alive(), f"the check did not wait: {verdict}"
        time.sleep(0.01)
    migrator.communicate("done\n", timeout=30)
    checker.join(timeout=30)
    assert verdict == [None]
