"""The reliability table: bad inputs and faults, each with the error a user must see.

Every :class:`Case` builds its inputs in a fresh folder (:class:`Ctx`), names the command line to run
(``antgo <argv>``), the exception type, the fragments its message must hold (the file / key / index) and the
fix it must suggest. ``tests/reliability/test_cases.py`` runs each one through the CLI's command function
(the exception itself) and through ``antgo.cli.main`` (exit code, stderr), and checks that the run folder made
before the fault is unchanged.

:data:`CONFIG_CASES` only write a config file and need no trained run: other front ends (the flow script)
can run them with their own command line — ``case.config(ctx)`` gives the file, ``case.error`` / ``case.mentions``
/ ``case.fix`` what must come out.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from antgo.config import Config, ConfigError
from antgo.data.image_io import CorruptImageError
from antgo.engine.checkpoint import CheckpointError, NonFiniteCheckpointError, UnsafeCheckpointError
from antgo.engine.exporter import ExportError
from antgo.engine.loading import EmptySplitError
from antgo.engine.runlock import LOCK_NAME, RunFolderLocked
from antgo.registry import RegistryError

MARKER = "pwned.txt"  # what the crafted checkpoint's unpickling would create


@dataclass
class Ctx:
    """One case's world: ``tmp`` (empty), ``voc`` (read-only tiny VOC tree), ``run`` (a copy of a trained run
    folder: config.py, train.log, output/{best,latest,epoch_1}.pth, output/best.json), ``cfg`` (the tiny
    config dict the run was trained with)."""

    tmp: Path
    voc: Path
    run: Path
    cfg: dict[str, Any]

    def write_cfg(self, extra: str = "", cfg: Mapping[str, Any] | None = None, name: str = "cfg.py") -> str:
        """The tiny config as a .py file, with ``extra`` source lines appended (they run after it)."""
        path = self.tmp / name
        path.write_text(Config(dict(cfg if cfg is not None else self.cfg)).pretty_text + extra)
        return str(path)

    def with_cfg(self, **changes: Any) -> str:
        """The tiny config with top-level keys replaced."""
        return self.write_cfg(cfg={**self.cfg, **changes})

    def voc_copy(self, empty_split: str | None = None) -> Path:
        """A private copy of the VOC tree, optionally with an empty ``<split>.txt``."""
        target = self.tmp / "voc"
        if not target.exists():
            shutil.copytree(self.voc, target)
        if empty_split:
            next(target.rglob(f"ImageSets/Segmentation/{empty_split}.txt")).write_text("")
        return target

    def voc_file(self, split: str, index: int, folder: str = "JPEGImages", suffix: str = ".jpg") -> Path:
        """The file of sample ``index`` of ``split`` in the private VOC copy."""
        root = next(self.voc_copy().rglob("ImageSets/Segmentation")).parent.parent
        ids = (root / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()
        return root / folder / f"{ids[index]}{suffix}"

    def cfg_on(self, voc: Path) -> dict[str, Any]:
        data = {k: (dict(v, dir=str(voc)) if isinstance(v, dict) and "dir" in v else v)
                for k, v in self.cfg["data"].items()}
        return {**self.cfg, "data": data}

    @property
    def best(self) -> Path:
        return self.run / "output" / "best.pth"

    def checkpoint(self, name: str, mutate: Callable[[dict[str, Any]], Any]) -> str:
        """A copy of the run's best.pth, changed by ``mutate(checkpoint_dict)``, saved as ``tmp/name``."""
        ckpt = torch.load(self.best, weights_only=True)
        mutate(ckpt)
        path = self.tmp / name
        torch.save(ckpt, path)
        return str(path)


class CreatesFile:
    """Unpickling this object opens (creates) a file: a stand-in for a checkpoint that runs code."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (open, (self.path, "w"))


class LegacyNote:
    """A harmless custom object, as older checkpoints pickled into their metadata."""


def legacy_checkpoint(ctx: Ctx) -> str:
    """A real checkpoint whose metadata holds a custom object: it loads only with the explicit opt-in."""
    return ctx.checkpoint("legacy.pth", lambda c: c["meta"].update(note=LegacyNote()))


def crafted_checkpoint(ctx: Ctx) -> str:
    """A real checkpoint plus one object whose unpickling would create ``tmp/pwned.txt``."""
    return ctx.checkpoint("crafted.pth", lambda c: c["meta"].update(note=CreatesFile(str(ctx.tmp / MARKER))))


def diverged_checkpoint(ctx: Ctx) -> str:
    """The run's best.pth with NaN BN statistics and an inf weight (what lr=1e6 leaves)."""
    def poison(ckpt: dict[str, Any]) -> None:
        state = ckpt["state_dict"]
        var = next(k for k in state if k.endswith("running_var"))
        weight = next(k for k in state if k.endswith("weight") and state[k].is_floating_point())
        state[var].fill_(float("nan"))
        state[weight].view(-1)[0] = float("inf")
    return ctx.checkpoint("diverged.pth", poison)


