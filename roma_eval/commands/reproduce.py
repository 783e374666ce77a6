"""`roma-eval reproduce --pretrained M --output_path runs/NAME`: the paper's experiment in one command.

Base, Router Tuning, RoMA, the oracle and C3PO (`--methods all` adds ICL, Oracle Tuning, Prefix Tuning,
Prompt Tuning and Dense BP: all ten rows of Table 1) on the paper's eight benchmarks (lm-eval group
`roma_paper`, zero-shot), trained on its 49k mixture (`roma_paper_train`), then the report with the
paper's published rows of the same model beside ours.  Each stage writes lm-eval's own outputs under
the output directory, prints the plain commands that do the same, and is skipped when complete: run the
same command again to resume (a skipped stage keeps the wall time recorded when it ran).  Before any stage,
every requested method is checked against the model's skeleton (no weights): a method the model cannot run
is refused in one line and nothing is written.  Defaults are the paper's (docs/reproduce.md); `--roma_args`,
`--router_tuning_args`, `--oracle_tuning_args`, `--dense_bp_args`, `--oracle_args` and `--c3po_args` pass any method
setting through (lm-eval's "k=v,k=v" model_args syntax).  `--train_args` sets one training budget (lr, epochs,
batch size, LR schedule) for every trained row; a row's own args override it for that row, and rows left at
different values are named in the printed summary and in experiment.json (pipeline/budget.py).  Each stage that
evaluates ends with lm-eval's results table, as `lm_eval` prints it (the oracle's also with its gap table).
`--backend vllm` evaluates the base model and every router checkpoint (exported into a copy of the base model by
`roma-eval export`) with lm-eval's `vllm` model; the other rows stay on transformers and the plan printed first says
why.  `--dry_run` prints that plan and the plain commands, and runs and writes nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from roma_eval import registry
from roma_eval.errors import RomaEvalError

PAPER_MODELS = ("olmoe", "deepseekmoe", "qwen3")
# The paper's three models, as the checkpoints its published rows point to (docs/reproduce.md says why: the paper
# names no variant; the evidence is for the post-trained ones).
EXAMPLES = """recipe: the paper's three models (the post-trained checkpoints; why: docs/reproduce.md)
  roma-eval reproduce --pretrained allenai/OLMoE-1B-7B-0125-Instruct --dtype bfloat16 --output_path runs/olmoe
  roma-eval reproduce --pretrained deepseek-ai/deepseek-moe-16b-chat --trust_remote_code --dtype bfloat16 \\
      --output_path runs/deepseekmoe
  roma-eval reproduce --pretrained Qwen/Qwen3-30B-A3B --dtype bfloat16 --output_path runs/qwen3
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from roma_eval.commands.options import add_base_model, add_chat_template, add_output, add_progress, flag
    from roma_eval.pipeline.experiment import BACKENDS

    parser.formatter_class = argparse.RawDescriptionHelpFormatter  # the examples' lines as written
    parser.epilog = EXAMPLES
    add_base_model(parser)
    add_output(parser, "the experiment's directory: one subdirectory per stage, the report, experiment.json")
    parser.add_argument("--methods", default=",".join(registry.DEFAULT),
                        help=f"comma-separated stages among {', '.join(registry.RUN_ORDER)}, or all (Table 1's "
                             f"{len(registry.NAMES)} rows; the report always follows)")
    parser.add_argument(*flag("eval_tasks"), default="roma_paper", help="evaluation tasks or groups")
    parser.add_argument(*flag("train_tasks"), default="roma_paper_train",
                        help="training mixture (RoMA, Router Tuning, C3PO's reference set)")
    parser.add_argument(*flag("include_path"), action="append", default=[], help="extra directory of task YAMLs")
    parser.add_argument("--limit", type=int, default=None, help="at most this many documents per evaluation task")
    parser.add_argument(*flag("train_limit"), type=int, default=None,
                        help="at most this many documents per training task")
    parser.add_argument(*flag("batch_size"), type=int, default=8, help="lm-eval's batch size")
    parser.add_argument("--seed", type=int, default=0, help="seed of every stage (lm-eval's seeds, training order)")
    parser.add_argument(*flag("train_args"), default="",
                        help="one training budget for every trained row, as k=v,k=v of lr, epochs, batch_size, "
                             "lr_schedule, warmup_steps, warmup_ratio (default: RoMA's released trainer's; its lr "
                             "7e-05 is set for 1-30B models, a small model needs more: the toy's is 1e-2); a row's own "
                             "--<row>_args override it for that row, and the summary and experiment.json say so")
    for method in registry.METHODS:
        if method.settings_flag:
            parser.add_argument(*flag(f"{method.name}_args"), default="",
                                help=f"{method.name} settings as k=v,k=v (the fields of `roma-eval {method.verb} "
                                     "--help`)")
    parser.add_argument(*flag("c3po_args"), default="", help="C3PO model_args, e.g. c3po_method=ngd,c3po_k=3")
    parser.add_argument(*flag("paper_model"), choices=PAPER_MODELS, default=None,
                        help="the paper's model to compare with (default: guessed from the model's name)")
    add_chat_template(parser)
    parser.add_argument("--backend", choices=BACKENDS, default="hf",
                        help="lm-eval's model for the base model and the router-checkpoint rows (Router Tuning, RoMA, "
                             "Oracle Tuning, Dense BP: each exported into a copy of the base model first): hf "
                             "(transformers) or vllm; the other rows always run on transformers")
    parser.add_argument(*flag("vllm_args"), default="",
                        help="more model_args of lm-eval's vllm model, as k=v,k=v (tensor_parallel_size, default 1; "
                             "data_parallel_size, gpu_memory_utilization, max_model_len, ...)")
    parser.add_argument(*flag("dry_run"), action="store_true",
                        help="print which engine evaluates each row and the plain commands of the rows vLLM serves "
                             "(roma-eval export, lm_eval --model vllm); load, run and write nothing")
    parser.add_argument("--config", default=None, metavar="FILE.yaml",
                        help="YAML file of option values (keys as the flags, without dashes)")
    add_progress(parser)


