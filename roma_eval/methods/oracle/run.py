"""Run the oracle over lm-eval tasks through lm-eval itself, resumably.

``run_oracle`` hands ``lm_eval.simple_evaluate`` an ``OracleLM`` (lm_eval.py): lm-eval builds the requests,
the oracle answers them at each document's oracle routing, and lm-eval computes every metric, filter and
group aggregate (MMLU's size-weighted total included) and writes the results and samples files through
its ``EvaluationTracker``, in ``OUT/<model_name_sanitized>/``, exactly as ``lm_eval --output_path OUT
--log_samples`` does.  The same documents are then evaluated once more with the base answers (iterate 0,
kept from the same descent), so the base scores in the ``oracle`` block are lm-eval's aggregation too.

``solve_choices`` and ``solve_generations`` are the per-batch work: the batched descent (descent.py) and,
for generation, the answer-targeted descent with real generations (generation.py).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch.nn.utils.rnn import pad_sequence

from roma_eval.devices import input_device
from roma_eval.errors import RomaEvalError
from roma_eval.methods.oracle.config import OracleConfig
from roma_eval.methods.oracle.descent import Outcome, descend
from roma_eval.methods.oracle.generation import (
    answer_targets,
    generation_settings,
    prompt_ids,
    steered_generation,
    steered_positions,
    target_losses,
    target_tokens,
    teacher_forced_batch,
)
from roma_eval.methods.oracle.store import OracleStore
from roma_eval.methods.oracle.tasks import (
    OracleTasks,
    choice_sample,
    filter_ensembles,
    judge_generation,
    marks,
    reported_metrics,
)
from roma_eval.routing import resolve_layers, router_fingerprint
from roma_eval.scoring import build_choice_batch
from roma_eval.storage import save_lm_eval_outputs


@dataclass
class OracleRun:
    results_file: Path
    results: dict  # lm-eval's results JSON, with the ``oracle`` block
    resumed_complete: bool  # the directory already held this complete run: nothing was computed


def _round(values, digits: int = 6):
    return [round(float(v), digits) for v in values]


def _routing(before, after, variables, config: OracleConfig) -> dict | None:
    """The routing at the --tokens positions, base and oracle; with --positions tokens also the variables that
    give it (with every position steered they are a slot per position, too large to keep)."""
    if before is None or after is None:
        return None
    out = {"base": torch.round(before, decimals=6).tolist(), "oracle": torch.round(after, decimals=6).tolist()}
    if config.positions == "tokens":
        out["variables"] = torch.round(variables, decimals=6).tolist()
    return out


def batches(documents: list, size: int, task) -> list[list]:
    """Documents (each a list of its lm-eval requests) in batches of ``size``, similar lengths together (less
    padding: every step runs the batch's longest answer, the prefix cache its longest context).  Longest
    first, like lm-eval, so memory runs out at once if at all."""
    if task.OUTPUT_TYPE == "generate_until":
        def length(instances):
            return -len(instances[0].args[0])
    else:
        def length(instances):
            return (-max(len(i.args[1]) for i in instances), -max(len(i.args[0]) for i in instances))
    ordered = sorted(documents, key=length)
    return [ordered[i:i + size] for i in range(0, len(ordered), size)]


def _loss_fields(losses: list[float], reported: int) -> dict:
    if not losses:
        return {"loss_before": None, "loss_after": None, "loss_min": None, "losses": []}
    return {"loss_before": losses[0], "loss_after": losses[reported], "loss_min": min(losses),
            "losses": _round(losses)}


def solve_choices(lm, task, documents: Sequence[list]) -> list[dict]:
    """One batch of a multiple-choice task: per document, the (log-likelihood, is_greedy) pairs at the reported
    iterate (``answers``) and at iterate 0 (``base``), and the descent's record (``oracle``)."""
    config = lm.oracle_config
    samples = [choice_sample(task, instances) for instances in documents]
    batch = build_choice_batch(lm.tokenizer, samples, lm.max_length, lm.add_bos_token)
    outcomes: list[Outcome] = descend(lm.model, batch, config, lm.oracle_layers, metrics=reported_metrics(task))
    records = []
    for outcome in outcomes:
        records.append({
            "answers": [[s, g] for s, g in zip(outcome.after.scores, outcome.after.greedy)],
            "base": [[s, g] for s, g in zip(outcome.before.scores, outcome.before.greedy)],
            "oracle": {"steps": outcome.steps, "converged": outcome.converged,
                       "reported_step": outcome.reported_step, **_loss_fields(outcome.losses, outcome.reported_step)},
            "routing": _routing(outcome.before.routing, outcome.after.routing, outcome.after.variables, config)
            if config.save_routing else None})
    return records


@dataclass
class _Check:
    """A real generation at one iterate of a generation sample's descent."""

    step: int
    text: str
    right: dict[str, bool]  # "metric,filter" -> full marks
    loss: float | None
    variables: torch.Tensor | None
    routing: torch.Tensor | None


def _choose_targets(lm, task, items, variables, ensembles):
    """Per sample (index, request, last generation, prompt ids, (stop sequences, max_gen_toks)): its target R + A
    (``generation.answer_targets``, the lowest loss at the routing ``variables`` among the equally right ones)
    and its tokens."""
    config, options, owners = lm.oracle_config, [], []
    for j, (_, instance, text, _prompt, (until, max_gen_toks)) in enumerate(items):
        for target in answer_targets(task, instance.doc, text, until, ensembles):
            options.append((target, target_tokens(lm.tokenizer, target, max_gen_toks)))
            owners.append(j)
    owner = torch.tensor(owners)
    if len(options) > len(items):  # a choice to make: score every option in one pass
        batch, prompt_last = teacher_forced_batch([items[j][3] for j in owners], [t for _, t in options],
                                                  lm.tokenizer.pad_token_id or 0)
        losses = target_losses(lm.model, batch, steered_positions(config, prompt_last),
                               None if variables is None else variables[owner], lm.oracle_layers, config.variables,
                               config.for_device(input_device(lm.model)).batch_size)
    else:
        losses = torch.zeros(len(options))
    chosen = [min((k for k in range(len(options)) if owners[k] == j), key=lambda k: float(losses[k]))
              for j in range(len(items))]
    return [options[k][0] for k in chosen], [options[k][1] for k in chosen]


def solve_generations(lm, task, documents: Sequence[list]) -> list[dict]:
    """One batch of a generation task (generation.py): the base model's own greedy answer first; a document
    with full marks under every filter pipeline keeps it (0 steps).  The others descend on the gold final
    answer after their own reasoning, judged by real generations, within ``max_steps`` gradient steps."""
    config, layers = lm.oracle_config, lm.oracle_layers
    instances = [d[0] for d in documents]
    ensembles = filter_ensembles(task)

    def judge(instance, text):
        return marks(judge_generation(task, instance.doc, text, ensembles))

    checks = [[_Check(0, text, judge(i, text), None, None, None)] for i, text in zip(instances,
                                                                                     lm.lm_eval_generate(instances))]
    losses: list[list[float]] = [[] for _ in instances]
    targets: list[tuple[str, str] | None] = [None] * len(instances)
    used = [0] * len(instances)
    variables: list[torch.Tensor | None] = [None] * len(instances)
    base_routing: list[torch.Tensor | None] = [None] * len(instances)
    converged = [all(c[0].right.values()) for c in checks]
    active = [i for i, right in enumerate(converged) if not right]
    settings = [generation_settings(lm, i) for i in instances]
    prompts = {i: prompt_ids(lm, instances[i]) for i in active}
    while active:
        spent = used[active[0]]
        group = [i for i in active if used[i] == spent]  # samples with the same budget left descend together
        # A sample's variables have a slot per steered prompt token: prompts of different lengths are padded.
        initial = None if spent == 0 else pad_sequence([variables[i] for i in group], batch_first=True)
        found, tokens = _choose_targets(lm, task, [(i, instances[i], checks[i][-1].text, prompts[i], settings[i])
                                                   for i in group], initial, ensembles)
        batch, prompt_last = teacher_forced_batch([prompts[i] for i in group], tokens,
                                                  lm.tokenizer.pad_token_id or 0)
        # Iterate 0 of a round was judged already (the base answer, or a generation that was wrong): the round
        # stops at the first later iterate whose target is greedy, and a real generation judges it.
        outcomes = descend(lm.model, batch, replace(config, max_steps=config.max_steps - spent, stable=1), layers,
                           generative=True, last_context=prompt_last, initial=initial,
                           min_steps=1)
        for i, target, outcome in zip(group, found, outcomes):
            targets[i] = (target.prefix, target.answer)
            losses[i] = losses[i][:spent] + outcome.losses
            if spent == 0:
                checks[i][0].loss, checks[i][0].variables = outcome.losses[0], outcome.before.variables
                checks[i][0].routing = base_routing[i] = outcome.before.routing
            if not outcome.converged:  # the budget is spent
                used[i] = config.max_steps
                continue
            step = spent + outcome.reported_step
            text = steered_generation(lm.lm_eval_generate, lm, instances[i], outcome.after.variables, layers, config)
            checks[i].append(_Check(step, text, judge(instances[i], text), outcome.losses[outcome.reported_step],
                                    outcome.after.variables, outcome.after.routing))
            used[i], variables[i] = step, outcome.after.variables
            converged[i] = all(checks[i][-1].right.values())
        active = [i for i in active if not converged[i] and used[i] < config.max_steps]
    records = []
    for i in range(len(instances)):
        base = checks[i][0]
        if converged[i]:
            reported = checks[i][-1]
        else:
            # The best real generation: eligible (keeps every metric right at the base answer), then more metrics
            # right, then the lowest loss.  Iterate 0 is eligible, so the oracle never reports below base.
            def rank(check, base=base):
                eligible = all(check.right[k] or not base.right[k] for k in base.right)
                return eligible, sum(check.right.values()), -(check.loss if check.loss is not None else math.inf)
            reported = max(checks[i], key=rank)
        steps = used[i] if not converged[i] else reported.step
        record = {"answers": reported.text, "base": base.text,
                  "oracle": {"steps": steps, "converged": converged[i], "reported_step": reported.step,
                             **_loss_fields(losses[i], reported.step), "loss_after": reported.loss,
                             "generations": len(checks[i]),
                             "target": None if targets[i] is None else {"prefix": targets[i][0],
                                                                        "answer": targets[i][1]}},
                  "routing": None}
        if config.save_routing and targets[i] is not None:
            record["routing"] = _routing(base_routing[i], reported.routing, reported.variables, config)
        records.append(record)
    return records


def _settings_args(model_name: str, config: OracleConfig) -> dict:
    return {"pretrained": model_name, **config.settings()}


def convergence(records: list[dict]) -> dict:
    """A task's convergence statistics from its documents' records."""
    steps = [r["oracle"]["steps"] for r in records]
    converged = [r["oracle"]["steps"] for r in records if r["oracle"]["converged"]]
    return {"samples": len(steps), "converged": len(converged), "converged_share": len(converged) / len(steps),
            "mean_steps": statistics.fmean(steps),
            "mean_steps_converged": statistics.fmean(converged) if converged else None,
            "median_steps": statistics.median(steps),
            "seconds": sum(r["oracle"].get("seconds", 0.0) for r in records)}


def _annotate(samples: dict, base_samples: dict, store: OracleStore) -> None:
    """Add to each of lm-eval's sample lines an ``oracle`` object: the descent's record and the line's metrics
    at iterate 0 (``before``, from the base evaluation of the same document and filter)."""
    for task, lines in samples.items():
        before = {(line["doc_id"], line["filter"]): {m: line[m] for m in line["metrics"]}
                  for line in base_samples.get(task, [])}
        documents = store.documents(task)
        for line in lines:
            record = documents[line["doc_id"]]
            line["oracle"] = {**record["oracle"], "before": before.get((line["doc_id"], line["filter"]), {})}


def run_oracle(model, tokenizer, tasks: OracleTasks, out_dir, config: OracleConfig | None = None, *,
               model_name: str, overwrite: bool = False, progress: bool = True,
               chat_template: dict | None = None) -> OracleRun:
    """The oracle on ``tasks`` (``load_oracle_tasks``) with ``model``, written under ``out_dir`` as lm-eval
    writes ``--output_path out_dir``.  Resumable: finished documents are stored per batch and not recomputed
    by a rerun with the same settings; a complete run is returned as it is.  ``chat_template``: lm-eval's
    apply_chat_template / fewshot_as_multiturn keywords (commands.options.chat_template_args)."""
    import lm_eval
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.utils import sanitize_model_name

    from roma_eval import __version__
    from roma_eval.devices import process_state
    from roma_eval.methods.oracle.lm_eval import OracleLM

    dist = process_state()  # one process, or one of `accelerate launch`: lm-eval shards the documents
    config = (config or OracleConfig()).for_device(input_device(model))
    layers = resolve_layers(model, config.layers)
    identity = {"model": model_name, "model_type": model.config.model_type,
                "base_router_fingerprint": router_fingerprint(model), "tasks": list(tasks.names),
                "split": tasks.split, "limit": tasks.limit, "settings": config.settings()}
    directory = Path(out_dir) / sanitize_model_name(model_name)
    with dist.main_process_first():  # the main process clears (--overwrite) and creates; the others then open it
        store = OracleStore(directory, identity, overwrite and dist.is_main_process, rank=dist.process_index)
    if store.complete:
        return OracleRun(store.results_file, json.loads(store.results_file.read_text(encoding="utf-8")), True)
    if dist.is_main_process:
        store.clear_outputs()
    dist.wait_for_everyone()
    lm = OracleLM(model, tokenizer, tasks.tasks, config, layers, store, progress)
    tracker = EvaluationTracker(output_path=str(out_dir))
    results = lm_eval.simple_evaluate(model=lm, model_args=_settings_args(model_name, config), tasks=tasks.items,
                                      task_manager=tasks.manager, limit=tasks.limit, log_samples=True,
                                      evaluation_tracker=tracker, torch_random_seed=config.seed,
                                      **(chat_template or {}))
    # The base scores of the same documents, aggregated by lm-eval: every answer is iterate 0, from the store.
    lm.view = "base"
    fewshot_seed = results["config"]["fewshot_seed"] if results is not None else None
    fewshot_seed = dist_broadcast(fewshot_seed, dist)
    for task in tasks.tasks.values():
        task.set_fewshot_seed(seed=fewshot_seed)  # the same few-shot examples again
    base = lm_eval.evaluator.evaluate(lm=lm, task_dict=tasks.loaded, limit=tasks.limit, log_samples=True,
                                      **(chat_template or {}))
    lm.view = "oracle"
    dist.wait_for_everyone()  # every process's documents are in the store
    if dist.is_main_process:
        store.refresh()
        samples = results.pop("samples")
        _annotate(samples, base["samples"], store)
        results["config"]["model"] = "oracle"
        results["oracle"] = {
            "config": config.to_dict(), "layers": layers, "split": tasks.split,
            "base_router_fingerprint": identity["base_router_fingerprint"], "roma_eval_version": __version__,
            "torch_version": torch.__version__, "seed": config.seed, "processes": dist.num_processes,
            "base": base["results"],
            "convergence": {name: convergence(list(store.documents(name).values())) for name in sorted(tasks.tasks)},
        }
        save_lm_eval_outputs(tracker, results, samples)  # a failed write leaves no cut-off file
        results_file = store.directory / f"results_{tracker.date_id}.json"
        if not results_file.is_file():
            raise RomaEvalError(f"lm-eval did not write {results_file}; check that {store.directory} is writable")
        store.finish(results_file)
    dist.wait_for_everyone()
    if not dist.is_main_process:  # the main process wrote the run: read what it wrote
        store = OracleStore(directory, identity, rank=dist.process_index)
    results_file = store.results_file
    return OracleRun(results_file, json.loads(results_file.read_text(encoding="utf-8")), False)


def dist_broadcast(value, dist):
    """``value`` of the main process, in every process."""
    if dist.num_processes == 1:
        return value
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([value])[0]


def _leaves(name: str, group_subtasks: dict) -> list[str]:
    children = group_subtasks.get(name)
    return [leaf for child in children for leaf in _leaves(child, group_subtasks)] if children else [name]


def _scores(metrics: dict) -> dict[str, float]:
    """"metric,filter" -> value of a task's or group's lm-eval results entry, standard errors and NaN left out."""
    return {key: value for key, value in metrics.items()
            if "," in key and "_stderr," not in key and isinstance(value, (int, float)) and not math.isnan(value)}


def _gap_rows(name: str, results: dict) -> list[str]:
    """The tasks and groups the gap table shows for ``name``: itself when lm-eval scored it (a task, or a group
    with an aggregate such as MMLU's total), else its members', in the group's order (a group without an aggregate,
    such as roma_paper, whose members are the benchmarks)."""
    if _scores(results["results"].get(name, {})):
        return [name]
    return [row for child in results.get("group_subtasks", {}).get(name, []) for row in _gap_rows(child, results)]


def gap_table(results: dict) -> list[str]:
    """The oracle against base, as lm-eval's ``make_table`` lays out results (a Markdown table): per task or group
    and metric, base -> oracle in %, the gap in points, and the convergence of its documents.  Top-level tasks
    and groups that lm-eval scored are rows; a group it did not score stands for its members (``_gap_rows``)."""
    from pytablewriter import MarkdownTableWriter
    from typepy import String

    oracle, subtasks = results["oracle"], results.get("group_subtasks", {})
    nested = {child for children in subtasks.values() for child in children}
    top = [name for name in results["results"] if name not in nested]
    rows = []
    for task in [row for name in top for row in _gap_rows(name, results)]:
        stats = [oracle["convergence"][leaf] for leaf in _leaves(task, subtasks) if leaf in oracle["convergence"]]
        samples = sum(s["samples"] for s in stats)
        converged = sum(s["converged"] for s in stats)
        mean_steps = sum(s["mean_steps"] * s["samples"] for s in stats) / samples if samples else float("nan")
        name, convergence = task, [f"{converged}/{samples}", f"{mean_steps:.1f}"]
        for key, value in sorted(_scores(results["results"][task]).items()):
            base = oracle["base"].get(task, {}).get(key)
            if not isinstance(base, (int, float)):
                continue
            metric, _, filter_name = key.partition(",")
            rows.append([name, filter_name, metric, f"{100 * base:.2f}", f"{100 * value:.2f}",
                         f"{100 * (value - base):+.2f}", *convergence])
            name, convergence = "", ["", ""]  # once per task, as make_table names a task once
    if not rows:
        return ["(no metric that both the oracle and base have)"]
    headers = ["Tasks", "Filter", "Metric", "Base %", "Oracle %", "Gap (points)", "Converged", "Mean steps"]
    # The cells as written (pytablewriter would otherwise re-read "+1.50" as a number and drop its sign).
    writer = MarkdownTableWriter(headers=headers, value_matrix=rows, type_hints=[String] * len(headers))
    return writer.dumps().rstrip("\n").splitlines()
