"""Wall time of the demo pipeline through the Prefect flow versus the same stages called directly.

    python bench/flow_overhead.py [--config configs/demo/demo_seg.py] [--max-epochs 1] [--repeat 1]

Both runs are fresh subprocesses doing the same work with the same MLflow logging (a scratch SQLite store):

- flow:   ``python flows/train_flow.py CONFIG ...`` (Prefect: temporary server unless PREFECT_API_URL is set,
          flow/task runs, artifacts, API log shipping);
- direct: this file with ``--direct``: the flow's body (``antgo.fn``) with every task replaced by its
          undecorated function, so no Prefect run is created.

The difference is what orchestration costs (goal: <= 10 s). Not a test: prints the numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_direct(args: argparse.Namespace) -> int:
    """The flow body without Prefect: the same stage functions, the same MLflow logging."""
    sys.path.insert(0, str(ROOT))
    from flows import tasks
    from flows import train_flow

    for name in ("parse_config", "build_dataloaders", "train", "evaluate", "export", "verify"):
        setattr(tasks, name, getattr(tasks, name).fn)  # the undecorated function
    summary = train_flow.antgo.fn(config=args.config, cfg_options=args.cfg_options, work_dir=args.work_dir,
                                  max_epochs=args.max_epochs, device=args.device, experiment="bench-direct",
                                  tracking_uri=args.tracking_uri)
    print(json.dumps({"status": summary["status"], "test_metrics": summary.get("test_metrics")}))
    return 0


def timed(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.stderr.write(result.stdout[-3000:] + result.stderr[-3000:])
        raise SystemExit(f"{cmd[1]} failed with {result.returncode}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/demo/demo_seg.py")
    p.add_argument("--max-epochs", type=int, default=None, help="default: the config's max_epochs")
    p.add_argument("--cfg-options", nargs="+", default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--repeat", type=int, default=1, help="alternate flow/direct runs this many times")
    p.add_argument("--direct", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--work-dir", default=None, help=argparse.SUPPRESS)
    p.add_argument("--tracking-uri", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.direct:
        return run_direct(args)

    sys.path.insert(0, str(ROOT))
    if "configs/demo/" in args.config:  # generate the demo data outside the timed runs
        from antgo.data.datasets.demo import make_demo_voc

        make_demo_voc(ROOT / "data" / "demo_voc")
    env = dict(os.environ, DO_NOT_TRACK="true", PREFECT_SERVER_ANALYTICS_ENABLED="false",
               MLFLOW_DISABLE_TELEMETRY="true")
    common = [args.config] + (["--max-epochs", str(args.max_epochs)] if args.max_epochs else []) \
        + (["--device", args.device] if args.device else []) \
        + (["--cfg-options", *args.cfg_options] if args.cfg_options else [])
    flow_times, direct_times = [], []
    with tempfile.TemporaryDirectory(prefix="antgo-bench-") as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        # a first MLflow call creates the database schema (seconds): do it before timing either side
        subprocess.run([sys.executable, "-c", f"import mlflow; mlflow.MlflowClient('{uri}').search_experiments()"],
                       cwd=ROOT, env=env, check=True, capture_output=True)
        for i in range(args.repeat):
            flow_times.append(timed([sys.executable, "flows/train_flow.py", *common, "--work-dir", f"{tmp}/flow",
                                     "--tracking-uri", uri, "--experiment", "bench-flow"], env))
            direct_times.append(timed([sys.executable, "bench/flow_overhead.py", "--direct", "--config", *common,
                                       "--work-dir", f"{tmp}/direct", "--tracking-uri", uri], env))
            print(f"run {i + 1}: flow {flow_times[-1]:.1f} s, direct {direct_times[-1]:.1f} s", flush=True)
    flow_s, direct_s = min(flow_times), min(direct_times)
    server = os.environ.get("PREFECT_API_URL") or "temporary (ephemeral) server"
    print(f"config {args.config}, max_epochs {args.max_epochs or 'from config'}, Prefect API: {server}")
    print(f"through the flow : {flow_s:7.1f} s")
    print(f"stages directly  : {direct_s:7.1f} s")
    print(f"flow overhead    : {flow_s - direct_s:7.1f} s (goal <= 10 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
