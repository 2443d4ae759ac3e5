"""The unchanged ``antgo`` flow on tiny detection, keypoint and classification demos (real Prefect server, real
MLflow store): every stage finishes, the task's plots are logged, parity passes and the ONNX model is registered."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
STAGES = ["parse_config", "build_dataloaders", "train", "evaluate", "export", "verify"]
# each demo config, shrunk: a small backbone, 4 training images, one epoch
OVERRIDES = {
    "det": """model = dict(backbone=dict(_delete_=True, type="SimpleConvNet", in_channels=3, channels=(8, 16, 32)),
             head=dict(in_channels=[16, 32], in_index=[1, 2], channels=16))""",
    "kp": """model = dict(backbone=dict(_delete_=True, type="SimpleConvNet", in_channels=3, channels=(8, 16, 32)),
             head=dict(in_channels=32, channels=16))""",
    "cls": """model = dict(backbone=dict(channels=(8, 16, 32)), head=dict(in_channels=32))""",
}
PLOTS = {"det": {"plots/pr_curve.png"}, "kp": set(), "cls": {"plots/confusion_matrix.png"}}
METRIC = {"det": "test/mAP_50", "kp": "test/pck", "cls": "test/top1"}


def _tiny_config(task: str, folder: Path) -> Path:
    from antgo.data.datasets.synthetic_tasks import DEMO_MAKERS

    data = DEMO_MAKERS[task](folder / "data", counts={"train": 4, "val": 3})
    split = f'dict(dir="{data}")'
    text = (f'_base_ = ["{REPO / "configs" / "demo" / f"demo_{task}.py"}"]\n'
            f"max_epochs = 1\n{OVERRIDES[task]}\n"
            f"data = dict(train={split}, val={split}, test={split},\n"
            f"            train_dataloader=dict(samples_per_gpu=2), val_dataloader=dict(samples_per_gpu=2),\n"
            f"            test_dataloader=dict(samples_per_gpu=2))\n"
            f"evaluation = dict(interval=1)\ncheckpoint_config = dict(interval=1)\nlog_config = dict(interval=1)\n"
            f'mlflow = dict(registered_model_name="tiny-{task}")\n')
    path = folder / f"tiny_{task}.py"
    path.write_text(text)
    return path


def _artifacts(client: Any, run_id: str, path: str | None = None) -> set[str]:
    out: set[str] = set()
    for item in client.list_artifacts(run_id, path):
        out |= _artifacts(client, run_id, item.path) if item.is_dir else {item.path}
    return out


@pytest.fixture(scope="module", params=["det", "kp", "cls"])
def task_run(request, prefect_api: str, mlflow_store: Any, tmp_path_factory: pytest.TempPathFactory
             ) -> tuple[str, dict[str, Any]]:
    from flows.train_flow import antgo

    task = request.param
    folder = tmp_path_factory.mktemp(f"flow_{task}")
    summary = antgo(config=str(_tiny_config(task, folder)), work_dir=str(folder / "wd"), experiment=f"tasks-{task}",
                    tracking_uri=mlflow_store.uri, num_vis=2, device="cpu")
    return task, summary


def test_flow_runs_every_stage_with_task_plots_and_registered_model(task_run, mlflow_store) -> None:
    task, summary = task_run
    assert summary["status"] == "Completed"
    client = mlflow_store.client()
    parent = client.get_run(summary["mlflow_run_id"])
    assert parent.info.status == "FINISHED"
    children = {r.data.tags["antgo.stage"]: r for r in client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")}
    assert sorted(children) == sorted(STAGES) and {r.info.status for r in children.values()} == {"FINISHED"}
    assert METRIC[task] in parent.data.metrics
    # no mask statistics for boxes, keypoints or image labels; the class count is the reader's
    data = children["build_dataloaders"]
    assert not any(k.startswith("class_fraction/") for k in data.data.metrics)
    assert "data/class_pixel_histogram.json" not in _artifacts(client, data.info.run_id)
    if task in ("det", "cls"):
        assert summary["data"]["num_classes"] == 4  # circle, square, triangle, cross
    evaluate = _artifacts(client, children["evaluate"].info.run_id)
    assert PLOTS[task] <= evaluate
    if task in ("det", "kp"):  # box / keypoint overlays on the first test images
        assert len([a for a in evaluate if a.startswith("predictions/")]) == 2
    verify = children["verify"]
    assert verify.data.metrics["parity/passed"] == 1.0
    pred_key = {"det": "box", "kp": "pred_joints2d", "cls": "pred"}[task]
    assert any(k.startswith(f"parity/predictions.{pred_key}.") for k in verify.data.metrics)
    version = client.get_model_version_by_alias(f"tiny-{task}", "champion")
    assert version.tags["parity"] == "passed" and Path(summary["onnx_path"]).is_file()


def test_demo_task_follows_the_reader() -> None:
    from flows.tasks import demo_task

    assert demo_task(dict(type="Pascal2012", ext_params=dict(task_type="SEGMENTATION"))) == "seg"
    assert demo_task(dict(type="COCO2017", ext_params=dict(task_type="KEYPOINTS"))) == "kp"
    assert demo_task(dict(type="COCO2017", ext_params=dict(task_type="DETECTION"))) == "det"
    assert demo_task(dict(type="ImageFolder")) == "cls"
