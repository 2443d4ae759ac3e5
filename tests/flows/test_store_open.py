"""Pipelines that open a new SQLite store at the same moment all start, and leave the store whole.

MLflow creates a new store's tables through a migration of many steps the first time a process opens it; two
processes doing that at once break each other (``table _alembic_tmp_runs already exists``) and can leave the
file half-migrated.
"""
from __future__ import annotations

import subprocess
import sys

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
