"""The oracle upper bound: descent mechanics against independent references, lm-eval parity at the
initial variables, batching and caching equivalence, output format, resuming and bad inputs."""

import argparse
import json

import pytest
import torch

from lm_eval_helpers import FIXTURE_TASKS, evaluate_api
from roma_eval.errors import RomaEvalError
from roma_eval.oracle import OracleConfig, descend, load_oracle_routing, load_oracle_tasks, run_oracle
from roma_eval.oracle.descent import _project, prefix_cache_supported, prepare_rows
from roma_eval.oracle.generation import teacher_forced_batch
from roma_eval.roma import token_positions
from roma_eval.routing import probe_routing, resolve_layers, routers, steer_routing
from roma_eval.samples import Sample
from roma_eval.scoring import build_choice_batch, choice_scores, score_samples, task_loss
from roma_eval.tiny import build_tiny_model, save_tiny_model

TASKS = ["tiny_animals", "tiny_sums"]
# Weights ten times transformers' default scale: routing at one token then moves the answer enough
# for the descent to have something to do.
STRONG = dict(initializer_range=0.3)


@pytest.fixture(scope="module")
def model(tokenizer):
    return build_tiny_model("qwen3_moe", tokenizer, seed=3, **STRONG)


@pytest.fixture(scope="module")
def lm(model, tokenizer):
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=1)


@pytest.fixture(scope="module")
def tasks():
    return load_oracle_tasks(TASKS, [FIXTURE_TASKS])[0]


def varied_samples():
    """Multiple-choice samples whose contexts differ in length (prefixes of different widths)."""
    choices = ("mammal", "fish", "bird")
    return [Sample("t", i, f"Question:{' Think.' * (3 * i)} What is a {name}?\nAnswer:", "multiple_choice", "",
                   continuations=tuple(f" {c}" for c in choices), choices=choices, gold=gold)
            for i, (name, gold) in enumerate([("whale", 0), ("shark", 1), ("eagle", 2), ("bat", 0), ("trout", 1)])]


def full_forward_scores(model, batch, variables, layers, tokens="last:1"):
    """Choice scores with the whole right-padded batch and no caching: the reference path."""
    positions = token_positions(tokens, batch.last_context)
    with torch.no_grad(), steer_routing(model, variables[batch.row_sample], positions, layers):
        return choice_scores(model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits, batch)


@pytest.mark.parametrize("tokens", ["last:1", "last:3"])
@pytest.mark.parametrize("max_length", [512, 30])  # 30: lm-eval's left truncation cuts a sample's choices differently
def test_prefix_cache_and_partial_layers_equal_the_full_forward(arch_model, tokenizer, tokens, max_length):
    arch, model = arch_model
    batch = build_choice_batch(tokenizer, varied_samples(), max_length)
    layers = resolve_layers(model, "last:2")
    torch.manual_seed(0)
    variables = 3 * torch.randn(batch.n_samples, int(tokens[-1]), len(layers), routers(model)[layers[0]].num_experts)
    reference = full_forward_scores(model, batch, variables, layers, tokens)
    for prefix_cache in (False, True):
        rows, step_batch = prepare_rows(model, batch, token_positions(tokens, batch.last_context), layers[0],
                                        prefix_cache)
        assert (rows.prefix is not None) == prefix_cache
        with torch.no_grad(), steer_routing(model, variables[step_batch.row_sample], rows.positions, layers):
            scores = choice_scores(rows.logits(model, layers[0]), step_batch)
        torch.testing.assert_close(scores, reference, rtol=0, atol=5e-5, msg=f"{arch} prefix_cache={prefix_cache}")


def test_sliding_window_models_take_the_uncached_path(tokenizer):
    model = build_tiny_model("mixtral", tokenizer, seed=1, sliding_window=8)
    assert not prefix_cache_supported(model)
    batch = build_choice_batch(tokenizer, varied_samples(), 512)
    rows, _ = prepare_rows(model, batch, token_positions("last:1", batch.last_context), 2, prefix_cache=True)
    assert rows.prefix is None and rows.input_ids.shape == batch.input_ids.shape