@dataclass(frozen=True)
class Case:
    """``antgo <argv(ctx)>`` must raise ``error`` with every ``mentions(ctx)`` fragment and ``fix`` in the
    message; ``absent(ctx)`` lists files that must not exist afterwards."""

    id: str
    finding: str
    argv: Callable[[Ctx], list[str]]
    error: type[BaseException]
    mentions: Callable[[Ctx], list[str]]
    fix: str
    absent: Callable[[Ctx], list[Path]] = field(default=lambda ctx: [])
    config: Callable[[Ctx], str] | None = None  # config cases: the faulty file alone


def _config_case(id: str, finding: str, write: Callable[[Ctx], str], error: type[BaseException],
                 mentions: Callable[[Ctx], list[str]], fix: str, command: str = "train") -> Case:
    """A fault in the config itself: ``antgo train CFG --work-dir RUN`` must refuse before anything runs."""
    def argv(ctx: Ctx) -> list[str]:
        return [command, write(ctx), "--work-dir", str(ctx.run)]
    return Case(id, finding, argv, error, mentions, fix, config=write)


def _args(command: str, *extra: str) -> Callable[[Ctx], list[str]]:
    return lambda ctx: [command, ctx.write_cfg(), "--work-dir", str(ctx.run), *extra]


def _with_checkpoint(command: str, make: Callable[[Ctx], str], *extra: str) -> Callable[[Ctx], list[str]]:
    flag = {"train": "--resume-from"}.get(command, "--checkpoint")
    return lambda ctx: [command, ctx.write_cfg(), "--work-dir", str(ctx.run), flag, make(ctx), *extra]


def _lock(pid: int, host: str) -> Callable[[Ctx], list[str]]:
    def argv(ctx: Ctx) -> list[str]:
        (ctx.run / LOCK_NAME).write_text(json.dumps({"pid": pid, "host": host, "started": "2026-12-01 08:00:00",
                                                     "command": "antgo train other.py"}))
        return ["train", ctx.write_cfg(), "--work-dir", str(ctx.run)]
    return argv


def _file(ctx: Ctx, name: str, text: str) -> str:
    path = ctx.tmp / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def _truncated_sample(split: str, index: int, folder: str = "JPEGImages", suffix: str = ".jpg"
                      ) -> Callable[[Ctx], list[str]]:
    """``antgo train`` on a VOC copy whose sample ``index`` of ``split`` has a file cut in half."""
    def argv(ctx: Ctx) -> list[str]:
        path = ctx.voc_file(split, index, folder, suffix)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        return ["train", ctx.write_cfg(cfg=ctx.cfg_on(ctx.voc_copy())), "--work-dir", str(ctx.run)]
    return argv


def _missing_sample(split: str, index: int) -> Callable[[Ctx], list[str]]:
    def argv(ctx: Ctx) -> list[str]:
        ctx.voc_file(split, index).unlink()
        return ["train", ctx.write_cfg(cfg=ctx.cfg_on(ctx.voc_copy())), "--work-dir", str(ctx.run)]
    return argv


