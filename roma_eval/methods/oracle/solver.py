"""The oracle's per-batch work: one task's documents (each the list of requests lm-eval built for it) in, one record
per document out.  ``OracleSolver`` holds the model, its tokenizer, the oracle config, the steered layers and
lm-eval's encoding and generation (``LMSettings``, values and plain callables): it knows nothing of lm-eval's model
classes (``lm_eval.OracleLM`` asks it about the documents its store lacks).

  - ``choices``: a multiple-choice batch descends together (descent.py), from the base routing, with the gold label;
  - ``generations``: a generation batch, the base model's own greedy answers first, then the answer-targeted descent
    judged by real generations (generation.py).

A record holds what lm-eval is answered with at the reported iterate (``answers``) and at iterate 0 (``base``), the
descent's account (``oracle``) and, with ``--save_routing``, the routing at the --tokens positions (``routing``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch
from torch.nn.utils.rnn import pad_sequence

from roma_eval.devices import input_device
from roma_eval.methods.oracle.config import OracleConfig
from roma_eval.methods.oracle.descent import GenerationRound, Outcome, descend
from roma_eval.methods.oracle.generation import (
    LMSettings,
    Target,
    answer_targets,
    generation_settings,
    prompt_ids,
    steered_generation,
    steered_positions,
    target_losses,
    target_tokens,
    teacher_forced_batch,
)
from roma_eval.methods.oracle.tasks import (
    choice_sample,
    filter_ensembles,
    judge_generation,
    marks,
    reported_metrics,
)
from roma_eval.scoring import build_choice_batch


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


def _loss_fields(losses: list[float], reported: int) -> dict:
    if not losses:
        return {"loss_before": None, "loss_after": None, "loss_min": None, "losses": []}
    return {"loss_before": losses[0], "loss_after": losses[reported], "loss_min": min(losses),
            "losses": _round(losses)}


def _choice_record(outcome: Outcome, config: OracleConfig) -> dict:
    return {"answers": [[s, g] for s, g in zip(outcome.after.scores, outcome.after.greedy)],
            "base": [[s, g] for s, g in zip(outcome.before.scores, outcome.before.greedy)],
            "oracle": {"steps": outcome.steps, "converged": outcome.converged, "reported_step": outcome.reported_step,
                       **_loss_fields(outcome.losses, outcome.reported_step)},
            "routing": _routing(outcome.before.routing, outcome.after.routing, outcome.after.variables, config)
            if config.save_routing else None}


@dataclass
class _Check:
    """A real generation at one iterate of a generation sample's descent."""

    step: int
    text: str
    right: dict[str, bool]  # "metric,filter" -> full marks
    loss: float | None = None
    variables: torch.Tensor | None = None
    routing: torch.Tensor | None = None


@dataclass
class _Generation:
    """One generation sample on its way: its real generations (``checks``, the base answer first), its descent's
    losses, its last target, the steps spent and the variables its next round starts from."""

    instance: object  # lm-eval's request
    checks: list[_Check]
    prompt: list[int] | None = None  # the prompt's tokens (``generation.prompt_ids``), once it descends
    losses: list[float] = field(default_factory=list)
    target: Target | None = None
    used: int = 0
    variables: torch.Tensor | None = None

    @property
    def converged(self) -> bool:
        """Its last real generation has full marks under every filter pipeline."""
        return all(self.checks[-1].right.values())


