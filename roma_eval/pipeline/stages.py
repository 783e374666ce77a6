"""The stages of the paper's experiment (arXiv 2511.07419, Table 1), each a function of an ``Experiment``.

    base           the base model through lm-eval (`--model hf`)
    router_tuning  routers trained with the task loss only, then `--model roma` (the paper's Router Tuning)
    roma           routers trained with RoMA (Eqs. 7-9), then `--model roma`
    oracle         per-sample routing descent with the gold label, written by lm-eval
    c3po           C3PO's reference set on the training mixture, then `--model c3po`
    report         report.md / .html / .tex and plots in ``output/report``, the paper's rows beside ours

Every stage writes lm-eval's native outputs under ``output/<stage>/``, skips what is already complete, and
returns the plain commands that compute the same thing (recorded in the manifest).
"""

from __future__ import annotations

import logging
import shlex

from roma_eval.methods.roma.config import RomaConfig
from roma_eval.pipeline.experiment import Experiment

logger = logging.getLogger(__name__)

CHECKPOINT, REFERENCE = "router_checkpoint", "reference"


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


def base_stage(exp: Experiment) -> list[str]:
    model_args = exp.model_args()
    exp.evaluate("base", "hf", model_args)
    return [exp.lm_eval_command("base", "hf", model_args)]


def tuned_stage(exp: Experiment, stage: str, config: RomaConfig) -> list[str]:
    """Train routers with ``config`` unless an earlier run left the checkpoint, then evaluate `--model roma`."""
    from roma_eval.methods.roma.train import train_roma

    checkpoint = exp.stage_dir(stage) / CHECKPOINT
    if exp.overwrite or not (checkpoint / "router_config.json").is_file():
        model, tokenizer = exp.load_model()
        result = train_roma(model, tokenizer, exp.training_samples(), checkpoint, config, base_model=exp.pretrained,
                            revision=exp.revision, overwrite=exp.overwrite, progress=exp.progress)
        s = result.summary
        logger.info(f"{stage}: {s['training_samples']} training samples, success set {s['success_set_size']} "
                    f"(base train acc {100 * s['base_train_accuracy']:.1f}%), {s['steps']} steps, "
                    f"layers {s['tuned_layers']}")
        del model
    else:
        logger.info(f"{stage}: reusing {checkpoint} (--overwrite retrains it)")
    model_args = exp.model_args(router_checkpoint=checkpoint)
    exp.evaluate(stage, "roma", model_args)
    train = _roma_eval("train", *_model_flags(exp), "--tasks", ",".join(exp.train_tasks),
                       *(["--limit", exp.train_limit] if exp.train_limit else []),
                       *_config_flags(config, RomaConfig()), "--output_path", checkpoint)
    return [train, exp.lm_eval_command(stage, "roma", model_args)]


def router_tuning_stage(exp: Experiment) -> list[str]:
    return tuned_stage(exp, "router_tuning", exp.router_tuning)


def roma_stage(exp: Experiment) -> list[str]:
    return tuned_stage(exp, "roma", exp.roma)


def oracle_stage(exp: Experiment) -> list[str]:
    """The oracle on the evaluation suite (resumes inside the stage, documents as they finish)."""
    from roma_eval.methods.oracle.config import OracleConfig
    from roma_eval.methods.oracle.run import gap_table, run_oracle
    from roma_eval.methods.oracle.tasks import load_oracle_tasks

    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    tasks = load_oracle_tasks(list(exp.eval_tasks), exp.include_path, limit=exp.limit)
    model, tokenizer = exp.load_model()
    run = run_oracle(model, tokenizer, tasks, exp.stage_dir("oracle"), exp.oracle, model_name=exp.pretrained,
                     overwrite=exp.overwrite, progress=exp.progress)
    if run.resumed_complete:
        logger.info(f"oracle: reusing the oracle results in {run.results_file.parent} (--overwrite recomputes them)")
    logger.info("\n".join(gap_table(run.results)))
    exp.results["oracle"] = run.results
    return [_roma_eval("oracle", *_model_flags(exp), "--tasks", ",".join(exp.eval_tasks),
                       *(["--limit", exp.limit] if exp.limit else []),
                       *_config_flags(exp.oracle, OracleConfig()), "--output_path", exp.stage_dir("oracle"))]


def c3po_stage(exp: Experiment) -> list[str]:
    """C3PO's reference set (built once) and `--model c3po` on the evaluation suite."""
    from roma_eval.methods.c3po import build_reference, load_reference

    reference = exp.stage_dir("c3po") / REFERENCE
    if exp.overwrite or not (reference / "reference.json").is_file():
        model, tokenizer = exp.load_model()
        build_reference(model, tokenizer, exp.training_samples(), reference, base_model=exp.pretrained,
                        revision=exp.revision, overwrite=exp.overwrite, progress=exp.progress)
        del model
    else:
        logger.info(f"c3po: reusing {reference} (--overwrite rebuilds it)")
    meta = load_reference(reference).metadata
    logger.info(f"c3po: {meta['n_references']} of {meta['n_training_samples']} training samples answered "
                f"correctly by the base model; critical layers {meta['layers']}")
    model_args = exp.model_args(reference=reference) + (f",{exp.c3po_args}" if exp.c3po_args else "")
    exp.evaluate("c3po", "c3po", model_args)
    build = _roma_eval("c3po", "build-reference", *_model_flags(exp), "--tasks", ",".join(exp.train_tasks),
                       *(["--limit", exp.train_limit] if exp.train_limit else []), "--output_path", reference)
    return [build, exp.lm_eval_command("c3po", "c3po", model_args)]


def report_stage(exp: Experiment, methods: list[str], title: str, paper_model: str | None = None) -> list[str]:
    """The report over the stages that ran (rebuilt on every run: it costs seconds)."""
    from roma_eval.report.stages import write_stage_report

    out = exp.stage_dir("report")
    written = write_stage_report(exp.output, out, methods=methods, title=title, paper_model=paper_model,
                                 overwrite=True)
    logger.info(f"report: {len(written)} files in {out}/ (report.md, report.html, report.tex, plots/)")
    labelled = [f"{m}={exp.stage_dir(m)}" for m in methods if exp.stage_dir(m).is_dir()]
    return [_roma_eval("report", *labelled, *(["--paper_model", paper_model] if paper_model else []),
                       "--columns", "present", "--output_path", out, "--overwrite")]


STAGES = {"base": base_stage, "router_tuning": router_tuning_stage, "roma": roma_stage, "oracle": oracle_stage,
          "c3po": c3po_stage}