CONFIG_CASES: list[Case] = [
    _config_case("config-syntax-error", "config errors", lambda c: c.write_cfg("model = dict(type='A',\nx = 3 3\n"),
                 ConfigError, lambda c: [str(c.tmp / "cfg.py"), "line", "syntax error"], "Fix the Python syntax"),
    _config_case("config-runtime-error", "config errors", lambda c: c.write_cfg("depth = undefined_name\n"),
                 ConfigError, lambda c: [str(c.tmp / "cfg.py"), "NameError", "undefined_name"], "line"),
    _config_case("config-top-level-typo", "config errors", lambda c: c.write_cfg("optimzer = dict(lr=1)\n"),
                 ConfigError, lambda c: [str(c.tmp / "cfg.py"), "'optimzer'", "did you mean 'optimizer'"],
                 "custom_keys = ['optimzer']"),
    _config_case("config-missing-base", "config errors",
                 lambda c: _file(c, "child.py", "_base_ = ['./nope.py']\n"), ConfigError,
                 lambda c: [str(c.tmp / "child.py"), "'./nope.py'", str(c.tmp / "nope.py")],
                 "relative to the folder of the file"),
    _config_case("config-cyclic-base", "config errors",
                 lambda c: (_file(c, "b.py", "_base_ = 'a.py'\n"), _file(c, "a.py", "_base_ = 'b.py'\n"))[1],
                 ConfigError, lambda c: ["a.py -> ", "b.py"], "Remove one of these _base_ entries"),
    _config_case("config-bad-base-value", "config errors", lambda c: _file(c, "c.py", "_base_ = 3\n"),
                 ConfigError, lambda c: [str(c.tmp / "c.py"), "_base_"], "a path or a list of paths"),
    _config_case("config-unknown-placeholder", "{{ }} placeholders",
                 lambda c: c.write_cfg("work_dir = './w/{{ _base_.name }}'\n"), ConfigError,
                 lambda c: [str(c.tmp / "cfg.py"), "line", "{{ _base_.name }}"], "{{ fileBasename }}"),
    _config_case("config-env-variable-unset", "{{ }} placeholders",
                 lambda c: c.write_cfg("api_token = '{{ $ANTGO_UNSET_TOKEN_XYZ }}'\n"), ConfigError,
                 lambda c: [str(c.tmp / "cfg.py"), "line", "ANTGO_UNSET_TOKEN_XYZ"], "export ANTGO_UNSET_TOKEN_XYZ="),
    _config_case("config-bad-custom-keys", "typo check escape", lambda c: c.write_cfg("custom_keys = 3\n"),
                 ConfigError, lambda c: [str(c.tmp / "cfg.py"), "custom_keys"], "list of top-level key names"),
    _config_case("config-custom-import-missing", "config errors",
                 lambda c: c.write_cfg("custom_imports = dict(imports=['no_such_pkg_xyz'])\n"), ConfigError,
                 lambda c: [str(c.tmp / "cfg.py"), "no_such_pkg_xyz"], "PYTHONPATH"),
    _config_case("config-custom-imports-malformed", "config errors",
                 lambda c: c.write_cfg("custom_imports = ['pkg']\n"), ConfigError,
                 lambda c: [str(c.tmp / "cfg.py"), "custom_imports"], "dict(imports=["),
    _config_case("config-file-missing", "config errors", lambda c: str(c.tmp / "missing.py"), ConfigError,
                 lambda c: [str(c.tmp / "missing.py")], "check the path"),
    _config_case("config-not-python", "config errors", lambda c: _file(c, "cfg.yaml", "seed: 1\n"), ConfigError,
                 lambda c: [str(c.tmp / "cfg.yaml")], "only Python (.py)"),
    _config_case("registry-unknown-model", "registry errors",
                 lambda c: c.with_cfg(model={**c.cfg["model"], "type": "EncoderDecodr"}), RegistryError,
                 lambda c: ["'EncoderDecodr'", "model.type", "'EncoderDecoder'"], "custom_imports"),
    _config_case("registry-unknown-transform", "registry errors",
                 lambda c: c.write_cfg("data['train']['pipeline'][0]['type'] = 'ResizeZ'\n"), RegistryError,
                 lambda c: ["'ResizeZ'", "data.train.pipeline"], "Did you mean"),
    _config_case("train-no-model", "config errors",
                 lambda c: c.write_cfg(cfg={k: v for k, v in c.cfg.items() if k != "model"}), KeyError,
                 lambda c: ["'model'"], "add model=dict(type="),
    _config_case("train-unknown-optimizer-config-key", "config errors",
                 lambda c: c.with_cfg(optimizer_config=dict(grad_clip=None, cumulative_iters=4)), KeyError,
                 lambda c: ["optimizer_config", "cumulative_iters"], "grad_clip=dict(max_norm="),
    _config_case("train-max-epochs-zero", "config errors", lambda c: c.with_cfg(max_epochs=0), ValueError,
                 lambda c: ["max_epochs", "0"], ">= 1"),
    _config_case("train-bad-rule", "config errors",
                 lambda c: c.with_cfg(evaluation={**c.cfg["evaluation"], "rule": "bigger"}), ValueError,
                 lambda c: ["evaluation.rule", "'bigger'"], "'greater', 'less'"),
]

