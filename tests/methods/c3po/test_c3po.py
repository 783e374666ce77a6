"""C3PO against independent references: the uncached full forward, lm-eval's own `hf` model,
brute-force loops for mode finding and the α search, loss sequences on a fixed example, and
lm-eval's plain CLI."""

import argparse
import dataclasses
import json
import os
import re
import shutil

import numpy as np
import pytest
import torch
from family_helpers import c3po_cached_and_full_scores
from lm_eval_helpers import FIXTURE_TASKS, evaluate_api, evaluate_cli

from roma_eval.errors import RomaEvalError
from roma_eval.methods.c3po import (
    C3PO,
    C3POConfig,
    Reference,
    ReferenceBuild,
    TailBatch,
    build_reference,
    freeze,
    load_reference,
    steer_generation,
)
from roma_eval.methods.c3po import reference as reference_module
from roma_eval.methods.c3po.reference import EMBEDDED_TEXT, problem_of
from roma_eval.methods.c3po.remix import (
    core_index,
    kernel_regression,
    mode_finding,
    ngd,
    ngd_optimizer,
)
from roma_eval.routing import (
    probe_routing,
    resolve_layers,
    router_fingerprint,
    steer_routing,
)
from roma_eval.routing.scores import project_scores
from roma_eval.samples import Sample, load_samples
from roma_eval.scoring import build_choice_batch, choice_scores, score_samples, task_loss
from roma_eval.tiny import FAST_ARCHITECTURES, build_tiny_model, save_tiny_model

