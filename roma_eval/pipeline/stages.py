"""The stages of the paper's experiment (arXiv 2511.07419, Table 1), each a function of an ``Experiment``: the
stage of a method of roma_eval.registry is ``<name>_stage`` here (the peft rows share ``peft_stage``).

    base           the base model through lm-eval (`--model hf`)
    router_tuning  routers trained with the task loss only, then `--model roma` (the paper's Router Tuning)
    roma           routers trained with RoMA (Eqs. 7-9), then `--model roma`
    oracle         per-sample routing descent with the gold label, written by lm-eval
    c3po           C3PO's reference set on the training mixture, then `--model c3po`
    icl            the k nearest successful training samples as in-context examples (docs/baselines.md)
    oracle_tuning  the oracle on the training mixture, routers trained towards it, then `--model roma`
    prefix_tuning, prompt_tuning   peft adapters on the training mixture, then `--model hf-peft`
    dense_bp       routers trained with dense router gradients, then `--model roma`
    report         report.md / .html / .tex and plots in ``output/report``, the paper's rows beside ours

Every stage writes lm-eval's native outputs under ``output/<stage>/``, skips what is already complete (and
calls ``exp.note_work()`` for what it computes, so that a skipped stage keeps its recorded wall time), and
returns the plain commands that compute the same thing (recorded in the manifest).  ``check_methods`` asks the
model's skeleton, before any stage runs, whether every requested method can run on it.

With ``exp.backend == "vllm"`` the rows that a plain model evaluates go through lm-eval's `vllm` model: the base
model itself, and each router checkpoint once `roma-eval export` has written it into a copy of the base model
(``vllm_route``, from the registry's artefact kinds).  The other rows stay on transformers (``TRANSFORMERS_ONLY``
says why); ``backend_plan`` lists the rows and the commands, which `reproduce --dry_run` prints without running.
"""

from __future__ import annotations

import functools
import json
import logging
import shlex

from roma_eval import registry
from roma_eval.errors import RomaEvalError
from roma_eval.methods.roma.config import RomaConfig
from roma_eval.pipeline.experiment import Experiment

logger = logging.getLogger(__name__)

CHECKPOINT = registry.ARTEFACTS[registry.ROUTER_CHECKPOINT].directory
REFERENCE = registry.ARTEFACTS[registry.REFERENCE_SET].directory
EXPORT = "export"  # a router checkpoint written into a copy of the base model (roma_eval/export.py), for vLLM
# Why a row stays on transformers under --backend vllm, by what the row evaluates (its registry artefact kind).
TRANSFORMERS_ONLY = {
    registry.REFERENCE_SET: "it changes each sample's routing at test time (gradient steps towards its neighbours' "
                            "routing), inside the transformers forward",
    registry.ORACLE_ROUTING: "it changes each sample's routing (gradient descent with the gold label), inside the "
                             "transformers forward",
    registry.PEFT_ADAPTER: "a peft prefix or prompt adapter, which vLLM does not load (it serves LoRA adapters only)",
    None: "roma-eval's own evaluator builds each sample's prompt from retrieved examples on the transformers model",
}


def _roma_eval(*parts) -> str:
    return shlex.join(["roma-eval", *map(str, parts)])


def _model_flags(exp: Experiment) -> list[str]:
    flags = ["--pretrained", exp.pretrained, "--dtype", exp.dtype]
    flags += ["--revision", exp.revision] if exp.revision else []
    flags += ["--device", exp.device] if exp.device else []
    return flags + (["--trust_remote_code"] if exp.trust_remote_code else [])


def _config_flags(config, defaults) -> list[str]:
    """The flags that set ``config`` where it differs from ``defaults``."""
    from dataclasses import fields

    out = []
    for f in fields(config):
        value = getattr(config, f.name)
        if value != getattr(defaults, f.name):
            out += [f"--no_{f.name}"] if value is False else [f"--{f.name}"] + ([] if value is True else [str(value)])
    return out


