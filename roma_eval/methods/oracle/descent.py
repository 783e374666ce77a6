"""Per-sample routing gradient descent, many samples at once: the oracle upper bound.

RoMA (arXiv 2511.07419, §1, Table 1 "Oracle") defines the oracle routing of sample i as
r_i* = argmin_r CE(f(x_i, r), y_i): descend on the routing of that one sample, from the pretrained
routing, with its gold label.  The variables are one tensor per sample, (slots × steered layers ×
experts):
  - ``--positions all`` (the default, every_position.py): a slot per position the scores depend on, the
    context's (shared by the sample's rows) and each choice's continuation's (its own);
  - ``--positions tokens``: the context tokens of ``--tokens`` (last:1: the last context token), shared
    by the rows of its choices (they share the context, hence its routing).
One iteration is one forward over every still-descending row and one backward; rows of
different samples never interact (attention is per row, experts act per token) and each sample has
its own optimiser state, so a sample's trajectory does not depend on its batch-mates.

Frozen work is done once per batch (what no step can change is computed once):
  - the hidden states entering the first steered layer cannot change: each step runs only the
    steered layers and above (``routing.partial.run_from_layer``);
  - with ``--positions tokens``, the causal prefix before the first steered token cannot change either:
    it runs once per sample (its choices share it), with a KV cache, left-padded so all prefixes end
    in the same column; each step runs only the tokens from the first steered token on
    (``prefix_cache``).  With every position steered nothing above the first steered layer is frozen;
    ``prefix_cache`` then runs a sample's shared context once per step for all its choices.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace

import torch

from roma_eval.devices import input_device
from roma_eval.errors import RomaEvalError
from roma_eval.methods.oracle.config import OracleConfig
from roma_eval.methods.oracle.every_position import (
    base_routing_at_slots,
    prepare_every_position,
    slot_map,
)
from roma_eval.routing import (
    num_experts,
    record_routing,
    spec_for,
    steer_routing,
    token_positions,
)
from roma_eval.routing.partial import (
    attend_to_prefix,
    capture_layer_input,
    prefix_cache_exact,
    prefix_keys_values,
    run_from_layer,
)
from roma_eval.routing.scores import project_scores
from roma_eval.scoring import ChoiceBatch, choice_scores, predictions, task_loss

ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8  # torch.optim.Adam's defaults


@dataclass
class Iterate:
    """A sample under one value of its variables."""

    scores: list[float]  # per choice: summed continuation log-likelihood (generation: the gold answer's)
    greedy: list[bool]  # per choice: the continuation is the greedy decoding
    variables: torch.Tensor  # (slots, layers, experts): offsets, or routing scores with --variables scores
    routing: torch.Tensor | None  # (--tokens, layers, experts) routing scores, when recorded


@dataclass
class Outcome:
    """One sample's descent.  ``after`` is the last iterate if converged, else the best eligible one visited
    (``descend``: an iterate is eligible when it keeps every metric that was right at iterate 0)."""

    steps: int  # gradient steps taken
    converged: bool  # right at `stable` consecutive iterates within the budget
    reported_step: int  # the iterate ``after`` is
    losses: list[float]  # loss at iterates 0..steps
    before: Iterate
    after: Iterate


@dataclass
class _Rows:
    """What every descent step feeds the model, built once per batch."""

    input_ids: torch.Tensor  # (rows, S) tokens from the first steered token on (all tokens without a prefix cache)
    attention_mask: torch.Tensor  # (rows, P + S): the left-padded prefix, then input_ids
    position_ids: torch.Tensor  # (rows, S) each token's position in its unpadded row
    positions: torch.Tensor  # (rows, N) steered tokens, as indices into input_ids
    prefix: list[tuple[torch.Tensor, torch.Tensor]] | None  # per decoder layer: keys, values of the P prefix tokens
    hidden: torch.Tensor | None = None  # (rows, S, hidden) entering the first steered layer

    prefix_from: int = 0  # the decoder layer ``prefix[0]`` belongs to (the layers below are never run again)
    count = None  # every sample has all of its variables' slots (see every_position.EveryPosition.count)

    @property
    def recorded(self) -> torch.Tensor:
        return self.positions

    def select(self, keep: torch.Tensor, row_sample: torch.Tensor) -> _Rows:
        """The samples where ``keep`` (samples,) holds; ``row_sample``: the rows' samples before."""
        rows = keep[row_sample]

        def take(t):  # each layer's cache stays on that layer's device (a model split across devices)
            return t[rows.to(t.device)]

        return _Rows(self.input_ids[rows], self.attention_mask[rows], self.position_ids[rows], self.positions[rows],
                     None if self.prefix is None else [(take(k), take(v)) for k, v in self.prefix],
                     None if self.hidden is None else take(self.hidden), self.prefix_from)

    def steered_logits(self, model, variables: torch.Tensor, row_sample: torch.Tensor, layers, mode: str):
        with steer_routing(model, variables[row_sample], self.positions, layers, mode=mode):
            return self.logits(model, layers[0])

    def logits(self, model, first_layer: int | None = None) -> torch.Tensor:
        """The logits, on the inputs' device (a split model returns them from its head's device)."""
        kwargs = {"attention_mask": self.attention_mask, "position_ids": self.position_ids, "use_cache": False}
        if self.prefix is not None:
            kwargs.update(attend_to_prefix(self.prefix, self.prefix_from))
        if self.hidden is not None:
            out = run_from_layer(model, first_layer, self.hidden, **kwargs).logits
        else:
            out = model(input_ids=self.input_ids, **kwargs).logits
        return out.to(self.input_ids.device)