TASKS = ["tiny_animals", "tiny_sums"]
# Routers and experts strong enough (initializer_range) for a routing change to move the scores.
STRONG = dict(seed=5, initializer_range=0.2)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run faster on one thread than on two that spin-wait for each other on a shared
    box; the plain-CLI subprocess gets one too, so both sides compute in the same order."""
    threads, env = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    yield
    torch.set_num_threads(threads)
    if env is None:
        os.environ.pop("OMP_NUM_THREADS")
    else:
        os.environ["OMP_NUM_THREADS"] = env


def register_c3po():
    """In-process registration for the API tests (the shim in roma_eval/_registration does it for the CLI)."""
    import lm_eval.models  # noqa: F401  (fills the registry first)
    from lm_eval.api.registry import model_registry

    if "c3po" not in model_registry:
        model_registry.register("c3po", target="roma_eval.methods.c3po.lm_eval:C3POLM")


def train_samples():
    return load_samples(["c3po_fish_train"], split="train", include_path=[FIXTURE_TASKS])


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tokenizer):
    """A base model directory and its reference set, built through `roma-eval c3po build-reference`."""
    from roma_eval.commands import c3po as command

    root = tmp_path_factory.mktemp("c3po")
    base_dir = save_tiny_model("olmoe", root / "base", tokenizer=tokenizer, **STRONG)
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    args = parser.parse_args(["build-reference", "--pretrained", str(base_dir), "--tasks", "c3po_fish_train",
                              "--include_path", str(FIXTURE_TASKS), "--output_path", str(root / "ref"),
                              "--chunk-size", "5"])
    assert command.run(args) == 0
    register_c3po()
    return base_dir, root / "ref", root


@pytest.fixture(scope="module")
def hf_base(setup):
    return evaluate_api("hf", f"pretrained={setup[0]}", TASKS)


def mixed_samples():
    # The last context is one token: no prefix at all, batched with ones that have a prefix.
    contexts = ["Question: which animal is a mammal?\nAnswer:", "2+2=", "Q"]
    choices = (" whale", " shark fish", " 4")
    return [Sample("t", i, c, "multiple_choice", c, continuations=choices, choices=tuple(x.strip() for x in choices),
                   gold=0) for i, c in enumerate(contexts)]


@pytest.mark.parametrize("spec", ["last:3", "last:1"])  # last:1 steers the last layer: no layer runs after it
@pytest.mark.parametrize("arch", FAST_ARCHITECTURES)
def test_cached_steered_pass_equals_the_full_forward(arch, spec, tiny_models, tokenizer):
    """Frozen prefix, token 0 through the first steered layer, tails from the next one == scoring.py's
    full uncached forward with the same override at the last context token: scores, gradients and
    the base routing."""
    model = tiny_models[arch]
    layers = resolve_layers(model, spec)
    samples = mixed_samples()
    frozen, override, cached, full = c3po_cached_and_full_scores(model, tokenizer, samples, layers)
    batch = build_choice_batch(tokenizer, samples, max_length=512)
    with torch.no_grad():
        base = choice_scores(model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits, batch)
    torch.testing.assert_close(cached, full, atol=5e-5, rtol=0)
    assert (full - base).abs().max() > 1e-3  # the override does change the scores
    (g_cached,) = torch.autograd.grad(cached.sum(), override)
    (g_full,) = torch.autograd.grad(full.sum(), override)
    torch.testing.assert_close(g_cached, g_full, atol=1e-4, rtol=1e-3)
    for sample, f in zip(samples, frozen):
        ids = torch.tensor([tokenizer.encode(sample.context)])
        torch.testing.assert_close(f.routing, probe_routing(model, ids, layers=layers)[0], atol=1e-6, rtol=0)


@pytest.mark.slow
def test_reference_build_resumes_and_stores_exact_prefixes(tmp_path, tokenizer, monkeypatch):
    model = build_tiny_model("olmoe", tokenizer, **STRONG)
    samples = train_samples()
    build = ReferenceBuild(base_model="tiny", layers="last:2", chunk_size=5)
    real, calls = reference_module._chunk_arrays, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(reference_module, "_chunk_arrays", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_reference(model, tokenizer, samples, tmp_path / "ref", build, progress=False)
    calls.clear()
    monkeypatch.setattr(reference_module, "_chunk_arrays", lambda *a, **k: calls.append(1) or real(*a, **k))
    build_reference(model, tokenizer, samples, tmp_path / "ref", build, progress=False)
    assert len(calls) == 2  # chunks 2 and 3 of 3: the first one was kept
    assert not (tmp_path / "ref.partial").exists()
    build_reference(model, tokenizer, samples, tmp_path / "fresh", build, progress=False)
    resumed, fresh = load_reference(tmp_path / "ref"), load_reference(tmp_path / "fresh")
    assert resumed.problems == fresh.problems and torch.equal(resumed.routing, fresh.routing)
    assert [s["doc_id"] for s in resumed.metadata["samples"]] == list(range(8))  # the fish, as the base answers

    stored = resumed.stored_frozen(range(len(resumed)), "cpu", torch.float32)
    recomputed = freeze(model, resumed.problems, resumed.layers)
    for a, b in zip(stored, recomputed):
        torch.testing.assert_close(a.tail_hidden, b.tail_hidden, atol=1e-5, rtol=0)
        torch.testing.assert_close(a.token0, b.token0, atol=1e-5, rtol=0)
        assert len(a.kv) == len(b.kv) == 1  # one prompt per problem
        for (ka, va), (kb, vb) in zip(a.kv[0], b.kv[0], strict=True):
            torch.testing.assert_close(ka, kb, atol=1e-5, rtol=0)
            torch.testing.assert_close(va, vb, atol=1e-5, rtol=0)
    with pytest.raises(RomaEvalError, match="already exists"):
        build_reference(model, tokenizer, samples, tmp_path / "ref", build, progress=False)

    # Without stored prefixes C3PO computes them itself: the same results.
    build_reference(model, tokenizer, samples, tmp_path / "bare", dataclasses.replace(build, prefixes=False),
                    progress=False)
    bare = load_reference(tmp_path / "bare")
    assert not bare.has_prefixes and bare.problems == resumed.problems
    tests = load_samples(["tiny_animals"], include_path=[FIXTURE_TASKS])[8:]
    # Plain gradient descent: stored and recomputed prefixes differ in float rounding, and at the last layer, whose
    # gradient is zero here but for rounding (BELOW_THE_LAST_LAYER), Adam would turn that rounding into steps of ~lr.
    config = C3POConfig(optimizer="sgd", lr=1.0)
    with_prefixes = C3PO(model, resumed, config).score_samples(tokenizer, tests, progress=False)
    without = C3PO(model, bare, config).score_samples(tokenizer, tests, progress=False)
    for a, b in zip(with_prefixes, without):
        assert a.scores == pytest.approx(b.scores, abs=1e-4)


def test_kernel_regression_with_alpha_one_is_base(setup, hf_base):
    """α = 1 keeps each test prompt's own pathway: per sample, lm-eval's `hf` results."""
    base_dir, ref, _ = setup
    c3po = evaluate_api("c3po", f"pretrained={base_dir},reference={ref},c3po_method=kernel,c3po_alpha=1", TASKS)
    for doc_id, (resps, metrics) in hf_base["tiny_animals"].items():
        ours, our_metrics = c3po["tiny_animals"][doc_id]
        assert [r[0] for r in ours] == pytest.approx([r[0] for r in resps], abs=1e-4)
        assert [r[1] for r in ours] == [r[1] for r in resps] and our_metrics == metrics
    assert c3po["tiny_sums"] == hf_base["tiny_sums"]


def fixed_example(tokenizer, layers="last:2"):
    """A qwen3_moe model, C3PO over a reference of 6 of its own problems labelled with their
    second-best choice (a loss with room to fall), and one test prompt (its pathway has clear top-k
    margins) against two neighbourhoods of 3, as two test samples optimised together."""
    model = build_tiny_model("qwen3_moe", tokenizer, **STRONG)
    layers = resolve_layers(model, layers)
    samples = train_samples()
    problems = [problem_of(tokenizer, s, 512) for s in samples]
    frozen = freeze(model, problems, layers)
    with torch.no_grad():
        scores, _ = TailBatch(frozen[:6], "cpu").forward(model, layers)
    labelled = [dataclasses.replace(p, gold=int(s.argsort(descending=True)[1])) for p, s in zip(problems, scores)]
    meta = {"layers": layers, "prefixes": False, "router_fingerprint": router_fingerprint(model), "embedder": None,
            "embedded_text": EMBEDDED_TEXT}
    reference = Reference(FIXTURE_TASKS, meta, np.zeros((6, 4), np.float32),
                          torch.stack([f.routing for f in frozen[:6]]), labelled)
    c3po = C3PO(model, reference, C3POConfig())
    index, weight = np.array([[0, 1, 2], [3, 4, 5]]), torch.tensor([[0.5, 0.3, 0.2], [0.2, 0.2, 0.6]])
    omega0 = torch.stack([frozen[6].routing, frozen[6].routing])
    return c3po, index, weight, omega0


def test_plain_gradient_descent_ngd_lowers_the_neighbours_loss_step_by_step(tokenizer):
    """c3po_optimizer=sgd: plain gradient descent.  (With hard top-k a step can flip a near-tied expert
    choice and raise the loss; this example's pathway has no near-ties.)"""
    c3po, index, weight, omega0 = fixed_example(tokenizer)
    loss = c3po.neighbour_loss(index, weight)
    omega, history = ngd(omega0, core_index(omega0, 0), "softmax", loss, steps=10, lr=1.0, lr_min=1e-5,
                         optimizer="sgd")
    final = loss(omega).detach()
    sequence = torch.cat([history, final.unsqueeze(0)])  # (11, 2): L at ω0, ω1, ..., ω10
    # Non-increasing up to float32 rounding (an ulp of 4.9 is 5e-7; the last steps' lr is ~1e-5).
    assert torch.all(sequence[1:] <= sequence[:-1] + 2e-6), sequence
    assert torch.all(sequence[0] - sequence[-1] > 5e-3), sequence
    assert torch.allclose(omega.sum(-1), torch.ones(2, 2)) and omega.min() >= 0  # still distributions


# Steered layers below the last: at the model's last layer the pathway changes only the first continuation token,
# which the tiny tokenizer makes the same for every choice, so the gradient there is zero but for float rounding, and
# Adam, whose steps are about lr whatever the gradient's scale, would turn the rounding of a batch into real moves.
BELOW_THE_LAST_LAYER = "-3,-2"


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_ngd_moves_prompts_optimised_together_as_alone_and_only_their_core(tokenizer, optimizer):
    c3po, index, weight, omega0 = fixed_example(tokenizer, BELOW_THE_LAST_LAYER)
    loss = c3po.neighbour_loss(index, weight)
    omega, _ = ngd(omega0, core_index(omega0, 0), "softmax", loss, steps=10, lr=1.0, lr_min=1e-5, optimizer=optimizer)
    # Optimised together, each with its own variables (and Adam moments) == optimised one at a time.
    alone = [ngd(omega0[g:g + 1], core_index(omega0[g:g + 1], 0), "softmax",
                 c3po.neighbour_loss(index[g:g + 1], weight[g:g + 1]), steps=10, lr=1.0, lr_min=1e-5,
                 optimizer=optimizer)[0] for g in range(2)]
    torch.testing.assert_close(omega, torch.cat(alone), atol=1e-5, rtol=0)

    # Core experts: only the top-3 of each layer's base pathway move; the others keep their scores.
    core = core_index(omega0, 3)
    moved, _ = ngd(omega0, core, "softmax", loss, steps=3, lr=1.0, lr_min=1e-5, optimizer=optimizer)
    others = torch.ones_like(omega0, dtype=torch.bool).scatter(-1, core, False)
    assert torch.equal(moved[others], omega0[others]) and not torch.equal(moved, omega0)


def earlier_plain_ngd(omega0, core, loss_fn, steps, lr, lr_min):
    """This project's NGD before c3po_optimizer, verbatim: θ ← Π(θ - lr_t ∇L), lr_t cosine from lr to lr_min
    at the last step, Π the projection onto the simplex of the core's base mass."""
    theta = omega0.gather(-1, core).detach()
    mass = theta.sum(-1, keepdim=True)
    for step in range(steps):
        with torch.enable_grad():
            theta.requires_grad_(True)
            (grad,) = torch.autograd.grad(loss_fn(omega0.scatter(-1, core, theta)).sum(), theta)
        lr_t = lr_min + (lr - lr_min) * (1 + np.cos(np.pi * step / (steps - 1))) / 2
        theta = project_scores(theta.detach() - lr_t * grad, "softmax", mass)
    return omega0.scatter(-1, core, theta)


@pytest.mark.parametrize("lr, n_core", [(1e-2, 0), (1.0, 0), (1.0, 3)])
def test_sgd_ngd_reproduces_the_earlier_plain_gradient_descent(tokenizer, lr, n_core):
    c3po, index, weight, omega0 = fixed_example(tokenizer)
    loss, core = c3po.neighbour_loss(index, weight), core_index(omega0, n_core)
    omega, _ = ngd(omega0, core, "softmax", loss, steps=10, lr=lr, lr_min=1e-5, optimizer="sgd")
    torch.testing.assert_close(omega, earlier_plain_ngd(omega0, core, loss, 10, lr, 1e-5), atol=1e-6, rtol=0)


def uncached_neighbour_loss(tokenizer, c3po, index, weight):
    """L(ω) per test prompt from scoring.py's full forward of each neighbour (no frozen prefixes, no TailBatch):
    ω replaces the routing scores at each neighbour's last context token."""
    samples = [dataclasses.replace(s, gold=p.gold) for s, p in zip(train_samples(), c3po.reference.problems)]
    neighbours = [samples[i] for i in index.reshape(-1)]
    batch = build_choice_batch(tokenizer, neighbours, max_length=512)
    gold = torch.tensor([s.gold for s in neighbours])

    def loss(omega):
        rows = omega.repeat_interleave(index.shape[1], dim=0)[batch.row_sample].unsqueeze(1)
        with steer_routing(c3po.model, rows, batch.last_context.unsqueeze(1), c3po.layers, mode="scores"):
            logits = c3po.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        per_neighbour = task_loss(choice_scores(logits, batch), gold, reduction="none").view(index.shape)
        return (weight * per_neighbour).sum(dim=1)

    return loss


def test_adam_ngd_equals_a_hand_written_adam_loop_on_the_uncached_forward(tokenizer):
    """The engine's NGD (default: Adam, cosine schedule, projection) == torch.optim.Adam stepped by hand on the
    neighbours' loss from the full uncached forward, lr_t set from the cosine formula, projected by hand."""
    c3po, index, weight, omega0 = fixed_example(tokenizer, BELOW_THE_LAST_LAYER)
    assert c3po.config.optimizer == "adam"
    steps, lr, lr_min = 10, 1e-2, 1e-5
    omega, history = ngd(omega0, core_index(omega0, 0), "softmax", c3po.neighbour_loss(index, weight),
                         steps, lr, lr_min)

    full_loss = uncached_neighbour_loss(tokenizer, c3po, index, weight)
    theta = omega0.clone().requires_grad_(True)
    adam = torch.optim.Adam([theta], lr=lr)
    expected = []
    for t in range(steps):
        adam.param_groups[0]["lr"] = lr_min + (lr - lr_min) * (1 + np.cos(np.pi * t / steps)) / 2
        adam.zero_grad()
        value = full_loss(theta)
        value.sum().backward()
        expected.append(value.detach())
        adam.step()
        with torch.no_grad():
            theta.copy_(numpy_simplex_projection(theta.detach().numpy(), np.ones(theta.shape[:-1])))
    torch.testing.assert_close(history, torch.stack(expected), atol=1e-4, rtol=0)
    torch.testing.assert_close(omega, theta.detach(), atol=1e-4, rtol=0)
    # Adam moves ω much further than plain gradient descent at the paper's learning rate.
    plain, _ = ngd(omega0, core_index(omega0, 0), "softmax", c3po.neighbour_loss(index, weight), steps, lr, lr_min,
                   optimizer="sgd")
    assert (omega - omega0).norm() > 10 * (plain - omega0).norm()


def numpy_simplex_projection(values, mass):
    """argmin ||p - v|| over {p >= 0, Σ p = mass} per row, by bisection on the threshold τ of p = max(v - τ, 0)
    (Σ max(v - τ, 0) falls in τ), not by sorting as routing.scores does."""
    values = np.asarray(values, dtype=np.float64)
    low = values.min(-1, keepdims=True) - np.asarray(mass)[..., None]
    high = values.max(-1, keepdims=True)
    for _ in range(200):
        tau = (low + high) / 2
        over = np.maximum(values - tau, 0).sum(-1, keepdims=True) > np.asarray(mass)[..., None]
        low, high = np.where(over, tau, low), np.where(over, high, tau)
    return torch.from_numpy(np.maximum(values - (low + high) / 2, 0))


def numpy_ngd(omega0, n_core, centre, curvature, steps, lr, lr_min, optimizer):
    """NGD on L(ω) = Σ c (ω - centre)², one test sample, in numpy: Adam (β = 0.9, 0.999, ε = 1e-8, bias-corrected)
    with lr_t = lr_min + (lr - lr_min)(1 + cos(π t / steps)) / 2, or gradient descent with t / (steps - 1),
    each step projected onto the core's simplex."""
    omega, m, v = omega0.copy(), np.zeros_like(omega0), np.zeros_like(omega0)
    core = np.argsort(-omega0, axis=-1, kind="stable")[:, : n_core or omega0.shape[-1]]
    mass = np.take_along_axis(omega0, core, -1).sum(-1)
    for t in range(steps):
        grad = 2 * curvature * (omega - centre)
        if optimizer == "adam":
            m, v = 0.9 * m + 0.1 * grad, 0.999 * v + 0.001 * grad**2
            lr_t = lr_min + (lr - lr_min) * (1 + np.cos(np.pi * t / steps)) / 2
            step = lr_t * (m / (1 - 0.9 ** (t + 1))) / (np.sqrt(v / (1 - 0.999 ** (t + 1))) + 1e-8)
        else:
            step = (lr_min + (lr - lr_min) * (1 + np.cos(np.pi * t / (steps - 1))) / 2) * grad
        moved = np.take_along_axis(omega - step, core, -1)
        np.put_along_axis(omega, core, numpy_simplex_projection(moved, mass).numpy(), -1)
    return omega


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
@pytest.mark.parametrize("n_core", [0, 3])
def test_ngd_matches_numpy_on_a_known_quadratic(optimizer, n_core):
    rng = np.random.default_rng(1)
    omega0, centre = random_pathways(rng, 3, 2), random_pathways(rng, 3, 2)
    curvature = rng.uniform(0.01, 5.0, size=omega0.shape)  # gradients of very different scales

    def loss(omega):
        return (torch.from_numpy(curvature) * (omega - torch.from_numpy(centre)) ** 2).flatten(1).sum(1)

    start = torch.from_numpy(omega0)
    omega, history = ngd(start, core_index(start, n_core), "softmax", loss, steps=10, lr=0.05, lr_min=1e-4,
                         optimizer=optimizer)
    expected = np.stack([numpy_ngd(omega0[g], n_core, centre[g], curvature[g], 10, 0.05, 1e-4, optimizer)
                         for g in range(3)])
    np.testing.assert_allclose(omega.numpy(), expected, atol=1e-9)
    assert history.shape == (10, 3) and torch.all(history[-1] < history[0])


@pytest.mark.parametrize("optimizer, t_max", [("adam", 10), ("sgd", 9)])
def test_ngd_learning_rate_follows_the_cosine_formula(optimizer, t_max):
    """Adam: CosineAnnealingLR(T_max = steps) as R2-T2's released NGD (lr_min after the last step); sgd: lr_min
    at the last step."""
    theta = torch.zeros(3, requires_grad=True)
    opt, schedule = ngd_optimizer(theta, optimizer, 10, 1e-2, 1e-5)
    used = []
    for _ in range(10):
        used.append(opt.param_groups[0]["lr"])
        theta.grad = torch.ones(3)
        opt.step()
        schedule.step()
    formula = [1e-5 + (1e-2 - 1e-5) * (1 + np.cos(np.pi * t / t_max)) / 2 for t in range(10)]
    assert used == pytest.approx(formula, rel=1e-12, abs=0)
    assert used[0] == 1e-2 and (used[-1] == pytest.approx(1e-5) if optimizer == "sgd" else used[-1] > 2e-4)
    assert isinstance(opt, torch.optim.Adam if optimizer == "adam" else torch.optim.SGD)


def numpy_restrict(target, omega0, n_core):
    """``target`` on each layer's n_core largest experts of ``omega0`` (all if 0), rescaled to their base mass."""
    out = omega0.copy()
    for layer in range(omega0.shape[0]):
        core = np.argsort(-omega0[layer])[: n_core or omega0.shape[1]]
        out[layer, core] = target[layer, core] * omega0[layer, core].sum() / target[layer, core].sum()
    return out


def numpy_local_mean(omega, omega0, pool, candidates, k, n_core, h=None):
    """ω̄ over the k candidates nearest to ``omega``, one sample, by sorting; h defaults to their median distance."""
    near = sorted((np.sqrt(((pool[i] - omega) ** 2).sum()), i) for i in candidates)[:k]
    h = np.median([d for d, _ in near]) if h is None else h
    kernel = [np.exp(-d**2 / (2 * h**2)) for d, _ in near]
    mean = sum(w * pool[i] for w, (_, i) in zip(kernel, near)) / sum(kernel)
    return numpy_restrict(mean, omega0, n_core), h, frozenset(i for _, i in near)


def brute_force_mode_finding(omega0, pool, allowed, k, n_core, loss, steps, alpha_step=0.1):
    """One test sample at a time: its neighbourhood re-sorted at every step, each grid α tried in turn."""
    grid = np.linspace(1, 0, round(1 / alpha_step) + 1)
    omegas, alphas, hoods = [], [], []
    for g in range(len(omega0)):
        omega, h, chosen, seen = omega0[g].copy(), None, [], []
        for _ in range(steps):
            bar, h, near = numpy_local_mean(omega, omega0[g], pool, np.flatnonzero(allowed[g]), k, n_core, h)
            best = min(grid, key=lambda a: loss(g, a * omega + (1 - a) * bar))  # min keeps the first: larger α on ties
            omega = best * omega + (1 - best) * bar
            chosen.append(best)
            seen.append(near)
        omegas.append(omega), alphas.append(chosen), hoods.append(seen)
    return np.stack(omegas), np.array(alphas).T, hoods


def random_pathways(rng, *shape, experts=5):
    return rng.dirichlet(np.full(experts, 0.5), size=shape)


@pytest.mark.parametrize("k, n_core", [(3, 0), (3, 3), (4, 0)])  # k = 4: the median of an even count
def test_mode_finding_matches_a_brute_force_loop(k, n_core):
    """ω ← αω + (1-α)ω̄ with ω̄ the pathway-kernel mean of the k allowed reference pathways nearest to
    the current ω, α the grid value minimising the loss, per sample: against plain numpy loops."""
    rng = np.random.default_rng(0)
    pool, omega0, targets = random_pathways(rng, 12, 2), random_pathways(rng, 3, 2), random_pathways(rng, 3, 2)
    allowed = rng.random((3, 12)) > 0.25  # the near-duplicates of each test prompt are not allowed
    o0 = torch.from_numpy(omega0)
    ours, alphas, losses = mode_finding(o0, torch.from_numpy(pool), torch.from_numpy(allowed), core_index(o0, n_core),
                                        "softmax", lambda w: ((w - torch.from_numpy(targets)) ** 2).sum((1, 2)),
                                        C3POConfig(method="mode", k=k, mode_steps=6))
    expected, expected_alphas, hoods = brute_force_mode_finding(
        omega0, pool, allowed, k, n_core, lambda g, w: ((w - targets[g]) ** 2).sum(), steps=6)
    np.testing.assert_allclose(ours.numpy(), expected, atol=1e-6, rtol=0)  # ours stops once nothing moves 1e-7
    np.testing.assert_allclose(alphas.numpy(), expected_alphas[: len(alphas)], atol=1e-9, rtol=0)
    assert losses.shape == (len(alphas), 11, 3)
    # The example exercises what it checks: some α strictly inside (0, 1), a neighbourhood that changes as ω moves.
    assert ((expected_alphas > 0) & (expected_alphas < 1)).any()
    assert k == 4 or any(len(set(seen)) > 1 for seen in hoods)


def test_mode_finding_alpha_search_picks_the_minimiser_of_a_known_loss():
    """One step, a loss whose minimum on the segment [ω, ω̄] is at a chosen α per sample (0 at ω̄ itself),
    a fixed bandwidth, and each sample restricted to its own 3 references (``mode_neighbours=embedding``)."""
    rng = np.random.default_rng(1)
    pool, omega0 = random_pathways(rng, 9, 2), random_pathways(rng, 3, 2)
    allowed = np.zeros((3, 9), dtype=bool)
    for g, own in enumerate(np.split(rng.permutation(9), 3)):
        allowed[g, own] = True
    best = np.array([0.3, 0.0, 0.8])
    bars = np.stack([numpy_local_mean(omega0[g], omega0[g], pool, np.flatnonzero(allowed[g]), 3, 0, h=0.2)[0]
                     for g in range(3)])
    optimum = best[:, None, None] * omega0 + (1 - best[:, None, None]) * bars
    o0 = torch.from_numpy(omega0)
    ours, alphas, losses = mode_finding(o0, torch.from_numpy(pool), torch.from_numpy(allowed), core_index(o0, 0),
                                        "softmax", lambda w: ((w - torch.from_numpy(optimum)) ** 2).sum((1, 2)),
                                        C3POConfig(method="mode", k=3, mode_steps=1, bandwidth=0.2))
    np.testing.assert_allclose(alphas.numpy(), best[None], atol=1e-12)
    assert losses[0].argmin(dim=0).tolist() == [7, 10, 2]  # the grid runs 1, 0.9, ..., 0
    np.testing.assert_allclose(ours.numpy(), optimum, atol=1e-12)


@pytest.mark.parametrize("alpha_step, best", [(0.1, [0.6, 0.2]), (0.25, [0.75, 0.0])])
def test_kernel_regression_alpha_search_picks_the_minimiser_of_a_known_loss(alpha_step, best):
    """A loss whose minimum on [ω0, ω̂] is at a chosen grid α per sample; a constant loss keeps the base
    (α = 1)."""
    rng = np.random.default_rng(2)
    omega0, neighbours, core = random_pathways(rng, 2, 2), random_pathways(rng, 2, 3, 2), 3
    weight = rng.dirichlet(np.ones(3), size=2)
    hat = np.stack([numpy_restrict(sum(w * p for w, p in zip(weight[g], neighbours[g])), omega0[g], core)
                    for g in range(2)])
    best = np.array(best)
    optimum = best[:, None, None] * omega0 + (1 - best[:, None, None]) * hat
    o0 = torch.from_numpy(omega0)
    args = (o0, torch.from_numpy(neighbours), torch.from_numpy(weight), core_index(o0, core), "softmax")
    ours, alphas, losses = kernel_regression(*args, lambda w: ((w - torch.from_numpy(optimum)) ** 2).sum((1, 2)),
                                             alpha_step=alpha_step)
    np.testing.assert_allclose(alphas.numpy(), best, atol=1e-12)
    assert losses.shape == (round(1 / alpha_step) + 1, 2)
    assert losses.argmin(dim=0).tolist() == [round((1 - b) / alpha_step) for b in best]
    np.testing.assert_allclose(ours.numpy(), optimum, atol=1e-12)
    kept, alphas, _ = kernel_regression(*args, lambda w: torch.zeros(len(w), dtype=w.dtype), alpha_step=alpha_step)
    assert alphas.tolist() == [1.0, 1.0] and torch.equal(kept, o0)


def test_generation_steers_the_last_prompt_token_and_optionally_every_token(tiny_models, tokenizer):
    """Cached generation under ``steer_generation`` == uncached forwards steered at the same positions."""
    model = tiny_models["mixtral"]
    layers = resolve_layers(model, "last:2")
    ids = torch.tensor([tokenizer.encode("Question: which animal is a mammal?\nAnswer:")])
    torch.manual_seed(0)
    omega = torch.softmax(3 * torch.randn(1, len(layers), 8), dim=-1)
    n = ids.shape[1]
    second_step = {}
    for every_token, steered in ((False, [n - 1]), (True, [n - 1, n])):
        with torch.no_grad(), steer_generation(model, omega, layers, every_token):
            out = model.generate(ids, max_new_tokens=3, do_sample=False, output_logits=True,
                                 return_dict_in_generate=True, pad_token_id=0)
        prefix = out.sequences[:, : n + 1]  # the prompt and the first generated token
        positions = torch.tensor([steered])
        with torch.no_grad(), steer_routing(model, omega.unsqueeze(1).expand(-1, len(steered), -1, -1), positions,
                                            layers, mode="scores"):
            reference = model(input_ids=prefix).logits[:, -1]
        torch.testing.assert_close(out.logits[1], reference, atol=1e-5, rtol=0)
        second_step[every_token] = out.logits[1]
    assert (second_step[True] - second_step[False]).abs().max() > 1e-4  # steering generated tokens is a change


@pytest.mark.slow
def test_python_api_and_plain_lm_eval_cli_agree_per_sample(setup, hf_base, tokenizer):
    """`lm_eval --model c3po` (plain CLI, NGD at the paper's settings) == lm-eval's Python API ==
    C3PO.score_samples, per sample."""
    base_dir, ref, root = setup
    args = f"pretrained={base_dir},reference={ref},c3po_method=ngd"
    via_api = evaluate_api("c3po", args, TASKS)
    via_cli = evaluate_cli("c3po", args, TASKS, root / "out")
    assert via_cli == via_api
    assert via_api["tiny_animals"] != hf_base["tiny_animals"]  # NGD moved the scores

    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir).eval()
    samples = load_samples(["tiny_animals"], include_path=[FIXTURE_TASKS])
    ours = C3PO(model, load_reference(ref), C3POConfig()).score_samples(tokenizer, samples, progress=False)
    for result in ours:
        resps, metrics = via_api["tiny_animals"][result.doc_id]
        assert result.scores == pytest.approx([r[0] for r in resps], abs=1e-4)
        assert (result.acc, result.acc_norm) == (metrics["acc"], metrics["acc_norm"])


