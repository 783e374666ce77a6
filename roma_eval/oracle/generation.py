"""The oracle for generation tasks (the GSM8K analogue).

There is no set of choices to take a cross-entropy over, so the oracle descends on the gold
answer's teacher-forced likelihood instead (the paper's CE with the gold sequence as the label):
  1. the *response* is the gold answer as the model must write it to score full marks: the task's
     target delimiter + doc_to_target if the task's own filters and metric accept that, otherwise the
     bare doc_to_target (lm-eval compares generated text, so " 7" may not equal "7");
  2. the teacher-forced sequence is the generation prompt, exactly as lm-eval's ``hf`` model encodes
     it, then the response's tokens and the EOS token (lm-eval always stops at EOS), so the
     optimised routing both says the answer and stops;
  3. the loss is the summed negative log-likelihood of those tokens; a sample is "right" when greedy
     decoding would produce every one of them (teacher-forced argmax), then the usual stopping rule;
  4. the reported answer is a real greedy generation by lm-eval's ``hf`` model (``HFLM.generate_until``)
     with the final routing override at the steered prompt tokens (the last one by default; with a KV
     cache later tokens are not steered, see ``routing.steer``), scored by the task's filters and metric.
With the variables at their initial values, step 4 is lm-eval's own base generation.
"""

from __future__ import annotations

from typing import Sequence

import torch

from roma_eval.errors import RomaEvalError
from roma_eval.oracle.tasks import OracleTask
from roma_eval.routing import steer_routing, token_positions
from roma_eval.samples import Sample
from roma_eval.scoring import ChoiceBatch


def _prompt_ids(lm, instance) -> list[int]:
    from lm_eval.models.utils import normalize_gen_kwargs

    context, gen_kwargs = instance.args
    max_gen_toks = normalize_gen_kwargs(dict(gen_kwargs), lm.max_gen_toks)["max_gen_toks"]
    ids, _ = lm.tok_batch_encode([context], left_truncate_len=lm.max_length - max_gen_toks)
    return ids[0].tolist()


def full_marks(by_filter: dict) -> bool:
    """Whether an answer is right: every metric of some filter pipeline is 1 (``OracleTask.generation_metrics``)."""
    return any(all(value == 1 for value in entry["metrics"].values()) for entry in by_filter.values())


def gold_response(task: OracleTask, sample: Sample) -> str:
    """The task's target delimiter + gold if the task's filters and metric give it full marks, else the bare gold."""
    candidates = [task.task.config.target_delimiter + sample.gold, sample.gold]
    judged = task.generation_metrics([sample] * len(candidates), candidates)
    return next((c for c, by_filter in zip(candidates, judged) if full_marks(by_filter)), sample.gold)


def teacher_forced_batch(lm, task: OracleTask, samples: Sequence[Sample]) -> tuple[ChoiceBatch, list[str]]:
    """One row per sample: prompt + response + EOS, as a one-choice ``ChoiceBatch`` (gold 0)."""
    rows, continuations, last_context, responses = [], [], [], []
    for sample in samples:
        response = gold_response(task, sample)
        prompt = _prompt_ids(lm, task.instance(sample))
        eos = [] if lm.eot_token_id is None else [lm.eot_token_id]
        target = lm.tokenizer.encode(response, add_special_tokens=False) + eos
        if len(prompt) + len(target) > lm.max_length:
            raise RomaEvalError(f"task {task.name} doc {sample.doc_id}: prompt and gold answer ({len(prompt)} + "
                                f"{len(target)} tokens) exceed the model's {lm.max_length}; use a shorter task")
        rows.append((prompt + target)[:-1])
        continuations.append(target)
        last_context.append(len(prompt) - 1)
        responses.append(response)
    width, cont_width = max(map(len, rows)), max(map(len, continuations))
    batch = ChoiceBatch(
        input_ids=torch.zeros(len(rows), width, dtype=torch.long),
        attention_mask=torch.zeros(len(rows), width, dtype=torch.long),
        last_context=torch.tensor(last_context),
        continuation_ids=torch.zeros(len(rows), cont_width, dtype=torch.long),
        continuation_mask=torch.zeros(len(rows), cont_width, dtype=torch.bool),
        row_sample=torch.arange(len(rows)), row_choice=torch.zeros(len(rows), dtype=torch.long),
        gold=torch.zeros(len(rows), dtype=torch.long),
        char_lens=torch.tensor([[float(max(len(r), 1))] for r in responses]), row_share=torch.ones(len(rows)))
    for r, (tokens, target) in enumerate(zip(rows, continuations)):
        batch.input_ids[r, : len(tokens)] = torch.tensor(tokens)
        batch.attention_mask[r, : len(tokens)] = 1
        batch.continuation_ids[r, : len(target)] = torch.tensor(target)
        batch.continuation_mask[r, : len(target)] = True
    return batch, responses


def generate(lm, task: OracleTask, samples: Sequence[Sample], variables=None, layers=None, tokens: str = "last:1",
             mode: str = "offset") -> list[str]:
    """lm-eval's greedy generation for each sample, with its routing variables (tokens, layers, experts)
    applied at the steered prompt tokens; ``variables=None``: the base model, unsteered."""
    out = []
    for i, sample in enumerate(samples):
        instance = task.instance(sample)
        if variables is None:
            out.extend(lm.generate_until([instance], disable_tqdm=True))
            continue
        length = len(_prompt_ids(lm, instance))
        positions = token_positions(tokens, torch.tensor([length - 1]))
        if int(positions.max()) == 0:  # a one-token prompt: every cached decoding step would look like it
            raise RomaEvalError(f"task {task.name} doc {sample.doc_id} has a one-token prompt; the oracle needs "
                                "a prompt longer than the steered tokens")
        override = variables[i].unsqueeze(0).to(lm.model.device)
        with torch.no_grad(), steer_routing(lm.model, override, positions.to(lm.model.device), layers, mode=mode):
            out.extend(lm.generate_until([instance], disable_tqdm=True))
    return out
