"""The oracle for generation tasks (the GSM8K analogue): aim at what the task's filters score, the final answer.

lm-eval scores a generated answer by its filters (GSM8K: the number after "#### ", or the last number) and a
metric (exact match against the gold answer).  The oracle therefore descends on the likelihood of the gold
*final answer*, written where the model writes its own, after the model's own greedy reasoning; and it calls
a sample right only when a real generation, scored by the task's filters and metric, gets full marks
(docs/oracle.md, "Generation tasks", says why not the whole worked solution):

  1. **Target** (``answer_targets``): from the model's last greedy generation G, a prefix R (its reasoning)
     and an answer A with R + A scoring full marks under the task's filters and metric.  Candidates: G cut
     where a filter found the model's own answer, A = the filter's reading of the gold target
     ("... = 20.\n#### " + "18"); all of G, then the gold target's last line ("\n#### 18"); no reasoning,
     the gold answer alone (" 7", "7", "#### 18") -- never the whole worked solution.  A candidate that a
     stop sequence would cut is skipped.  Of those with full marks under every filter pipeline, the one the
     model finds likeliest at the current routing (lowest loss, ``target_losses``) is the target:
     r* = argmin CE over the ways of writing the answer that lm-eval accepts.
  2. **Loss**: the summed negative log-likelihood of A's tokens after prompt + R (teacher-forced, R and A
     within ``max_gen_toks``), steered where the generation is: at every prompt token (``--positions all``)
     or at the prompt's last token(s) (``--positions tokens``), never at R and A, which a real generation
     writes token by token in cached decoding steps that are not steered (routing.steer).
  3. **Right**: when greedy decoding would produce A after R (the cheap proxy), a real greedy generation
     with lm-eval's ``HFLM.generate_until`` (``LMSettings.generate``) and the current routing override is
     scored by the task's filters and metric; full marks under every filter pipeline is right (the sample stops there).
     Otherwise R is re-read from that generation (the model's reasoning has changed with its routing)
     and the descent goes on from the same variables, within the same step budget.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from roma_eval.devices import input_device
from roma_eval.errors import RomaEvalError
from roma_eval.methods.oracle.every_position import prompt_positions
from roma_eval.methods.oracle.tasks import judge_generation, marks
from roma_eval.routing import steer_routing, token_positions
from roma_eval.scoring import ChoiceBatch


@dataclass(frozen=True)
class Target:
    prefix: str  # R: the model's own reasoning, before its answer
    answer: str  # A: the gold answer in the form the task's filters read


@dataclass(frozen=True)
class LMSettings:
    """What lm-eval's ``hf`` model does with a request's text, as values and plain callables: the solver uses these
    and never sees an lm-eval model (``lm_eval.lm_settings`` reads them off one)."""

    # requests -> greedy generations (``HFLM.generate_until``), under whatever routing override is active
    generate: Callable[[Sequence], list[str]]
    # prompts -> (ids, mask), left-padded; ``left_truncate_len=N`` keeps each one's last N tokens (``tok_batch_encode``)
    encode: Callable[..., tuple]
    max_length: int  # the model's context, in tokens
    add_bos_token: bool | None  # whether a context starts with BOS (None: as the tokenizer does)
    max_gen_toks: int  # a generation's budget in tokens when its request names none
    eos: str  # the end-of-text token as text: every generation stops there


def generation_settings(lm: LMSettings, instance) -> tuple[list[str], int]:
    """(stop sequences with EOS, max_gen_toks) exactly as ``HFLM.generate_until`` resolves them."""
    from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs

    kwargs = normalize_gen_kwargs(dict(instance.args[1]), lm.max_gen_toks)
    return handle_stop_sequences(kwargs.get("until"), eos=lm.eos), kwargs["max_gen_toks"]


def prompt_ids(lm: LMSettings, instance) -> list[int]:
    """The generation prompt's tokens as lm-eval's ``hf`` model encodes them (left-truncated)."""
    _, max_gen_toks = generation_settings(lm, instance)
    ids, _ = lm.encode([instance.args[0]], left_truncate_len=lm.max_length - max_gen_toks)
    return ids[0].tolist()


def _stopped(text: str, until: Sequence[str]) -> str:
    for term in until:
        if term:
            text = text.split(term)[0]
    return text


def answer_targets(task, doc: dict, generation: str, until: Sequence[str], ensembles) -> list[Target]:
    """The ways to write the gold answer after the model generated ``generation`` (see the module docstring):
    every candidate whose R + A gets full marks under all of the task's filter pipelines and that no stop
    sequence cuts; if none does, those with the most marks; the bare gold target as a last resort."""
    gold = str(task.doc_to_target(doc))
    gold_read = {name: entry["filtered"] for name, entry in judge_generation(task, doc, gold, ensembles).items()}
    last_line = gold.strip().splitlines()[-1].strip() if gold.strip() else gold
    candidates = []
    for name, entry in judge_generation(task, doc, generation, ensembles).items():
        own, wanted = entry["filtered"], gold_read[name]
        if isinstance(own, str) and own and isinstance(wanted, str) and wanted:
            for at in dict.fromkeys([generation.find(own), generation.rfind(own)]):
                if at >= 0:
                    candidates.append(Target(generation[:at], wanted))
    body = generation.rstrip()
    candidates += [Target(body, "\n" + last_line), Target(body, " " + last_line)]
    delimiter = task.config.target_delimiter
    for answer in dict.fromkeys([last_line, *(v for v in gold_read.values() if isinstance(v, str))]):
        candidates += [Target("", delimiter + answer), Target("", answer)]
    scored = {}
    for candidate in dict.fromkeys(candidates):
        text = candidate.prefix + candidate.answer
        if not candidate.answer.strip() or _stopped(text, until) != text:
            continue  # a real generation would have stopped before the answer's end
        right = marks(judge_generation(task, doc, text, ensembles))
        scored[candidate] = (all(right.values()), sum(right.values()))
    best = max(scored.values(), default=(False, 0))
    if not best[1]:
        return [Target("", gold)]
    return [candidate for candidate, key in scored.items() if key == best]


def target_tokens(tokenizer, target: Target, max_gen_toks: int) -> tuple[list[int], list[int]]:
    """(R's tokens, A's tokens), split as lm-eval splits context and continuation (R's trailing whitespace
    goes with A), R shortened so that R + A fits in ``max_gen_toks`` (what a real generation can reach)."""
    prefix, answer = target.prefix, target.answer
    n_spaces = len(prefix) - len(prefix.rstrip())
    if n_spaces:
        prefix, answer = prefix[:-n_spaces], prefix[-n_spaces:] + answer
    prefix_ids = tokenizer.encode(prefix, add_special_tokens=False) if prefix else []
    answer_ids = tokenizer.encode(prefix + answer, add_special_tokens=False)[len(prefix_ids):]
    answer_ids = answer_ids[:max_gen_toks]
    return prefix_ids[: max(0, max_gen_toks - len(answer_ids))], answer_ids


def steered_positions(config, prompt_last: torch.Tensor) -> torch.Tensor:
    """(rows, N) the prompt positions a generation sample's variables steer (-1: padding): every prompt token
    with ``--positions all``, the ``--tokens`` ones counted back from the prompt's last with ``--positions
    tokens``.  A sample's variables (slots, layers, experts) line up with these N positions."""
    return prompt_positions(prompt_last) if config.positions == "all" else token_positions(config.tokens, prompt_last)