@pytest.mark.slow
@pytest.mark.parametrize("hood", ["pathway", "embedding"])
def test_mode_finding_in_the_engine_searches_the_right_references(setup, tokenizer, hood):
    """C3PO.optimise (a group, masks over the whole reference set) == mode_finding run one test prompt at a
    time on the references it may use, listed by a plain loop: all but its near-duplicates (pathway), or its
    k embedding neighbours (embedding)."""
    from transformers import AutoModelForCausalLM

    base_dir, ref, _ = setup
    model = AutoModelForCausalLM.from_pretrained(base_dir).eval()
    reference = load_reference(ref)
    c3po = C3PO(model, reference, C3POConfig(method="mode", mode_neighbours=hood))
    samples = load_samples(["tiny_animals"], include_path=[FIXTURE_TASKS])[:6]
    frozen = freeze(model, [problem_of(tokenizer, s, 512) for s in samples], c3po.layers)
    queries = c3po.embed([s.context for s in samples])
    together, info = c3po.optimise(frozen, queries)
    index, weight = info["neighbours"], info["weights"]
    duplicates = 0
    for g, f in enumerate(frozen):
        if hood == "pathway":
            usable = [i for i, e in enumerate(reference.embeddings) if float(np.dot(queries[g], e)) <= 0.95]
            duplicates += len(reference) - len(usable)
        else:
            usable = list(index[g])
        omega0 = f.routing.unsqueeze(0)
        loss = c3po.neighbour_loss(index[g:g + 1], weight[g:g + 1])
        alone, _, _ = mode_finding(omega0, reference.routing[usable], torch.ones(1, len(usable), dtype=torch.bool),
                                   core_index(omega0, 0), "softmax", loss, C3POConfig(method="mode", k=3, mode_steps=3))
        torch.testing.assert_close(together[g:g + 1], alone, atol=1e-6, rtol=0)
    assert hood == "embedding" or duplicates > 0  # the example has near-duplicates to leave out
    assert not torch.equal(together, torch.stack([f.routing for f in frozen]))


