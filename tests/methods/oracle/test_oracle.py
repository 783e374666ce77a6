"""The oracle upper bound: descent mechanics against independent references (the full uncached forward, a
brute-force one-sample descent, lm-eval's own per-sample results), the never-below-base rule, batching and
caching equivalence, the lm-eval-written output, resuming and bad inputs.

Real lm-eval task YAMLs (MMLU's group total, winogrande, ARC, GSM8K): test_oracle_real_tasks.py.
Generation (the GSM8K target): test_oracle_generation.py.
"""

import json

import pytest
import torch
import torch.nn.functional as F
from lm_eval_helpers import FIXTURE_TASKS, evaluate_api

from roma_eval.errors import RomaEvalError
from roma_eval.methods.oracle import (
    OracleConfig,
    descend,
    load_oracle_routing,
    load_oracle_tasks,
    run_oracle,
)
from roma_eval.methods.oracle.descent import prepare_rows
from roma_eval.routing import (
    record_routing,
    resolve_layers,
    routers,
    steer_routing,
    token_positions,
)
from roma_eval.routing.partial import prefix_cache_exact
from roma_eval.routing.scores import project_scores
from roma_eval.samples import Sample, load_samples
from roma_eval.scoring import (
    build_choice_batch,
    choice_scores,
    score_samples,
    task_loss,
)
from roma_eval.tiny import build_tiny_model, save_tiny_model

TASKS = ["tiny_animals", "tiny_sums"]
# Weights ten times transformers' default scale: routing at one token then moves the answer enough
# for the descent to have something to do.
STRONG = dict(initializer_range=0.3)


@pytest.fixture(scope="module")
def model(tokenizer):
    return build_tiny_model("qwen3_moe", tokenizer, seed=3, **STRONG)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer):
    """A saved tiny OLMoE, so that lm-eval's own ``hf`` model can load the very same weights."""
    return save_tiny_model("olmoe", tmp_path_factory.mktemp("model") / "olmoe", seed=3, tokenizer=tokenizer, **STRONG)


@pytest.fixture(scope="module")
def saved(model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir).eval()


VARIED = [("whale", 0), ("shark", 1), ("eagle", 2), ("bat", 0), ("trout", 1), ("owl", 2), ("dog", 0), ("eel", 1),
          ("duck", 2), ("cow", 0), ("cod", 1), ("hawk", 2)]


@pytest.fixture(scope="module")
def varied_tasks(tmp_path_factory):
    """A toy-suite-like lm-eval task whose prompts differ in length (so the descent does flip answers of a tiny
    random model), written for the test: its YAML and its dataset function."""
    directory = tmp_path_factory.mktemp("varied_tasks")
    rows = [{"question": f"Question:{' Think.' * (i % 4)} What is a {name}?\nAnswer:",
             "choices": ["mammal", "fish", "bird"], "label": label} for i, (name, label) in enumerate(VARIED)]
    (directory / "oracle_varied_docs.py").write_text(
        "import datasets\n\n\ndef rows(**kwargs):\n"
        f"    return datasets.DatasetDict({{'test': datasets.Dataset.from_list({rows!r})}})\n")
    (directory / "oracle_varied.yaml").write_text(
        "task: oracle_varied\ncustom_dataset: !function oracle_varied_docs.rows\noutput_type: multiple_choice\n"
        "test_split: test\ndoc_to_text: '{{question}}'\ndoc_to_choice: '{{choices}}'\ndoc_to_target: label\n"
        "target_delimiter: ' '\nmetric_list:\n  - metric: acc\n  - metric: acc_norm\n")
    return directory


@pytest.fixture(scope="module")
def lm_eval_base(model_dir, varied_tasks):
    """lm-eval's own per-sample results of the saved model: the independent base."""
    return {**evaluate_api("hf", f"pretrained={model_dir}", TASKS),
            **evaluate_api("hf", f"pretrained={model_dir}", ["oracle_varied"], include_path=varied_tasks)}


def fixture_tasks(names=TASKS, limit=None, include_path=(FIXTURE_TASKS,)):
    return load_oracle_tasks(names, include_path, limit=limit)


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


