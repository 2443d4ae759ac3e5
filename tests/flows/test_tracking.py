"""antgo.tracking against a real SQLite MLflow store: runs, params, failure marking, batching hook, plots."""
from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from antgo.tracking.runs import MAX_PARAM_VALUE, PipelineTracker, flatten
from antgo.tracking.store import artifact_root_for, resolve_tracking_uri, sqlite_path, ui_command

REPO = Path(__file__).resolve().parents[2]


def test_import_antgo_does_not_import_prefect_or_mlflow():
    code = ("import sys, antgo, antgo.engine, antgo.tracking, antgo.tracking.runs, antgo.tracking.store; "
            "bad = [m for m in ('mlflow', 'prefect') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=120)


def test_default_store_is_absolute_sqlite_with_artifacts_beside(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = resolve_tracking_uri(root=tmp_path)
    assert uri == f"sqlite:///{tmp_path.resolve()}/mlruns/mlflow.db"
    assert sqlite_path(uri) == tmp_path.resolve() / "mlruns" / "mlflow.db"
    assert artifact_root_for(uri) == (tmp_path.resolve() / "mlruns" / "artifacts").as_uri()
    assert (tmp_path / "mlruns" / ".gitignore").read_text() == "*\n"
    assert f"--backend-store-uri {uri}" in ui_command(uri) and "--workers 1" in ui_command(uri)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert resolve_tracking_uri(root=tmp_path) == "http://127.0.0.1:5999"


def test_parent_and_child_runs_params_and_failure(mlflow_store):
    tracker = PipelineTracker.start("tracking-unit", "pipe", tracking_uri=mlflow_store.uri,
                                    tags={"prefect.flow_run_id": "abc"})
    client = mlflow_store.client()
    exp = client.get_experiment(tracker.ctx.experiment_id)
    assert exp.artifact_location.startswith((mlflow_store.root / "artifacts").as_uri())

    params = {f"p{i}": i for i in range(250)}  # more than one log_batch call (100 params each)
    params["long"] = "x" * (MAX_PARAM_VALUE + 100)
    params["k" * 300] = [1, 2]
    with tracker.stage("parse_config") as run:
        run.log_params(params)
        run.log_metrics({"a": 1, "skip": "text"}, step=3)
        run.log_dict({"hello": 1}, "data/h.json")
    with pytest.raises(ValueError, match="boom"):
        with tracker.stage("train"):
            raise ValueError("boom")
    tracker.end(tracker.parent_run_id, RuntimeError("stage train failed"))

    runs = {r.info.run_name: r for r in client.search_runs([tracker.ctx.experiment_id])}
    ok, bad, parent = runs["pipe/parse_config"], runs["pipe/train"], runs["pipe"]  # <pipeline>/<stage>
    assert ok.info.status == "FINISHED" and ok.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert len(ok.data.params) == 252 and len(ok.data.params["long"]) == MAX_PARAM_VALUE
    assert ok.data.params["k" * 250] == "[1, 2]"
    assert ok.data.metrics == {"a": 1.0}
    assert client.get_metric_history(ok.info.run_id, "a")[0].step == 3
    assert [a.path for a in client.list_artifacts(ok.info.run_id, "data")] == ["data/h.json"]
    assert bad.info.status == "FAILED" and bad.data.tags["error"] == "ValueError: boom"
    assert parent.info.status == "FAILED" and "stage train failed" in parent.data.tags["error"]
    assert parent.data.tags["prefect.flow_run_id"] == "abc"


def test_flatten_nested_dicts():
    assert flatten({"a": {"b": 1, "c": {"d": [1]}}, "e": {}}) == {"a.b": 1, "a.c.d": [1], "e": {}}


def test_rank_nonzero_logs_nothing(mlflow_store, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    tracker = PipelineTracker.start("tracking-rank", "pipe", tracking_uri=mlflow_store.uri)
    assert not tracker.enabled and tracker.parent_run_id is None
    with tracker.stage("train") as run:
        run.log_metrics({"a": 1})
    assert mlflow_store.client().get_experiment_by_name("tracking-rank") is None


def test_logger_hook_batches_and_flushes(mlflow_store):
    from antgo.tracking.hooks import MlflowLoggerHook

    tracker = PipelineTracker.start("tracking-hook", "pipe", tracking_uri=mlflow_store.uri)
    run_id = tracker.start_child("train")
    hook = MlflowLoggerHook(tracker, run_id, flush_every=10)
    trainer = types.SimpleNamespace(rank=0, iter=0, epoch=0, log_vars={})
    for it in range(1, 26):
        trainer.iter = it
        trainer.log_vars = {"loss": 1.0 / it, "lr": 0.1, "loss_ce": 0.5, "note": "x"}
        hook.after_iter(trainer)
    assert hook.flushes == 2  # 25 iterations, flush every 10
    hook.after_val(trainer, {"miou": 0.5})
    hook.after_epoch(trainer)
    hook.after_run(trainer)
    assert tracker.close() == []  # the hook only queues: drain, and everything was delivered
    client = mlflow_store.client()
    loss = client.get_metric_history(run_id, "loss")
    assert [m.step for m in loss] == list(range(1, 26))
    assert client.get_metric_history(run_id, "val/miou")[0].step == 25
    assert len(client.get_metric_history(run_id, "lr")) == 25
    assert hook.flushes == 4  # after_val and after_epoch flushed; after_run had nothing left


def test_histogram_and_confusion_plot(tmp_path):
    from antgo.tracking.plots import class_pixel_histogram, plot_confusion_matrix

    masks = [np.array([[0, 1], [255, 1]], np.uint8), np.array([[2, 2], [2, 0]], np.uint8)]
    dataset = types.SimpleNamespace(size=2, sample=lambda i: {"segments": masks[i]})
    hist = class_pixel_histogram(dataset, num_classes=4)
    assert hist["counts"] == [2, 2, 3, 0] and hist["void_pixels"] == 1
    assert abs(sum(hist["fractions"]) - 1.0) < 1e-6
    png = plot_confusion_matrix(np.array([[5, 1], [2, 8]]), tmp_path / "cm.png", ["bg", "fg"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    json.dumps(hist)


def test_close_runs_of_a_crashed_flow_run(mlflow_store):
    from antgo.tracking.runs import close_runs_of_flow_run

    tracker = PipelineTracker.start("tracking-crash", "pipe", tracking_uri=mlflow_store.uri,
                                    tags={"prefect.flow_run_id": "crashed-run-1"})
    done = tracker.start_child("parse_config")
    tracker.end(done)
    running = tracker.start_child("train")
    closed = close_runs_of_flow_run(mlflow_store.uri, "crashed-run-1", reason="cancelled")
    assert set(closed) == {running, tracker.parent_run_id}
    client = mlflow_store.client()
    assert client.get_run(running).info.status == "KILLED"
    assert client.get_run(tracker.parent_run_id).data.tags["error"] == "cancelled"
    assert client.get_run(done).info.status == "FINISHED"


def test_secrets_are_masked_in_params_and_tags(mlflow_store):
    from antgo.config.secrets import MASK

    tracker = PipelineTracker.start("tracking-secrets", "pipe", tracking_uri=mlflow_store.uri,
                                    tags={"api_token": "tag-secret"})
    with tracker.stage("parse_config") as run:
        run.log_params({"api_token": "t0k3n", "storage.aws_secret_access_key": "AKIA-secret",
                        "data.train.ext_params.password": "hunter2", "optimizer.lr": 0.1,
                        "pipeline.cfg_options": ["data.train.ext_params.password=hunter2", "optimizer.lr=0.1"]})
    tracker.end(tracker.parent_run_id)
    client = mlflow_store.client()
    params = client.get_run(run.run_id).data.params
    assert params["api_token"] == params["storage.aws_secret_access_key"] == MASK
    assert params["data.train.ext_params.password"] == MASK and params["optimizer.lr"] == "0.1"
    assert params["pipeline.cfg_options"] == json.dumps([f"data.train.ext_params.password={MASK}", "optimizer.lr=0.1"])
    assert client.get_run(tracker.parent_run_id).data.tags["api_token"] == MASK
    everything = json.dumps([params, client.get_run(tracker.parent_run_id).data.tags])
    assert not any(secret in everything for secret in ("t0k3n", "AKIA-secret", "hunter2", "tag-secret"))


def test_a_hung_server_never_blocks_the_caller(tmp_path, monkeypatch):
    """A server that accepts connections and never answers: logging returns at once, the drain is bounded,
    and what was not sent is recorded (and kept in the spool file)."""
    import socket
    import time

    import mlflow.entities  # noqa: F401  (imported long before training in a pipeline; not part of the timing)

    from antgo.tracking.runs import TrackingContext
    from antgo.tracking.transport import SPOOL_NAME, undelivered_report

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(64)  # the kernel accepts; nobody reads or answers
        uri = f"http://127.0.0.1:{hung.getsockname()[1]}"
        tracker = PipelineTracker(TrackingContext(uri, "0", "parent-of-hung", str(tmp_path / SPOOL_NAME)))
        start = time.monotonic()
        for step in range(200):
            tracker.log_metrics("run-1", {"loss": 1.0 / (step + 1)}, step=step)
        tracker.log_params("run-1", {"a": 1})
        assert time.monotonic() - start < 1.0  # queued, not sent: the loop never waits on the network
        assert tracker.start_child("evaluate") is None  # the first call fails (bounded) and marks the store down
        entries = tracker.transport.undelivered
        lines = tracker.close(timeout=1.0)
    assert time.monotonic() - start < 30
    assert lines == ["run run-1: 200 metric values (loss; steps 0-199)", "run run-1: 1 params (a)",
                     "run parent-of-hung: 1 call (create child run evaluate)"]
    assert len((tmp_path / SPOOL_NAME).read_text().splitlines()) == len(entries)
    assert undelivered_report(entries) == lines


def test_queue_full_records_instead_of_blocking(tmp_path):
    from antgo.tracking.transport import Op, Transport

    transport = Transport("sqlite:///" + str(tmp_path / "x.db"), maxsize=1)
    transport.submit(Op("run", "r", {"call": "slow"}, lambda: time_sleep(0.5)))
    for i in range(5):
        transport.submit(Op("tags", "r", {"tags": {f"k{i}": "v"}}, lambda: None))
    assert any("queue full" in e["reason"] for e in transport.undelivered)
    transport.close(timeout=5)


def time_sleep(seconds: float) -> None:
    import time

    time.sleep(seconds)


def _register_versions(client, name: str, source: Path, count: int) -> list[str]:
    client.create_registered_model(name)
    return [str(client.create_model_version(name, source.as_uri(), run_id=None).version) for _ in range(count)]


@pytest.mark.parametrize("rule,scores,expected", [
    ("greater", [0.85, 0.16, 0.60], "1"),  # a later, worse model does not take the alias
    ("less", [0.85, 0.16, 0.60], "2"),
])
def test_champion_is_the_best_verified_version(mlflow_store, tmp_path, rule, scores, expected):
    from antgo.tracking.registry import choose_champion, tag_version, version_tags

    tracker = PipelineTracker.start(f"champion-{rule}", "pipe", tracking_uri=mlflow_store.uri)
    client = mlflow_store.client()
    name = f"champion-unit-{rule}"
    versions = _register_versions(client, name, tmp_path, 4)
    for version, score in zip(versions, scores):
        tags = version_tags({"miou": score}, {"outputs.heatmap.max_abs_diff": 1e-7}, "abc", "miou", rule)
        tag_version(tracker, name, version, {**tags, "parity": "passed"})
        champion = choose_champion(tracker, name, "miou", rule)
    assert champion == expected
    # a version that failed parity never becomes champion, however good its score
    tag_version(tracker, name, versions[3], {**version_tags({"miou": 0.99 if rule == "greater" else 0.01}, {},
                                                            "abc", "miou", rule), "parity": "failed"})
    assert choose_champion(tracker, name, "miou", rule) == expected
    version = client.get_model_version_by_alias(name, "champion")
    assert str(version.version) == expected
    assert version.tags["test/miou"] == f"{scores[int(expected) - 1]:.6g}" and version.tags["antgo.config_hash"] == "abc"
    assert version.tags["parity/outputs.heatmap.max_abs_diff"] == "1e-07" and version.tags["antgo.score_rule"] == rule


def test_links_open_the_training_view():
    from antgo.tracking.store import browse_hint, experiment_url, run_url

    assert run_url("http://h:5001", "3", "r").endswith("/#/experiments/3/runs/r?workflowType=machine_learning")
    assert experiment_url("http://h:5001/", "3") == "http://h:5001/#/experiments/3/runs?workflowType=machine_learning"
    assert browse_hint("http://h:5001") == "open http://h:5001"  # a server: its own address, not 127.0.0.1:5000
    assert "mlflow ui --backend-store-uri sqlite:////x/y.db" in browse_hint("sqlite:////x/y.db")


def test_system_metrics_go_through_the_queue_and_never_block_on_a_dead_store(mlflow_store, tmp_path, monkeypatch):
    """Samples reach a live store as ``system/...`` steps; with the store down the stage ends at once and the
    samples are in the spool (MLflow's own monitor would wait for the HTTP timeouts and drop them)."""
    import socket
    import time

    from antgo.tracking.runs import TrackingContext
    from antgo.tracking.system import system_metrics
    from antgo.tracking.transport import SPOOL_NAME

    tracker = PipelineTracker.start("tracking-system", "pipe", tracking_uri=mlflow_store.uri)
    with system_metrics(tracker, tracker.parent_run_id, interval_s=0.05) as sampler:
        deadline = time.monotonic() + 30
        while sampler.steps < 2 and time.monotonic() < deadline:  # polls the sampler's own count
            time.sleep(0.01)
    tracker.close()
    assert sampler.steps >= 3  # two while the block ran, one more for the interval it closed
    history = mlflow_store.client().get_metric_history(tracker.parent_run_id, "system/cpu_utilization_percentage")
    assert [m.step for m in history] == list(range(sampler.steps))

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with socket.socket() as hung:  # accepts connections, never answers
        hung.bind(("127.0.0.1", 0))
        hung.listen(64)
        uri = f"http://127.0.0.1:{hung.getsockname()[1]}"
        down = PipelineTracker(TrackingContext(uri, "0", "parent-of-hung-system", str(tmp_path / SPOOL_NAME)))
        start = time.monotonic()
        with system_metrics(down, "run-1", interval_s=0.05):
            pass
        assert time.monotonic() - start < 2.0
        down.close(timeout=20.0)  # the call in flight times out (1 s) and is recorded
    spooled = [json.loads(line) for line in (tmp_path / SPOOL_NAME).read_text().splitlines()]
    assert any(m[0].startswith("system/cpu_utilization") for e in spooled for m in e.get("metrics", []))