def test_one_gradient_step_lowers_the_gold_cross_entropy(model, tokenizer):
    samples = varied_samples()[2:]  # answered wrong or unsure at the base routing: CE well above 0
    batch = build_choice_batch(tokenizer, samples, 512)
    layers = resolve_layers(model, "last:2")
    config = OracleConfig(layers="last:2", lr=0.2, max_steps=1, stable=5)
    outcomes = descend(model, batch, config, layers)
    base = torch.tensor([r.scores for r in score_samples(model, tokenizer, samples)])
    expected_before = task_loss(base, batch.gold, reduction="none")
    stepped = torch.stack([o.after.variables for o in outcomes])
    assert all(o.reported_step == 1 and o.steps == 1 for o in outcomes)
    expected_after = task_loss(full_forward_scores(model, batch, stepped, layers), batch.gold, reduction="none")
    for o, before, after in zip(outcomes, expected_before.tolist(), expected_after.tolist()):
        assert o.losses[0] == pytest.approx(before, abs=1e-4)
        assert o.losses[1] == pytest.approx(after, abs=1e-4)
        assert after < before - 1e-3
    assert all(o.after.variables.abs().max() > 0 for o in outcomes)


def test_batched_and_one_at_a_time_give_the_same_per_sample_results(model, tokenizer):
    samples = varied_samples()
    layers = resolve_layers(model, "last:3")
    config = OracleConfig(layers="last:3", lr=0.5, max_steps=12, criterion="acc")
    together = descend(model, build_choice_batch(tokenizer, samples, 512), config, layers)
    for sample, joint in zip(samples, together):
        alone = descend(model, build_choice_batch(tokenizer, [sample], 512), config, layers)[0]
        decisions = (alone.steps, alone.converged, alone.reported_step)
        assert decisions == (joint.steps, joint.converged, joint.reported_step)
        # Float32 rounding differs with the batch's shapes; Adam's per-coordinate normalisation carries it
        # along, so values agree to ~1e-4 relative, decisions exactly.
        assert alone.losses == pytest.approx(joint.losses, rel=1e-3, abs=1e-4)
        assert alone.after.scores == pytest.approx(joint.after.scores, rel=1e-4)
        assert alone.after.greedy == joint.after.greedy
    assert len({o.steps for o in together}) > 1, "samples should stop at different steps (compaction exercised)"


def test_scores_variables_stay_on_the_simplex():
    torch.manual_seed(0)
    points = torch.randn(50, 8)
    projected = _project(points, "softmax")
    assert (projected >= 0).all() and torch.allclose(projected.sum(-1), torch.ones(50))
    inside = torch.softmax(torch.randn(50, 8), -1)
    torch.testing.assert_close(_project(inside + 0.3, "softmax"), inside)  # shift along 1: back to the point
    # The projection is the closest simplex point: no random simplex point is closer.
    others = torch.distributions.Dirichlet(torch.ones(8)).sample((2000,))
    assert ((points[:1] - projected[:1]).norm() <= (points[:1] - others).norm(dim=-1) + 1e-6).all()


def test_scores_variables_start_at_the_base_routing_and_stay_on_the_simplex(model, tokenizer):
    samples = varied_samples()[:3]
    layers = resolve_layers(model, "last:2")
    config = OracleConfig(layers="last:2", variables="scores", lr=0.1, max_steps=3, stable=9)
    outcomes = descend(model, build_choice_batch(tokenizer, samples, 512), config, layers)
    for outcome, base in zip(outcomes, score_samples(model, tokenizer, samples)):
        assert outcome.before.scores == pytest.approx(base.scores, abs=1e-4)
        for iterate in (outcome.before, outcome.after):
            torch.testing.assert_close(iterate.variables.sum(-1), torch.ones(1, len(layers)))
            assert (iterate.variables >= 0).all()
    assert any(not torch.equal(o.before.variables, o.after.variables) for o in outcomes)


def test_generation_teacher_forcing_is_the_gold_answer_likelihood(lm, tasks, tokenizer):
    sums = next(t for t in tasks if t.name == "tiny_sums")
    batch, responses = teacher_forced_batch(lm, sums, sums.samples[:3])
    assert responses == ["0", "1", "2"]  # exact_match without filters: " 0" would not match "0"
    layers = resolve_layers(lm.model, "last:2")
    outcomes = descend(lm.model, batch, OracleConfig(layers="last:2", max_steps=1, stable=5), layers, generative=True)
    for sample, outcome in zip(sums.samples[:3], outcomes):
        ids = tokenizer.encode(sample.context) + tokenizer.encode(responses[sample.doc_id]) + [tokenizer.eos_token_id]
        n_prompt = len(tokenizer.encode(sample.context))
        with torch.no_grad():
            logp = torch.log_softmax(lm.model(torch.tensor([ids])).logits[0].float(), -1)
        nll = -sum(logp[t - 1, ids[t]].item() for t in range(n_prompt, len(ids)))
        assert outcome.losses[0] == pytest.approx(nll, abs=1e-3)


