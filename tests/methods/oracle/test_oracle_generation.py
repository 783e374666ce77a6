"""The oracle on generation tasks (GSM8K): it aims at what lm-eval's filters score, the final answer after the
model's own reasoning, and calls a sample right only when a real generation gets full marks."""

import dataclasses
import json

import pytest
import torch
from lm_eval_helpers import FIXTURE_TASKS

from roma_eval.methods.oracle import (
    OracleConfig,
    descend,
    load_oracle_tasks,
    run_oracle,
)
from roma_eval.methods.oracle.descent import GenerationRound
from roma_eval.methods.oracle.generation import (
    Target,
    answer_targets,
    generation_settings,
    prompt_ids,
    steered_positions,
    target_losses,
    target_tokens,
    teacher_forced_batch,
)
from roma_eval.methods.oracle.lm_eval import lm_settings
from roma_eval.methods.oracle.solver import OracleSolver
from roma_eval.methods.oracle.tasks import filter_ensembles, judge_generation, marks
from roma_eval.routing import resolve_layers, steer_routing, token_positions
from roma_eval.tiny import build_tiny_model


@pytest.fixture(scope="module")
def lm(tokenizer):
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=build_tiny_model("olmoe", tokenizer, seed=3, initializer_range=0.3), tokenizer=tokenizer,
                batch_size=1)


def first_request(task):
    """lm-eval's request for the task's first document (prompt with its few-shot examples, generation kwargs)."""
    task.build_all_requests(limit=1)
    return task.instances[0]


@pytest.fixture(scope="module")
def gsm8k():
    """lm-eval's own gsm8k (5-shot, strict-match and flexible-extract) on the offline hub's synthetic rows."""
    import offline_hub

    with offline_hub.installed():
        return load_oracle_tasks(["gsm8k"], limit=2).tasks["gsm8k"]


def targets_for(task, lm, request, generation):
    until, _ = generation_settings(lm_settings(lm), request)
    return answer_targets(task, request.doc, generation, until, filter_ensembles(task))


def full_marks(task, request, target):
    judged = marks(judge_generation(task, request.doc, target.prefix + target.answer, filter_ensembles(task)))
    return all(judged.values())


@pytest.mark.slow
def test_the_gsm8k_target_is_the_final_answer_after_the_models_own_reasoning(gsm8k, lm):
    request = first_request(gsm8k)
    gold = request.doc["answer"].split("#### ")[-1]
    wrong = str(int(gold) + 1)
    # The model wrote its own "#### N": keep its reasoning, replace only the number the filters read.
    reasoning = f"She adds them: 2 + 3 = {wrong} things.\n#### "
    targets = targets_for(gsm8k, lm, request, reasoning + wrong)
    assert Target(reasoning, gold) in targets
    # No "#### ": its reasoning, then the gold solution's final line (strict-match and flexible-extract both read it).
    assert Target(f"She has {wrong} of them.", f"\n#### {gold}") in targets_for(gsm8k, lm, request,
                                                                               f"She has {wrong} of them.")
    for target in targets + targets_for(gsm8k, lm, request, f"She has {wrong} of them."):
        assert full_marks(gsm8k, request, target), target  # under both filters
        # Never the whole worked solution, whose "<<...>>" annotations no model writes.
        assert "<<" not in target.answer and len(target.answer) <= len(f"\n#### {gold}")
    assert "<<" in request.doc["answer"]


def test_the_target_respects_the_tasks_filters_and_stop_sequences(lm):
    tasks = load_oracle_tasks(["toy_gsm8k", "tiny_sums"], [FIXTURE_TASKS], limit=3)
    toy, sums = tasks.tasks["toy_gsm8k"], tasks.tasks["tiny_sums"]
    request = first_request(toy)
    gold = request.doc["answer"]
    # First-number filter, stop at "\n": the answer goes where the model wrote its first number, or first.
    assert Target(" ", gold) in targets_for(toy, lm, request, " 11 apples")
    words = targets_for(toy, lm, request, " She has")
    assert {Target(" She has", f" {gold}"), Target("", f" {gold}")} <= set(words)
    assert all("\n" not in t.answer and full_marks(toy, request, t) for t in words)  # "\n" would stop it
    # No filter, exact match: " 0" is not "0".
    request = first_request(sums)
    assert targets_for(sums, lm, request, " 3+4") == [Target("", request.doc["answer"])]


def test_the_easiest_right_target_is_chosen(lm, tokenizer):
    """Of the targets lm-eval would score right, the one with the lowest loss at the current routing (here the
    base routing) is descended on; target_losses is checked against a plain forward."""
    toy = load_oracle_tasks(["toy_gsm8k"], limit=3).tasks["toy_gsm8k"]
    request = first_request(toy)
    _, max_gen_toks = generation_settings(lm_settings(lm), request)
    options = targets_for(toy, lm, request, " She has")
    prompt = prompt_ids(lm_settings(lm), request)
    tokens = [target_tokens(tokenizer, t, max_gen_toks) for t in options]
    batch, prompt_last = teacher_forced_batch([prompt] * len(options), tokens)
    layers = resolve_layers(lm.model, "last:2")
    losses = target_losses(lm.model, batch, token_positions("last:1", prompt_last), None, layers, "offset")
    for (reasoning, answer), loss in zip(tokens, losses.tolist()):
        ids = prompt + reasoning + answer
        with torch.no_grad():
            logp = torch.log_softmax(lm.model(torch.tensor([ids])).logits[0].float(), -1)
        start = len(prompt) + len(reasoning)
        assert loss == pytest.approx(-sum(logp[t - 1, ids[t]].item() for t in range(start, len(ids))), abs=1e-3)
    solver = OracleSolver(lm.model, tokenizer, OracleConfig(layers="last:2"), layers, lm_settings(lm))
    chosen, _ = solver.choose_targets(toy, [(request, " She has", prompt)], None, filter_ensembles(toy))
    assert chosen == [options[int(losses.argmin())]] and len(set(losses.tolist())) > 1