def _settings(text, flag: str, known, elsewhere: str = "") -> dict:
    """Settings from "k=v,k=v" (lm-eval's parser types the values; a --config file may give a mapping); names
    outside ``known`` are refused (``elsewhere``: where they belong instead)."""
    from roma_eval.harness import parse_model_args

    values = parse_model_args(text) if isinstance(text, str) else dict(text or {})
    if unknown := sorted(set(values) - set(known)):
        raise RomaEvalError(f"--{flag} {text!r}: unknown setting(s) {', '.join(unknown)}; choose among "
                            f"{', '.join(sorted(known))}{elsewhere}")
    return values


def _config(config_cls, text: str, flag: str, **base):
    """A method config from "k=v,k=v" over ``base``; unknown keys are refused."""
    from dataclasses import fields

    return config_cls(**{**base, **_settings(text, flag, [f.name for f in fields(config_cls)])})


def _budget(config_cls, row: str, shared: dict, own_text: str, **base):
    """A trained row's config (its ``base`` settings, the shared budget, then the row's own settings), the settings
    given, and where each budget value came from (pipeline/budget.py)."""
    from dataclasses import fields

    from roma_eval.pipeline.budget import row_settings

    own = _settings(own_text, f"{row}_args", [f.name for f in fields(config_cls)])
    values, sources = row_settings(shared, own, row)
    return config_cls(**{**base, **values}), values, sources


def training_budget(args, output: Path) -> tuple[dict, dict, dict]:
    """Every trained row's config from ``--train_args`` and the rows' own args: (config by row, the settings given by
    row, the manifest's record of each budget value and its source)."""
    from dataclasses import fields

    from roma_eval.pipeline.budget import BUDGET, budget_record

    shared = _settings(args.train_args, "train_args", BUDGET, "; a row's other settings go in its own --<row>_args")
    configs, values, sources = {}, {}, {}
    for method in registry.METHODS:
        if not method.trains:
            continue
        config = registry.config_class(method.name)
        base = {**method.fixed_settings, "seed": args.seed}
        if "oracle_routing" in {f.name for f in fields(config)}:  # checked here; the stage sets its own
            base["oracle_routing"] = str(output / method.name / "oracle_train")
        own = getattr(args, f"{method.name}_args", "")
        configs[method.name], values[method.name], sources[method.name] = _budget(config, method.name, shared, own,
                                                                                  **base)
    return configs, values, budget_record(configs, sources, shared)


def stage_tables(results: dict, method: str) -> str:
    """What a stage that evaluated prints: lm-eval's results table as `lm_eval` prints it; the oracle's gap table."""
    from roma_eval.harness import tables

    if method != "oracle":
        return tables(results)
    from roma_eval.methods.oracle.gap import gap_table

    return "\n".join([tables(results), "oracle against base:", *gap_table(results)])


def check_inputs(exp, methods: list[str]) -> None:
    """Refuse, in one line and before the output is claimed, what a stage would only find later: a model whose
    config cannot be read (even for base alone), unknown evaluation or training tasks, misspelt C3PO model_args."""
    from roma_eval.harness import task_manager
    from roma_eval.model_loading import check_model_source

    check_model_source(exp.pretrained, exp.revision, exp.trust_remote_code)
    trains = any(registry.method(m).reads_training_set for m in methods)
    task_manager(exp.include_path, [*exp.eval_tasks, *(exp.train_tasks if trains else ())])
    if "c3po" in methods and exp.c3po_args:
        from roma_eval.methods.c3po.lm_eval import check_model_args

        check_model_args(exp.c3po_args, "--c3po_args")


