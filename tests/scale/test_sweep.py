"""A 4-trial grid sweep on the demo data (tiny sizes) through flow antgo-sweep: MLflow holds the sweep parent with
the trials nested (overrides as params), one trial fails without stopping the others, the best trial alone is
exported, verified and gets the alias, and the summary table is a Prefect and an MLflow artifact."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]

DEMO_TINY = '''
_base_ = ["{demo}"]
_dir = "{data}"
_pipeline = [
    dict(type="ResizeS", target_dim=(32, 32)),
    dict(type="ToTensor", keys=["image"]),
    dict(type="Normalize", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), keys=["image"]),
    dict(type="UnSqueeze", axis=0, keys=["segments"]),
]
_split = dict(type="Pascal2012", dir=_dir, ext_params=dict(task_type="SEGMENTATION", aug=False), pipeline=_pipeline,
              inputs_def=dict(fields=["image", "segments"]))
model = dict(_delete_=True, type="EncoderDecoder", backbone=dict(type="SimpleConvNet", in_channels=3, channels=(8, 16)),
             decode_head=dict(type="SimpleHead", in_channels=16, channels=8, out_channels=5, ignore_index=255))
optimizer = dict(_delete_=True, type="SGD", lr=0.05, momentum=0.9)
optimizer_config = dict(grad_clip=None)
lr_config = dict(_delete_=True, policy="CosineAnnealing", min_lr=1e-4, warmup=None)
max_epochs = 1
data = dict(_delete_=True,
            train=dict(_split, train_or_test="train"), val=dict(_split, train_or_test="val"),
            test=dict(_split, train_or_test="val"),
            train_dataloader=dict(samples_per_gpu=32, workers_per_gpu=0, drop_last=True, shuffle=True),
            val_dataloader=dict(samples_per_gpu=50, workers_per_gpu=0, drop_last=False, shuffle=False),
            test_dataloader=dict(samples_per_gpu=50, workers_per_gpu=0, drop_last=False, shuffle=False))
checkpoint_config = dict(interval=1, max_keep_ckpts=1)
export = dict(input_shape_list=[[1, 3, 32, 32]], input_name_list=["image"], output_name_list=["heatmap"])
mlflow = dict(registered_model_name="demo-sweep")
'''


@pytest.fixture(scope="module")
def demo_tiny(tmp_path_factory) -> Path:
    from antgo.data.datasets.demo import make_demo_voc

    folder = tmp_path_factory.mktemp("sweep_cfg")
    make_demo_voc(folder / "demo_voc")
    path = folder / "demo_tiny.py"
    path.write_text(DEMO_TINY.format(demo=REPO / "configs" / "demo" / "demo_seg.py", data=folder / "demo_voc"))
    return path


def test_grid_sweep_nests_trials_survives_a_failure_and_registers_the_best(shared_env, demo_tiny, tmp_path):
    from prefect.client.orchestration import get_client

    from flows.sweep_flow import antgo_sweep

    grid = {"optimizer.lr": [0.01, 0.05, 0.2, -1.0]}  # a negative lr makes the optimizer refuse: one trial fails
    summary = antgo_sweep(config=str(demo_tiny), grid=grid, concurrency=2, work_dir=str(tmp_path),
                          experiment="sweep-ci", parity_samples=2)
    assert summary["status"] == "Completed"
    states = {r["overrides"]["optimizer.lr"]: r["state"] for r in summary["trials"]}
    assert states == {0.01: "COMPLETE", 0.05: "COMPLETE", 0.2: "COMPLETE", -1.0: "FAIL"}
    failed = next(r for r in summary["trials"] if r["state"] == "FAIL")
    assert "learning rate" in failed["error"]

    client = shared_env.mlflow_client()
    sweep = client.get_run(summary["mlflow_run_id"])
    assert sweep.info.status == "FINISHED" and sweep.data.tags["antgo.kind"] == "sweep"
    trials = client.search_runs([sweep.info.experiment_id],
                                filter_string=f"tags.mlflow.parentRunId = '{sweep.info.run_id}'")
    assert len(trials) == 4
    by_lr = {float(t.data.params["optimizer.lr"]): t for t in trials}
    assert by_lr[-1.0].info.status == "FAILED" and "learning rate" in by_lr[-1.0].data.tags["error"]
    assert {by_lr[lr].info.status for lr in (0.01, 0.05, 0.2)} == {"FINISHED"}
    completed = [r for r in summary["trials"] if r["state"] == "COMPLETE"]
    best = max(completed, key=lambda r: r["score"])
    assert summary["best_trial"] == best["trial"]
    assert sweep.data.tags["antgo.best_trial_run_id"] == best["mlflow_run_id"]
    version = client.get_model_version_by_alias("demo-sweep", "champion")
    stages = {r.data.tags["antgo.stage"]: r for r in client.search_runs(
        [sweep.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{best['mlflow_run_id']}'")}
    assert set(stages) == {"parse_config", "train", "evaluate", "export", "verify"}
    assert version.run_id == stages["export"].info.run_id
    others = [r["mlflow_run_id"] for r in completed if r is not best]
    for run_id in others:  # only the best trial is exported
        names = {r.data.tags["antgo.stage"] for r in client.search_runs(
            [sweep.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run_id}'")}
        assert names == {"parse_config", "train", "evaluate"}

    table = json.loads(Path(client.download_artifacts(sweep.info.run_id, "sweep/trials.json", str(tmp_path / "dl")))
                       .read_text())
    assert [row["trial"] for row in table] == [r["trial"] for r in summary["trials"]]
    with get_client(sync_client=True) as prefect:
        artifact = prefect.read_latest_artifacts()
    assert any(a.key == "sweep-trials" for a in artifact)