class OracleSolver:
    """The oracle descent on batches of lm-eval's requests (module docstring)."""

    def __init__(self, model, tokenizer, config: OracleConfig, layers: list[int], lm: LMSettings):
        self.model, self.tokenizer, self.layers, self.lm = model, tokenizer, list(layers), lm
        self.config = config.for_device(input_device(model))

    def batches(self, task, documents: list) -> list[list]:
        """Documents in batches of ``config.batch_size``, similar lengths together (less padding: every step runs the
        batch's longest answer, the prefix cache its longest context).  Longest first, like lm-eval, so memory runs
        out at once if at all."""
        if task.OUTPUT_TYPE == "generate_until":
            def length(instances):
                return -len(instances[0].args[0])
        else:
            def length(instances):
                return (-max(len(i.args[1]) for i in instances), -max(len(i.args[0]) for i in instances))
        ordered, size = sorted(documents, key=length), self.config.batch_size
        return [ordered[i:i + size] for i in range(0, len(ordered), size)]

    def choices(self, task, documents: Sequence[list]) -> list[dict]:
        """One batch of a multiple-choice task: per document, the (log-likelihood, is_greedy) pairs at the reported
        iterate (``answers``) and at iterate 0 (``base``), and the descent's record (``oracle``)."""
        samples = [choice_sample(task, instances) for instances in documents]
        batch = build_choice_batch(self.tokenizer, samples, self.lm.max_length, self.lm.add_bos_token)
        outcomes = descend(self.model, batch, self.config, self.layers, metrics=reported_metrics(task))
        return [_choice_record(outcome, self.config) for outcome in outcomes]

    def generations(self, task, documents: Sequence[list]) -> list[dict]:
        """One batch of a generation task (generation.py): the base model's own greedy answer first; a document
        with full marks under every filter pipeline keeps it (0 steps).  The others descend on the gold final
        answer after their own reasoning, judged by real generations, within ``max_steps`` gradient steps."""
        instances = [d[0] for d in documents]
        ensembles = filter_ensembles(task)
        samples = [_Generation(instance, [_Check(0, text, _judge(task, instance, text, ensembles))])
                   for instance, text in zip(instances, self.lm.generate(instances))]
        active = [sample for sample in samples if not sample.converged]
        for sample in active:
            sample.prompt = prompt_ids(self.lm, sample.instance)
        while active:
            spent = active[0].used
            # Samples with the same budget left descend together.
            self._descend_round(task, [sample for sample in active if sample.used == spent], spent, ensembles)
            active = [sample for sample in active if not sample.converged and sample.used < self.config.max_steps]
        return [self._generation_record(sample) for sample in samples]

    def _descend_round(self, task, group: list[_Generation], spent: int, ensembles) -> None:
        """One round of ``group``'s descent, from its targets at its last generations, with ``spent`` steps spent."""
        config = self.config
        # A sample's variables have a slot per steered prompt token: prompts of different lengths are padded.
        initial = None if spent == 0 else pad_sequence([sample.variables for sample in group], batch_first=True)
        found, tokens = self.choose_targets(task, [(s.instance, s.checks[-1].text, s.prompt) for s in group], initial,
                                            ensembles)
        batch, prompt_last = teacher_forced_batch([sample.prompt for sample in group], tokens,
                                                  self.tokenizer.pad_token_id or 0)
        # Iterate 0 of a round was judged already (the base answer, or a generation that was wrong): the round
        # stops at the first later iterate whose target is greedy, and a real generation judges it.
        outcomes = descend(self.model, batch, replace(config, max_steps=config.max_steps - spent, stable=1),
                           self.layers, generation=GenerationRound(prompt_last, initial, min_steps=1))
        for sample, target, outcome in zip(group, found, outcomes):
            sample.target = target
            sample.losses = sample.losses[:spent] + outcome.losses
            if spent == 0:
                base = sample.checks[0]
                base.loss, base.variables, base.routing = (outcome.losses[0], outcome.before.variables,
                                                           outcome.before.routing)
            if not outcome.converged:  # the budget is spent
                sample.used = config.max_steps
                continue
            step = spent + outcome.reported_step
            text = steered_generation(self.model, self.lm, sample.instance, outcome.after.variables, self.layers,
                                      config)
            sample.checks.append(_Check(step, text, _judge(task, sample.instance, text, ensembles),
                                        outcome.losses[outcome.reported_step], outcome.after.variables,
                                        outcome.after.routing))
            sample.used, sample.variables = step, outcome.after.variables

    def choose_targets(self, task, items: Sequence[tuple], variables: torch.Tensor | None,
                       ensembles) -> tuple[list[Target], list[tuple[list[int], list[int]]]]:
        """Per sample (request, its last generation, its prompt's tokens): its target R + A
        (``generation.answer_targets``, the lowest loss at the routing ``variables`` among the equally right ones;
        None: the base routing) and the target's tokens."""
        options, owners = [], []
        for j, (instance, text, _prompt) in enumerate(items):
            until, max_gen_toks = generation_settings(self.lm, instance)
            for target in answer_targets(task, instance.doc, text, until, ensembles):
                options.append((target, target_tokens(self.tokenizer, target, max_gen_toks)))
                owners.append(j)
        owner = torch.tensor(owners)
        if len(options) > len(items):  # a choice to make: score every option in one pass
            batch, prompt_last = teacher_forced_batch([items[j][2] for j in owners], [t for _, t in options],
                                                      self.tokenizer.pad_token_id or 0)
            losses = target_losses(self.model, batch, steered_positions(self.config, prompt_last),
                                   None if variables is None else variables[owner], self.layers,
                                   self.config.variables, self.config.batch_size)
        else:
            losses = torch.zeros(len(options))
        chosen = [min((k for k in range(len(options)) if owners[k] == j), key=lambda k: float(losses[k]))
                  for j in range(len(items))]
        return [options[k][0] for k in chosen], [options[k][1] for k in chosen]

    def _generation_record(self, sample: _Generation) -> dict:
        checks, base, converged = sample.checks, sample.checks[0], sample.converged
        if converged:
            reported = checks[-1]
        else:
            # The best real generation: eligible (keeps every metric right at the base answer), then more metrics
            # right, then the lowest loss.  Iterate 0 is eligible, so the oracle never reports below base.
            def rank(check):
                eligible = all(check.right[k] or not base.right[k] for k in base.right)
                return eligible, sum(check.right.values()), -(check.loss if check.loss is not None else math.inf)
            reported = max(checks, key=rank)
        target = sample.target
        record = {"answers": reported.text, "base": base.text,
                  "oracle": {"steps": reported.step if converged else sample.used, "converged": converged,
                             "reported_step": reported.step, **_loss_fields(sample.losses, reported.step),
                             "loss_after": reported.loss, "generations": len(checks),
                             "target": None if target is None else {"prefix": target.prefix, "answer": target.answer}},
                  "routing": None}
        if self.config.save_routing and target is not None:
            record["routing"] = _routing(base.routing, reported.routing, reported.variables, self.config)
        return record


def _judge(task, instance, text: str, ensembles) -> dict[str, bool]:
    """"metric,filter" -> full marks for ``text`` generated for ``instance``."""
    return marks(judge_generation(task, instance.doc, text, ensembles))