def read_lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_initial_variables_reproduce_lm_eval_exactly(tmp_path, tokenizer):
    """lr 0 keeps the base routing: per sample, the oracle's answers must be lm-eval hf's own."""
    model_dir = save_tiny_model("olmoe", tmp_path / "m", seed=4, tokenizer=tokenizer, **STRONG)
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=1)
    tasks, group_map = load_oracle_tasks(TASKS, [FIXTURE_TASKS])
    run = run_oracle(lm, tasks, tmp_path / "out", OracleConfig(lr=0.0, max_steps=2), model_name=str(model_dir),
                     group_map=group_map, progress=False)
    reference = evaluate_api("hf", f"pretrained={model_dir}", TASKS)
    for task in TASKS:
        lines = read_lines(next((tmp_path / "out").glob(f"samples_{task}_*.jsonl")))
        assert len(lines) == len(reference[task])
        for line in lines:
            resps, metrics = reference[task][line["doc_id"]]
            for metric, value in metrics.items():
                assert line[metric] == line[f"{metric}_before"] == value, (task, line["doc_id"], metric)
            if task == "tiny_sums":
                assert line["filtered_resps"] == resps and line["resps"] == [resps]  # the very same generated text
            else:
                assert [s for s, _ in line["filtered_resps"]] == pytest.approx([r[0] for r in resps], abs=1e-4)
    from roma_eval.results import load_run

    parsed = load_run(run.results_file)
    assert parsed.method == "oracle" and parsed.model == str(model_dir).split("/")[-1]
    oracle = run.results["results"]["tiny_animals"]
    assert oracle["acc,none"] == run.results["oracle"]["base"]["tiny_animals"]["acc,none"]
    assert run.results["oracle"]["base_router_fingerprint"] and run.results["oracle"]["config"]["lr"] == 0.0


def test_oracle_is_at_least_base_and_routing_is_recorded(tmp_path, lm, tasks, model):
    config = OracleConfig(lr=0.5, max_steps=8, layers="last:3", save_routing=True, batch_size=5)
    run = run_oracle(lm, tasks[:1], tmp_path, config, model_name="tiny", progress=False)
    animals = run.results["results"]["tiny_animals"]
    base = run.results["oracle"]["base"]["tiny_animals"]
    assert animals["acc,none"] >= base["acc,none"] and animals["acc_norm,none"] >= base["acc_norm,none"]
    convergence = run.results["oracle"]["convergence"]["tiny_animals"]
    assert convergence["samples"] == 12 and 0 <= convergence["converged"] <= 12
    routing = load_oracle_routing(tmp_path, "tiny_animals")
    samples = tasks[0].samples
    batch = build_choice_batch(lm.tokenizer, samples, 512)
    first = batch.row_choice == 0
    layers = resolve_layers(model, "last:3")
    probed = probe_routing(model, batch.input_ids[first], batch.attention_mask[first], layers=layers,
                           positions=batch.last_context[first])
    for sample, expected in zip(samples, probed):
        recorded = routing[sample.doc_id]
        torch.testing.assert_close(recorded["base"][0], expected, rtol=0, atol=1e-5)
        torch.testing.assert_close(recorded["oracle"][0].sum(-1), torch.ones(len(layers)), rtol=0, atol=1e-4)


def test_generation_answers_already_right_are_kept_without_descent(tmp_path, lm, tasks, monkeypatch):
    import roma_eval.oracle.run as oracle_run

    real = oracle_run.generate

    def base_right_on_even_docs(lm, task, samples, variables=None, *args, **kwargs):
        texts = real(lm, task, samples, variables, *args, **kwargs)
        return [s.gold if variables is None and s.doc_id % 2 == 0 else t for s, t in zip(samples, texts)]

    monkeypatch.setattr(oracle_run, "generate", base_right_on_even_docs)
    sums = [t for t in tasks if t.name == "tiny_sums"]
    run_oracle(lm, sums, tmp_path, OracleConfig(max_steps=2), model_name="tiny", progress=False)
    for line in read_lines(next(tmp_path.glob("samples_tiny_sums_*.jsonl"))):
        kept = line["doc_id"] % 2 == 0
        assert (line["steps"] == 0 and line["losses"] == [] and line["gold_response"] is None) == kept
        if kept:
            assert line["exact_match"] == line["exact_match_before"] == 1.0 and line["converged"]
        else:
            assert len(line["losses"]) == 3 and line["gold_response"] == line["target"]


