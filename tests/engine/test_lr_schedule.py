"""LR policies and warmup against their closed forms."""
from __future__ import annotations

import math

import pytest
import torch

from antgo.engine.lr_schedule import LrConfigError, build_lr_scheduler

BASE = 0.05
EPOCHS, IPE = 10, 7  # max_epochs, iters per epoch
MAX_ITERS = EPOCHS * IPE


def _opt(lr: float = BASE, groups: int = 1) -> torch.optim.Optimizer:
    params = [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr * (i + 1)} for i in range(groups)]
    return torch.optim.SGD(params, lr=lr)


def _sched(cfg, epochs=EPOCHS, ipe=IPE, opt=None):
    return build_lr_scheduler(opt or _opt(), cfg, epochs, ipe)


def _cos(start, end, f):
    return end + 0.5 * (start - end) * (1 + math.cos(math.pi * f))


ITERS = [0, 1, IPE - 1, IPE, IPE + 3, 5 * IPE, MAX_ITERS - 1, MAX_ITERS, MAX_ITERS + 5]


def test_none_is_fixed_and_step_sets_groups():
    opt = _opt(groups=2)
    sched = build_lr_scheduler(opt, None, EPOCHS, IPE)
    assert sched.lr_at(37) == pytest.approx([BASE, 2 * BASE])
    sched.step(37)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([BASE, 2 * BASE])