def check_backend(exp, methods: list[str], dry_run: bool) -> None:
    """Refuse, before anything is claimed, what `--backend vllm` cannot do: several processes (vLLM spreads over the
    GPUs itself: tensor_parallel_size), model_args that name the model (each row sets its own), a missing vLLM."""
    import importlib.util

    from roma_eval.harness import parse_model_args
    from roma_eval.pipeline.stages import vllm_route

    if exp.backend != "vllm":
        return
    if exp.dist.num_processes > 1:
        raise RomaEvalError("--backend vllm runs in one process (vLLM uses the GPUs itself: tensor_parallel_size=N "
                            "in --vllm_args); run reproduce without accelerate launch")
    if "pretrained" in parse_model_args(exp.vllm_args):
        raise RomaEvalError(f"--vllm_args {exp.vllm_args!r} names pretrained: each row evaluates its own model; "
                            "drop it")
    served = [m for m in methods if vllm_route(registry.method(m))]
    if served and not dry_run and importlib.util.find_spec("vllm") is None:
        raise RomaEvalError(f"--backend vllm: vLLM is not installed here (rows {', '.join(served)}); install it "
                            "(pip install vllm), use --backend hf, or --dry_run to print the commands")


def run(args) -> int:
    from roma_eval.commands.options import chat_template_args, split_list
    from roma_eval.harness import check_limit
    from roma_eval.methods.oracle.config import OracleConfig
    from roma_eval.pipeline import STAGES, Experiment, check_methods, report_stage, timed
    from roma_eval.pipeline.budget import budget_lines
    from roma_eval.pipeline.stages import backend_plan, routing_stage
    from roma_eval.report.paper import paper_model_for

    methods = list(registry.RUN_ORDER) if args.methods == "all" else split_list(args.methods)
    if unknown := [m for m in methods if m not in registry.BY_NAME]:
        raise RomaEvalError(f"--methods {args.methods}: unknown {', '.join(unknown)}; choose among "
                            f"{', '.join(registry.RUN_ORDER)}, or all")
    for name in ("limit", "train_limit"):
        check_limit(getattr(args, name), f"--{name}")
    configs, settings, budget = training_budget(args, Path(args.output_path))
    exp = Experiment(
        pretrained=args.pretrained, output=Path(args.output_path), eval_tasks=tuple(split_list(args.eval_tasks)),
        train_tasks=tuple(split_list(args.train_tasks)), include_path=tuple(args.include_path), limit=args.limit,
        train_limit=args.train_limit, revision=args.revision, dtype=args.dtype, device=args.device,
        trust_remote_code=args.trust_remote_code, batch_size=args.batch_size, seed=args.seed,
        roma=configs["roma"], router_tuning=configs["router_tuning"], oracle_tuning=settings["oracle_tuning"],
        dense_bp=configs["dense_bp"], peft=settings["prefix_tuning"], training_budget=budget,
        oracle=_config(OracleConfig, args.oracle_args, "oracle_args", seed=args.seed),
        c3po_args=args.c3po_args, backend=args.backend, vllm_args=args.vllm_args, overwrite=args.overwrite,
        progress=not args.no_progress, **chat_template_args(args))
    if exp.router_tuning.regulariser != "none":
        raise RomaEvalError("--router_tuning_args sets regulariser: Router Tuning is RoMA without a regulariser; "
                            "use --roma_args for other regularisers")
    if "oracle_routing" in exp.oracle_tuning:
        raise RomaEvalError("--oracle_tuning_args sets oracle_routing: the oracle_tuning stage trains towards its own "
                            "oracle run of the training mixture; drop it (or run `roma-eval oracle-tuning` yourself)")
    if exp.dist.num_processes > 1 and (alone := [m for m in methods if registry.method(m).one_process]):
        raise RomaEvalError(f"--methods {args.methods}: {', '.join(alone)} run in one process; run them in a second "
                            "`roma-eval reproduce` without accelerate launch (same --output_path: it reuses the rest)")
    check_backend(exp, methods, args.dry_run)
    exp.check_output()  # a directory of another run: refused before the model is read
    check_inputs(exp, methods)  # the model's config, the task names, C3PO's model_args: before anything is written
    check_methods(exp, methods)  # a method the model cannot run: refused before any stage
    if args.dry_run or exp.backend != "hf":
        print("\n".join([f"== plan (--backend {exp.backend})", *backend_plan(exp, methods)]))
    if args.dry_run:
        return 0
    exp.claim_output()
    paper_model = args.paper_model or paper_model_for(args.pretrained)
    say = print if exp.dist.is_main_process else (lambda *_: None)
    summary = budget_lines(budget, methods)
    if summary:
        say("\n".join(summary))
    for method in methods:
        say(f"\n== {method}")
        timed(exp, method, lambda stage=STAGES[method]: stage(exp))
        if exp.results.get(method) is not None:
            say(stage_tables(exp.results[method], method))
    if exp.dist.is_main_process:  # the routing analysis and the report read what the main process wrote
        say("\n== routing")
        timed(exp, "routing", lambda: routing_stage(exp, methods))
        say("\n== report")
        timed(exp, "report", lambda: report_stage(exp, methods, f"roma-eval reproduce: {args.pretrained}",
                                                   paper_model))
        say("\n".join(["", *(line for line in summary if line.startswith("note:")),
                        str(exp.stage_dir("report") / "report.md")]))
    exp.dist.wait_for_everyone()
    return 0