def teacher_forced_batch(prompts: Sequence[list[int]], targets: Sequence[tuple[list[int], list[int]]],
                         pad_id: int = 0) -> tuple[ChoiceBatch, torch.Tensor]:
    """One row per sample, prompt + R + A, as a one-choice ``ChoiceBatch`` scoring A (gold 0); and the
    position of each prompt's last token (the steered one)."""
    rows = [list(p) + list(r) + list(a[:-1]) for p, (r, a) in zip(prompts, targets)]
    answers = [list(a) for _, a in targets]
    width, answer_width = max(map(len, rows)), max(map(len, answers))
    batch = ChoiceBatch(
        input_ids=torch.full((len(rows), width), pad_id, dtype=torch.long),
        attention_mask=torch.zeros(len(rows), width, dtype=torch.long),
        last_context=torch.tensor([len(p) + len(r) - 1 for p, (r, _) in zip(prompts, targets)]),
        continuation_ids=torch.zeros(len(rows), answer_width, dtype=torch.long),
        continuation_mask=torch.zeros(len(rows), answer_width, dtype=torch.bool),
        row_sample=torch.arange(len(rows)), row_choice=torch.zeros(len(rows), dtype=torch.long),
        golds=torch.ones(len(rows), 1, dtype=torch.bool), char_lens=torch.ones(len(rows), 1),
        row_share=torch.ones(len(rows)))
    for r, (tokens, answer) in enumerate(zip(rows, answers)):
        batch.input_ids[r, : len(tokens)] = torch.tensor(tokens)
        batch.attention_mask[r, : len(tokens)] = 1
        batch.continuation_ids[r, : len(answer)] = torch.tensor(answer)
        batch.continuation_mask[r, : len(answer)] = True
    return batch, torch.tensor([len(p) - 1 for p in prompts])


