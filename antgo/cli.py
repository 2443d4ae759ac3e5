"""Command line: ``python -m antgo train|test|export|verify CONFIG [options]``, ``antgo predict`` and ``antgo list``.

Exit codes: 0 success, 1 a failed run (the error is printed on stderr), 2 a usage error.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from typing import Any, Sequence

logger = logging.getLogger("antgo.cli")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="config file (.py)")
    parser.add_argument("--work-dir", default="./output", help="output folder (default: ./output)")
    parser.add_argument("--cfg-options", nargs="+", default=None, metavar="KEY=VALUE",
                        help="override config keys, e.g. optimizer.lr=0.01 data.train_dataloader.samples_per_gpu=8")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    parser.add_argument("--debug", action="store_true", help="log at DEBUG and print tracebacks")
    parser.add_argument("--unsafe-load", action="store_true",
                        help="allow checkpoints that need arbitrary unpickling (can run code: trusted files only; "
                             "same as ANTGO_UNSAFE_LOAD=1)")


def _checkpoint_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", default=None,
                        help="weights to use (default: the config's checkpoint, else WORK_DIR/best.pth or latest.pth)")


DEFAULT_NUM_VIS = 8  # samples `antgo test --vis-dir D` draws when --num-vis is not given
INTERMIXED = ("predict",)  # nargs="+" positionals: options may stand between them (CONFIG --checkpoint X SOURCE)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="antgo", description="Config-driven training, testing, ONNX export "
                                                               "and onnxruntime parity checks.")
    sub = parser.add_subparsers(dest="command", required=True,
                                metavar="{train,test,export,verify,predict,list}")
    train = sub.add_parser("train", help="train a model")
    _common(train)
    train.add_argument("--resume-from", default=None, help="checkpoint to resume (model, optimizer, epoch, RNG)")
    train.add_argument("--load-from", default=None, help="checkpoint to take initial weights from")
    train.add_argument("--max-epochs", type=int, default=None,
                       help="default: the config's max_epochs (excludes --max-iters)")
    train.add_argument("--max-iters", type=int, default=None,
                       help="iteration-based training for N iterations instead of epochs (excludes --max-epochs)")
    train.add_argument("--seed", type=int, default=None, help="default: the config's seed, else 0")
    train.add_argument("--no-validate", action="store_true", help="skip validation during training")
    test = sub.add_parser("test", help="evaluate a checkpoint on data.test")
    _common(test)
    _checkpoint_arg(test)
    test.add_argument("--json", default=None, help="metrics file (default: WORK_DIR/eval_results.json)")
    test.add_argument("--vis-dir", default=None, help="folder for visualisations (default: WORK_DIR/vis)")
    test.add_argument("--num-vis", type=int, default=None,
                      help=f"number of samples to visualise (default: 0, or {DEFAULT_NUM_VIS} with --vis-dir)")
    export = sub.add_parser("export", help="export a checkpoint to ONNX")
    _common(export)
    _checkpoint_arg(export)
    export.add_argument("--onnx", default=None, help="output file (default: WORK_DIR/<name>.onnx)")
    verify = sub.add_parser("verify", help="export (unless --onnx) and check onnxruntime against PyTorch")
    _common(verify)
    _checkpoint_arg(verify)
    verify.add_argument("--onnx", default=None, help="an exported ONNX file to check instead of exporting")
    verify.add_argument("--num-samples", type=int, default=None, help="validation samples to compare")
    _predict_parser(sub)
    _list_parser(sub)
    return parser


def _predict_parser(sub: Any) -> None:
    predict = sub.add_parser("predict", help="predict an image, a folder or a video: overlays + predictions.json",
                             usage="antgo predict [CONFIG --checkpoint X | --onnx Y] SOURCE [--out-dir D]")
    predict.add_argument("paths", nargs="+", metavar="[CONFIG] SOURCE",
                         help="with --checkpoint: the config file, then the source; with --onnx: the source only")
    group = predict.add_mutually_exclusive_group(required=True)
    group.add_argument("--checkpoint", help="a checkpoint (best.pth or best_weights.pth) of CONFIG's model")
    group.add_argument("--onnx", help="an ONNX file exported by antgo (needs no config and no torch)")
    predict.add_argument("--out-dir", default="./predictions", help="folder for overlays and predictions.json")
    predict.add_argument("--cfg-options", nargs="+", default=None, metavar="KEY=VALUE")
    predict.add_argument("--device", default=None, help="with --checkpoint: cpu, cuda or cuda:N")
    predict.add_argument("--max-frames", type=int, default=None, help="videos: stop after this many frames")
    predict.add_argument("--debug", action="store_true", help="log at DEBUG and print tracebacks")


def _list_parser(sub: Any) -> None:
    from antgo.catalog import KINDS

    listing = sub.add_parser("list", help="list the built-in models, transforms, datasets, metrics and hooks")
    listing.add_argument("kind", nargs="?", choices=[*KINDS, "all"], default="all")
    listing.add_argument("--debug", action="store_true", help="log at DEBUG and print tracebacks")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The parsed command line; exits with 2 on a usage error."""
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in INTERMIXED:  # argparse cannot intermix through subparsers: parse with the command's
        args = commands[argv[0]].parse_intermixed_args(argv[1:])
        args.command = argv[0]
    else:
        args = parser.parse_args(argv)
    if args.command == "train" and args.max_epochs is not None and args.max_iters is not None:
        commands["train"].error("--max-epochs and --max-iters exclude each other: pass one of them")
    return args