@pytest.mark.slow
def test_mode_finding_through_the_plain_lm_eval_cli(setup, hf_base, tokenizer):
    """`lm_eval --model c3po` with method=mode (plain CLI, generation task included) == C3PO.score_samples
    per sample, and the re-mixing moved the scores."""
    from transformers import AutoModelForCausalLM

    base_dir, ref, root = setup
    via_cli = evaluate_cli("c3po", f"pretrained={base_dir},reference={ref},c3po_method=mode", TASKS, root / "out_mode")
    assert sorted(via_cli["tiny_sums"]) == sorted(hf_base["tiny_sums"])  # generation ran under mode finding too
    assert via_cli["tiny_animals"] != hf_base["tiny_animals"]

    model = AutoModelForCausalLM.from_pretrained(base_dir).eval()
    samples = load_samples(["tiny_animals"], include_path=[FIXTURE_TASKS])
    ours = C3PO(model, load_reference(ref), C3POConfig(method="mode")).score_samples(tokenizer, samples, progress=False)
    for result in ours:
        resps, metrics = via_cli["tiny_animals"][result.doc_id]
        assert result.scores == pytest.approx([r[0] for r in resps], abs=1e-4)
        assert (result.acc, result.acc_norm) == (metrics["acc"], metrics["acc_norm"])


