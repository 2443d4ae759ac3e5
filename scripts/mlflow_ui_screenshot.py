"""Screenshots of the MLflow UI in headless Chromium (what a user sees after `make demo` + `make ui`).

    python scripts/mlflow_ui_screenshot.py --out-dir shots                    # the project store (./mlruns)
    python scripts/mlflow_ui_screenshot.py --url http://127.0.0.1:5000 --experiment demo_seg --out-dir shots

Writes ``runs.png`` (the experiment opened by the link a pipeline prints: the training-runs view),
``run.png`` (the pipeline's parent run page: hyperparameters, metrics) and ``overlay.png`` (the first
prediction overlay the evaluate stage logged); ``--run-id`` picks the run (default: the newest pipeline run of
the experiment). ``--dom`` also writes ``runs.html`` / ``run.html``, the DOM after the page's scripts ran (to
check the text). ``--width`` scales the PNGs down (for the README). Without ``--url`` it starts ``mlflow ui``
on a free 127.0.0.1 port for the store (lean flags) and stops it afterwards. Needs the Debian ``chromium``
package; exits 2 when it is missing.
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
    try:
        with urllib.request.urlopen(f"{url}/api/2.0/mlflow/experiments/get-by-name?{query}", timeout=10) as resp:
            return json.load(resp)["experiment"]["experiment_id"]
    except urllib.error.HTTPError as exc:
        if exc.code != 404:
            raise
        found = _post(url, "/api/2.0/mlflow/experiments/search", {"max_results": 50}).get("experiments", [])
        raise SystemExit(f"no experiment '{name}' in the store at {url}; it has "
                         f"{sorted(e['name'] for e in found)}. A pipeline's experiment is its --experiment, else the "
                         f"config file's stem; pass it with --experiment (and the store with --store)") from None


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


def _post(url: str, path: str, body: dict) -> dict:
    req = urllib.request.Request(f"{url}{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.load(resp)


def newest_pipeline_run(url: str, exp_id: str) -> str:
    runs = _post(url, "/api/2.0/mlflow/runs/search", {
        "experiment_ids": [exp_id], "filter": "tags.`antgo.pipeline` = 'true'", "max_results": 1,
        "order_by": ["attributes.start_time DESC"]}).get("runs") or []
    if not runs:
        raise LookupError(f"no antgo pipeline run in experiment {exp_id} at {url}")
    return runs[0]["info"]["run_id"]


def save_overlay(url: str, exp_id: str, run_id: str, out: Path) -> Path | None:
    """The first ``predictions/*.png`` of the run's evaluate stage, as the UI's artifact view serves it."""
    children = _post(url, "/api/2.0/mlflow/runs/search", {
        "experiment_ids": [exp_id],
        "filter": f"tags.mlflow.parentRunId = '{run_id}' and tags.`antgo.stage` = 'evaluate'"}).get("runs") or []
    if not children:
        return None
    child = children[0]["info"]["run_id"]
    query = urllib.parse.urlencode({"run_id": child, "path": "predictions"})
    with urllib.request.urlopen(f"{url}/api/2.0/mlflow/artifacts/list?{query}", timeout=30) as resp:
        files = sorted(f["path"] for f in json.load(resp).get("files", []) if f["path"].endswith(".png"))
    if not files:
        return None
    query = urllib.parse.urlencode({"path": files[0], "run_uuid": child})
    with urllib.request.urlopen(f"{url}/get-artifact?{query}", timeout=30) as resp:
        out.write_bytes(resp.read())
    return out


def shrink(path: Path, width: int | None) -> None:
    """Scale a PNG down to ``width`` pixels and store it palette-compressed (small files for the README)."""
    if not width:
        return
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        if im.width > width:
            im = im.resize((width, round(im.height * width / im.width)), Image.LANCZOS)
        im.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def take_all(url: str, experiment: str, run_id: str | None, out_dir: Path, dom: bool, width: int | None
             ) -> list[Path]:
    exp_id = experiment_id(url, experiment)
    run_id = run_id or newest_pipeline_run(url, exp_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    # the links a pipeline prints (antgo.tracking.store.experiment_url / run_url); the run page is tall enough to
    # show the parameters and metrics tables below the run's overview
    pages = {"runs": (f"{url}/#/experiments/{exp_id}/runs?workflowType=machine_learning", "1400,700"),
             "run": (f"{url}/#/experiments/{exp_id}/runs/{run_id}?workflowType=machine_learning", "1400,1900")}
    written = []
    for name, (page, size) in pages.items():
        png = out_dir / f"{name}.png"
        screenshot(page, png, out_dir / f"{name}.html" if dom else None, size=size)
        written.append(png)
    overlay = save_overlay(url, exp_id, run_id, out_dir / "overlay.png")
    if overlay is not None:
        written.append(overlay)
    for png in written:
        shrink(png, width)
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", help="a running MLflow server/UI (default: start `mlflow ui` on the store)")
    p.add_argument("--store", default=str(ROOT / "mlruns"), help="folder with mlflow.db and artifacts/")
    p.add_argument("--experiment", default="demo_seg", help="experiment name to open")
    p.add_argument("--run-id", default=None, help="parent run to show (default: the newest pipeline run)")
    p.add_argument("--out-dir", default="mlflow_ui", help="folder for runs.png, run.png, overlay.png")
    p.add_argument("--dom", action="store_true", help="also write the rendered DOM (runs.html, run.html)")
    p.add_argument("--width", type=int, default=None, help="scale the PNGs down to this width")
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
        for path in take_all(url, args.experiment, args.run_id, Path(args.out_dir), args.dom, args.width):
            print(path.resolve())
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