def _load(args: argparse.Namespace) -> Any:
    from antgo.config import load_config

    if getattr(args, "unsafe_load", False):
        from antgo.engine.checkpoint import UNSAFE_LOAD_ENV

        os.environ[UNSAFE_LOAD_ENV] = "1"
    cfg = load_config(args.config, cfg_options=args.cfg_options)
    if args.cfg_options:
        logger.info("config overrides: %s", " ".join(args.cfg_options))
    return cfg


def find_checkpoint(explicit: str | None, cfg: Any, work_dir: str) -> str:
    """``--checkpoint``, else the config's ``checkpoint``, else what training into ``work_dir`` wrote
    (best.pth, then latest.pth, in the config's out_dirs): the rule the flow uses too."""
    from antgo.engine.loading import find_checkpoint as find

    return find(work_dir, cfg, explicit)


def cmd_train(args: argparse.Namespace) -> int:
    from contextlib import nullcontext

    from antgo.engine import Trainer
    from antgo.engine.runlock import RunLock

    # refuse a folder in use at once, before data and model are built (the Trainer takes the same lock again)
    rank0 = int(os.environ.get("RANK", "0")) == 0
    with RunLock(args.work_dir) if rank0 else nullcontext():
        cfg = _load(args)
        if args.load_from:  # recorded in the dumped config.py, like --seed and --max-epochs
            cfg["load_from"] = args.load_from
        trainer = Trainer(cfg, work_dir=args.work_dir, device=args.device, seed=args.seed)
        trainer.config_dataloader(with_validate=not args.no_validate)
        trainer.config_model(resume_from=args.resume_from, load_from=args.load_from)
        result = trainer.start_train(max_epochs=args.max_epochs, max_iters=args.max_iters)
    best = (f"best {result['best_checkpoint']} ({result['best_metric']}={result['best_score']:.4f})"
            if result["best_checkpoint"] else "no best checkpoint (no validation ran)")
    logger.info("outputs in %s: latest %s, %s", trainer.work_dir, result["latest_checkpoint"], best)
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    from antgo.engine import Tester

    cfg = _load(args)
    tester = Tester(cfg, work_dir=args.work_dir, device=args.device)
    tester.config_model(checkpoint=find_checkpoint(args.checkpoint, cfg, args.work_dir))
    num_vis = args.num_vis
    if num_vis is None:
        num_vis = DEFAULT_NUM_VIS if args.vis_dir else 0
        if args.vis_dir:
            logger.info("--vis-dir without --num-vis: visualising the first %d samples", num_vis)
    tester.evaluate(json_file=args.json, vis_dir=args.vis_dir, num_vis=num_vis)
    logger.info("metrics written to %s%s", tester.json_file,
                f"; {len(tester.vis_files)} visualisations in {os.path.dirname(tester.vis_files[0])}"
                if tester.vis_files else "")
    return 0