def test_bad_references_are_one_clear_error(setup, tmp_path, tokenizer):
    from transformers import AutoModelForCausalLM

    from roma_eval.methods.c3po.lm_eval import C3POLM

    base_dir, ref, _ = setup
    reference = load_reference(ref)
    other = build_tiny_model("olmoe", tokenizer, seed=99)
    with pytest.raises(RomaEvalError, match="was built for base model .* rebuild it"):
        C3PO(other, reference)
    model = AutoModelForCausalLM.from_pretrained(base_dir).eval()
    with pytest.raises(RomaEvalError, match="k=9 neighbours requested but the reference set .* has only "
                                            f"{len(reference)}"):
        C3PO(model, reference, C3POConfig(k=9))
    with pytest.raises(RomaEvalError, match="k=8 neighbours are needed but only 7 reference samples remain"):
        c3po = C3PO(model, reference, C3POConfig(k=8))
        c3po.neighbours(c3po.embed([reference.metadata["samples"][0]["prompt"]]))
    older = dataclasses.replace(reference, metadata={**reference.metadata, "embedded_text": "context"})
    with pytest.raises(RomaEvalError, match="embeds 'context', not the last block .* rebuild it"):
        C3PO(model, older)
    with pytest.raises(RomaEvalError, match="needs reference=DIR"):
        C3POLM(pretrained=str(base_dir))
    with pytest.raises(RomaEvalError, match="has no reference.json"):
        load_reference(tmp_path)
    shutil.copytree(ref, tmp_path / "v1")  # format 1 scored multiple-input samples after their shared prefix only
    (tmp_path / "v1" / "reference.json").write_text(json.dumps({**reference.metadata, "format_version": 1}))
    with pytest.raises(RomaEvalError, match="has format 1, not 2 .* rebuild it"):
        load_reference(tmp_path / "v1")

    samples = train_samples()
    wrong = [dataclasses.replace(s, gold=int(np.argmin(r.scores)))
             for s, r in zip(samples, score_samples(model, tokenizer, samples))]
    with pytest.raises(RomaEvalError, match="answers none of the 12 training samples correctly"):
        build_reference(model, tokenizer, wrong, tmp_path / "empty", ReferenceBuild(base_model="tiny"), progress=False)


