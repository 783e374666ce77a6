"""Fixtures of the report tests: the committed lm-eval outputs, and a verb run the way roma_eval.cli runs it."""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import re
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
def derive_run(tmp_path, runs):
    """derive_run(name, source="base", results=edit(data), sample=edit(task, line)) -> the directory of a copy of a
    committed run, edited as another lm_eval invocation would have written it (what fixtures/derive.py does for the
    committed runs).  ``sample`` edits one samples line in place, or returns False to drop it."""
    def derive(name: str, source: str = "base", results=None, sample=None) -> Path:
        directory = Path(shutil.copytree(runs / source, tmp_path / name)) / "tiny-olmoe"
        for path in directory.glob("results_*.json"):
            data = json.loads(path.read_text())
            if results:
                results(data)
            path.write_text(json.dumps(data))
        for path in directory.glob("samples_*.jsonl"):
            task = re.match(r"samples_(.+)_\d{4}-", path.name)[1]
            lines = [json.loads(line) for line in path.read_text().splitlines()]
            kept = [line for line in lines if not sample or sample(task, line) is not False]
            path.write_text("".join(json.dumps(line) + "\n" for line in kept))
        return directory
    return derive


@pytest.fixture
def few_shot_run(derive_run):
    """few_shot_run(name, shots) -> the base run as `lm_eval --num_fewshot shots` writes it: n-shot and each task's
    num_fewshot recorded, and every prompt (so lm-eval's prompt_hash) preceded by the examples."""
    def derive(name: str, shots: int, source: str = "base") -> Path:
        def results(data):
            data["n-shot"] = dict.fromkeys(data["n-shot"], shots)
            for config in data["configs"].values():
                config["num_fewshot"] = shots
        def sample(task, line):
            examples = "Question: an example?\nAnswer: yes\n\n" * shots
            for request in line["arguments"].values():
                request["arg_0"] = examples + request["arg_0"]
            line["prompt_hash"] = hashlib.sha256(line["arguments"]["gen_args_0"]["arg_0"].encode()).hexdigest()
        return derive_run(name, source, results, sample)
    return derive


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