def reference_variables(batch, config, n_layers, n_experts):
    """One sample's starting offsets and a function from them to (per-row overrides, positions) for
    ``steer_routing``: --positions tokens, one override per --tokens token shared by the rows; --positions all,
    the context's positions (shared by the rows) then each choice's continuation positions, in that order."""
    if config.positions == "tokens":
        positions = token_positions(config.tokens, batch.last_context)
        return (torch.zeros(1, positions.shape[1], n_layers, n_experts),
                lambda x: (x.expand(len(positions), -1, -1, -1), positions))
    context, lengths = int(batch.last_context[0]) + 1, batch.attention_mask.sum(1).tolist()
    assert (batch.last_context == context - 1).all()  # an ordinary task: the choices share the context
    own = [length - context for length in lengths]
    width = batch.input_ids.shape[1]

    def overrides(x):
        rows, start = [], context
        for n in own:
            row = torch.cat([x[0, :context], x[0, start:start + n]])
            rows.append(torch.cat([row, row.new_zeros(width - len(row), *row.shape[1:])]))
            start += n
        positions = torch.tensor([list(range(n)) + [-1] * (width - n) for n in lengths])
        return torch.stack(rows), positions

    return torch.zeros(1, context + sum(own), n_layers, n_experts), overrides


def reference_descent(model, tokenizer, sample, config, layers):
    """One sample, brute force: the full uncached forward of all its choices every step, plain-Python Adam with
    one second moment for the sample, the stopping rule and the never-below-base pick written out.  Returns
    (steps, converged, reported_step, losses)."""
    batch = build_choice_batch(tokenizer, [sample], 512)
    lengths = torch.tensor([float(len(c)) for c in sample.choices])
    x, overrides = reference_variables(batch, config, len(layers), routers(model)[layers[0]].num_experts)
    moment, second = torch.zeros_like(x), torch.zeros(())
    losses, streak, base_right, best = [], 0, None, None
    flags = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)
    try:
        for t in range(config.max_steps + 1):
            x.requires_grad_(True)
            override, positions = overrides(x)
            with steer_routing(model, override, positions, layers):
                logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
            scores = choice_scores(logits, batch)[0]
            loss = F.cross_entropy(scores[None], torch.tensor([sample.gold]))
            right = {"acc": int(scores.argmax()) == sample.gold,
                     "acc_norm": int((scores / lengths).argmax()) == sample.gold}
            base_right = base_right or dict(right)
            eligible = all(right[m] or not base_right[m] for m in right)
            streak = streak + 1 if (all(right.values()) and eligible) else 0
            losses.append(loss.item())
            rank = (eligible, sum(right.values()), -loss.item())
            if best is None or rank > best[0]:
                best = (rank, t)
            if streak >= config.stable:
                return t, True, t, losses
            if t == config.max_steps:
                return t, False, best[1], losses
            (grad,) = torch.autograd.grad(loss, x)
            moment = 0.9 * moment + 0.1 * grad
            second = 0.999 * second + 0.001 * (grad * grad).mean()
            step = t + 1
            x = (x - config.lr * (moment / (1 - 0.9 ** step)) / ((second / (1 - 0.999 ** step)).sqrt() + 1e-8)).detach()
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)


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
    assert not prefix_cache_exact(model, 9) and prefix_cache_exact(model, 8)
    batch = build_choice_batch(tokenizer, varied_samples(), 512)
    rows, _ = prepare_rows(model, batch, token_positions("last:1", batch.last_context), 2, prefix_cache=True)
    assert rows.prefix is None and rows.input_ids.shape == batch.input_ids.shape


def test_one_gradient_step_lowers_the_gold_cross_entropy(model, tokenizer):
    samples = varied_samples()[2:]  # answered wrong or unsure at the base routing: CE well above 0
    batch = build_choice_batch(tokenizer, samples, 512)
    layers = resolve_layers(model, "last:2")
    config = OracleConfig(layers="last:2", lr=0.2, max_steps=1, stable=5, positions="tokens")
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