def vllm_route(method: registry.Method) -> str | None:
    """How --backend vllm evaluates a row: "direct" (a plain lm-eval model on the base weights), "export" (a router
    checkpoint, written into a copy of the base model), None (it stays on transformers: ``TRANSFORMERS_ONLY``)."""
    if method.artefact is None and method.lm_eval_model in registry.PLAIN_LM_EVAL_MODELS:
        return "direct"
    return "export" if method.artefact == registry.ROUTER_CHECKPOINT else None


def vllm_evaluation(exp: Experiment, stage: str) -> tuple[str, list[str]]:
    """The `vllm` model_args of a row vLLM serves and its plain commands: `lm_eval --model vllm` on the base model,
    or `roma-eval export` of the row's router checkpoint and `lm_eval --model vllm` on the export."""
    if vllm_route(registry.method(stage)) == "direct":
        model_args = exp.vllm_model_args()
        return model_args, [exp.lm_eval_command(stage, "vllm", model_args)]
    checkpoint, exported = (exp.stage_dir(stage) / CHECKPOINT).resolve(), exported_model(exp, stage).resolve()
    model_args = exp.vllm_model_args(exported)
    source = ["--pretrained", exp.pretrained, *(["--revision", exp.revision] if exp.revision else []),
              *(["--trust_remote_code"] if exp.trust_remote_code else [])]
    export = _roma_eval("export", *source, "--router_checkpoint", checkpoint, "--output_path", exported)
    return model_args, [export, exp.lm_eval_command(stage, "vllm", model_args)]


def backend_plan(exp: Experiment, methods: list[str]) -> list[str]:
    """Which engine evaluates each row, and the plain commands of the rows vLLM serves (``--backend vllm``)."""
    lines = []
    for name in methods:
        method = registry.method(name)
        route = vllm_route(method) if exp.backend == "vllm" else None
        how = f"--model {method.lm_eval_model}" if method.lm_eval_model else f"roma-eval {method.verb}"
        if route == "direct":
            lines.append(f"{name}: lm-eval's vllm model on the base model")
        elif route == "export":
            lines.append(f"{name}: routers trained on transformers (roma-eval {method.verb}), exported into a copy of "
                         "the base model, evaluated by lm-eval's vllm model")
        else:
            why = f": {TRANSFORMERS_ONLY.get(method.artefact, 'its own evaluator')}" if exp.backend == "vllm" else ""
            lines.append(f"{name}: on transformers ({how}){why}")
        lines += [f"  {command}" for command in (vllm_evaluation(exp, name)[1] if route else [])]
    return lines


def exported_model(exp: Experiment, stage: str):
    """Where the stage's router checkpoint is exported: ``<stage>/export/<the base model's name>``, so that a report
    names its runs after the base model, as it names the base model's own."""
    from pathlib import Path

    return exp.stage_dir(stage) / EXPORT / Path(exp.pretrained).name


def _export(exp: Experiment, stage: str) -> None:
    """The stage's router checkpoint written into a copy of the base model (reused when complete)."""
    from roma_eval.export import export_model
    from roma_eval.results.provenance import EXPORT_RECORD

    exported = exported_model(exp, stage)
    if not exp.overwrite and (exported / EXPORT_RECORD).is_file():
        logger.info(f"{stage}: reusing {exported} (--overwrite exports again)")
        return
    exp.note_work()
    export_model(exp.pretrained, str(exp.stage_dir(stage) / CHECKPOINT), exported, revision=exp.revision,
                 trust_remote_code=exp.trust_remote_code, overwrite=True)


def base_stage(exp: Experiment) -> list[str]:
    if exp.backend == "vllm":
        model_args, commands = vllm_evaluation(exp, "base")
        exp.evaluate("base", "vllm", model_args)
        return commands
    model_args, model = exp.model_args(), registry.method("base").lm_eval_model
    exp.evaluate("base", model, model_args)
    return [exp.lm_eval_command("base", model, model_args)]