@torch.no_grad()
def prepare_rows(model, batch: ChoiceBatch, positions: torch.Tensor, first_layer: int,
                 prefix_cache: bool) -> tuple[_Rows, ChoiceBatch]:
    """Run the frozen parts of ``batch`` once; return the step inputs and ``batch`` re-indexed to them."""
    lengths = batch.attention_mask.sum(1)
    # Sliding-window models whose rows outrun the window take the uncached path (exact, slower).
    cached = prefix_cache and prefix_cache_exact(model, int(lengths.max()))
    start = positions.min(1).values if cached else torch.zeros_like(lengths)
    width_prefix, width = int(start.max()), int((lengths - start).max())
    # Column c of the new layout holds token (c - P + start_r) of row r: prefixes end together at column P - 1.
    source = torch.arange(width_prefix + width, device=lengths.device) - width_prefix + start.unsqueeze(1)
    real = (source >= 0) & (source < lengths.unsqueeze(1))
    input_ids = batch.input_ids.gather(1, source.clamp(0, batch.input_ids.shape[1] - 1)).masked_fill(~real, 0)
    position_ids = source.clamp(min=0)
    prefix = None
    if width_prefix:
        # The choices of a sample share the tokens before the steered one: run them once per sample (unless
        # lm-eval's left truncation cut a sample's rows differently), then give every row its sample's cache.
        owner = torch.nonzero(batch.row_choice == 0).squeeze(1)[batch.row_sample]
        head, head_real = input_ids[:, :width_prefix], real[:, :width_prefix]
        if not (torch.equal(head, head[owner]) and torch.equal(head_real, head_real[owner])):
            owner = torch.arange(len(owner), device=owner.device)
        unique, inverse = torch.unique(owner, return_inverse=True)
        kv = prefix_keys_values(model, input_ids=head[unique], attention_mask=head_real[unique].long(),
                                position_ids=position_ids[unique, :width_prefix])
        prefix = [(keys[inverse.to(keys.device)], values[inverse.to(values.device)]) for keys, values in kv]
    rows = _Rows(input_ids[:, width_prefix:], real.long(), position_ids[:, width_prefix:],
                 positions - start.unsqueeze(1), prefix)
    if first_layer > 0:
        with capture_layer_input(model, first_layer) as captured:
            rows.logits(model)
        rows.hidden = captured["hidden_states"]
        if rows.prefix is not None:  # from now on only layers first_layer.. run: the cache below is dead weight
            rows.prefix, rows.prefix_from = rows.prefix[first_layer:], first_layer
    step_batch = replace(batch, input_ids=rows.input_ids, attention_mask=real[:, width_prefix:].long(),
                         last_context=batch.last_context - start)
    return rows, step_batch