def _export(cfg: Any, args: argparse.Namespace, checkpoint: str, path: str | None = None) -> str:
    from antgo.engine import Exporter
    from antgo.engine.runlock import require_writable_folder

    if path:  # before the model is built: an ONNX file that cannot be written fails at once
        require_writable_folder(os.path.dirname(os.path.abspath(path)), "--onnx")
    else:
        require_writable_folder(args.work_dir)
    onnx_path = Exporter(cfg, args.work_dir).export(checkpoint=checkpoint, path=path)
    logger.info("ONNX model written to %s", onnx_path)
    return str(onnx_path)


def cmd_export(args: argparse.Namespace) -> int:
    cfg = _load(args)
    _export(cfg, args, find_checkpoint(args.checkpoint, cfg, args.work_dir), path=args.onnx)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from antgo.engine import verify_parity
    from antgo.engine.runlock import require_writable_folder

    cfg = _load(args)
    require_writable_folder(args.work_dir)  # parity.json goes there
    checkpoint = find_checkpoint(args.checkpoint, cfg, args.work_dir)
    onnx_path = args.onnx or _export(cfg, args, checkpoint)
    report = verify_parity(cfg, onnx_path, checkpoint, work_dir=args.work_dir, num_samples=args.num_samples)
    logger.info("parity passed: %s", {k: v for k, v in dict(report).items() if not isinstance(v, (dict, list))}
                if isinstance(report, dict) else report)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from antgo.predict.runner import run_predict

    if args.onnx:
        if len(args.paths) != 1:
            raise ValueError(f"antgo predict --onnx takes one SOURCE (the file describes itself), got {args.paths}")
        from antgo.predict.runner import OnnxModel

        model: Any = OnnxModel(args.onnx)
    else:
        if len(args.paths) != 2:
            raise ValueError(f"antgo predict --checkpoint takes CONFIG SOURCE, got {args.paths}")
        from antgo.predict.runner import CheckpointModel

        model = CheckpointModel(_load(argparse.Namespace(config=args.paths[0], cfg_options=args.cfg_options)),
                                args.checkpoint, device=args.device)
    records = run_predict(model, args.paths[-1], args.out_dir, max_frames=args.max_frames)
    logger.info("%d prediction(s) written to %s", len(records), os.path.abspath(args.out_dir))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from antgo.catalog import format_catalog

    print(format_catalog(None if args.kind == "all" else args.kind))
    return 0


COMMANDS = {"train": cmd_train, "test": cmd_test, "export": cmd_export, "verify": cmd_verify,
            "predict": cmd_predict, "list": cmd_list}


def _describe(exc: BaseException) -> str:
    lines = [f"error: {type(exc).__name__}: {exc}"]
    lines += [f"  {note}" for note in getattr(exc, "__notes__", [])]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``antgo`` and ``python -m antgo``; returns the exit code."""
    # Before torch loads OpenMP: sleeping (not spinning) idle threads keep a run from collapsing when other
    # processes share the cores (measured: 6 s/iter instead of 1 s/iter with two trainings on 2 cores).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from antgo.console import setup_console_logging  # torch-free: `predict --onnx` must not load torch

    args = parse_args(argv)  # exits with 2 on a usage error
    setup_console_logging(logging.DEBUG if args.debug else logging.INFO)
    unsafe_before = os.environ.get("ANTGO_UNSAFE_LOAD")
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a failed run: message on stderr, non-zero exit, traceback on --debug
        if args.debug:
            traceback.print_exc()
        print(_describe(exc), file=sys.stderr)
        return 1
    finally:  # --unsafe-load allows it for this command only (main() may be called again in-process)
        if unsafe_before is None:
            os.environ.pop("ANTGO_UNSAFE_LOAD", None)
        else:
            os.environ["ANTGO_UNSAFE_LOAD"] = unsafe_before


def run() -> None:
    """The process entry (``antgo`` script, ``python -m antgo``): a torchrun rank ends without interpreter
    teardown once its work is done (see ``antgo.engine.rank_exit``)."""
    code = main()
    from antgo.engine.rank_exit import exit_rank, is_launched_rank

    if is_launched_rank():
        exit_rank(code)
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    run()