def summary_line(summary: dict) -> str:
    """A training summary as one readable line: "training samples 128, success set size 33, schedule (steps 4, ...)"."""
    def value(v):
        if isinstance(v, dict):
            return f" ({summary_line(v)})"
        if isinstance(v, float):
            return f" {v:.4g}"
        if isinstance(v, list) and len(v) > 6:
            return f" {v[:3]} ... ({len(v)})"
        return f" {v}"
    return ", ".join(f"{key.replace('_', ' ')}{value(v)}" for key, v in summary.items())


def _trained_stage(exp: Experiment, stage: str, train, command: str) -> list[str]:
    """Train with ``train(model, tokenizer, samples, artefact)`` unless an earlier run left a complete artefact
    (its marker file), then evaluate it with the method's lm-eval model; ``command`` is the plain training
    command.  What the artefact is, and which model reads it, is the registry's record of ``stage``."""
    method = registry.method(stage)
    kind, model = registry.ARTEFACTS[method.artefact], method.lm_eval_model
    artefact = exp.stage_dir(stage) / kind.directory
    if exp.overwrite or not (artefact / kind.marker).is_file():
        exp.note_work()
        base_model, tokenizer = exp.load_model()
        summary = train(base_model, tokenizer, exp.training_samples(), artefact).summary
        logger.info(f"{stage}: {summary_line(summary)}")
        del base_model
    else:
        logger.info(f"{stage}: reusing {artefact} (--overwrite retrains it)")
    if exp.backend == "vllm" and vllm_route(method) == "export":
        _export(exp, stage)
        model_args, commands = vllm_evaluation(exp, stage)
        exp.evaluate(stage, "vllm", model_args)
        return [f"{command} --output_path {shlex.quote(str(artefact))}", *commands]
    model_args = exp.model_args(**{kind.model_arg: artefact.resolve()})  # absolute: a report finds it anywhere
    exp.evaluate(stage, model, model_args)
    return [f"{command} --output_path {shlex.quote(str(artefact))}", exp.lm_eval_command(stage, model, model_args)]


def _training_flags(exp: Experiment) -> list[str]:
    return [*_model_flags(exp), "--tasks", ",".join(exp.train_tasks),
            *(["--limit", exp.train_limit] if exp.train_limit else [])]


def tuned_stage(exp: Experiment, stage: str, config: RomaConfig) -> list[str]:
    """Routers trained with ``config`` (RoMA's loop), then `--model roma`."""
    from roma_eval.methods.roma.train import train_roma

    def train(model, tokenizer, samples, checkpoint):
        return train_roma(model, tokenizer, samples, checkpoint, config, base_model=exp.pretrained,
                          revision=exp.revision, overwrite=exp.overwrite, progress=exp.progress)

    command = _roma_eval(registry.method(stage).verb, *_training_flags(exp), *_config_flags(config, RomaConfig()))
    return _trained_stage(exp, stage, train, command)


def router_tuning_stage(exp: Experiment) -> list[str]:
    return tuned_stage(exp, "router_tuning", exp.router_tuning)


def roma_stage(exp: Experiment) -> list[str]:
    return tuned_stage(exp, "roma", exp.roma)


def oracle_stage(exp: Experiment) -> list[str]:
    """The oracle on the evaluation suite (resumes inside the stage, documents as they finish)."""
    from roma_eval.methods.oracle.config import OracleConfig
    from roma_eval.methods.oracle.run import run_oracle
    from roma_eval.methods.oracle.tasks import load_oracle_tasks

    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    tasks = load_oracle_tasks(list(exp.eval_tasks), exp.include_path, limit=exp.limit,
                              chat_template=exp.chat_template_args())
    model, tokenizer = exp.load_model()
    run = run_oracle(model, tokenizer, tasks, exp.stage_dir("oracle"), exp.oracle, model_name=exp.pretrained,
                     overwrite=exp.overwrite, progress=exp.progress)
    if run.resumed_complete:
        logger.info(f"oracle: reusing the oracle results in {run.results_file.parent} (--overwrite recomputes them)")
    else:
        exp.note_work()
    exp.results["oracle"] = run.results
    return [_roma_eval("oracle", *_model_flags(exp), "--tasks", ",".join(exp.eval_tasks),
                       *(["--limit", exp.limit] if exp.limit else []),
                       *_config_flags(exp.oracle, OracleConfig()), *exp.chat_template_flags(),
                       "--output_path", exp.stage_dir("oracle"))]


