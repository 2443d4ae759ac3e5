"""Screenshot of the MLflow UI in headless Chromium (what a user sees after `make demo` + `make ui`).

    python scripts/mlflow_ui_screenshot.py --out ui.png                       # the project store (./mlruns)
    python scripts/mlflow_ui_screenshot.py --url http://127.0.0.1:5000 --experiment demo_seg --out ui.png

Without ``--url`` it starts ``mlflow ui`` on a free 127.0.0.1 port for the store (lean flags), waits for
``/health``, takes the screenshot and stops the server. With ``--dom FILE`` it also writes the rendered DOM
(to check the page text). Needs the Debian ``chromium`` package; exits 2 when it is missing.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
logger = logging.getLogger("antgo.scripts.ui")

# Offline-safe headless flags: without the networking ones Chromium tries to reach outside hosts and stalls.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--disable-dev-shm-usage"]


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_health(url: str, proc: subprocess.Popen | None, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"mlflow ui exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.3)
    raise TimeoutError(f"{url}/health did not answer within {timeout} s")


def experiment_id(url: str, name: str) -> str:
    query = urllib.parse.urlencode({"experiment_name": name})
    with urllib.request.urlopen(f"{url}/api/2.0/mlflow/experiments/get-by-name?{query}", timeout=10) as resp:
        return json.load(resp)["experiment"]["experiment_id"]


def screenshot(page: str, out: Path, dom: Path | None = None, size: str = "1400,900",
               budget_ms: int = 15000, timeout: float = 120) -> None:
    """Render ``page`` in headless Chromium and save a PNG (and optionally the DOM after scripts ran)."""
    chromium = find_chromium()
    if chromium is None:
        raise FileNotFoundError("chromium not found: apt-get update && apt-get install -y chromium")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        base = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={size}",
                f"--virtual-time-budget={budget_ms}"]
        subprocess.run([*base, f"--screenshot={out}", page], check=True, capture_output=True, timeout=timeout)
        if dom is not None:
            result = subprocess.run([*base, "--dump-dom", page], check=True, capture_output=True, text=True,
                                    timeout=timeout)
            dom.write_text(result.stdout)
    logger.info("screenshot of %s written to %s", page, out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", help="a running MLflow server/UI (default: start `mlflow ui` on the store)")
    p.add_argument("--store", default=str(ROOT / "mlruns"), help="folder with mlflow.db and artifacts/")
    p.add_argument("--experiment", default="demo_seg", help="experiment name to open")
    p.add_argument("--out", default="mlflow_ui.png")
    p.add_argument("--dom", default=None, help="also write the rendered DOM here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if find_chromium() is None:
        logger.error("chromium not found: apt-get update && apt-get install -y chromium")
        return 2
    proc = None
    url = args.url
    if url is None:
        store = Path(args.store).resolve()
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", MLFLOW_DISABLE_TELEMETRY="true")
        mlflow = str(Path(sys.executable).parent / "mlflow")
        proc = subprocess.Popen([mlflow, "ui", "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}",
                                 "--artifacts-destination", str(store / "artifacts"), "--host", "127.0.0.1",
                                 "--port", str(port), "--workers", "1"], env=env, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_health(url, proc)
        page = f"{url}/#/experiments/{experiment_id(url, args.experiment)}/runs"
        screenshot(page, Path(args.out), Path(args.dom) if args.dom else None)
        print(Path(args.out).resolve())
    finally:
        if proc is not None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
