"""``antgo list``: every kind of built-in with a one-line description."""
from __future__ import annotations

import pytest

from antgo.catalog import KINDS, entries
from antgo.cli import main


def test_list_all_kinds(capsys: pytest.CaptureFixture) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for kind in KINDS:
        assert f"{kind} (" in out
    for name in ("EncoderDecoder", "ResizeS", "Pascal2012", "SegMIOU", "EarlyStoppingHook", "BestWeightsHook"):
        assert name in out


def test_list_one_kind_with_descriptions(capsys: pytest.CaptureFixture) -> None:
    assert main(["list", "hooks"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("hooks (") and not any(line.startswith("models") for line in lines)
    rows = dict(line.split(None, 1) for line in lines[1:] if line.strip())
    assert rows["EarlyStoppingHook"].startswith("Stop training after patience validations")
    assert all(len(text) <= 100 and "\n" not in text for _, text in entries("models"))


def test_unknown_kind_is_a_usage_error(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["list", "optimisers"])
    assert exc.value.code == 2 and "invalid choice" in capsys.readouterr().err