def c3po_stage(exp: Experiment) -> list[str]:
    """C3PO's reference set (built once) and `--model c3po` on the evaluation suite."""
    from roma_eval.methods.c3po import ReferenceBuild, build_reference, load_reference

    reference = exp.stage_dir("c3po") / REFERENCE
    if exp.overwrite or not (reference / "reference.json").is_file():
        exp.note_work()
        model, tokenizer = exp.load_model()
        build_reference(model, tokenizer, exp.training_samples(), reference,
                        ReferenceBuild(base_model=exp.pretrained, revision=exp.revision), overwrite=exp.overwrite,
                        progress=exp.progress)
        del model
    else:
        logger.info(f"c3po: reusing {reference} (--overwrite rebuilds it)")
    meta = load_reference(reference).metadata
    logger.info(f"c3po: {meta['n_references']} of {meta['n_training_samples']} training samples answered "
                f"correctly by the base model; critical layers {meta['layers']}")
    model_args = exp.model_args(reference=reference.resolve()) + (f",{exp.c3po_args}" if exp.c3po_args else "")
    exp.evaluate("c3po", "c3po", model_args)
    build = _roma_eval("c3po", "build-reference", *_model_flags(exp), "--tasks", ",".join(exp.train_tasks),
                       *(["--limit", exp.train_limit] if exp.train_limit else []), "--output_path", reference)
    return [build, exp.lm_eval_command("c3po", "c3po", model_args)]


def report_stage(exp: Experiment, methods: list[str], title: str, paper_model: str | None = None) -> list[str]:
    """The report over the stages that ran (rebuilt on every run: it costs seconds)."""
    from roma_eval.report.stages import write_stage_report

    out = exp.stage_dir("report")
    exp.note_work()
    written = write_stage_report(exp.output, out, methods=methods, title=title, paper_model=paper_model,
                                 overwrite=True)
    logger.info(f"report: {len(written)} files in {out}/ (report.md, report.html, report.tex, plots/)")
    labelled = [f"{m}={exp.stage_dir(m)}" for m in methods if exp.stage_dir(m).is_dir()]
    return [_roma_eval("report", *labelled, *(["--paper_model", paper_model] if paper_model else []),
                       "--columns", "present", "--output_path", out, "--overwrite")]


def evaluation_of(exp: Experiment, stage: str):
    """The newest results file of the stage's own evaluation (its row's lm-eval model; an oracle run of the training
    mixture beside it is not it), or None."""
    from roma_eval.results import results_files

    model = registry.method(stage).lm_eval_model
    found = [path for path in results_files(exp.stage_dir(stage))
             if json.loads(path.read_text(encoding="utf-8")).get("config", {}).get("model") == model]
    return max(found, key=lambda path: path.name) if found else None


def routing_stage(exp: Experiment, methods: list[str]) -> list[str]:
    """The routing analysis (``roma_eval.analysis``, `roma-eval analyze`) of every stage in ``methods`` that has one
    routing (``registry.ROUTED``), beside its lm-eval results, in one load of the base model; an analysis already
    there with the same settings is kept."""
    from roma_eval.analysis import AnalysisConfig, NotAnalysable, Where, analyse_runs, read_run

    config = AnalysisConfig(seed=exp.seed, batch_size=exp.batch_size)
    try:  # runs through a chat template, a model without routers (a base-only experiment): no routing stage
        runs = [read_run(results) for stage in methods if stage in registry.ROUTED
                if (results := evaluation_of(exp, stage)) is not None]
        planned = analyse_runs(runs, config, Where(tuple(exp.include_path), exp.device, exp.progress),
                               exp.overwrite) if runs else []
    except NotAnalysable as exc:
        logger.info(f"routing: not analysed ({exc})")
        return []
    if not runs:
        return []
    if any(item.document is not None for item in planned):
        exp.note_work()
    else:
        logger.info("routing: reusing the routing analyses beside the runs (--overwrite recomputes them)")
    flags = [flag for path in exp.include_path for flag in ("--include_path", path)]
    flags += ["--seed", exp.seed] if exp.seed else []
    return [_roma_eval("analyze", *(run.directory for run in runs), *flags, "--batch_size", exp.batch_size)]