@torch.no_grad()
def target_losses(model, batch: ChoiceBatch, steered: torch.Tensor, variables: torch.Tensor | None, layers,
                  mode: str, rows_per_forward: int = 32) -> torch.Tensor:
    """(rows,) the summed negative log-likelihood of each row's answer, at the routing ``variables`` (one per
    row; None: the base routing), steered at ``steered`` as in the descent."""
    from contextlib import nullcontext

    from roma_eval.scoring import choice_scores

    device = input_device(model)
    out = []
    for start in range(0, batch.n_samples, rows_per_forward):
        rows = torch.arange(start, min(start + rows_per_forward, batch.n_samples))
        part = ChoiceBatch(batch.input_ids[rows], batch.attention_mask[rows], batch.last_context[rows],
                           batch.continuation_ids[rows], batch.continuation_mask[rows], torch.arange(len(rows)),
                           batch.row_choice[rows], batch.golds[rows], batch.char_lens[rows],
                           batch.row_share[rows]).to(device)
        steering = nullcontext() if variables is None else steer_routing(
            model, variables[rows].to(device), steered[rows].to(device), layers, mode=mode)
        with steering:
            logits = model(input_ids=part.input_ids, attention_mask=part.attention_mask).logits
        out.append(-choice_scores(logits.to(device), part)[:, 0].cpu())
    return torch.cat(out)


def steered_generation(model, lm: LMSettings, instance, variables: torch.Tensor, layers, config) -> str:
    """lm-eval's greedy generation (``lm.generate``) of ``instance`` with the routing ``variables`` (slots, layers,
    experts) applied at the steered prompt tokens (``steered_positions`` under the oracle ``config``).  Cached
    decoding steps are not steered (``routing.steer``): the override acts on the prompt, as in the descent."""
    length = len(prompt_ids(lm, instance))
    positions = steered_positions(config, torch.tensor([length - 1]))
    if int(positions.max()) == 0:  # a one-token prompt: every cached decoding step would look like it
        raise RomaEvalError(f"task {instance.task_name} doc {instance.doc_id} has a one-token prompt; the oracle "
                            "needs a prompt longer than the steered tokens")
    device = input_device(model)
    with torch.no_grad(), steer_routing(model, variables[:positions.shape[1]].unsqueeze(0).to(device),
                                        positions.to(device), layers, mode=config.variables):
        return lm.generate([instance])[0]