def test_an_interrupted_run_resumes_where_it_stopped(tmp_path, lm, tasks, monkeypatch):
    import roma_eval.oracle.run as oracle_run

    config = OracleConfig(lr=0.5, max_steps=3, layers="last:2", batch_size=4)
    complete = run_oracle(lm, tasks, tmp_path / "a", config, model_name="tiny", progress=False)
    run_oracle(lm, tasks, tmp_path / "b", config, model_name="tiny", progress=False)
    # Simulate a kill: the results file never written, a batch cut off in the middle of a line.
    manifest = json.loads((tmp_path / "b" / "oracle_run.json").read_text())
    (tmp_path / "b" / "oracle_run.json").write_text(json.dumps({**manifest, "complete": False}))
    next((tmp_path / "b").glob("results_*.json")).unlink()
    animals = next((tmp_path / "b").glob("samples_tiny_animals_*.jsonl"))
    text = animals.read_text()
    animals.write_text(text[: text.index("\n", len(text) // 2) + 40])
    seen = []
    real = oracle_run.descend
    def counting(model, batch, *args, **kwargs):
        seen.append(batch.n_samples)
        return real(model, batch, *args, **kwargs)

    monkeypatch.setattr(oracle_run, "descend", counting)
    resumed = run_oracle(lm, tasks, tmp_path / "b", config, model_name="tiny", progress=False)
    assert 0 < sum(seen) < 12  # only the lost tiny_animals documents were recomputed
    assert resumed.results["results"] == complete.results["results"]
    again = run_oracle(lm, tasks, tmp_path / "b", config, model_name="tiny", progress=False)
    assert again.resumed_complete and sum(seen) < 12


def oracle_cli(argv):
    from roma_eval.commands import oracle

    parser = argparse.ArgumentParser()
    oracle.add_arguments(parser)
    return oracle.run(parser.parse_args(argv))


def snapshot(directory):
    return {p.name: p.read_bytes() for p in directory.iterdir()}


def test_bad_inputs_are_one_clear_error_and_overwrite_nothing(tmp_path, tokenizer, lm, tasks):
    with pytest.raises(RomaEvalError, match="no single gold label"):
        load_oracle_tasks(["tiny_unlabelled"], [FIXTURE_TASKS])
    with pytest.raises(RomaEvalError, match="step budget must be at least 1"):
        OracleConfig(max_steps=0)
    model_dir = save_tiny_model("olmoe", tmp_path / "other", seed=9, tokenizer=tokenizer)
    out = tmp_path / "out"
    base_args = ["--tasks", "tiny_animals", "--include_path", str(FIXTURE_TASKS), "--out", str(out), "--limit", "2",
                 "--max-steps", "1", "--no-progress"]
    with pytest.raises(RomaEvalError, match="step budget"):
        oracle_cli(["--model", str(model_dir), *base_args, "--max-steps", "0"])
    assert not out.exists()
    run_oracle(lm, tasks[:1], out, OracleConfig(max_steps=1), model_name="tiny", limit=2, progress=False)
    before = snapshot(out)
    with pytest.raises(RomaEvalError, match="another model"):
        oracle_cli(["--model", str(model_dir), *base_args])
    with pytest.raises(RomaEvalError, match="other settings"):
        run_oracle(lm, tasks[:1], out, OracleConfig(max_steps=1, lr=0.3), model_name="tiny", limit=2, progress=False)
    assert snapshot(out) == before
    assert oracle_cli(["--model", str(model_dir), *base_args, "--overwrite"]) == 0
    assert json.loads((out / "oracle_run.json").read_text())["model"] == str(model_dir)
    foreign = tmp_path / "lm_eval_out"
    foreign.mkdir()
    (foreign / "results_2026-01-01T00-00-00.json").write_text("{}")
    with pytest.raises(RomaEvalError, match="not written by `roma-eval oracle`"):
        run_oracle(lm, tasks[:1], foreign, OracleConfig(max_steps=1), model_name="tiny", limit=2, progress=False)