OVERRIDE_CASES: list[Case] = [
    Case("override-unknown-key", "--cfg-options", _args("train", "--cfg-options", "optimizer.lrr=0.1"), ConfigError,
         lambda c: ["'optimizer.lrr'", "no key 'lrr'", "Did you mean 'lr'"], "'+optimizer.lrr=...'"),
    Case("override-index-out-of-range", "--cfg-options",
         _args("train", "--cfg-options", "data.train.pipeline.9.type=X"), ConfigError,
         lambda c: ["data.train.pipeline.9.type", "index 9"], "valid: 0.."),
    Case("override-wrong-type", "--cfg-options", _args("train", "--cfg-options", "optimizer.lr=fast"), ConfigError,
         lambda c: ["'optimizer.lr'", "expects float", "'fast'"], "check its spelling"),
    Case("override-into-scalar", "--cfg-options", _args("train", "--cfg-options", "seed.value=1"), ConfigError,
         lambda c: ["'seed.value'", "'seed' is a int"], "not a dict or list"),
    Case("override-malformed", "--cfg-options", _args("train", "--cfg-options", "optimizer.lr"), ConfigError,
         lambda c: ["'optimizer.lr'"], "key=value"),
]

CHECKPOINT_CASES: list[Case] = [
    Case("test-crafted-checkpoint", "checkpoint runs code", _with_checkpoint("test", crafted_checkpoint),
         UnsafeCheckpointError, lambda c: [str(c.tmp / "crafted.pth"), "refused"], "ANTGO_UNSAFE_LOAD=1",
         absent=lambda c: [c.tmp / MARKER]),
    Case("resume-crafted-checkpoint", "checkpoint runs code", _with_checkpoint("train", crafted_checkpoint),
         UnsafeCheckpointError, lambda c: [str(c.tmp / "crafted.pth"), "refused"], "--unsafe-load",
         absent=lambda c: [c.tmp / MARKER]),
    Case("load-from-crafted-checkpoint", "checkpoint runs code",
         lambda c: ["train", c.write_cfg(), "--work-dir", str(c.run), "--load-from", crafted_checkpoint(c)],
         UnsafeCheckpointError, lambda c: [str(c.tmp / "crafted.pth")], "--unsafe-load",
         absent=lambda c: [c.tmp / MARKER]),
    Case("export-crafted-checkpoint", "checkpoint runs code", _with_checkpoint("export", crafted_checkpoint),
         UnsafeCheckpointError, lambda c: [str(c.tmp / "crafted.pth")], "--unsafe-load",
         absent=lambda c: [c.tmp / MARKER]),
    Case("test-checkpoint-missing", "checkpoint errors", _args("test", "--checkpoint", "/nonexistent/best.pth"),
         CheckpointError, lambda c: ["/nonexistent/best.pth", "not found"], "check the path"),
    Case("test-checkpoint-garbage", "checkpoint errors",
         lambda c: ["test", c.write_cfg(), "--work-dir", str(c.run), "--checkpoint", _file(c, "junk.pth", "no")],
         CheckpointError, lambda c: [str(c.tmp / "junk.pth")], "corrupt or not a torch checkpoint"),
    Case("test-checkpoint-truncated", "checkpoint errors",
         lambda c: ["test", c.write_cfg(), "--work-dir", str(c.run), "--checkpoint", _truncated(c)],
         CheckpointError, lambda c: [str(c.tmp / "truncated.pth")], "corrupt or not a torch checkpoint"),
    Case("test-checkpoint-wrong-model", "checkpoint errors",
         _args("test", "--cfg-options", "model.decode_head.out_channels=7"), CheckpointError,
         lambda c: [str(c.best), "shape mismatches", "decode_head"], "does not match"),
    Case("test-no-checkpoint-in-work-dir", "checkpoint lookup",
         lambda c: ["test", c.write_cfg(), "--work-dir", str(c.tmp / "empty")], FileNotFoundError,
         lambda c: [str(c.tmp / "empty"), "best.pth / latest.pth"], "--checkpoint PATH"),
    Case("resume-weights-only-checkpoint", "checkpoint errors",
         _with_checkpoint("train", lambda c: c.checkpoint("weights.pth", lambda k: k.pop("optimizer"))),
         CheckpointError, lambda c: [str(c.tmp / "weights.pth"), "'optimizer'"], "use load_from"),
    Case("export-diverged-checkpoint", "diverged model exported", _with_checkpoint("export", diverged_checkpoint),
         NonFiniteCheckpointError, lambda c: [str(c.tmp / "diverged.pth"), "running_var", "NaN/inf"],
         "use an earlier checkpoint", absent=lambda c: [c.run / "cfg.onnx"]),
    Case("verify-diverged-checkpoint", "diverged model exported", _with_checkpoint("verify", diverged_checkpoint),
         NonFiniteCheckpointError, lambda c: [str(c.tmp / "diverged.pth"), "running_var", "weight"],
         "lower learning rate", absent=lambda c: [c.run / "parity.json"]),
    Case("test-diverged-checkpoint", "diverged model exported", _with_checkpoint("test", diverged_checkpoint),
         NonFiniteCheckpointError, lambda c: [str(c.tmp / "diverged.pth"), "running_var"], "earlier checkpoint"),
]

