"""DDP with gloo, 2 CPU processes, max_iters: sharded evaluation gives the single-process numbers and the
loss curve of 2 × B/2 matches 1 × B."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from antgo.engine import Tester, Trainer
from antgo.engine.hooks import Hook

PROBE = '''
import json, os
from antgo.engine.hooks import Hook
from antgo.registry import HOOKS

from antgo.registry import METRICS


@METRICS.register_module()
class PixelCount:
    """A streaming metric without all_reduce(): under DDP its updates are gathered and replayed."""

    def keys(self):
        return {"pred": ["pred_segments"], "gt": ["segments"]}

    def reset(self):
        self.pixels = 0

    def update(self, preds, gts):
        self.pixels += int(preds["pred_segments"].size)

    def compute(self):
        return {"pixels": float(self.pixels)}


@HOOKS.register_module()
class CurveProbe(Hook):
    """Per rank: the loss at every log refresh and the validation metrics."""

    def __init__(self, out):
        self.out, self.losses, self.val = out, [], None

    def after_iter(self, trainer):
        if trainer.log_ready:
            self.losses.append(trainer.log_vars["loss"])

    def after_val(self, trainer, metrics):
        self.val = metrics

    def after_run(self, trainer):
        with open(os.path.join(self.out, f"rank{trainer.rank}.json"), "w") as f:
            json.dump({"losses": self.losses, "val": self.val, "iter": trainer.iter,
                       "val_samples": len(trainer.val_loader.sampler)}, f)
'''


class Curve(Hook):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def after_iter(self, trainer: Trainer) -> None:
        if trainer.log_ready:
            self.losses.append(trainer.log_vars["loss"])


@pytest.fixture(scope="module")
def ddp_cfg(tmp_path_factory: pytest.TempPathFactory, seg_cfg_factory: object) -> dict:
    from antgo.data.datasets.synthetic import make_voc_tree

    root = make_voc_tree(tmp_path_factory.mktemp("ddp_voc"), splits={"train": 8, "val": 5}, size_range=(32, 40),
                         num_classes=4, seed=1)
    cfg = seg_cfg_factory(size=32, batch=4)
    for split in ("train", "val", "test"):
        cfg["data"][split]["dir"] = str(root)
        cfg["data"][split]["pipeline"] = [p for p in cfg["data"][split]["pipeline"] if p["type"] != "RandomFlipImage"]
    cfg.pop("max_epochs")
    cfg.update(max_iters=4, log_config=dict(interval=1), checkpoint_config=dict(interval=4))
    cfg["optimizer"] = dict(type="SGD", lr=0.02, momentum=0.9)
    cfg["evaluation"]["interval"] = 4
    return cfg


def test_two_ranks_at_half_batch_match_one_process(ddp_cfg: dict, tmp_path: Path, train_two_ranks: Any) -> None:
    cfg = copy.deepcopy(ddp_cfg)
    cfg["data"]["train_dataloader"]["samples_per_gpu"] = 2  # 2 ranks x 2 = the single process's 4
    cfg["evaluation"]["metric"] = [cfg["evaluation"]["metric"], dict(type="PixelCount")]
    ranks = train_two_ranks(cfg, tmp_path, PROBE, dict(type="CurveProbe", out=str(tmp_path)))
    assert [r["iter"] for r in ranks] == [4, 4] and [r["val_samples"] for r in ranks] == [3, 2]

    single = Trainer(ddp_cfg, work_dir=str(tmp_path / "single"), device="cpu")
    single.config_dataloader()
    single.config_model()
    curve = Curve()
    single.register_hook(curve)
    single.start_train()
    # the logged loss is averaged over the ranks; BN sees half batches per rank, hence a tolerance
    assert ranks[0]["losses"] == ranks[1]["losses"] and len(curve.losses) == 4
    assert ranks[0]["losses"] == pytest.approx(curve.losses, rel=0.03)

    # sharded validation (3 + 2 of 5 images, no padding) == one process over the whole set, same weights
    tester = Tester(ddp_cfg, work_dir=str(tmp_path / "test"), device="cpu")
    tester.config_model(checkpoint=str(tmp_path / "work" / "iter_4.pth"))
    whole = tester.evaluate()
    assert ranks[0]["val"] == ranks[1]["val"]
    assert ranks[0]["val"].pop("pixels") == 5 * 32 * 32  # every val pixel once, from both shards
    assert set(ranks[0]["val"]) == set(whole)
    for key, value in whole.items():
        assert ranks[0]["val"][key] == pytest.approx(value, abs=1e-12, nan_ok=True), key