def _subset(batch: ChoiceBatch, keep: torch.Tensor) -> ChoiceBatch:
    """The rows of the samples where ``keep`` (samples,) is true, samples renumbered."""
    rows = keep[batch.row_sample]
    renumber = torch.cumsum(keep.long(), 0) - 1
    return ChoiceBatch(batch.input_ids[rows], batch.attention_mask[rows], batch.last_context[rows],
                       batch.continuation_ids[rows], batch.continuation_mask[rows], renumber[batch.row_sample[rows]],
                       batch.row_choice[rows], batch.golds[keep], batch.char_lens[keep], batch.row_share[rows])


def greedy_rows(logits: torch.Tensor, batch: ChoiceBatch) -> torch.Tensor:
    """(rows,) whether each row's continuation is what greedy decoding would produce (lm-eval's is_greedy)."""
    positions = (batch.last_context.unsqueeze(1) + torch.arange(batch.continuation_ids.shape[1],
                                                                device=logits.device)).clamp(max=logits.shape[1] - 1)
    predicted = logits.gather(1, positions.unsqueeze(-1).expand(-1, -1, logits.shape[-1])).argmax(-1)
    return ((predicted == batch.continuation_ids) | ~batch.continuation_mask).all(1)


def criterion_metrics(criterion: str, metrics: Sequence[str]) -> tuple[str, ...]:
    """The metrics that must be right for a multiple-choice sample to count as right: "both" is every metric
    the task reports among acc and acc_norm (``metrics``), otherwise the one named."""
    return tuple(metrics) if criterion == "both" else (criterion,)


def _loss_and_right(scores, greedy, batch: ChoiceBatch, generative: bool, tracked: Sequence[str]):
    """Per sample: the loss and, per tracked metric, whether it is right ((samples, metrics) bool)."""
    if generative:  # one row per sample: the target answer after the model's reasoning (generation.py)
        return -scores[:, 0], greedy[:, :1]
    acc_pred, norm_pred = predictions(scores, batch)
    right = {"acc": batch.right(acc_pred), "acc_norm": batch.right(norm_pred)}
    return task_loss(scores, batch.golds, reduction="none"), torch.stack([right[m] for m in tracked], 1)  # Eq. 8


@contextmanager
def _frozen(model):
    """Gradients flow to the routing variables only, not into the model's parameters."""
    flags = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)


@dataclass(frozen=True)
class GenerationRound:
    """One round of a generation sample's descent (generation.py): one teacher-forced row per sample (prompt, the
    model's reasoning, the target answer), steered on its prompt only."""

    prompt_last: torch.Tensor  # (rows,) each prompt's last token: --tokens counts back from it
    initial: torch.Tensor | None = None  # (samples, slots, layers, experts) starting variables (None: base routing)
    min_steps: int = 0  # iterates before this one cannot stop a sample (they were judged already)


@dataclass(frozen=True)
class _Goal:
    """What a descent tracks per sample and iterate: the metrics ((samples, metrics) right or not), those that must be
    right (``wanted``), and the first iterate that may stop a sample."""

    generative: bool
    tracked: tuple[str, ...]
    wanted: torch.Tensor  # (metrics,) bool
    min_steps: int = 0