@pytest.mark.parametrize("by_epoch", [True, False])
def test_cosine_closed_form(by_epoch):
    s = _sched(dict(policy="CosineAnnealing", min_lr=1e-5, by_epoch=by_epoch))
    for it in ITERS:
        p, total = (it // IPE, EPOCHS) if by_epoch else (it, MAX_ITERS)
        assert s.lr_at(it)[0] == pytest.approx(_cos(BASE, 1e-5, min(p / total, 1)), rel=1e-12), it
    assert s.lr_at(0)[0] == pytest.approx(BASE)
    assert s.lr_at(MAX_ITERS)[0] == pytest.approx(1e-5)
    if by_epoch:  # constant within an epoch
        assert s.lr_at(IPE) == s.lr_at(2 * IPE - 1)
    else:
        assert s.lr_at(IPE) != s.lr_at(IPE + 1)


def test_cosine_min_lr_ratio_and_exclusive():
    s = _sched(dict(policy="cosineannealing", min_lr_ratio=0.01, by_epoch=False))
    assert s.lr_at(MAX_ITERS)[0] == pytest.approx(BASE * 0.01)
    assert s.lr_at(MAX_ITERS // 2)[0] == pytest.approx(_cos(BASE, BASE * 0.01, 0.5))
    with pytest.raises(LrConfigError, match="min_lr_ratio"):
        _sched(dict(policy="CosineAnnealing", min_lr=1e-5, min_lr_ratio=0.1))


@pytest.mark.parametrize("by_epoch", [True, False])
def test_linear_annealing(by_epoch):
    s = _sched(dict(policy="LinearAnnealing", min_lr=0.001, by_epoch=by_epoch))
    for it in ITERS:
        p, total = (it // IPE, EPOCHS) if by_epoch else (it, MAX_ITERS)
        f = min(p / total, 1)
        assert s.lr_at(it)[0] == pytest.approx(BASE + (0.001 - BASE) * f), it
    s = _sched(dict(policy="LinearAnnealing", min_lr_ratio=0.5, by_epoch=False))
    assert s.lr_at(MAX_ITERS // 2)[0] == pytest.approx(BASE * 0.75)


def test_step_int_list_min_lr():
    s = _sched(dict(policy="Step", step=3, gamma=0.5))
    for it in ITERS:
        assert s.lr_at(it)[0] == pytest.approx(BASE * 0.5 ** ((it // IPE) // 3)), it
    s = _sched(dict(policy="Step", step=[2, 5], by_epoch=True))
    assert [s.lr_at(e * IPE)[0] for e in (0, 1, 2, 4, 5, 9)] == pytest.approx(
        [BASE, BASE, BASE * 0.1, BASE * 0.1, BASE * 0.01, BASE * 0.01])
    assert s.lr_at(2 * IPE - 1)[0] == pytest.approx(BASE)  # last iteration of epoch 1
    s = _sched(dict(policy="Step", step=1, gamma=0.1, min_lr=1e-4))
    assert s.lr_at(5 * IPE)[0] == pytest.approx(1e-4)
    s = _sched(dict(policy="Step", step=[10, 20], by_epoch=False))
    assert [s.lr_at(i)[0] for i in (9, 10, 19, 20)] == pytest.approx([BASE, BASE * 0.1, BASE * 0.1, BASE * 0.01])


@pytest.mark.parametrize("by_epoch", [True, False])
def test_exp(by_epoch):
    s = _sched(dict(policy="Exp", gamma=0.9, by_epoch=by_epoch))
    for it in ITERS:
        p = it // IPE if by_epoch else it
        assert s.lr_at(it)[0] == pytest.approx(BASE * 0.9 ** p), it


@pytest.mark.parametrize("by_epoch", [True, False])
def test_poly(by_epoch):
    s = _sched(dict(policy="Poly", power=0.9, min_lr=1e-4, by_epoch=by_epoch))
    for it in ITERS:
        p, total = (it // IPE, EPOCHS) if by_epoch else (it, MAX_ITERS)
        expected = (BASE - 1e-4) * (1 - min(p / total, 1)) ** 0.9 + 1e-4
        assert s.lr_at(it)[0] == pytest.approx(expected), it
    default = _sched(dict(policy="Poly", by_epoch=False))  # power 1.0, min_lr 0.0 (mmcv defaults)
    assert default.lr_at(MAX_ITERS // 2)[0] == pytest.approx(BASE / 2)
    assert default.lr_at(MAX_ITERS)[0] == 0.0


def _warm(kind, regular, t, r=0.1):
    return {"constant": regular * r, "linear": regular * (1 - (1 - t) * (1 - r)), "exp": regular * r ** (1 - t)}[kind]


@pytest.mark.parametrize("kind", ["constant", "linear", "exp"])
def test_warmup_kinds_iteration_based(kind):
    cfg = dict(policy="CosineAnnealing", min_lr=0.0, by_epoch=False, warmup=kind, warmup_iters=20, warmup_ratio=0.1)
    s = _sched(cfg)
    for it in (0, 1, 7, 10, 19):
        regular = _cos(BASE, 0.0, it / MAX_ITERS)
        assert s.lr_at(it)[0] == pytest.approx(_warm(kind, regular, it / 20)), it
    assert s.lr_at(20)[0] == pytest.approx(_cos(BASE, 0.0, 20 / MAX_ITERS))  # warmup over


def test_seed_config_warms_up_over_2000_iterations_with_by_epoch_policy():
    """The seed's lr_config: a by-epoch cosine with warmup_iters=2000, warmup_by_epoch=False."""
    cfg = dict(policy="CosineAnnealing", min_lr=1e-5, warmup_by_epoch=False, warmup_iters=2000, warmup="linear")
    epochs, ipe = 600, 82  # VOC-aug at batch 128: 2000 iterations ≈ 24 epochs
    s = build_lr_scheduler(_opt(), cfg, epochs, ipe)
    for it in (0, 1, 500, 1000, 1999):
        regular = _cos(BASE, 1e-5, (it // ipe) / epochs)
        assert s.lr_at(it)[0] == pytest.approx(regular * (1 - (1 - it / 2000) * 0.9)), it
    assert s.lr_at(1999)[0] < s.lr_at(2000)[0]
    assert s.lr_at(2000)[0] == pytest.approx(_cos(BASE, 1e-5, (2000 // ipe) / epochs))
    # warmup is per iteration even though the cosine is per epoch
    assert s.lr_at(ipe * 3) < s.lr_at(ipe * 3 + 1)
    # the peak is near the configured lr (the old code peaked around 0.0072)
    assert max(s.lr_at(i)[0] for i in range(0, 4000, 50)) > 0.045


def test_warmup_by_epoch_counts_epochs():
    cfg = dict(policy="Fixed", warmup="linear", warmup_iters=2, warmup_by_epoch=True, warmup_ratio=0.2)
    s = _sched(cfg)
    n = 2 * IPE
    for it in (0, 3, IPE, n - 1):
        assert s.lr_at(it)[0] == pytest.approx(BASE * (1 - (1 - it / n) * 0.8)), it
    assert s.lr_at(n)[0] == pytest.approx(BASE)


@pytest.mark.parametrize("three_phase", [False, True])
@pytest.mark.parametrize("strategy", ["cos", "linear"])
def test_one_cycle_matches_torch(three_phase, strategy):
    total = 50
    opt = _opt()
    s = build_lr_scheduler(opt, dict(policy="OneCycle", max_lr=0.3, pct_start=0.25, anneal_strategy=strategy,
                                     three_phase=three_phase), 5, 10)
    ref_opt = _opt()
    ref = torch.optim.lr_scheduler.OneCycleLR(ref_opt, max_lr=0.3, total_steps=total, pct_start=0.25,
                                              anneal_strategy=strategy, three_phase=three_phase,
                                              cycle_momentum=False)
    for it in range(total):
        assert s.lr_at(it)[0] == pytest.approx(ref_opt.param_groups[0]["lr"], rel=1e-9, abs=1e-15), it
        ref_opt.step()
        ref.step()
    s.step(0)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.3 / 25)


def test_one_cycle_rejects_by_epoch():
    with pytest.raises(LrConfigError, match="by_epoch"):
        _sched(dict(policy="OneCycle", max_lr=0.1, by_epoch=True))


@pytest.mark.parametrize("cfg, key", [
    (dict(policy="CosineAnnealing", min_lr=0, warmup_iter=10), "lr_config.warmup_iter"),
    (dict(policy="Step", step=2, power=0.9), "lr_config.power"),
    (dict(policy="Cosine"), "lr_config.policy"),
    (dict(policy="Step"), "lr_config.step"),
    (dict(policy="Step", step=2.5), "lr_config.step"),
    (dict(policy="Fixed", warmup="cosine", warmup_iters=3), "lr_config.warmup"),
    (dict(policy="Fixed", warmup="linear"), "lr_config.warmup_iters"),
    (dict(policy="Fixed", warmup="linear", warmup_iters=5, warmup_ratio=0), "lr_config.warmup_ratio"),
    (dict(min_lr=0.1), "policy"),
])
def test_bad_config_rejected(cfg, key):
    with pytest.raises(LrConfigError, match=key.replace(".", r"\.")):
        _sched(cfg)


def test_close_match_and_cfg_not_mutated():
    with pytest.raises(LrConfigError, match="CosineAnnealing"):
        _sched(dict(policy="CosinAnnealing"))
    cfg = dict(policy="OneCycle", max_lr=0.1, warmup="linear", warmup_iters=3)
    before = dict(cfg)
    _sched(cfg)
    assert cfg == before


def test_resume_is_exact():
    cfg = dict(policy="CosineAnnealing", min_lr=0.0, warmup="linear", warmup_iters=5, by_epoch=False)
    opt = _opt(groups=2)
    s = build_lr_scheduler(opt, cfg, EPOCHS, IPE)
    for it in range(30):
        s.step(it)
    state, opt_state = s.state_dict(), opt.state_dict()
    opt2 = _opt(lr=123.0, groups=2)  # a different lr: the restored base lrs must win
    opt2.load_state_dict(opt_state)
    s2 = build_lr_scheduler(opt2, cfg, EPOCHS, IPE)
    s2.load_state_dict(state)
    assert s2.base_lrs == pytest.approx([BASE, 2 * BASE])
    for it in range(30, MAX_ITERS):
        assert s2.step(it) == s.step(it)