def icl_stage(exp: Experiment) -> list[str]:
    """The base model with retrieved demonstrations, evaluated by lm-eval (``methods.icl``)."""
    from roma_eval.methods.icl import IclConfig, RunSettings, run_icl

    out = exp.stage_dir("icl")
    if exp.overwrite or not any(out.rglob("results_*.json")):
        exp.note_work()
        model, tokenizer = exp.load_model()
        settings = RunSettings(out, exp.pretrained, include_path=exp.include_path, limit=exp.limit,
                               overwrite=exp.overwrite, chat_template=exp.chat_template_args())
        run = run_icl(model, tokenizer, exp.eval_tasks, settings, IclConfig(), train_tasks=exp.train_tasks,
                      progress=exp.progress)
        exp.results["icl"] = run.results
        del model
    else:
        logger.info(f"icl: reusing the results in {out} (--overwrite recomputes them)")
        exp.results["icl"] = json.loads(max(out.rglob("results_*.json")).read_text(encoding="utf-8"))
    return [_roma_eval("icl", *_model_flags(exp), "--tasks", ",".join(exp.eval_tasks), "--train_tasks",
                       ",".join(exp.train_tasks), *(["--limit", exp.limit] if exp.limit else []),
                       *exp.chat_template_flags(), "--output_path", out)]


def oracle_tuning_stage(exp: Experiment) -> list[str]:
    """The oracle's routing of the training samples (``--split train --save_routing``), then routers trained
    towards it with RoMA's loop and budget (``methods.oracle_tuning``), then `--model roma`."""
    from dataclasses import replace

    from roma_eval.methods.oracle.run import run_oracle
    from roma_eval.methods.oracle.tasks import load_oracle_tasks
    from roma_eval.methods.oracle_tuning import OracleTuningConfig, train_oracle_tuning

    targets = oracle_tuning_targets(exp)
    oracle = replace(exp.oracle, save_routing=True)
    tasks = load_oracle_tasks(list(exp.train_tasks), exp.include_path, "train", exp.train_limit)
    model, tokenizer = exp.load_model()
    if not run_oracle(model, tokenizer, tasks, targets, oracle, model_name=exp.pretrained, overwrite=exp.overwrite,
                      progress=exp.progress).resumed_complete:
        exp.note_work()
    del model
    config = oracle_tuning_config(exp)

    def train(model, tokenizer, samples, checkpoint):
        return train_oracle_tuning(model, tokenizer, samples, checkpoint, config, base_model=exp.pretrained,
                                   revision=exp.revision, overwrite=exp.overwrite, progress=exp.progress)

    oracle_command = _roma_eval("oracle", *_training_flags(exp), "--split", "train", "--save_routing",
                                *_config_flags(oracle, type(oracle)()), "--output_path", targets)
    command = _roma_eval("oracle-tuning", *_training_flags(exp), "--oracle_routing", targets,
                         *_config_flags(config, OracleTuningConfig(oracle_routing=str(targets))))
    return [oracle_command, *_trained_stage(exp, "oracle_tuning", train, command)]


def oracle_tuning_targets(exp: Experiment):
    """Where the Oracle Tuning stage's oracle run of the training mixture goes (its --oracle_routing)."""
    return exp.stage_dir("oracle_tuning") / "oracle_train"


