"""Runs the reliability table (cases.py): the exception and its message, the CLI's exit code and stderr, and
that the run folder made before the fault is unchanged."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from antgo.cli import COMMANDS, build_parser, main
from tests.reliability.cases import CASES, Case, Ctx

APPEND_ONLY = {"train.log"}  # a refused run may add its error to the log, never rewrite it


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def message(exc: BaseException) -> str:
    return "\n".join([str(exc), *getattr(exc, "__notes__", [])])


def assert_unchanged(before: dict[str, bytes], folder: Path) -> None:
    after = snapshot(folder)
    for name, data in before.items():
        assert name in after, f"{name} was deleted"
        if name in APPEND_ONLY:
            assert after[name].startswith(data), f"{name} was rewritten"
        else:
            assert hashlib.sha256(after[name]).digest() == hashlib.sha256(data).digest(), f"{name} was changed"


def test_table_is_large_enough() -> None:
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_case(case: Case, ctx: Ctx, capsys: pytest.CaptureFixture) -> None:
    argv = case.argv(ctx)
    before = snapshot(ctx.run)
    args = build_parser().parse_args(argv)
    with pytest.raises(case.error) as info:
        COMMANDS[args.command](args)
    text = message(info.value)
    for fragment in case.mentions(ctx):
        assert fragment in text, f"{fragment!r} not in: {text}"
    assert case.fix in text, f"fix {case.fix!r} not in: {text}"
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"error: {type(info.value).__name__}: " in err and case.fix in err
    assert_unchanged(before, ctx.run)
    for path in case.absent(ctx):
        assert not path.exists(), f"{path} exists"
