"""`roma-eval eval ARGS...`: exactly `lm_eval run ARGS...`, with roma-eval's tasks/ on the include path and its lm-eval
models registered (through `roma_eval.lm_eval_cli`, also where the registration shim is not read).

lm-eval's own command line runs in a child process (its public entry point, nothing private), so every
`lm_eval run` option and its exit status are lm-eval's.  Its CLI takes a single --include_path: when
you give one, both task trees are offered to lm-eval through a temporary directory that mirrors them
(real directories, linked files), so `!function` helpers beside each YAML still resolve.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from roma_eval.errors import RomaEvalError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.usage = ("roma-eval eval --model roma --model_args pretrained=M,router_checkpoint=C --tasks T "
                    "[lm_eval run options]")
    parser.epilog = "All arguments are passed to `lm_eval run`; see `lm_eval run --help`."
    parser.set_defaults(_accepts_extra=True)


def _split_include_path(arguments: list[str]) -> tuple[list[str], str | None]:
    """The arguments without --include_path, and its value."""
    rest, value = [], None
    items = iter(arguments)
    for item in items:
        if item == "--include_path":
            value = next(items, None)
            if value is None:
                raise RomaEvalError("--include_path needs a directory of task YAMLs after it")
        elif item.startswith("--include_path="):
            value = item.split("=", 1)[1]
        else:
            rest.append(item)
    return rest, value


def mirror(trees: list[Path], root: Path) -> Path:
    """``root`` holding each tree under its own name, directories recreated and files linked."""
    for number, tree in enumerate(trees):
        for directory, _, files in os.walk(tree):
            target = root / f"{number}_{tree.name}" / Path(directory).relative_to(tree)
            target.mkdir(parents=True, exist_ok=True)
            for name in files:
                (target / name).symlink_to(Path(directory, name).resolve())
    return root


def run(args) -> int:
    from roma_eval.resources import tasks_dir

    arguments, theirs = _split_include_path(args.extra)
    with tempfile.TemporaryDirectory(prefix="roma-eval-tasks-") as scratch:
        include = tasks_dir()
        if theirs is not None:
            if not Path(theirs).is_dir():
                raise RomaEvalError(f"--include_path {theirs} is not a directory; give the directory holding your "
                                    "task YAMLs")
            include = mirror([tasks_dir(), Path(theirs).resolve()], Path(scratch))
        # roma_eval.lm_eval_cli is lm-eval's CLI with --model roma/c3po registered even where the .pth shim is not
        # read (pip install --target); a child started like this process (-S: no site directories) finds the same.
        isolation = ["-S"] if sys.flags.no_site else []
        command = [sys.executable, *isolation, "-m", "roma_eval.lm_eval_cli", "run", *arguments, "--include_path",
                   str(include)]
        # the child's one-line errors (unknown task names) speak as this verb
        return subprocess.run(command, env={**os.environ, "ROMA_EVAL_PROG": "roma-eval eval"}).returncode