DATA_AND_RUN_CASES: list[Case] = [
    Case("empty-train-split", "empty splits",
         lambda c: ["train", c.write_cfg(cfg=c.cfg_on(c.voc_copy("train"))), "--work-dir", str(c.run)],
         EmptySplitError, lambda c: ["data.train", "train.txt"], "Fill the split file"),
    Case("empty-val-split", "empty splits",
         lambda c: ["train", c.write_cfg(cfg=c.cfg_on(c.voc_copy("val"))), "--work-dir", str(c.run)],
         EmptySplitError, lambda c: ["data.val", "val.txt"], "remove data.val"),
    Case("empty-test-split", "empty splits",
         lambda c: ["test", c.write_cfg(cfg=c.cfg_on(c.voc_copy("val"))), "--work-dir", str(c.run)],
         EmptySplitError, lambda c: ["data.test", "val.txt"], "Fill the split file"),
    Case("missing-split-file", "data errors",
         lambda c: ["train", c.write_cfg(cfg=_without_split(c, "val")), "--work-dir", str(c.run)],
         FileNotFoundError, lambda c: ["val.txt", "data.val", "does not exist"], "--cfg-options data.val.dir="),
    Case("truncated-val-jpeg", "corrupt image found after an epoch", _truncated_sample("val", 1), CorruptImageError,
         lambda c: [str(c.voc_file("val", 1)), "data.val sample 1", "Premature end of JPEG file"],
         "skip_bad_samples=True"),
    Case("truncated-train-jpeg", "truncated training JPEG trains", _truncated_sample("train", 5), CorruptImageError,
         lambda c: [str(c.voc_file("train", 5)), "data.train sample 5", "Premature end of JPEG file"],
         "re-copy or re-encode it"),
    Case("truncated-train-mask", "truncated training JPEG trains",
         _truncated_sample("train", 2, "SegmentationClass", ".png"), CorruptImageError,
         lambda c: [str(c.voc_file("train", 2, "SegmentationClass", ".png")), "data.train sample 2", "IEND"],
         "skip_bad_samples=True"),
    Case("missing-val-image", "corrupt image found after an epoch", _missing_sample("val", 3), FileNotFoundError,
         lambda c: [str(c.voc_file("val", 3)), "data.val sample 3", "does not exist"],
         "data.val.skip_bad_samples=True"),
    Case("missing-data-dir", "data errors", _args("train", "--cfg-options", "data.train.dir=/nonexistent/voc"),
         FileNotFoundError, lambda c: ["/nonexistent/voc", "data.train"], "--cfg-options data.train.dir="),
    Case("test-without-data-test", "config errors",
         lambda c: ["test", c.write_cfg(cfg={**c.cfg, "data": {k: v for k, v in c.cfg["data"].items()
                                                                if k != "test"}}), "--work-dir", str(c.run)],
         KeyError, lambda c: ["data.test"], "add data=dict(test="),
    Case("export-without-export-section", "export errors",
         lambda c: ["export", c.write_cfg(cfg={k: v for k, v in c.cfg.items() if k != "export"}),
                    "--work-dir", str(c.run)], ExportError, lambda c: ["'export'"], "input_shape_list"),
    Case("verify-onnx-missing", "export errors", _args("verify", "--onnx", "/nonexistent/m.onnx"),
         FileNotFoundError, lambda c: ["/nonexistent/m.onnx"], "run the export first"),
    Case("work-dir-in-use", "two trainings in one work dir", _lock(1, socket.gethostname()), RunFolderLocked,
         lambda c: ["pid 1", socket.gethostname(), "2026-12-01 08:00:00"], "use another --work-dir"),
    Case("work-dir-in-use-other-host", "two trainings in one work dir", _lock(4242, "gpu-box-7"), RunFolderLocked,
         lambda c: ["pid 4242", "gpu-box-7", LOCK_NAME], "delete"),
]

CASES: list[Case] = CONFIG_CASES + OVERRIDE_CASES + CHECKPOINT_CASES + DATA_AND_RUN_CASES


def _truncated(ctx: Ctx) -> str:
    data = ctx.best.read_bytes()
    path = ctx.tmp / "truncated.pth"
    path.write_bytes(data[: len(data) // 2])
    return str(path)


def _without_split(ctx: Ctx, split: str) -> dict[str, Any]:
    voc = ctx.voc_copy()
    os.remove(next(voc.rglob(f"ImageSets/Segmentation/{split}.txt")))
    return ctx.cfg_on(voc)

