"""Fixtures of the report tests: the committed lm-eval outputs, and a verb run the way roma_eval.cli runs it."""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys
from pathlib import Path

import pytest

from roma_eval.errors import RomaEvalError

HERE = Path(__file__).parent


@pytest.fixture
def runs() -> Path:
    """fixtures/runs: base (a real lm-eval run) and runs derived from it (fixtures/README.md)."""
    return HERE / "fixtures" / "runs"


@pytest.fixture
def matches_golden():
    """matches_golden("report.md", text): is ``text`` the golden file?  ROMA_EVAL_UPDATE_GOLDEN=1 rewrites the
    golden files instead (review their diff before committing)."""
    def matches(name: str, text: str) -> bool:
        path = HERE / "golden" / name
        if os.environ.get("ROMA_EVAL_UPDATE_GOLDEN") == "1":
            path.parent.mkdir(exist_ok=True)
            path.write_text(text, encoding="utf-8")
        return text == path.read_text(encoding="utf-8")
    return matches


@pytest.fixture
def copy_run(tmp_path, runs):
    """A writable copy of a committed run directory."""
    def copy(name: str) -> Path:
        return Path(shutil.copytree(runs / name, tmp_path / name))
    return copy


@pytest.fixture
def verb():
    """verb("check", [...]) -> exit status, as `roma-eval check ...` (bad input: one line on stderr, 2)."""
    def run(name: str, argv: list[str]) -> int:
        module = importlib.import_module(f"roma_eval.commands.{name}")
        parser = argparse.ArgumentParser(prog=f"roma-eval {name}")
        module.add_arguments(parser)
        try:
            return module.run(parser.parse_args(argv))
        except RomaEvalError as exc:
            print(f"roma-eval {name}: error: {exc}", file=sys.stderr)
            return 2
    return run
