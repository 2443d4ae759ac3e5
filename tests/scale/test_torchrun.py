"""The train stage under torchrun (2 CPU ranks, gloo) from the flow: same weights as the direct torchrun
call, rank 0 alone logs to MLflow, the ranks' output reaches the Prefect log, a failing rank fails the stage."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]

FAILING_HOOK = '''
import os
from antgo.engine.hooks import Hook
from antgo.registry import HOOKS

@HOOKS.register_module()
class FailOnRankOne(Hook):
    def after_iter(self, trainer):
        if trainer.rank == 1:
            raise RuntimeError("rank one broke on purpose")
'''


def _weights(path: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    return ckpt.get("state_dict") or ckpt.get("model") or ckpt


def _children(client: Any, run_id: str) -> dict[str, Any]:
    parent = client.get_run(run_id)
    runs = client.search_runs([parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run_id}'")
    return {r.data.tags["antgo.stage"]: r for r in runs}


def _prefect_logs(flow_run_id: str) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)  # logs are shipped in the background
    with get_client(sync_client=True) as client:
        return client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))


@pytest.fixture(scope="module")
def cfg(tmp_path_factory, make_tiny_config) -> Path:
    return make_tiny_config(tmp_path_factory.mktemp("ddp_cfg"), model_name="tiny-ddp")


def test_flow_with_two_ranks_matches_direct_torchrun(shared_env, cfg, tmp_path):
    from flows.train_flow import antgo

    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", ANTGO_PROGRESS="0")
    direct = subprocess.Popen(  # the direct call runs while the flow does: both are mostly process start-up
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "antgo", "train",
         str(cfg), "--work-dir", str(tmp_path / "direct"), "--device", "cpu", "--max-epochs", "2"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        summary = antgo(config=str(cfg), work_dir=str(tmp_path / "flow"), experiment="ddp", device="cpu",
                        max_epochs=2, nproc_per_node=2, num_vis=0, parity_samples=2)
        stderr = direct.communicate(timeout=300)[1]
    finally:
        if direct.poll() is None:
            direct.kill()
    assert summary["status"] == "Completed"
    assert direct.returncode == 0, stderr[-3000:]
    flow_best = Path(summary["best_checkpoint"])
    direct_best = next((tmp_path / "direct").rglob(flow_best.name))
    a, b = _weights(flow_best), _weights(direct_best)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "flow and torchrun weights differ"
    torchrun_log = (Path(summary["run_dir"]) / "ddp" / "torchrun.log").read_text()
    assert "[rank0]" in torchrun_log and "[rank1]" in torchrun_log
    messages = [log.message for log in _prefect_logs(summary["flow_run_id"])]
    assert any(m.startswith("[rank1]") for m in messages), "the ranks' output did not reach the Prefect log"
    client = shared_env.mlflow_client()
    train_run = _children(client, summary["mlflow_run_id"])["train"]
    losses = client.get_metric_history(train_run.info.run_id, "loss")
    # 8 images, batch 4, 2 ranks: 1 iteration per epoch; one value per step = rank 0 alone logged
    assert sorted(m.step for m in losses) == [1, 2] or sorted(m.step for m in losses) == [0, 1], losses
    assert train_run.data.metrics["epochs"] == 2


def test_a_failing_rank_fails_the_stage_with_its_error(shared_env, cfg, tmp_path, monkeypatch):
    from flows.train_flow import antgo

    (tmp_path / "ddp_fail_plugin.py").write_text(FAILING_HOOK)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # the ranks import the plugin too
    options = ["+custom_imports={'imports': ['ddp_fail_plugin']}", "+custom_hooks=[{'type': 'FailOnRankOne'}]"]
    with pytest.raises(Exception, match="rank 1 failed: RuntimeError: rank one broke on purpose") as info:
        antgo(config=str(cfg), cfg_options=options, work_dir=str(tmp_path / "flow"), experiment="ddp-fail",
              device="cpu", nproc_per_node=2, num_vis=0)
    summary = info.value.antgo_summary
    assert summary["failed_stage"] == "train"
    train_run = _children(shared_env.mlflow_client(), summary["mlflow_run_id"])["train"]
    assert train_run.info.status == "FAILED"
    assert "rank 1 failed: RuntimeError: rank one broke on purpose" in train_run.data.tags["error"]