def descend(model, batch: ChoiceBatch, config: OracleConfig, layers: list[int], *,
            metrics: Sequence[str] = ("acc", "acc_norm"), generation: GenerationRound | None = None) -> list[Outcome]:
    """Run the oracle descent for every sample of ``batch`` (built by ``scoring.build_choice_batch``; for a
    generation round, by ``generation.teacher_forced_batch``).

    ``metrics``: the multiple-choice metrics the task reports (acc, acc_norm); "right" is
    ``config.criterion`` over them, and no iterate that loses one of them right at iterate 0 is reported.
    ``generation``: the batch is a generation round: a sample's one row is right when its target is greedy,
    ``config.tokens`` counts back from each prompt's last token (the last one steered with ``--positions all``)
    instead of each row's last context token, and the variables start at ``generation.initial`` when given.
    """
    device = input_device(model)
    batch = batch.to(device)
    generative = generation is not None
    initial = generation.initial if generative else None
    anchor = generation.prompt_last.to(device) if generative else batch.last_context
    recorded = token_positions(config.tokens, anchor)
    if config.positions == "tokens" and (recorded[:, 1:] == recorded[:, :-1]).any():
        raise RomaEvalError(f"tokens={config.tokens!r} asks for more tokens than some contexts have; "
                            "steer fewer tokens (e.g. --tokens last:1)")
    tracked = ("greedy",) if generative else tuple(dict.fromkeys([*metrics, *criterion_metrics(config.criterion,
                                                                                               metrics)]))
    wanted = torch.tensor([generative or m in criterion_metrics(config.criterion, metrics) for m in tracked])
    goal = _Goal(generative, tracked, wanted, generation.min_steps if generative else 0)
    with _frozen(model):
        if config.positions == "tokens":
            rows, step_batch = prepare_rows(model, batch, recorded, layers[0], config.prefix_cache)
            variables = _initial_at_tokens(model, rows, batch, config, layers, initial)
        else:
            # Every position the scores depend on; a generation sample's prompt only (every_position.py).
            slots = slot_map(batch, anchor + 1 if generative else batch.attention_mask.sum(1))
            rows, step_batch = prepare_every_position(model, batch, slots, recorded, layers[0], config.prefix_cache)
            if initial is not None:
                variables = _padded(initial.detach().float().to(device), int(slots.count.max()))
            elif config.variables == "scores":
                variables = base_routing_at_slots(model, batch, slots, layers)
            else:
                variables = torch.zeros(batch.n_samples, int(slots.count.max()), len(layers), num_experts(model),
                                        device=device)
        return _descend(model, rows, step_batch, variables, config, layers, goal)


def _initial_at_tokens(model, rows: _Rows, batch: ChoiceBatch, config: OracleConfig, layers, initial):
    """The starting variables at the --tokens positions: ``initial``, the base routing, or zero offsets."""
    if initial is not None:
        return initial.detach().float().to(rows.input_ids.device).clone()
    if config.variables == "scores":  # start at the base routing: the steered forward then equals base exactly
        with torch.no_grad(), record_routing(model, rows.positions, layers) as record:
            rows.logits(model, layers[0])
        return batch.per_sample(record.scores).float()
    return torch.zeros(batch.n_samples, rows.positions.shape[1], len(layers), num_experts(model),
                       device=rows.input_ids.device)


def _padded(variables: torch.Tensor, slots: int) -> torch.Tensor:
    """``variables`` (samples, <= slots, ...) with zero slots appended up to ``slots`` (never read)."""
    missing = slots - variables.shape[1]
    return torch.cat([variables, variables.new_zeros((variables.shape[0], missing, *variables.shape[2:]))], 1) \
        if missing > 0 else variables.clone()