@pytest.mark.parametrize("positions", ["all", "tokens"])
def test_batched_descent_equals_a_brute_force_descent_of_each_sample_alone(model, tokenizer, positions):
    """The batched, cached, compacting descent against ``reference_descent``: same steps, convergence, reported
    iterate and loss trajectory for every sample (with every position steered: slots, shared contexts run once
    per step, and one second moment over a sample's own slots only, whatever its batch-mates' lengths)."""
    samples = varied_samples()
    layers = resolve_layers(model, "last:3")
    config = OracleConfig(layers="last:3", lr=0.5 if positions == "tokens" else 0.1, max_steps=12,
                          positions=positions)
    together = descend(model, build_choice_batch(tokenizer, samples, 512), config, layers)
    for sample, joint in zip(samples, together):
        steps, converged, reported, losses = reference_descent(model, tokenizer, sample, config, layers)
        assert (joint.steps, joint.converged, joint.reported_step) == (steps, converged, reported), sample.doc_id
        # Float32 rounding differs with the batch's shapes and the prefix cache: values agree to ~1e-4.
        assert joint.losses == pytest.approx(losses, rel=1e-3, abs=1e-4)
    assert len({o.steps for o in together}) > 1, "samples should stop at different steps (compaction exercised)"
    assert any(o.converged for o in together) and not all(o.converged for o in together)


@pytest.mark.parametrize("positions", ["all", "tokens"])
def test_batched_and_one_at_a_time_give_the_same_per_sample_results(model, tokenizer, positions):
    samples = varied_samples()
    layers = resolve_layers(model, "last:3")
    config = OracleConfig(layers="last:3", lr=0.5, max_steps=12, criterion="acc", positions=positions)
    together = descend(model, build_choice_batch(tokenizer, samples, 512), config, layers)
    for sample, joint in zip(samples, together):
        alone = descend(model, build_choice_batch(tokenizer, [sample], 512), config, layers)[0]
        decisions = (alone.steps, alone.converged, alone.reported_step)
        assert decisions == (joint.steps, joint.converged, joint.reported_step)
        assert alone.losses == pytest.approx(joint.losses, rel=1e-3, abs=1e-4)
        assert alone.after.scores == pytest.approx(joint.after.scores, rel=1e-4)
        assert alone.after.greedy == joint.after.greedy


# A scripted score trajectory: the descent's bookkeeping (stopping rule, reported iterate) under test alone.
CHOICES = ("ab", "abcd", "abcdefgh")  # 2, 4 and 8 characters: acc and acc_norm can disagree
BASE = [-1.0, -1.5, -8.0]  # acc wrong (choice 0 has the highest score), acc_norm right (-0.375 per character)
ACC_ONLY = [-3.0, -2.0, -2.5]  # acc right, acc_norm wrong (choice 2: -0.31 per character); lower CE than BASE


def script_scores(monkeypatch, trajectory):
    import roma_eval.methods.oracle.descent as descent

    real, calls = descent.choice_scores, []

    def scripted(logits, batch):
        scores = real(logits, batch)
        wanted = torch.tensor(trajectory[min(len(calls), len(trajectory) - 1)], dtype=scores.dtype)
        calls.append(None)
        return wanted.to(scores.device).expand_as(scores) + 0 * scores  # zero gradient: the variables stay put

    monkeypatch.setattr(descent, "choice_scores", scripted)


@pytest.mark.parametrize("criterion", ["both", "acc"])
def test_the_reported_iterate_never_loses_a_metric_right_at_step_0(monkeypatch, tokenizer, criterion):
    """Right on acc_norm at step 0; later iterates right on acc only, with a lower loss.  Reporting one of them
    (the best "number of metrics right, then loss", or a converged streak under --criterion acc) would report
    the sample below base on acc_norm: the only eligible iterate is step 0."""
    model = build_tiny_model("olmoe", tokenizer, seed=1)
    sample = Sample("t", 0, "Question: which?\nAnswer:", "multiple_choice", "",
                    continuations=tuple(f" {c}" for c in CHOICES), choices=CHOICES, gold=1)
    script_scores(monkeypatch, [BASE, ACC_ONLY])
    layers = resolve_layers(model, "last:2")
    config = OracleConfig(layers="last:2", max_steps=3, stable=2, criterion=criterion)
    outcome = descend(model, build_choice_batch(tokenizer, [sample], 512), config, layers)[0]
    assert outcome.losses[1] < outcome.losses[0]
    assert (outcome.reported_step, outcome.converged, outcome.after.scores) == (0, False, pytest.approx(BASE))


