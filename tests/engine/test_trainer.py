"""Trainer: outputs of a short run, best tracking, resume equivalence, errors, grad clip, seed config."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest
import torch

import antgo.data  # noqa: F401  (registers datasets and transforms)
import antgo.metrics  # noqa: F401
import antgo.models  # noqa: F401
from antgo.engine import Trainer
from antgo.engine.hooks import Hook
from antgo.registry import DATASETS, HOOKS, METRICS, MODELS, TRANSFORMS

REPO = Path(__file__).resolve().parents[2]


def train(cfg: dict[str, Any], work_dir: Path, max_epochs: int | None = None, **model_kw: Any) -> tuple[Trainer, dict]:
    trainer = Trainer(cfg, work_dir=str(work_dir), device="cpu")
    trainer.config_dataloader()
    trainer.config_model(**model_kw)
    return trainer, trainer.start_train(max_epochs)


def test_short_run_lowers_loss_and_writes_outputs(tiny_seg_cfg: dict, tmp_path: Path) -> None:
    tiny_seg_cfg["checkpoint_config"] = dict(interval=2)
    trainer, result = train(tiny_seg_cfg, tmp_path / "run", max_epochs=5)
    run = tmp_path / "run"
    history = result["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4, 5]
    assert history[-1]["train"]["loss"] < history[0]["train"]["loss"]
    assert result["epochs"] == 5 and result["iters"] == 5 * trainer.iters_per_epoch
    # interval 2 plus the last epoch
    assert sorted(p.name for p in run.glob("epoch_*.pth")) == ["epoch_2.pth", "epoch_4.pth", "epoch_5.pth"]
    latest = run / "latest.pth"
    assert latest.is_file() and not latest.is_symlink()
    assert result["latest_checkpoint"] == str(latest)
    ckpt = torch.load(latest, weights_only=False)
    assert ckpt["meta"]["epoch"] == 5 and ckpt["meta"]["iter"] == result["iters"]
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(ckpt["state_dict"][key], value.cpu())
    best = json.loads((run / "best.json").read_text())
    assert result["best_checkpoint"] == str(run / "best.pth") and (run / "best.pth").is_file()
    assert best["metric"] == "miou" and best["score"] == result["best_score"]
    assert best["score"] == max(h["val"]["miou"] for h in history)
    assert (run / "config.py").is_file()
    log = (run / "train.log").read_text()
    assert "Epoch [1][" in log and "Epoch(val) [5]" in log and "loss_seg" in log
    # the run's file handler is removed afterwards
    assert not any(getattr(h, "baseFilename", "").startswith(str(run)) for h in logging.getLogger("antgo").handlers)


class ScriptedScore:
    """A user-style metric (``keys`` + ``__call__`` only) returning scores from a script, one per evaluation."""

    scores: list[float] = []
    calls = 0

    def __init__(self, key: str = "acc") -> None:
        self.key = key

    def keys(self) -> dict[str, list[str]]:
        return {"pred": ["pred_segments"], "gt": ["segments"]}

    def __call__(self, preds: list[dict], gts: list[dict]) -> dict[str, float]:
        assert len(preds) == len(gts) == 4 and preds[0]["pred_segments"].ndim == 2
        score = ScriptedScore.scores[ScriptedScore.calls]
        ScriptedScore.calls += 1
        return {self.key: score}


@pytest.fixture
def scripted_metric(monkeypatch: pytest.MonkeyPatch) -> type[ScriptedScore]:
    monkeypatch.setattr(METRICS, "_modules", dict(METRICS._modules))
    METRICS.register_module(module=ScriptedScore)
    ScriptedScore.calls = 0
    return ScriptedScore


@pytest.mark.parametrize("scores,rule,key,best_epoch", [
    ([0.5, 0.9, 0.3], "greater", "acc", 2),
    ([0.0, -1.0, -2.0], "greater", "acc", 1),      # 0.0 is a real score
    ([3.0, 1.0, 2.0], None, "val_loss", 2),         # rule inferred from the name: less
])
def test_best_json_holds_the_best_not_the_latest(tiny_seg_cfg: dict, tmp_path: Path, scripted_metric: Any,
                                                 scores: list[float], rule: str | None, key: str,
                                                 best_epoch: int) -> None:
    scripted_metric.scores = [0.5] + scores  # the first call is the dry run on one batch before training
    tiny_seg_cfg["evaluation"] = dict(interval=1, metric=dict(type="ScriptedScore", key=key), save_best=key, rule=rule)
    _, result = train(tiny_seg_cfg, tmp_path, max_epochs=3)
    best = json.loads((tmp_path / "best.json").read_text())
    assert best["epoch"] == best_epoch and best["score"] == scores[best_epoch - 1]
    assert best["rule"] == (rule or "less") and best["all"] == {key: scores[best_epoch - 1]}
    assert result["best_score"] == scores[best_epoch - 1]
    meta = torch.load(tmp_path / "best.pth", weights_only=False)["meta"]
    assert meta["epoch"] == best_epoch
    assert [h["val"][key] for h in result["history"]] == scores
    assert scripted_metric.calls == 1 + len(scores)


@pytest.fixture
def restore_determinism() -> Any:
    """``deterministic=True`` switches a process-wide torch flag: put it back for the other tests."""
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    yield
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tiny_seg_cfg: dict, tmp_path: Path,
                                                               restore_determinism: Any) -> None:
    # an lr that changes with the epoch, and random flips: both must continue exactly after the resume
    tiny_seg_cfg["lr_config"] = dict(policy="Step", step=[1, 2], gamma=0.5)
    tiny_seg_cfg["deterministic"] = True
    full, _ = train(tiny_seg_cfg, tmp_path / "full", max_epochs=3)
    first, _ = train(tiny_seg_cfg, tmp_path / "part", max_epochs=2)
    resumed, result = train(tiny_seg_cfg, tmp_path / "resumed", max_epochs=3,
                            resume_from=str(tmp_path / "part" / "epoch_2.pth"))
    assert resumed.start_epoch == 2 and result["iters"] == full.iter
    for key, value in full.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    full_opt, resumed_opt = full.optimizer.state_dict(), resumed.optimizer.state_dict()
    for pid, state in full_opt["state"].items():
        assert torch.equal(state["momentum_buffer"], resumed_opt["state"][pid]["momentum_buffer"])
    assert resumed.optimizer.param_groups[0]["lr"] == full.optimizer.param_groups[0]["lr"] == pytest.approx(0.0125)
    assert [h["epoch"] for h in result["history"]] == [1, 2, 3]
    assert resumed.best_score is not None
    assert torch.are_deterministic_algorithms_enabled()


def test_load_from_takes_weights_only(tiny_seg_cfg: dict, tmp_path: Path) -> None:
    first, _ = train(tiny_seg_cfg, tmp_path / "a", max_epochs=1)
    trainer = Trainer(tiny_seg_cfg, work_dir=str(tmp_path / "b"), device="cpu")
    trainer.config_dataloader()
    trainer.config_model(load_from=str(tmp_path / "a" / "latest.pth"))
    for key, value in first.model.state_dict().items():
        assert torch.equal(value, trainer.model.state_dict()[key])
    assert trainer.start_epoch == 0 and trainer.iter == 0


@MODELS.register_module()
class ExplodingModel(torch.nn.Module):
    """Raises (or returns NaN) in forward_train at a chosen iteration."""

    def __init__(self, fail_at: int = 1, mode: str = "raise") -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 2, 1)
        self.fail_at, self.mode, self.calls = fail_at, mode, 0

    def forward_train(self, image: torch.Tensor, segments: torch.Tensor, **kw: Any) -> dict[str, torch.Tensor]:
        self.calls += 1
        loss = self.conv(image).mean() ** 2
        if self.calls > self.fail_at:
            if self.mode == "raise":
                raise RuntimeError("boom in forward_train")
            loss = loss * float("nan")
        return {"loss_x": loss, "aux": torch.tensor(3.0)}

    def forward_test(self, image: torch.Tensor, **kw: Any) -> dict[str, torch.Tensor]:
        return {"pred_segments": self.conv(image).argmax(1)}


class RecordRun(Hook):
    def __init__(self) -> None:
        self.events: list[str] = []

    def before_run(self, trainer: Trainer) -> None:
        self.events.append("before_run")

    def after_run(self, trainer: Trainer) -> None:
        self.events.append("after_run")


def test_model_error_propagates_and_after_run_still_runs(tiny_seg_cfg: dict, tmp_path: Path) -> None:
    tiny_seg_cfg["model"] = dict(type="ExplodingModel", fail_at=1)
    trainer = Trainer(tiny_seg_cfg, work_dir=str(tmp_path), device="cpu")
    trainer.config_dataloader()
    trainer.config_model()
    recorder = RecordRun()
    trainer.register_hook(recorder)
    with pytest.raises(RuntimeError, match="boom in forward_train"):
        trainer.start_train(max_epochs=2)
    assert recorder.events == ["before_run", "after_run"]
    log = (tmp_path / "train.log").read_text()
    assert "Training failed at epoch 1, iter 1: RuntimeError: boom in forward_train" in log
    assert not any(isinstance(h, logging.FileHandler) for h in logging.getLogger("antgo").handlers)


def test_nan_loss_raises_with_epoch_and_iter(tiny_seg_cfg: dict, tmp_path: Path) -> None:
    tiny_seg_cfg["model"] = dict(type="ExplodingModel", fail_at=4, mode="nan")
    with pytest.raises(FloatingPointError, match=r"epoch 2, iter 2/3 \(global iter 5\)"):
        train(tiny_seg_cfg, tmp_path, max_epochs=3)


class GradProbe(Hook):
    """Reads the gradient norm left on the parameters after the clipped step."""

    def __init__(self) -> None:
        self.norms: list[float] = []
        self.logged: list[float] = []

    def after_iter(self, trainer: Trainer) -> None:
        grads = [p.grad for p in trainer.model.parameters() if p.grad is not None]
        self.norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))
        self.logged.append(float(trainer.outputs["grad_norm"]))  # this step's value, on the device


def test_grad_clip_limits_the_norm_and_logs_it(tiny_seg_cfg: dict, tmp_path: Path) -> None:
    tiny_seg_cfg["optimizer_config"] = dict(grad_clip=dict(max_norm=0.01, norm_type=2))
    trainer = Trainer(tiny_seg_cfg, work_dir=str(tmp_path), device="cpu")
    trainer.config_dataloader(with_validate=False)
    trainer.config_model()
    probe = GradProbe()
    trainer.register_hook(probe)
    trainer.start_train(max_epochs=1)
    assert all(n <= 0.01 * 1.001 for n in probe.norms)
    assert all(raw > 0.01 for raw in probe.logged)  # the pre-clip norm is what gets logged


def test_max_epochs_missing_names_the_key(tiny_seg_cfg: dict, tmp_path: Path) -> None:
    del tiny_seg_cfg["max_epochs"]
    with pytest.raises(KeyError, match="max_epochs"):
        train(tiny_seg_cfg, tmp_path)


def test_max_epochs_from_config_and_no_validation(tiny_seg_cfg: dict, tmp_path: Path) -> None:
    tiny_seg_cfg["max_epochs"] = 1
    trainer = Trainer(tiny_seg_cfg, work_dir=str(tmp_path), device="cpu")
    trainer.config_dataloader(with_validate=False)
    trainer.config_model()
    result = trainer.start_train()
    assert result["epochs"] == 1 and result["best_checkpoint"] is None
    assert not (tmp_path / "best.json").exists() and (tmp_path / "epoch_1.pth").is_file()


@pytest.mark.parametrize("work_dir,out_dir,expected", [
    ("run", "./output/", "run/output"),
    ("output", "./output/", "output"),      # not output/output
    ("run", None, "run"),
])
def test_relative_out_dir_resolves_under_work_dir(tiny_seg_cfg: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  work_dir: str, out_dir: str | None, expected: str) -> None:
    monkeypatch.chdir(tmp_path)
    tiny_seg_cfg["checkpoint_config"] = dict(interval=1, out_dir=out_dir, max_keep_ckpts=1)
    tiny_seg_cfg["evaluation"]["out_dir"] = out_dir
    train(tiny_seg_cfg, Path(work_dir), max_epochs=2)
    folder = tmp_path / expected
    assert sorted(p.name for p in folder.glob("*.pth")) == ["best.pth", "best_weights.pth", "epoch_2.pth",
                                                            "latest.pth"]
    assert (folder / "best.json").is_file()
    assert not (folder / "output" / "output").exists()


def test_custom_hooks_from_config(tiny_seg_cfg: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(HOOKS, "_modules", dict(HOOKS._modules))

    @HOOKS.register_module()
    class CountIters(Hook):
        instances: list["CountIters"] = []

        def __init__(self, tag: str) -> None:
            self.tag, self.iters, self.vals = tag, 0, []
            CountIters.instances.append(self)

        def after_iter(self, trainer: Trainer) -> None:
            self.iters += 1

        def after_val(self, trainer: Trainer, metrics: dict[str, float]) -> None:
            self.vals.append(metrics["miou"])

    tiny_seg_cfg["custom_hooks"] = [dict(type="CountIters", tag="x", priority="VERY_LOW")]
    trainer, _ = train(tiny_seg_cfg, tmp_path, max_epochs=2)
    hook = CountIters.instances[-1]
    assert hook.tag == "x" and hook.priority == 90 and hook.iters == 2 * trainer.iters_per_epoch
    assert len(hook.vals) == 2


def test_seed_plugins_load_through_custom_imports(tiny_seg_cfg: dict, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    for registry in (MODELS, METRICS, DATASETS, TRANSFORMS):  # undo the samples' registrations afterwards
        monkeypatch.setattr(registry, "_modules", dict(registry._modules))
    # the document's samples, as a user module (the same file the compat tests load)
    seed_samples = REPO / "tests" / "compat" / "seed_plugins.py"
    (tmp_path / "seed_user_plugins_engine.py").write_text(seed_samples.read_text())
    monkeypatch.syspath_prepend(str(tmp_path))
    config = tmp_path / "seed_cfg.py"
    tiny_seg_cfg["custom_imports"] = dict(imports=["seed_user_plugins_engine"])
    config.write_text("\n".join(f"{k} = {v!r}" for k, v in tiny_seg_cfg.items()))
    trainer, result = train(str(config), tmp_path / "run", max_epochs=2)
    assert type(trainer.model).__module__ == "seed_user_plugins_engine"
    metric = trainer.hooks[[type(h).__name__ for h in trainer.hooks].index("EvalHook")].metrics[0]
    assert type(metric).__module__ == "seed_user_plugins_engine"
    assert 0.0 <= result["best_score"] <= 1.0 and (tmp_path / "run" / "best.pth").is_file()


def test_seed_pascal_config_trains_one_short_epoch(mini_voc: Path, tmp_path: Path) -> None:
    from antgo.config import Config

    size = "(32,32)"
    options = [f"data.{split}.dir={mini_voc}" for split in ("train", "val", "test")]
    options += [f"data.train.pipeline.1.target_dim={size}", f"data.val.pipeline.0.target_dim={size}",
                f"data.test.pipeline.0.target_dim={size}"]
    options += [f"data.{k}_dataloader.{p}={v}" for k in ("train", "val", "test")
                for p, v in (("samples_per_gpu", 4), ("workers_per_gpu", 0))]
    options += ["model.decode_head.out_channels=4", "evaluation.metric.class_num=4"]
    cfg = Config.fromfile(REPO / "configs" / "pascal_voc" / "ddrketnetf_voc.py", cfg_options=options)
    trainer, result = train(cfg, tmp_path / "run", max_epochs=1)
    out = tmp_path / "run" / "output"  # the seed's out_dir='./output/' resolves under work_dir
    assert (out / "epoch_1.pth").is_file() and (out / "latest.pth").is_file() and (out / "best.json").is_file()
    assert result["iters"] == 3 and result["best_metric"] == "miou"
    assert trainer.scheduler.warmup_len == 2000  # warmup_iters counts iterations, as the document says


def test_amp_on_cpu_warns_and_channels_last_trains(tiny_seg_cfg: dict, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    tiny_seg_cfg.update(amp=True, channels_last=True)
    with caplog.at_level(logging.WARNING, logger="antgo"):
        trainer, result = train(tiny_seg_cfg, tmp_path, max_epochs=1)
    assert "amp=True needs CUDA" in caplog.text and trainer.amp is False
    conv = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert result["best_score"] is not None


def test_rank_other_than_zero_writes_nothing(tiny_seg_cfg: dict, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "1")
    trainer, result = train(tiny_seg_cfg, tmp_path / "w", max_epochs=1)
    assert trainer.rank == 1 and not (tmp_path / "w").exists()
    assert result["best_score"] is not None and result["best_checkpoint"] is None


def test_unknown_optimizer_config_key_is_an_error(tiny_seg_cfg: dict, tmp_path: Path) -> None:
    tiny_seg_cfg["optimizer_config"] = dict(grad_clip=None, cumulative_iters=4)
    with pytest.raises(KeyError, match="cumulative_iters"):
        Trainer(tiny_seg_cfg, work_dir=str(tmp_path), device="cpu")


def test_best_checkpoint_records_itself_and_survives_resume_from_it(tiny_seg_cfg: dict, tmp_path: Path) -> None:
    _, result = train(tiny_seg_cfg, tmp_path / "run", max_epochs=1)
    best = tmp_path / "run" / "best.pth"
    assert result["best_checkpoint"] == str(best)
    assert torch.load(best, weights_only=True)["meta"]["best_checkpoint"] == best.name  # run-folder relative
    _, resumed = train(tiny_seg_cfg, tmp_path / "run2", max_epochs=1, resume_from=str(best))
    assert resumed["best_checkpoint"] == str(best) and resumed["best_score"] == result["best_score"]
    assert resumed["latest_checkpoint"] == str(best)  # nothing left to train: the resumed state is the latest


def test_config_model_before_config_dataloader_warns_that_validation_is_off(
        tiny_seg_cfg: dict, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    trainer = Trainer(tiny_seg_cfg, work_dir=str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="antgo"):
        trainer.config_model()
    assert "no validation during training" in caplog.text
    assert "EvalHook" not in [type(h).__name__ for h in trainer.hooks]