def oracle_tuning_config(exp: Experiment):
    """Oracle Tuning's config: the experiment's settings for the row, towards the stage's own oracle run."""
    from roma_eval.methods.oracle_tuning import OracleTuningConfig

    return OracleTuningConfig(oracle_routing=str(oracle_tuning_targets(exp)), **{"seed": exp.seed, **exp.oracle_tuning})


def dense_bp_stage(exp: Experiment) -> list[str]:
    """Routers trained with dense router gradients (``methods.dense_bp``), then `--model roma`."""
    from roma_eval.methods.dense_bp import DenseBPConfig, train_dense_bp

    def train(model, tokenizer, samples, checkpoint):
        return train_dense_bp(model, tokenizer, samples, checkpoint, exp.dense_bp, base_model=exp.pretrained,
                              revision=exp.revision, overwrite=exp.overwrite, progress=exp.progress)

    command = _roma_eval("dense-bp", *_training_flags(exp), *_config_flags(exp.dense_bp, DenseBPConfig()))
    return _trained_stage(exp, "dense_bp", train, command)


def peft_stage(exp: Experiment, method: str) -> list[str]:
    """A prefix- or prompt-tuning adapter (peft) on the training mixture, then `--model hf-peft`."""
    from roma_eval.methods.peft_tuning import PeftTuningConfig, train_peft_tuning

    config = peft_config(exp, method)

    def train(model, tokenizer, samples, adapter):
        return train_peft_tuning(model, tokenizer, samples, adapter, config, base_model=exp.pretrained,
                                 revision=exp.revision, overwrite=exp.overwrite, progress=exp.progress)

    command = _roma_eval(registry.method(method).verb, *_training_flags(exp),
                         *_config_flags(config, PeftTuningConfig(method=method)))
    return _trained_stage(exp, method, train, command)


def peft_config(exp: Experiment, method: str):
    """A peft row's config: the experiment's settings for the peft rows (the shared budget), the row's method."""
    from roma_eval.methods.peft_tuning import PeftTuningConfig

    return PeftTuningConfig(method=method, **{"seed": exp.seed, **exp.peft})


def _c3po_problem(model) -> str | None:
    from roma_eval.routing.partial import prefix_cache_exact, prefix_cache_problem

    if prefix_cache_exact(model, 1):  # exact for prompts within any sliding window: C3PO checks their lengths
        return None
    return f"C3PO needs a reusable prefix cache: {prefix_cache_problem(model)}"


def _dense_bp_problem(model) -> str | None:
    from roma_eval.routing.dense import dense_gradient_problem

    return dense_gradient_problem(model)


# What a stage needs of the model beyond a supported MoE (``_<name>_problem``): model -> None, or why the method
# cannot run on it.
MODEL_CHECKS = {name: check for name in registry.NAMES if (check := globals().get(f"_{name}_problem"))}


def check_methods(exp: Experiment, methods: list[str]) -> None:
    """Refuse, in one line and before any stage runs or anything is written, a model that some requested method
    cannot run on: every stage but base loads it as a supported MoE (``routing.routers``), and C3PO and Dense BP
    need more (``MODEL_CHECKS``).  Reads the model's skeleton (no weights)."""
    from roma_eval.routing import routers

    if set(methods) <= {"base"}:
        return
    model = exp.model_skeleton()
    routers(model)  # an unsupported family or a dense model: the one-line error every stage would give
    refused = {m: why for m in methods if m in MODEL_CHECKS and (why := MODEL_CHECKS[m](model))}
    if refused:
        raise RomaEvalError(f"{'; '.join(f'{m}: {why}' for m, why in refused.items())}; leave "
                            f"{', '.join(refused)} out of --methods for {exp.pretrained}")


def _stage(method: registry.Method):
    if method.artefact == registry.PEFT_ADAPTER:
        return functools.partial(peft_stage, method=method.name)
    return globals()[f"{method.name}_stage"]


STAGES = {name: _stage(registry.method(name)) for name in registry.RUN_ORDER}