def test_scores_variables_stay_on_the_simplex():
    torch.manual_seed(0)
    points = torch.randn(50, 8)
    projected = project_scores(points, "softmax")
    assert (projected >= 0).all() and torch.allclose(projected.sum(-1), torch.ones(50))
    inside = torch.softmax(torch.randn(50, 8), -1)
    torch.testing.assert_close(project_scores(inside + 0.3, "softmax"), inside)  # shift along 1: back to the point
    # The projection is the closest simplex point: no random simplex point is closer.
    others = torch.distributions.Dirichlet(torch.ones(8)).sample((2000,))
    assert ((points[:1] - projected[:1]).norm() <= (points[:1] - others).norm(dim=-1) + 1e-6).all()


@pytest.mark.parametrize("positions", ["all", "tokens"])
def test_scores_variables_start_at_the_base_routing_and_stay_on_the_simplex(model, tokenizer, positions):
    samples = varied_samples()[:3]
    layers = resolve_layers(model, "last:2")
    config = OracleConfig(layers="last:2", variables="scores", lr=0.1, max_steps=3, stable=9, positions=positions)
    batch = build_choice_batch(tokenizer, samples, 512)
    outcomes = descend(model, batch, config, layers)
    lengths = batch.attention_mask.sum(1)
    for i, (outcome, base) in enumerate(zip(outcomes, score_samples(model, tokenizer, samples))):
        assert outcome.before.scores == pytest.approx(base.scores, abs=1e-4)
        rows = batch.row_sample == i  # all: the context once, then each choice's continuation
        context = int(batch.last_context[rows][0]) + 1
        slots = 1 if positions == "tokens" else context + int((lengths[rows] - context).sum())
        for iterate in (outcome.before, outcome.after):
            torch.testing.assert_close(iterate.variables.sum(-1), torch.ones(slots, len(layers)))
            assert (iterate.variables >= 0).all()
    assert any(not torch.equal(o.before.variables, o.after.variables) for o in outcomes)


def read_lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def run_files(out, pattern):
    """lm-eval's layout: OUT/<model_name_sanitized>/<files>."""
    return sorted(out.glob(f"*/{pattern}"))


def test_initial_variables_reproduce_lm_eval_exactly(tmp_path, tokenizer, model_dir, saved, lm_eval_base):
    """lr 0 keeps the base routing: per sample, the oracle's answers (log-likelihoods, generations) must be lm-eval
    hf's own, with the default variables: every position the scores depend on, steered at zero offsets."""
    run = run_oracle(saved, tokenizer, fixture_tasks(), tmp_path, OracleConfig(lr=0.0, max_steps=2),
                     model_name=str(model_dir), progress=False)
    assert run.results["oracle"]["config"]["positions"] == "all"
    assert run.results_file.parent.parent == tmp_path  # lm-eval's OUT/<model_name_sanitized>/
    for task in TASKS:
        (samples_file,) = run_files(tmp_path, f"samples_{task}_*.jsonl")
        lines = read_lines(samples_file)
        assert len(lines) == len(lm_eval_base[task])
        for line in lines:
            resps, metrics = lm_eval_base[task][line["doc_id"]]
            assert "arguments" in line and line["oracle"]["before"] == {m: line[m] for m in line["metrics"]}
            for metric, value in metrics.items():
                assert line[metric] == value, (task, line["doc_id"], metric)
            if task == "tiny_sums":
                assert line["filtered_resps"] == resps and line["resps"] == [resps]  # the very same generated text
            else:
                assert [float(s) for s, _ in line["filtered_resps"]] == pytest.approx([r[0] for r in resps], abs=1e-4)
    from roma_eval.results import load_run

    parsed = load_run(run.results_file)
    assert parsed.method == "oracle" and parsed.model == model_dir.name
    assert run.results["results"]["tiny_animals"] == {**run.results["oracle"]["base"]["tiny_animals"]}
    assert run.results["oracle"]["base_router_fingerprint"] and run.results["oracle"]["config"]["lr"] == 0.0
    assert run.results["n-shot"] == {"tiny_animals": 0, "tiny_sums": 0} and set(run.results["configs"]) == set(TASKS)