@pytest.mark.parametrize("setting, message", [
    (dict(alpha_step=0.3), "alpha_step=0.3 must divide 1"),
    (dict(mode_neighbours="input"), "mode_neighbours='input' is unknown; use one of pathway, embedding"),
    (dict(mode_steps=0), "mode_steps=0, group=None: each must be at least 1"),
    (dict(bandwidth=-1.0), "bandwidth=-1.0 must be positive"),
    (dict(optimizer="adamw"), "optimizer='adamw' is unknown; use one of adam, sgd"),
])
def test_bad_mode_finding_settings_are_one_clear_error(setting, message):
    with pytest.raises(RomaEvalError, match=re.escape(message)):
        C3POConfig(**setting)


def test_c3po_embeds_the_question_of_a_few_shot_prompt():
    """The embedded text of lm-eval's own 2-shot context is the test doc's doc_to_text."""
    from roma_eval.harness import task_manager
    from roma_eval.methods.c3po.reference import query_text

    task = task_manager([FIXTURE_TASKS]).load(["tiny_animals_train"])["tasks"]["tiny_animals_train"]
    _, doc = next(iter(task.doc_iterator()))
    context = task.fewshot_context(doc, num_fewshot=2)
    assert context.count("Answer:") == 3 and query_text(context) == task.doc_to_text(doc)
    assert query_text(task.doc_to_text(doc)) == task.doc_to_text(doc)


@pytest.mark.slow
def test_a_bad_optimizer_is_one_clear_error_naming_the_model_arg(setup, tmp_path):
    """`lm_eval --model c3po --model_args ...,c3po_optimizer=adamw`: one line naming c3po_optimizer, exit non-zero,
    nothing written."""
    with pytest.raises(RomaEvalError, match=re.escape("c3po_optimizer='adamw' is unknown; use one of adam, sgd")):
        C3POConfig.from_model_args({"c3po_optimizer": "adamw"})
    base_dir, ref, _ = setup
    proc = evaluate_cli("c3po", f"pretrained={base_dir},reference={ref},c3po_optimizer=adamw", ["tiny_animals"],
                        tmp_path / "out", check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == "error: c3po_optimizer='adamw' is unknown; use one of adam, sgd"
    assert not (tmp_path / "out").exists()
