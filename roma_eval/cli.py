"""`roma-eval <verb>`: the project's command line.

Each verb lives in its own module exposing ``add_arguments(parser)``, ``run(args) -> int`` and optionally
``parents()`` (parent parsers, e.g. a config dataclass's flags).  Only the chosen verb's module is imported
and its parser built, so `roma-eval --help` and the torch-free verbs (report, check) stay light.  This module
owns how the command line talks to the user: the one-line error for a mistake (exit 2), log records as plain
lines, and the exit status.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from roma_eval import __version__, registry
from roma_eval.claims import release_claims
from roma_eval.errors import RomaEvalError
from roma_eval.quiet import quiet_libraries
from roma_eval.storage import full_disk_message, is_full_disk

# verb -> (module, one-line help)
VERBS = {
    "demo": ("roma_eval.commands.demo",
             "the whole story on the embedded toy world: base, RoMA, oracle and C3PO on 8 benchmarks, then the report"),
    "toy": ("roma_eval.commands.toy", "the embedded toy world: build its MoE, list or show its lm-eval tasks"),
    "tasks": ("roma_eval.commands.tasks",
              "the paper's evaluation suite (roma_paper) and training mixture (roma_paper_train), with counts"),
    "eval": ("roma_eval.commands.eval", "run lm-eval (any --model) with roma-eval's tasks/ on the include path"),
    "train": ("roma_eval.commands.train", "RoMA router post-training: routers only, task loss + manifold regulariser"),
    "icl": ("roma_eval.commands.icl", "ICL: the k nearest successful training samples as in-context examples"),
    "oracle-tuning": ("roma_eval.commands.oracle_tuning", "Oracle Tuning: routers trained towards the oracle routing"),
    "prefix-tuning": ("roma_eval.commands.prefix_tuning", "Prefix Tuning (peft) with RoMA's task loss and data"),
    "prompt-tuning": ("roma_eval.commands.prompt_tuning", "Prompt Tuning (peft) with RoMA's task loss and data"),
    "dense-bp": ("roma_eval.commands.dense_bp", "Dense BP: router training with a dense gradient from every expert"),
    "oracle": ("roma_eval.commands.oracle",
               "the routing upper bound: per-sample routing gradient descent with the gold label"),
    "c3po": ("roma_eval.commands.c3po", "C3PO's reference set (build-reference); evaluate with --model c3po"),
    "sweep": ("roma_eval.commands.sweep",
              "several router checkpoints of one base model, evaluated with one load of it (one lm-eval run each)"),
    "reproduce": ("roma_eval.commands.reproduce",
                  "the paper's experiment in one resumable command: base, Router Tuning, RoMA, oracle, C3PO, report "
                  "(several GPUs: accelerate launch -m roma_eval.cli reproduce ...)"),
    "report": ("roma_eval.commands.report",
               "paper-style tables (Markdown, LaTeX, HTML) and plots from lm-eval results; --paper adds the "
               "published tables"),
    "analyze": ("roma_eval.commands.analyze",
                "what the routers do in lm-eval runs: expert load, entropy, movement from base, alignment with the "
                "embedding manifold"),
    "check": ("roma_eval.commands.check",
              "regression gate: better / worse / no difference per benchmark, a candidate run against a baseline"),
    "export": ("roma_eval.commands.export",
               "a model directory with the tuned routers in its weights, for lm-eval's hf and vllm, SGLang, ..."),
}

# How `roma-eval --help` lists the verbs: by what a user wants to do, one example each.
VERB_GROUPS = (
    ("start here", ("demo", "toy"), "roma-eval demo"),
    ("evaluate", ("eval", "sweep", "oracle", "c3po", "reproduce"),
     "roma-eval eval --model roma --model_args pretrained=M,router_checkpoint=C --tasks roma_paper"),
    ("train routers", ("train",), "roma-eval train --pretrained M --tasks roma_paper_train --output_path runs/roma"),
    ("serve", ("export",), "roma-eval export --pretrained M --router_checkpoint runs/roma --output_path runs/M-roma"),
    ("baselines", tuple(dict.fromkeys(m.verb for m in registry.METHODS if m.verb and not m.default)),
     "roma-eval dense-bp --pretrained M --tasks roma_paper_train --output_path runs/dense-bp"),
    ("analyse", ("report", "check", "analyze"), "roma-eval check --baseline runs/base --candidate runs/roma"),
    ("tasks", ("tasks",), "roma-eval tasks"),
)


def _verb_listing() -> str:
    width = max(map(len, VERBS)) + 2
    lines = []
    for title, verbs, example in VERB_GROUPS:
        lines.append(f"{title}:")
        lines += [f"  {verb:<{width}}{VERBS[verb][1]}" for verb in verbs]
        lines += [f"  e.g. {example}", ""]
    return "\n".join(lines) + "`roma-eval <verb> --help` gives a verb's flags."


VERBOSE = ("-v", "--verbose")
VERBOSE_HELP = "also show the libraries' progress bars and warnings (transformers, datasets, lm-eval), off by default"


class _HelpFormatter(argparse.HelpFormatter):
    """Each option's default after its help, unless the help already speaks of it or there is none."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text.lower() or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def _required_first(parser: argparse.ArgumentParser) -> None:
    """A verb's required flags in their own group at the top of its help, and first in its usage line.

    argparse keeps them among the optional ones in the order they were added (parents' flags first), so the few a
    user must give hide among dozens; the group and order are argparse's own lists, reordered, nothing re-added."""
    required = [action for action in parser._actions if action.required and action.option_strings]
    if not required:
        return
    for group in parser._action_groups:
        group._group_actions[:] = [action for action in group._group_actions if action not in required]
    group = parser.add_argument_group("required arguments")
    group._group_actions.extend(required)
    parser._action_groups.remove(group)
    parser._action_groups.insert(0, group)
    parser._actions[:] = required + [action for action in parser._actions if action not in required]