def _descend(model, rows, batch: ChoiceBatch, variables: torch.Tensor, config: OracleConfig, layers,
             goal: _Goal) -> list[Outcome]:
    n, score_kind = batch.n_samples, spec_for(model).score_kind
    active = torch.arange(n)  # original index of each still-descending sample
    moment, second = torch.zeros_like(variables), torch.zeros_like(variables)
    streak = torch.zeros(n, dtype=torch.long)
    base_right = torch.zeros(n, len(goal.tracked), dtype=torch.bool)  # per metric: right at iterate 0
    losses: list[list[float]] = [[] for _ in range(n)]
    before: list[Iterate | None] = [None] * n
    best: list[tuple[tuple, int, Iterate] | None] = [None] * n
    outcomes: list[Outcome | None] = [None] * n
    for t in range(config.max_steps + 1):
        variables.requires_grad_(True)
        recording = record_routing(model, rows.recorded, layers) if config.save_routing else nullcontext()
        with torch.enable_grad():
            with recording as record:
                logits = rows.steered_logits(model, variables, batch.row_sample, layers, config.variables)
            scores = choice_scores(logits, batch)
            greedy = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device).index_put(
                (batch.row_sample, batch.row_choice), greedy_rows(logits.detach(), batch))
            loss, right = _loss_and_right(scores, greedy, batch, goal.generative, goal.tracked)
        right = right.cpu()
        if t == 0:
            base_right = right.clone()
        # The oracle never reports a sample worse than base on any metric: an iterate is eligible only if it
        # keeps every metric that was right at iterate 0 (iterate 0 always is).  The proxy of a generation
        # sample (its target is greedy) is not a reported metric: the generated answer is judged outside.
        eligible = (right | ~base_right[active]).all(1) | goal.generative
        is_right = right[:, goal.wanted].all(1) & eligible
        streak = torch.where(is_right, streak + 1, 0)
        done = ((streak >= config.stable) & (t >= goal.min_steps)) | (t == config.max_steps)
        routing = batch.per_sample(record.scores).detach().float().cpu() if config.save_routing else None
        slots = [None] * len(active) if rows.count is None else rows.count.tolist()
        per_sample = zip(active.tolist(), loss.tolist(), eligible.tolist(), right.sum(1).tolist(),
                         scores.detach().cpu(), greedy.cpu(), variables.detach().cpu(), slots)
        for j, (i, value, is_eligible, n_hits, row_scores, row_greedy, row_variables, n_slots) in enumerate(
                per_sample):
            losses[i].append(value)
            chosen = torch.isfinite(row_scores)
            here = Iterate(row_scores[chosen].tolist(), row_greedy[chosen].tolist(), row_variables[:n_slots],
                           None if routing is None else routing[j])
            before[i] = before[i] or here
            # Without convergence the oracle reports its best visit: eligible first, then more metrics right,
            # then the lowest loss (r* = argmin CE) -- one iterate, so one consistent set of log-likelihoods.
            rank = (is_eligible, n_hits, -value)
            if best[i] is None or rank > best[i][0]:
                best[i] = (rank, t, here)
            if done[j]:
                converged = bool(streak[j] >= config.stable and t >= goal.min_steps)
                step, after = (t, here) if converged else best[i][1:]
                outcomes[i] = Outcome(t, converged, step, losses[i], before[i], after)
        if done.all():
            break
        keep, device_keep = ~done, (~done).to(variables.device)
        loss[device_keep].sum().backward()
        variables, moment, second = _update(variables, moment, second, t + 1, config, score_kind, rows.count)
        if not keep.all():  # finished samples leave the batch: their rows are not run again
            variables, moment, second = variables[device_keep], moment[device_keep], second[device_keep]
            rows = rows.select(device_keep, batch.row_sample)
            batch = _subset(batch, device_keep)
            active, streak = active[keep], streak[keep]
    return outcomes


@torch.no_grad()
def _update(variables, moment, second, step: int, config: OracleConfig, score_kind: str,
            slots: torch.Tensor | None = None):
    """One optimiser step.  ``slots``: (samples,) slots in use per sample, where the variables are padded to the
    batch's widest sample (the padding has no gradient and does not count in a sample's mean square)."""
    grad = variables.grad
    if config.optimizer == "sgd":
        direction = grad
    else:
        squared = grad * grad
        if config.optimizer == "sample-adam":
            # One second moment per sample: per-coordinate Adam would blow float noise up to full-size steps
            # where the true gradient is zero (unselected experts under renormalised top-k: Qwen3, Mixtral).
            dims = tuple(range(1, grad.dim()))
            if slots is None:
                squared = squared.mean(dim=dims, keepdim=True)
            else:
                per_slot = grad[0, 0].numel()
                squared = squared.sum(dim=dims, keepdim=True) / (slots.to(grad) * per_slot).view(-1, *[1] * len(dims))
        moment = ADAM_BETAS[0] * moment + (1 - ADAM_BETAS[0]) * grad
        second = ADAM_BETAS[1] * second + (1 - ADAM_BETAS[1]) * squared
        direction = (moment / (1 - ADAM_BETAS[0] ** step)) / ((second / (1 - ADAM_BETAS[1] ** step)).sqrt() + ADAM_EPS)
    updated = variables.detach() - config.lr * direction
    if config.variables == "scores":
        updated = project_scores(updated, score_kind)
    return updated, moment, second