@pytest.mark.slow  # lm-eval's gsm8k YAML: its task index (~8 s)
@pytest.mark.parametrize("positions", ["all", "tokens"])
def test_the_generation_loss_is_the_answers_likelihood_after_the_reasoning(gsm8k, lm, tokenizer, positions):
    """The loss at the base routing, and where the variables steer: every prompt token (all) or the prompt's last
    (tokens), never the reasoning and answer after it, which a real generation writes in unsteered decoding steps."""
    request = first_request(gsm8k)
    _, max_gen_toks = generation_settings(lm_settings(lm), request)
    target = Target("She adds them: 2 + 3 = 9 things.\n#### ", request.doc["answer"].split("#### ")[-1])
    prompt = prompt_ids(lm_settings(lm), request)
    reasoning, answer = target_tokens(tokenizer, target, max_gen_toks)
    assert tokenizer.decode(reasoning + answer) == target.prefix + target.answer
    batch, prompt_last = teacher_forced_batch([prompt], [(reasoning, answer)])
    layers = resolve_layers(lm.model, "last:2")
    config = OracleConfig(layers="last:2", max_steps=1, stable=5, positions=positions)
    (outcome,) = descend(lm.model, batch, config, layers, generation=GenerationRound(prompt_last))
    ids = prompt + reasoning + answer
    with torch.no_grad():
        logp = torch.log_softmax(lm.model(torch.tensor([ids])).logits[0].float(), -1)
    start = len(prompt) + len(reasoning)
    assert outcome.losses[0] == pytest.approx(-sum(logp[t - 1, ids[t]].item() for t in range(start, len(ids))),
                                              abs=1e-3)
    assert prompt_last.tolist() == [len(prompt) - 1]
    steered = steered_positions(config, prompt_last)
    assert steered.tolist() == [list(range(len(prompt)))] if positions == "all" else [[len(prompt) - 1]]
    assert outcome.after.variables.shape[0] == steered.shape[1]
    # The reported variables change the answer's loss exactly as steering those prompt positions in a plain forward.
    variables = outcome.after.variables.unsqueeze(0)
    with torch.no_grad(), steer_routing(lm.model, variables, steered, layers):
        logp = torch.log_softmax(lm.model(torch.tensor([ids])).logits[0].float(), -1)
    expected = -sum(logp[t - 1, ids[t]].item() for t in range(start, len(ids)))
    assert target_losses(lm.model, batch, steered, variables, layers, "offset").item() == pytest.approx(expected,
                                                                                                       abs=1e-3)
    assert outcome.losses[outcome.reported_step] == pytest.approx(expected, abs=1e-3)


@pytest.mark.parametrize("steered_text", ["wrong", "gold"])
def test_a_sample_is_right_only_when_a_real_generation_gets_full_marks(tmp_path, lm, monkeypatch, steered_text):
    """The teacher-forced target turns greedy at step 1 of every round (forced here); the real generation at that
    routing decides.  Wrong: the descent goes on (a new round each step) and ends unconverged at its best real
    generation.  Right: the sample stops there and that generation is what lm-eval scores."""
    import roma_eval.methods.oracle.solver as oracle_solver

    real = oracle_solver.descend

    def greedy_at_step_1(model, batch, config, *args, **kwargs):
        outcomes = real(model, batch, dataclasses.replace(config, max_steps=1), *args, **kwargs)
        return [dataclasses.replace(o, converged=True, reported_step=1, after=o.before) for o in outcomes]

    def generation(model, lm, instance, *args):
        return instance.doc["answer"] if steered_text == "gold" else "no idea"

    monkeypatch.setattr(oracle_solver, "descend", greedy_at_step_1)
    monkeypatch.setattr(oracle_solver, "steered_generation", generation)
    tasks = load_oracle_tasks(["tiny_sums"], [FIXTURE_TASKS], limit=3)
    run = run_oracle(lm.model, lm.tokenizer, tasks, tmp_path, OracleConfig(max_steps=4), model_name="tiny",
                     progress=False)
    (samples_file,) = tmp_path.glob("*/samples_tiny_sums_*.jsonl")
    for line in map(json.loads, samples_file.read_text().splitlines()):
        oracle = line["oracle"]
        if oracle["before"]["exact_match"] == 1:
            continue
        if steered_text == "gold":
            assert line["resps"] == [[line["target"]]] and line["exact_match"] == 1
            assert (oracle["converged"], oracle["steps"], oracle["reported_step"], oracle["generations"]) == (True, 1,
                                                                                                              1, 2)
        else:
            assert line["exact_match"] == 0 and not oracle["converged"]
            assert (oracle["steps"], oracle["generations"]) == (4, 5)  # the base answer and one per step
    assert run.results["oracle"]["convergence"]["tiny_sums"]["samples"] == 3
