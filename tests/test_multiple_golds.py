"""Samples with several right choices (ReCoRD's gold entities): the loss over the gold set, the right-answer test
behind every success set, and the batches RoMA's training builds, against brute-force references."""

import numpy as np
import pytest
import torch

from roma_eval.methods.roma.data import TrainingRows
from roma_eval.samples import Sample
from roma_eval.scoring import build_choice_batch, task_loss


def sample(doc_id: int, n_choices: int, golds: tuple[int, ...]) -> Sample:
    choices = tuple(f"entity {doc_id} {k}" for k in range(n_choices))
    return Sample("record", doc_id, f"Passage {doc_id}.\n", "multiple_choice", f"Passage {doc_id}.",
                  continuations=tuple(f"  - {c}" for c in choices), choices=choices, gold=golds[0],
                  golds=golds if len(golds) > 1 else ())


SAMPLES = [sample(0, 4, (2, 0)), sample(1, 3, (1,)), sample(2, 5, (4, 1, 3))]


def numpy_loss(scores: np.ndarray, right: list[tuple[int, ...]]) -> np.ndarray:
    """-log Σ_{g ∈ gold} softmax(scores)_g per row, over each row's finite scores."""
    out = []
    for row, golds in zip(scores, right):
        finite = row[np.isfinite(row)]
        p = np.exp(finite - finite.max()) / np.exp(finite - finite.max()).sum()
        out.append(-np.log(sum(p[g] for g in golds)))
    return np.array(out)


def test_task_loss_over_a_gold_set_is_minus_log_of_their_summed_probability(tokenizer):
    batch = build_choice_batch(tokenizer, SAMPLES, max_length=64)
    scores = torch.tensor([[-1.0, -3.0, -0.5, -2.0, float("-inf")],
                           [-2.0, -0.1, -4.0, float("-inf"), float("-inf")],
                           [-0.3, -2.5, -1.0, -0.7, -3.0]])
    expected = numpy_loss(scores.numpy(), [s.right_choices for s in SAMPLES])
    assert task_loss(scores, batch.golds, reduction="none").numpy() == pytest.approx(expected, abs=1e-6)
    assert task_loss(scores, batch.golds).item() == pytest.approx(expected.mean(), abs=1e-6)
    assert task_loss(scores, batch.golds, reduction="sum").item() == pytest.approx(expected.sum(), abs=1e-6)
    # one right choice: the mask gives the cross-entropy of the index, per sample and in its gradient, bit for bit
    single = build_choice_batch(tokenizer, [sample(i, 5, (g,)) for i, g in enumerate((2, 1, 4))], max_length=64)
    by_mask, by_index = (scores.clone().requires_grad_(True) for _ in range(2))
    masked, indexed = task_loss(by_mask, single.golds, "none"), task_loss(by_index, torch.tensor([2, 1, 4]), "none")
    assert torch.equal(masked, indexed)
    masked.sum().backward()
    indexed.sum().backward()
    assert torch.equal(by_mask.grad, by_index.grad)


def test_a_prediction_is_right_when_it_is_any_gold(tokenizer):
    batch = build_choice_batch(tokenizer, SAMPLES, max_length=64)
    for predicted in ([0, 1, 1], [2, 0, 3], [1, 2, 0], [3, 1, 4]):
        assert batch.right(torch.tensor(predicted)).tolist() == [p in s.right_choices
                                                                for p, s in zip(predicted, SAMPLES)]
    assert batch.gold.tolist() == [0, 1, 1]  # the lowest-indexed right choice


def test_roma_training_batches_carry_every_gold(tokenizer):
    """RoMA's device-resident rows (methods/roma/data.py) give the batch build_choice_batch builds, golds included,
    for any grouping of samples with different numbers of choices."""
    rows = TrainingRows(tokenizer, SAMPLES, max_length=64, device="cpu")
    plan = rows.plan([[2, 0], [1]])
    for step, members in enumerate(([2, 0], [1])):
        expected = build_choice_batch(tokenizer, [SAMPLES[i] for i in members], max_length=64)
        assert torch.equal(rows.batch(plan, step).golds, expected.golds)


def test_gold_is_the_first_of_golds():
    with pytest.raises(ValueError, match="gold 1 is not golds"):
        Sample("record", 0, "c", "multiple_choice", "c", continuations=(" a", " b"), choices=("a", "b"), gold=1,
               golds=(0, 1))
