"""Serve deployment ``antgo/full-pipeline``: this process polls the Prefect API and runs triggered flows.

    PREFECT_API_URL=http://127.0.0.1:4200/api python deployments/serve.py

Then ``prefect deployment run antgo/full-pipeline [--param config=...] --watch --watch-timeout 1800``.
Stopping this process pauses the deployment (Prefect's ``pause_on_shutdown``); serving again resumes it.
"""
from __future__ import annotations

import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from flows.train_flow import serve_deployment  # noqa: E402

if __name__ == "__main__":
    serve_deployment()