@pytest.mark.slow
@pytest.mark.parametrize("positions", ["all", "tokens"])
def test_oracle_is_at_least_lm_eval_base_and_converges_as_the_reference(tmp_path, tokenizer, model_dir, saved,
                                                                        varied_tasks, lm_eval_base, positions):
    """Per sample and metric the oracle is >= lm-eval's own base answer; the steps, convergence and reported
    iterate it records are those of the brute-force reference descent; the routing it records at the --tokens
    positions is the base routing at iterate 0 and, with --positions tokens, the routing under its reported
    variables (with every position steered the variables are not kept)."""
    config = OracleConfig(lr=1.0 if positions == "tokens" else 0.2, max_steps=6, layers="all", tokens="last:4",
                          save_routing=True, batch_size=5, positions=positions)
    run = run_oracle(saved, tokenizer, fixture_tasks(["oracle_varied"], include_path=[varied_tasks]), tmp_path,
                     config, model_name=str(model_dir), progress=False)
    (samples_file,) = run_files(tmp_path, "samples_oracle_varied_*.jsonl")
    lines = {line["doc_id"]: line for line in read_lines(samples_file)}
    for doc_id, (_, base) in lm_eval_base["oracle_varied"].items():
        for metric, value in base.items():
            assert lines[doc_id][metric] >= value == lines[doc_id]["oracle"]["before"][metric], (doc_id, metric)
    oracle, base = run.results["results"]["oracle_varied"], run.results["oracle"]["base"]["oracle_varied"]
    assert oracle["acc,none"] > base["acc,none"]  # answers do flip: the comparison above is not vacuous
    assert run.results["oracle"]["config"]["positions"] == positions
    layers = resolve_layers(saved, "all")
    samples = load_samples(["oracle_varied"], include_path=[varied_tasks])
    reference = {s.doc_id: reference_descent(saved, tokenizer, s, config, layers) for s in samples}
    for doc_id, (steps, converged, reported, _) in reference.items():
        recorded = lines[doc_id]["oracle"]
        assert (recorded["steps"], recorded["converged"], recorded["reported_step"]) == (steps, converged, reported)
    convergence = run.results["oracle"]["convergence"]["oracle_varied"]
    assert convergence["samples"] == len(VARIED) and convergence["converged"] == sum(r[1] for r in reference.values())
    routing = load_oracle_routing(tmp_path, "oracle_varied")
    batch = build_choice_batch(tokenizer, samples, 512)
    first = batch.row_choice == 0
    at = token_positions(config.tokens, batch.last_context[first])
    inputs = dict(input_ids=batch.input_ids[first], attention_mask=batch.attention_mask[first])
    with torch.no_grad(), record_routing(saved, at, layers) as plain:
        saved(**inputs)
    for i, sample in enumerate(samples):
        torch.testing.assert_close(routing[sample.doc_id]["base"], plain.scores[i], rtol=0, atol=1e-5)
    if positions == "all":
        assert all("variables" not in r and r["oracle"].shape == r["base"].shape for r in routing.values())
        assert any(not torch.allclose(r["oracle"], r["base"]) for r in routing.values())
        return
    variables = torch.stack([routing[s.doc_id]["variables"] for s in samples])
    with torch.no_grad(), steer_routing(saved, variables, at, layers), record_routing(saved, at, layers) as steered:
        saved(**inputs)
    for i, sample in enumerate(samples):
        torch.testing.assert_close(routing[sample.doc_id]["oracle"], steered.scores[i], rtol=0, atol=1e-5)


def test_generation_answers_already_right_are_kept_without_descent(tmp_path, tokenizer, model_dir, saved, monkeypatch):
    from lm_eval.models.huggingface import HFLM

    real = HFLM.generate_until  # lm-eval's own generation, which the oracle's solver calls (lm_eval.lm_settings)

    def base_right_on_even_docs(self, requests, disable_tqdm=False):
        texts = real(self, requests, disable_tqdm)
        steered = any(gate._forward_hooks for gate in routers(self.model).values())
        return [r.doc["answer"] if not steered and r.doc_id % 2 == 0 else t for r, t in zip(requests, texts)]

    monkeypatch.setattr(HFLM, "generate_until", base_right_on_even_docs)
    run_oracle(saved, tokenizer, fixture_tasks(["tiny_sums"]), tmp_path, OracleConfig(max_steps=2),
               model_name="tiny", progress=False)
    (samples_file,) = run_files(tmp_path, "samples_tiny_sums_*.jsonl")
    for line in read_lines(samples_file):
        kept, oracle = line["doc_id"] % 2 == 0, line["oracle"]
        assert (oracle["steps"] == 0 and oracle["losses"] == [] and oracle["target"] is None) == kept
        if kept:
            assert line["exact_match"] == oracle["before"]["exact_match"] == 1.0 and oracle["converged"]
        else:
            assert len(oracle["losses"]) == 3 and oracle["target"]["answer"] == line["target"]


