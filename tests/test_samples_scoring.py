"""Samples and scoring against lm-eval itself: same prompts, same per-sample log-likelihoods and acc."""

import pytest
import torch
from lm_eval_helpers import FIXTURE_TASKS, evaluate_api

from roma_eval.errors import RomaEvalError
from roma_eval.samples import load_samples
from roma_eval.scoring import (
    build_choice_batch,
    choice_scores,
    score_samples,
    task_loss,
)
from roma_eval.tiny import save_tiny_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer):
    return save_tiny_model("qwen3_moe", tmp_path_factory.mktemp("scoring") / "m", seed=2, tokenizer=tokenizer)


def test_samples_are_lm_eval_prompts():
    samples = load_samples(["tiny_animals"], include_path=[FIXTURE_TASKS])
    assert len(samples) == 12
    first = samples[0]
    assert first.context == "Question: What kind of animal is a whale?\nAnswer:"
    assert first.continuations[0] == " mammal" and first.gold == 0
    assert first.text == "Question: What kind of animal is a whale?\nAnswer:"


def test_train_split_and_generation_samples():
    train = load_samples(["tiny_animals_train"], split="train", include_path=[FIXTURE_TASKS])
    assert [s.doc_id for s in train] == list(range(8))
    sums = load_samples(["tiny_sums"], include_path=[FIXTURE_TASKS])
    assert sums[0].output_type == "generate_until" and sums[0].gold == "0" and sums[0].until == ("\n",)


def test_scoring_matches_lm_eval_per_sample(model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ours = score_samples(model, tokenizer, load_samples(["tiny_animals"], include_path=[FIXTURE_TASKS]), batch_size=5)
    theirs = evaluate_api("hf", f"pretrained={model_dir}", ["tiny_animals"])["tiny_animals"]
    assert len(ours) == len(theirs) == 12
    for result in ours:
        resps, metrics = theirs[result.doc_id]
        assert result.scores == pytest.approx([r[0] for r in resps], abs=1e-4)
        assert (result.acc, result.acc_norm) == (metrics["acc"], metrics["acc_norm"])


def test_task_loss_is_cross_entropy_over_choice_scores(tiny_models, tokenizer):
    """Eq. 8 against a brute-force evaluation from per-choice log-likelihoods."""
    model = tiny_models["olmoe"]
    samples = load_samples(["tiny_animals"], include_path=[FIXTURE_TASKS])[:3]
    batch = build_choice_batch(tokenizer, samples, max_length=512)
    scores = choice_scores(model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits, batch)
    expected = []
    for sample in samples:
        lls = []
        for cont in sample.continuations:
            ctx_ids = tokenizer.encode(sample.context)
            full = tokenizer.encode(sample.context + cont)
            logp = torch.log_softmax(model(torch.tensor([full])).logits[0].float(), -1)
            lls.append(sum(logp[t - 1, full[t]].item() for t in range(len(ctx_ids), len(full))))
        lls = torch.tensor(lls)
        expected.append(-(lls[sample.gold] - torch.logsumexp(lls, 0)))
    assert task_loss(scores, batch.gold).item() == pytest.approx(torch.stack(expected).mean().item(), abs=1e-4)


def test_training_task_without_gold_labels_is_one_clear_error():
    with pytest.raises(RomaEvalError, match="no single gold label"):
        load_samples(["tiny_unlabelled"], split="train", include_path=[FIXTURE_TASKS])


@pytest.mark.slow
def test_unknown_task_is_one_clear_error():
    with pytest.raises(RomaEvalError, match="unknown task"):
        load_samples(["no_such_task_anywhere"], include_path=[FIXTURE_TASKS])


@pytest.mark.slow
def test_multiple_input_samples_are_lm_eval_requests(real_tasks):
    """lm-eval's winogrande: one prompt per choice, one shared continuation, the gold index from doc_to_text."""
    from lm_eval.tasks import TaskManager

    task = TaskManager().load(["winogrande"])["tasks"]["winogrande"]
    samples = load_samples(["winogrande"], limit=4)
    for sample, (doc_id, doc) in zip(samples, task.doc_iterator(limit=4)):
        requests = task.construct_requests(doc=doc, ctx=task.fewshot_context(doc, 0), metadata=("w", doc_id, 1))
        assert sample.multiple_input and sample.doc_id == doc_id
        assert sample.contexts == tuple(r.args[0] for r in requests)
        assert sample.continuations == tuple(r.args[1] for r in requests)
        assert sample.gold == {"1": 0, "2": 1}[doc["answer"]]
        assert sample.text == doc["sentence"]  # the question with its blank, no option filled in


@pytest.mark.slow
def test_mixed_choice_counts_and_multiple_input_match_lm_eval(real_tasks, model_dir):
    """One batch mixing ARC's 3-, 4- and 5-choice questions, and winogrande's per-choice prompts: per-sample
    scores, acc and acc_norm equal lm-eval's own (a padded choice once made acc_norm pick the padding)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tasks = ["arc_challenge", "winogrande"]
    samples = load_samples(tasks, limit=8)
    assert {len(s.choices) for s in samples} == {2, 3, 4, 5}
    ours = score_samples(model, tokenizer, samples, batch_size=len(samples))
    theirs = evaluate_api("hf", f"pretrained={model_dir}", tasks, include_path=None, limit=8)
    for result in ours:
        resps, metrics = theirs[result.task][result.doc_id]
        assert result.scores == pytest.approx([r[0] for r in resps], abs=1e-4)
        assert (result.acc, result.acc_norm) == (metrics["acc"], metrics.get("acc_norm", result.acc_norm))
