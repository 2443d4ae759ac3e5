"""The ``antgo`` flow end to end on a tiny config, against a real Prefect server and a real MLflow store."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
STAGES = ["parse_config", "build_dataloaders", "train", "evaluate", "export", "verify"]


def _children(client: Any, parent: Any) -> dict[str, Any]:
    runs = client.search_runs([parent.info.experiment_id],
                              filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    return {r.data.tags["antgo.stage"]: r for r in runs}


def _artifacts(client: Any, run_id: str, path: str | None = None) -> set[str]:
    out: set[str] = set()
    for item in client.list_artifacts(run_id, path):
        out |= _artifacts(client, run_id, item.path) if item.is_dir else {item.path}
    return out


def _prefect_flow_run(flow_run_id: str) -> tuple[Any, list[Any]]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(flow_run_id)
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return flow_run, artifacts


def _prefect_logs(flow_run_id: str) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)  # logs are shipped in the background
    with get_client(sync_client=True) as client:
        return client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))


@pytest.fixture(scope="module")
def completed(prefect_api: str, mlflow_store: Any, tmp_path_factory: pytest.TempPathFactory,
              make_tiny_config: Any) -> dict[str, Any]:
    from flows.train_flow import antgo

    folder = tmp_path_factory.mktemp("e2e")
    config = make_tiny_config(folder / "cfg", model_name="tiny-e2e")
    return antgo(config=str(config), work_dir=str(folder / "wd"), experiment="e2e", tracking_uri=mlflow_store.uri,
                 num_vis=2, device="cpu")


def test_flow_completes_with_six_finished_child_runs(completed, mlflow_store):
    assert completed["status"] == "Completed"
    client = mlflow_store.client()
    parent = client.get_run(completed["mlflow_run_id"])
    assert parent.info.status == "FINISHED"
    tags = parent.data.tags
    config_file = Path(completed["run_dir"]) / "config.py"
    import hashlib
    assert tags["antgo.config_hash"] == hashlib.sha256(config_file.read_bytes()).hexdigest()
    assert tags["prefect.flow_run_id"] == completed["flow_run_id"]
    assert tags["antgo.git_commit"] == tags["mlflow.source.git.commit"]  # the tests run in a git checkout
    children = _children(client, parent)
    assert sorted(children) == sorted(STAGES)
    assert {r.info.status for r in children.values()} == {"FINISHED"}
    assert parent.data.metrics["test/miou"] == pytest.approx(completed["test_metrics"]["miou"])
    assert parent.data.metrics["parity/passed"] == 1.0

    parse = children["parse_config"]
    assert parent.data.params["optimizer.lr"] == "0.05"  # hyperparameters on the parent run
    assert parent.data.params["model.backbone.type"] == "SimpleConvNet"
    assert "config/config.py" in _artifacts(client, parse.info.run_id)

    data = children["build_dataloaders"]
    assert data.data.metrics["samples/train"] == 8 and data.data.metrics["samples/val"] == 4
    assert "data/class_pixel_histogram.json" in _artifacts(client, data.info.run_id)


def test_training_metrics_are_stepped_and_checkpoint_logged(completed, mlflow_store):
    client = mlflow_store.client()
    train = _children(client, client.get_run(completed["mlflow_run_id"]))["train"]
    loss = client.get_metric_history(train.info.run_id, "loss")
    assert [m.step for m in loss] == [1, 2]  # 8 images, batch 4, one epoch: step = global iteration
    assert len(client.get_metric_history(train.info.run_id, "lr")) == 2
    assert [m.step for m in client.get_metric_history(train.info.run_id, "val/miou")] == [2]
    files = _artifacts(client, train.info.run_id)
    assert "checkpoints/best.pth" in files
    # best.json sits beside best.pth (the tiny config's evaluation.out_dir), train.log in the run folder
    assert {"train/best.json", "train/train.log", "train/history.json"} <= files


def test_evaluate_export_verify_artifacts_and_alias(completed, mlflow_store):
    client = mlflow_store.client()
    children = _children(client, client.get_run(completed["mlflow_run_id"]))
    evaluate = _artifacts(client, children["evaluate"].info.run_id)
    assert "plots/confusion_matrix.png" in evaluate
    assert len([a for a in evaluate if a.startswith("predictions/")]) == 2
    assert "test/miou" in children["evaluate"].data.metrics
    assert "onnx/tiny-e2e.onnx" in _artifacts(client, children["export"].info.run_id)
    verify = children["verify"]
    assert "parity/parity.json" in _artifacts(client, verify.info.run_id)
    assert verify.data.metrics["parity/passed"] == 1.0
    assert "parity/outputs.heatmap.max_abs_diff" in verify.data.metrics

    version = client.get_model_version_by_alias("tiny-e2e", "champion")
    assert str(version.version) == completed["model"]["version"] and version.tags["parity"] == "passed"
    assert Path(completed["onnx_path"]).is_file()


def test_prefect_run_completed_with_artifacts(completed):
    flow_run, artifacts = _prefect_flow_run(completed["flow_run_id"])
    assert flow_run.state.type.value == "COMPLETED"
    by_key = {a.key: a for a in artifacts}
    assert {"pipeline-summary", "mlflow-run", "training-progress"} <= set(by_key)
    assert completed["mlflow_run_id"] in by_key["pipeline-summary"].data
    assert by_key["training-progress"].data == pytest.approx(100.0)
    loggers = {log.name for log in _prefect_logs(completed["flow_run_id"])}
    assert {"antgo.engine.trainer", "antgo.flows"} <= loggers  # library logs reach the Prefect UI


def test_mlflow_rest_api_sees_the_pipeline(completed, mlflow_server):
    body = json.dumps({"experiment_ids": [completed["experiment_id"]],
                       "filter": f"attributes.run_id = '{completed['mlflow_run_id']}'"}).encode()
    req = urllib.request.Request(f"{mlflow_server}/api/2.0/mlflow/runs/search", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        runs = json.load(resp)["runs"]
    assert len(runs) == 1 and runs[0]["info"]["status"] == "FINISHED"
    body = json.dumps({"experiment_ids": [completed["experiment_id"]],
                       "filter": f"tags.mlflow.parentRunId = '{completed['mlflow_run_id']}' and "
                                 f"tags.`antgo.stage` = 'train'"}).encode()
    req = urllib.request.Request(f"{mlflow_server}/api/2.0/mlflow/runs/search", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        train = json.load(resp)["runs"][0]
    url = (f"{mlflow_server}/api/2.0/mlflow/metrics/get-history?"
           + urllib.parse.urlencode({"run_id": train["info"]["run_id"], "metric_key": "loss"}))
    with urllib.request.urlopen(url, timeout=30) as resp:
        history = json.load(resp)["metrics"]
    assert sorted(m["step"] for m in history) == [1, 2]
    url = f"{mlflow_server}/api/2.0/mlflow/registered-models/alias?" + urllib.parse.urlencode(
        {"name": "tiny-e2e", "alias": "champion"})
    with urllib.request.urlopen(url, timeout=30) as resp:
        assert json.load(resp)["model_version"]["version"] == completed["model"]["version"]


def test_parity_failure_fails_flow_and_sets_no_alias(prefect_api, mlflow_store, tmp_path, make_tiny_config):
    from antgo.engine import ParityError
    from flows.train_flow import antgo

    config = make_tiny_config(tmp_path / "cfg", model_name="tiny-parity-fail")
    with pytest.raises(ParityError) as info:
        antgo(config=str(config), work_dir=str(tmp_path / "wd"), experiment="e2e-fail",
              tracking_uri=mlflow_store.uri, num_vis=0, device="cpu",
              parity_thresholds={"min_argmax_agreement": 1.5})  # impossible: agreement is at most 1
    summary = info.value.antgo_summary
    assert summary["status"] == "Failed" and summary["failed_stage"] == "verify"
    client = mlflow_store.client()
    parent = client.get_run(summary["mlflow_run_id"])
    assert parent.info.status == "FAILED" and "ParityError" in parent.data.tags["error"]
    children = _children(client, parent)
    assert children["verify"].info.status == "FAILED"
    assert "argmax_agreement" in children["verify"].data.tags["error"]
    assert {children[s].info.status for s in STAGES[:-1]} == {"FINISHED"}
    assert "parity/parity.json" in _artifacts(client, children["verify"].info.run_id)
    assert "checkpoints/best.pth" in _artifacts(client, children["train"].info.run_id)  # earlier results kept
    model = client.get_registered_model("tiny-parity-fail")
    assert not model.aliases
    assert client.get_model_version("tiny-parity-fail", summary["model"]["version"]).tags["parity"] == "failed"
    assert (Path(summary["run_dir"]) / "output" / "best.pth").is_file()
    flow_run, _ = _prefect_flow_run(summary["flow_run_id"])
    assert flow_run.state.type.value == "FAILED"


def test_missing_data_fails_in_build_dataloaders(prefect_api, mlflow_store, tmp_path, make_tiny_config):
    from flows.train_flow import antgo

    config = make_tiny_config(tmp_path / "cfg", data_dir=tmp_path / "voc")
    text = config.read_text().replace(str(tmp_path / "voc"), str(tmp_path / "missing"))
    config.write_text(text)
    with pytest.raises(Exception) as info:
        antgo(config=str(config), work_dir=str(tmp_path / "wd"), experiment="e2e-fail",
              tracking_uri=mlflow_store.uri, device="cpu")
    summary = info.value.antgo_summary
    assert summary["failed_stage"] == "build_dataloaders"
    client = mlflow_store.client()
    parent = client.get_run(summary["mlflow_run_id"])
    children = _children(client, parent)
    assert sorted(children) == ["build_dataloaders", "parse_config"]
    assert children["parse_config"].info.status == "FINISHED"
    assert children["build_dataloaders"].info.status == "FAILED" and children["build_dataloaders"].data.tags["error"]
    assert parent.info.status == "FAILED"
    assert "config/config.py" in _artifacts(client, children["parse_config"].info.run_id)


def test_rerun_writes_a_new_run_folder_and_resume_reuses_one(completed, tmp_path):
    from flows.train_flow import make_run_dir

    run_dir = Path(completed["run_dir"])
    assert run_dir.parent.name == "wd" and (run_dir / "summary.json").is_file()
    cfg = Path("tiny_seg.py")
    first = make_run_dir(str(tmp_path), cfg, None, "same-name")
    second = make_run_dir(str(tmp_path), cfg, None, "same-name")
    assert first != second and first.is_dir() and second.is_dir()
    assert make_run_dir(str(tmp_path), cfg, "latest", None) == second
    assert make_run_dir(str(tmp_path), cfg, first.name, None) == first
    with pytest.raises(FileNotFoundError):
        make_run_dir(str(tmp_path), cfg, "no-such-run", None)


def test_parent_run_holds_what_users_compare(completed, mlflow_store):
    """Hyperparameters, best val score, test metrics, parity verdict, data sets and system metrics on the parent;
    child runs named <pipeline run>/<stage>."""
    client = mlflow_store.client()
    parent = client.get_run(completed["mlflow_run_id"])
    params, metrics = parent.data.params, parent.data.metrics
    assert len(params) > 50 and params["evaluation.save_best"] == "miou" and params["max_epochs"] == "1"
    assert metrics["best/miou"] == pytest.approx(completed["best_score"])
    assert metrics["test/miou"] == pytest.approx(completed["test_metrics"]["miou"]) and metrics["parity/passed"] == 1
    assert parent.data.tags["parity"] == "passed"
    assert any(k.startswith("system/cpu_utilization") for k in metrics)
    assert any(k.startswith("system/system_memory_usage") for k in metrics)
    inputs = {i.tags[0].value: i.dataset for i in parent.inputs.dataset_inputs}
    assert set(inputs) == {"train", "val", "test"}
    assert json.loads(inputs["train"].profile)["num_samples"] == 8 and len(inputs["train"].digest) == 16
    children = _children(client, parent)
    assert {r.info.run_name for r in children.values()} == {f"{parent.info.run_name}/{s}" for s in STAGES}


def test_registered_version_carries_metrics_signature_and_metadata(completed, mlflow_store):
    import mlflow

    client = mlflow_store.client()
    version = client.get_model_version("tiny-e2e", completed["model"]["version"])
    assert float(version.tags["test/miou"]) == pytest.approx(completed["test_metrics"]["miou"], abs=1e-5)
    assert version.tags["antgo.config_hash"] == completed["config_hash"]
    assert "parity/outputs.heatmap.max_abs_diff" in version.tags and version.tags["antgo.score_metric"] == "miou"
    mlflow.set_tracking_uri(mlflow_store.uri)
    info = mlflow.models.get_model_info(completed["model"]["model_uri"])
    inputs = info.signature.inputs.to_dict()
    assert inputs[0]["name"] == "image" and list(inputs[0]["tensor-spec"]["shape"]) == [-1, 3, 32, 32]
    assert info.signature.outputs.to_dict()[0]["name"] == "heatmap"
    assert json.loads(info.metadata["task"]) == "segmentation"


def test_plots_curves_csv_and_overlays(completed, mlflow_store):
    import cv2

    client = mlflow_store.client()
    children = _children(client, client.get_run(completed["mlflow_run_id"]))
    train = _artifacts(client, children["train"].info.run_id)
    assert {"plots/curves.png", "plots/results.csv", "checkpoints/best_weights.pth"} <= train
    csv_lines = (Path(completed["run_dir"]) / "results.csv").read_text().splitlines()
    assert csv_lines[0].startswith("epoch,iter,train/") and "val/miou" in csv_lines[0] and len(csv_lines) == 2
    assert "plots/per_class_iou.png" in _artifacts(client, children["evaluate"].info.run_id)
    overlay = cv2.imread(str(Path(completed["run_dir"]) / "test" / "vis" / "00000.png"))
    assert overlay.shape[0] >= 320  # a useful size, not a 32 px strip


def test_flow_logs_say_each_thing_once(completed):
    messages = [log.message for log in _prefect_logs(completed["flow_run_id"]) if log.name.startswith("antgo")]
    repeated = sorted({m for m in messages if messages.count(m) > 1})
    assert len(messages) > 10 and not repeated, repeated


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs the Debian chromium package")
def test_printed_links_open_the_training_view_and_the_run_page(completed, mlflow_server, tmp_path):
    """The experiment link a pipeline prints opens the training-runs view (not the GenAI overview), and the parent
    run page shows hyperparameters and metrics; rendered in headless Chromium by the screenshot script."""
    from flows.train_flow import format_summary

    printed = format_summary(completed)
    experiment_link = next(line.split(": ", 1)[1] for line in printed.splitlines() if "MLflow experiment:" in line)
    assert experiment_link.endswith("/runs?workflowType=machine_learning")
    subprocess.run([sys.executable, str(REPO / "scripts" / "mlflow_ui_screenshot.py"), "--url", mlflow_server,
                    "--experiment", "e2e", "--run-id", completed["mlflow_run_id"], "--out-dir", str(tmp_path),
                    "--dom"], check=True, timeout=300)
    for name in ("runs.png", "run.png", "overlay.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    runs = (tmp_path / "runs.html").read_text()
    assert Path(completed["run_dir"]).name in runs and "matching runs" in runs
    assert "Detect issues" not in runs and "token usage" not in runs  # the GenAI overview's panels
    run = (tmp_path / "run.html").read_text()
    assert "optimizer.lr" in run and "test/miou" in run and "best/miou" in run
    assert re.search(r"Parameters \((\d+)\)", run) and int(re.search(r"Parameters \((\d+)\)", run)[1]) > 50


def test_resume_continues_an_existing_run_folder(completed, prefect_api, mlflow_store):
    """--resume FOLDER: same folder, training continues from its latest.pth (epoch 2 = iterations 3-4)."""
    from flows.train_flow import antgo

    run_dir = Path(completed["run_dir"])
    summary = antgo(config=completed["config"], work_dir=str(run_dir.parent), resume=run_dir.name, max_epochs=2,
                    experiment="e2e", tracking_uri=mlflow_store.uri, num_vis=0, device="cpu")
    assert summary["status"] == "Completed" and summary["run_dir"] == str(run_dir)
    assert summary["mlflow_run_id"] != completed["mlflow_run_id"]  # a new parent run in MLflow
    client = mlflow_store.client()
    train = _children(client, client.get_run(summary["mlflow_run_id"]))["train"]
    assert [m.step for m in client.get_metric_history(train.info.run_id, "loss")] == [3, 4]