@pytest.mark.slow
def test_an_interrupted_run_resumes_where_it_stopped(tmp_path, tokenizer, saved, monkeypatch):
    import roma_eval.methods.oracle.solver as oracle_solver

    config = OracleConfig(lr=0.5, max_steps=3, layers="last:2", batch_size=4)
    complete = run_oracle(saved, tokenizer, fixture_tasks(), tmp_path / "a", config, model_name="tiny", progress=False)
    run_oracle(saved, tokenizer, fixture_tasks(), tmp_path / "b", config, model_name="tiny", progress=False)
    # Simulate a kill: lm-eval's files never written (or half), a batch cut off in the middle of a line.
    run_dir = tmp_path / "b" / "tiny"
    manifest = json.loads((run_dir / "oracle_run.json").read_text())
    (run_dir / "oracle_run.json").write_text(json.dumps({**manifest, "complete": False}))
    next(run_dir.glob("samples_tiny_sums_*.jsonl")).unlink()
    progress = run_dir / "oracle_progress" / "tiny_animals.jsonl"
    text = progress.read_text()
    progress.write_text(text[: text.index("\n", len(text) // 2) + 40])
    seen = []
    real = oracle_solver.descend

    def counting(model, batch, *args, **kwargs):
        seen.append(batch.n_samples)
        return real(model, batch, *args, **kwargs)

    monkeypatch.setattr(oracle_solver, "descend", counting)
    resumed = run_oracle(saved, tokenizer, fixture_tasks(), tmp_path / "b", config, model_name="tiny", progress=False)
    assert 0 < sum(seen) < 12  # only the lost tiny_animals documents were recomputed, no tiny_sums one
    assert resumed.results["results"] == complete.results["results"]
    assert len(list(run_dir.glob("results_*.json"))) == 1 and len(list(run_dir.glob("samples_*.jsonl"))) == 2
    again = run_oracle(saved, tokenizer, fixture_tasks(), tmp_path / "b", config, model_name="tiny", progress=False)
    assert again.resumed_complete and again.results_file == resumed.results_file and sum(seen) < 12


def oracle_cli(argv, capsys):
    """`roma-eval oracle ARGV` in-process: (exit code, stderr lines)."""
    from roma_eval.cli import main

    capsys.readouterr()
    code = main(["oracle", *argv])
    return code, capsys.readouterr().err.strip().splitlines()


def snapshot(directory):
    return {p: p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_bad_inputs_are_one_clear_error_and_overwrite_nothing(tmp_path, tokenizer, saved, capsys):
    with pytest.raises(RomaEvalError, match="no single gold label"):
        load_oracle_tasks(["tiny_unlabelled"], [FIXTURE_TASKS])
    with pytest.raises(RomaEvalError, match="step budget must be at least 1"):
        OracleConfig(max_steps=0)
    model_dir = save_tiny_model("olmoe", tmp_path / "other", seed=9, tokenizer=tokenizer)
    out = tmp_path / "out"

    def cli_args(directory):
        return ["--pretrained", str(model_dir), "--tasks", "tiny_animals", "--include_path", str(FIXTURE_TASKS),
                "--output_path",
                str(directory), "--limit", "2", "--max-steps", "1", "--no-progress"]

    args = cli_args(out)
    for bad, message in ((["--max-steps", "0"], "step budget"), (["--limit", "0"], "--limit 0"),
                         (["--tasks", "no_such_task"], "unknown task(s) no_such_task")):
        code, err = oracle_cli([*args, *bad], capsys)
        assert code == 2 and len(err) == 1 and message in err[0], err
    assert not out.exists()
    # Another model's run under the same name, a run with other settings, lm-eval's own results: all refused.
    run_oracle(saved, tokenizer, fixture_tasks(["tiny_animals"], limit=2), out, OracleConfig(max_steps=1),
               model_name=str(model_dir), progress=False)
    before = snapshot(out)
    for bad, message in (([], "another model"), (["--lr", "0.3"], "other settings")):
        code, err = oracle_cli([*args, *bad], capsys)
        assert code == 2 and len(err) == 1 and message in err[0], err
    assert snapshot(out) == before
    assert oracle_cli([*args, "--overwrite"], capsys)[0] == 0
    (run_dir,) = [p.parent for p in out.glob("*/oracle_run.json")]
    assert json.loads((run_dir / "oracle_run.json").read_text())["model"] == str(model_dir)
    foreign = tmp_path / "lm_eval_out" / run_dir.name
    foreign.mkdir(parents=True)
    (foreign / "results_2026-01-01T00-00-00.json").write_text("{}")
    before = snapshot(foreign.parent)
    code, err = oracle_cli(cli_args(foreign.parent), capsys)
    assert code == 2 and len(err) == 1 and "not written by `roma-eval oracle`" in err[0], err
    assert snapshot(foreign.parent) == before


def test_split_train_runs_on_the_training_documents(tmp_path, tokenizer, model):
    tasks = load_oracle_tasks(["tiny_animals_train"], [FIXTURE_TASKS], split="train")
    run = run_oracle(model, tokenizer, tasks, tmp_path, OracleConfig(max_steps=1), model_name="tiny", progress=False)
    assert run.results["n-samples"]["tiny_animals_train"] == {"original": 8, "effective": 8}
    assert run.results["oracle"]["split"] == "train"
    (samples_file,) = run_files(tmp_path, "samples_tiny_animals_train_*.jsonl")
    questions = [line["doc"]["question"] for line in read_lines(samples_file)]
    train = load_samples(["tiny_animals_train"], split="train", include_path=[FIXTURE_TASKS])
    assert sorted(questions) == sorted(s.context.split("\n")[0].removeprefix("Question: ") for s in train)


def markdown_rows(lines):
    """The body rows of a Markdown table (lm-eval's ``make_table`` layout) as lists of stripped cells."""
    return [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines[2:]]


def test_oracle_of_a_group_ends_with_lm_evals_table_and_a_gap_row_per_member(tmp_path, model_dir, capsys):
    """`roma-eval oracle --tasks <group>` for a group without an aggregate of its own (as roma_paper), whose members
    are a group with one (as MMLU) and a task: lm-eval's own results table, then a gap table with a row per member
    and metric whose base, oracle and gap are the results file's (the group once printed an empty line)."""
    from lm_eval.utils import make_table

    from roma_eval.cli import main

    groups = tmp_path / "groups"
    groups.mkdir()
    (groups / "tiny_inner.yaml").write_text("group: tiny_inner\ntask:\n  - tiny_parity\n  - tiny_animals_train\n"
                                            "aggregate_metric_list:\n  - metric: acc\n    weight_by_size: true\n"
                                            "metadata:\n  version: 1.0\n")
    (groups / "tiny_outer.yaml").write_text("group: tiny_outer\ntask:\n  - tiny_inner\n  - tiny_animals\n"
                                            "metadata:\n  version: 1.0\n")
    out = tmp_path / "oracle"
    capsys.readouterr()
    assert main(["oracle", "--pretrained", str(model_dir), "--tasks", "tiny_outer", "--include_path",
                 str(FIXTURE_TASKS), "--include_path", str(groups), "--output_path", str(out), "--limit", "4",
                 "--max_steps", "2", "--no_progress"]) == 0
    printed = capsys.readouterr().out
    (results_file,) = run_files(out, "results_*.json")
    results = json.loads(results_file.read_text())
    assert make_table(results) in printed and make_table(results, "groups") in printed
    lines = printed.splitlines()
    start = lines.index(next(line for line in lines if line.startswith("oracle against base"))) + 1
    table = lines[start:lines.index(str(results_file))]
    assert [cell.strip() for cell in table[0].strip("|").split("|")][:6] == ["Tasks", "Filter", "Metric", "Base %",
                                                                             "Oracle %", "Gap (points)"]
    task, seen = None, []
    for name, filter_name, metric, base, oracle, gap, *_ in markdown_rows(table):
        task = name or task
        key = f"{metric},{filter_name}"
        seen.append((task, metric))
        assert float(base) == pytest.approx(100 * results["oracle"]["base"][task][key], abs=0.006)
        assert float(oracle) == pytest.approx(100 * results["results"][task][key], abs=0.006)
        assert float(gap) == pytest.approx(float(oracle) - float(base), abs=0.011)
    assert seen == [("tiny_inner", "acc"), ("tiny_animals", "acc"), ("tiny_animals", "acc_norm")]