def build_parser(verb: str | None = None) -> tuple[argparse.ArgumentParser, argparse.ArgumentParser | None]:
    """The command line, with ``verb``'s own parser built in full (the others only named); and that parser."""
    parser = argparse.ArgumentParser(prog="roma-eval", description=__doc__.splitlines()[0], epilog=_verb_listing(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"roma-eval {__version__}")
    parser.add_argument(*VERBOSE, action="store_true", help=VERBOSE_HELP)
    # The verbs are listed by group in the epilog, not once more in argparse's flat list.
    sub = parser.add_subparsers(dest="verb", metavar="<verb>", required=True)
    chosen = None
    for name, (module_name, help_text) in VERBS.items():
        if name != verb:
            sub.add_parser(name, add_help=False)
            continue
        module = importlib.import_module(module_name)
        parents = module.parents() if hasattr(module, "parents") else []
        chosen = sub.add_parser(name, help=help_text, description=help_text, parents=parents,
                                formatter_class=_HelpFormatter)
        module.add_arguments(chosen)
        if not chosen.get_default("_accepts_extra"):  # `eval`'s flags after the verb are lm-eval's own
            chosen.add_argument(*VERBOSE, action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP)
        _required_first(chosen)
        chosen.set_defaults(_run=module.run)
    return parser, chosen


def _refuse_renamed(verb: str, argv: list[str]) -> None:
    from roma_eval.commands.options import RENAMED

    if verb == "eval":  # everything after `eval` is lm-eval's, where --model names a backend
        return
    for item in argv:
        old = item.split("=", 1)[0]
        if old in RENAMED:
            raise RomaEvalError(f"{old} is now {RENAMED[old]} (one flag convention for every verb, lm-eval's names); "
                                f"see `roma-eval {verb} --help`")


def _apply_config_file(verb_parser: argparse.ArgumentParser, path: str) -> None:
    """Defaults from a YAML run configuration; unknown keys are refused."""
    import yaml

    try:
        with open(path, encoding="utf-8") as handle:
            values = yaml.safe_load(handle) or {}
    except OSError as exc:
        raise RomaEvalError(f"--config {path}: cannot read it ({exc.strerror}); give a YAML file of option "
                            "values") from None
    except yaml.YAMLError as exc:
        raise RomaEvalError(f"--config {path} is not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise RomaEvalError(f"--config {path} must map option names to values, e.g. `lam: 0.8`")
    known = {action.dest for action in verb_parser._actions}
    unknown = sorted(set(k.replace("-", "_") for k in values) - known)
    if unknown:
        raise RomaEvalError(f"--config {path}: unknown option(s) {', '.join(unknown)}; see `--help` for the names")
    verb_parser.set_defaults(**{k.replace("-", "_"): v for k, v in values.items()})


class _Stderr(logging.StreamHandler):
    """A handler writing to ``sys.stderr`` as it is when a record comes (a redirected or replaced stream too),
    not as it was when the handler was made: ``main`` may run many times in one process."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


def _log_plainly() -> None:
    """roma-eval's log records (progress of long stages, notices) as plain lines on stderr, once per process."""
    logger = logging.getLogger("roma_eval")
    if not any(isinstance(handler, _Stderr) for handler in logger.handlers):
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def main(argv: list[str] | None = None) -> int:
    from roma_eval.training.sharding import check_sharding

    # Before torch loads OpenMP: idle worker threads sleep instead of spinning.  On a shared 2-core machine a plain
    # `lm_eval --model roma` took 63 s for 30 requests without it and 0.4 s with it; training is 5x faster at load 9.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    argv = sys.argv[1:] if argv is None else argv
    verb = next((item for item in argv if not item.startswith("-")), None)
    parser, verb_parser = build_parser(verb if verb in VERBS else None)
    if verb in VERBS:
        try:
            _refuse_renamed(verb, argv)
            check_sharding(verb)
        except RomaEvalError as exc:
            print(f"roma-eval {verb}: error: {exc}", file=sys.stderr)
            return 2
    args, extra = parser.parse_known_args(argv)
    failed = True  # a run that ends in an exception gives up its outputs' claims and removes what holds nothing
    try:
        if getattr(args, "config", None):
            _apply_config_file(verb_parser, args.config)
            args, extra = parser.parse_known_args(argv)
        if extra and not getattr(args, "_accepts_extra", False):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.extra = extra
        _log_plainly()
        if not args.verbose:
            quiet_libraries()
        code = int(args._run(args) or 0)
        failed = False
        return code
    except RomaEvalError as exc:
        print(f"roma-eval {args.verb}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # stdout closed by the reader (`roma-eval toy tasks | head`): stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        print(f"roma-eval {args.verb}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except Exception as exc:  # a full disk in a write that is not ours (lm-eval's result files, peft's adapter)
        if not is_full_disk(exc):
            raise
        where = getattr(exc, "filename", None) or getattr(args, "output_path", None) or "."
        print(f"roma-eval {args.verb}: error: {full_disk_message(where)}", file=sys.stderr)
        return 2
    finally:
        release_claims(failed)


if __name__ == "__main__":
    sys.exit(main())
