"""C3PO on lm-eval's real multiple-input and multiple-choice tasks (winogrande, arc_challenge, mmlu on
tests/offline_hub's synthetic rows): a prompt per choice through the frozen-prefix machinery, the
reference set against lm-eval's own `hf` results, one problem per lm-eval document, and the plain CLIs."""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lm_eval_helpers import LM_EVAL, evaluate_api, per_sample

from roma_eval.methods.c3po import (
    C3PO,
    C3POConfig,
    ReferenceBuild,
    TailBatch,
    build_reference,
    freeze,
    load_reference,
)
from roma_eval.methods.c3po.reference import problem_of, sample_prompt
from roma_eval.routing import probe_routing, resolve_layers, spec_for, steer_routing
from roma_eval.samples import Sample, label_free_prompt, load_samples
from roma_eval.scoring import build_choice_batch, choice_scores, encode_pair
from roma_eval.tiny import FAST_ARCHITECTURES, save_tiny_model

# lm-eval's own task YAMLs: its task index (~8 s) and the offline hub rows, once per module.
pytestmark = pytest.mark.slow

ROMA_EVAL = str(Path(sys.executable).parent / "roma-eval")
TASKS = ["arc_challenge", "winogrande"]  # winogrande: 2 prompts per document; arc: 3, 4 and 5 choices


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """As in test_c3po.py: one torch thread here and in the CLI subprocesses, so both compute in the same order."""
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
    import lm_eval.models  # noqa: F401  (fills the registry first)
    from lm_eval.api.registry import model_registry

    if "c3po" not in model_registry:
        model_registry.register("c3po", target="roma_eval.methods.c3po.lm_eval:C3POLM")


# ---------------------------------------------------------------- the frozen-prefix machinery


def multiple_input_samples():
    """Two multiple-input samples (one prompt per choice, one continuation; one of the prompts is a single
    token, so it has no prefix) around an ordinary one, as samples.py builds them."""
    trophy = ("The trophy does not fit in the case because the trophy", "The trophy does not fit in the case because "
                                                                        "the case")
    names = ("Q", "Ann gave it to Bob", "Ann gave it to the old man who")
    return [
        Sample("w", 0, "The trophy does not fit in the case because the ", "multiple_choice", "",
               continuations=(" is too big.",) * 2, choices=trophy, gold=0, choice_contexts=trophy),
        Sample("t", 1, "Question: which animal is a mammal?\nAnswer:", "multiple_choice", "",
               continuations=(" whale", " shark fish", " 4"), choices=("whale", "shark fish", "4"), gold=0),
        Sample("w", 2, "", "multiple_choice", "", continuations=(" smiled",) * 3, choices=names, gold=1,
               choice_contexts=names),
    ]


def simplex_projection(values: torch.Tensor, mass: torch.Tensor) -> torch.Tensor:
    """Euclidean projection onto {v >= 0, Σ v = mass} per row, by bisection on the shift τ (then τ recomputed
    from the support found, so that it is differentiable): independent of methods.project's sort."""
    low, high = values.min(-1, keepdim=True).values.detach() - mass, values.max(-1, keepdim=True).values.detach()
    for _ in range(200):
        tau = (low + high) / 2
        over = (values.detach() - tau).clamp(min=0).sum(-1, keepdim=True) > mass
        low, high = torch.where(over, tau, low), torch.where(over, high, tau)
    support = values.detach() > (low + high) / 2
    tau = ((values * support).sum(-1, keepdim=True) - mass) / support.sum(-1, keepdim=True)
    return (values - tau).clamp(min=0)


@pytest.mark.parametrize("arch", FAST_ARCHITECTURES)
def test_cached_steered_pass_with_a_prompt_per_choice_equals_the_full_forward(arch, tiny_models, tokenizer):
    """A multiple-input problem: one prefix and one token 0 per prompt; its pathway ω̄ is the mean of its prompts'
    routings (ChoiceBatch.per_sample, as RoMA reads it); ω = ω̄ is the base model exactly; a moved ω moves each
    prompt's own routing by ω - ω̄ (back onto the scores' domain if it leaves it).  Cached pass == scoring.py's
    full uncached forward steered so at each choice's last context token: scores and gradients."""
    model = tiny_models[arch]
    layers = resolve_layers(model, "last:3")
    samples = multiple_input_samples()
    problems = [problem_of(tokenizer, s, 512) for s in samples]
    assert [len(p.contexts) for p in problems] == [2, 1, 3] and len(problems[2].contexts[0]) == 1
    frozen = freeze(model, problems, layers)
    batch = build_choice_batch(tokenizer, samples, max_length=512)
    with torch.no_grad():
        own = probe_routing(model, batch.input_ids, batch.attention_mask, layers=layers, positions=batch.last_context)
        base_scores = choice_scores(model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits, batch)
    pathway = batch.per_sample(own)
    torch.testing.assert_close(torch.stack([f.routing for f in frozen]), pathway, atol=1e-6, rtol=0)

    unmoved, _ = TailBatch(frozen, "cpu").forward(model, layers, torch.stack([f.routing for f in frozen]))
    torch.testing.assert_close(unmoved, base_scores, atol=5e-5, rtol=0)

    torch.manual_seed(0)
    omega = torch.softmax(3 * torch.randn(len(samples), len(layers), own.shape[-1]), dim=-1).requires_grad_()
    cached, _ = TailBatch(frozen, "cpu").forward(model, layers, omega)
    multiple = torch.tensor([samples[i].multiple_input for i in batch.row_sample.tolist()]).view(-1, 1, 1)
    moved = own + (omega - pathway)[batch.row_sample]
    if spec_for(model).score_kind == "sigmoid":
        valid = moved.clamp(0, 1)
    else:
        assert ((moved < 0) & multiple).any()  # the example leaves the simplex somewhere: the projection runs
        valid = torch.where((moved < 0).any(-1, keepdim=True), simplex_projection(moved, own.sum(-1, keepdim=True)),
                            moved)
    rows = torch.where(multiple, valid, omega[batch.row_sample])
    with steer_routing(model, rows.unsqueeze(1), batch.last_context.unsqueeze(1), layers, mode="scores"):
        full = choice_scores(model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits, batch)
    torch.testing.assert_close(cached, full, atol=5e-5, rtol=0)
    assert (full - base_scores)[0, :2].abs().max() > 1e-3  # the multiple-input problem did move
    (g_cached,) = torch.autograd.grad(cached[torch.isfinite(cached)].sum(), omega)
    (g_full,) = torch.autograd.grad(full[torch.isfinite(full)].sum(), omega)
    torch.testing.assert_close(g_cached, g_full, atol=1e-4, rtol=1e-3)


# ---------------------------------------------------------------- lm-eval's real tasks


@pytest.fixture(scope="module")
def world(tmp_path_factory, tokenizer):
    """The tiny OLMoE as lm-eval loads it, and its C3PO reference on winogrande's train split (Python API)."""
    import offline_hub
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = tmp_path_factory.mktemp("c3po_real")
    with offline_hub.installed():
        model_dir = save_tiny_model("olmoe", root / "model", tokenizer=tokenizer)
        model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
        tok = AutoTokenizer.from_pretrained(model_dir)
        train = load_samples(["winogrande"], split="train")
        build_reference(model, tok, train, root / "ref", ReferenceBuild(base_model=str(model_dir)), progress=False)
        register_c3po()
        yield SimpleNamespace(root=root, model_dir=model_dir, model=model, tokenizer=tok, ref=root / "ref",
                              train=train, hub=offline_hub)


def assert_same_per_sample(ours: dict, theirs: dict, tasks):
    for task in tasks:
        assert sorted(ours[task]) == sorted(theirs[task])
        for doc_id, (resps, metrics) in theirs[task].items():
            our_resps, our_metrics = ours[task][doc_id]
            assert [r[0] for r in our_resps] == pytest.approx([r[0] for r in resps], abs=1e-4), (task, doc_id)
            assert [r[1] for r in our_resps] == [r[1] for r in resps] and our_metrics == metrics, (task, doc_id)


def test_kernel_alpha_one_is_lm_eval_hf_per_sample_and_one_problem_per_document(world, monkeypatch):
    """kernel with α = 1 keeps every document's base routing: `lm_eval --model c3po` == `--model hf` per sample
    on winogrande (a prompt per choice) and arc_challenge (3, 4 and 5 choices), and so does the Python API.
    The requests of one document form one problem (one pathway), embedded as its label-free question."""
    runs = []
    real_run = C3PO.run

    def recording(self, problems, prompts, *args, **kwargs):
        runs.append((list(problems), list(prompts)))
        return real_run(self, problems, prompts, *args, **kwargs)

    monkeypatch.setattr(C3PO, "run", recording)
    args = f"pretrained={world.model_dir},reference={world.ref},c3po_method=kernel,c3po_alpha=1"
    ours = evaluate_api("c3po", args, TASKS, include_path=None)
    hf = evaluate_api("hf", f"pretrained={world.model_dir}", TASKS, include_path=None)
    assert_same_per_sample(ours, hf, TASKS)

    samples = load_samples(TASKS)
    assert {len(s.choices) for s in samples} == {2, 3, 4, 5}
    problems = [p for run, _ in runs for p in run]
    prompts = [p for _, run in runs for p in run]
    assert len(problems) == len(samples)  # one per document
    assert sorted(len(p.contexts) for p in problems) == sorted(len(s.choice_contexts) or 1 for s in samples)
    assert sorted(prompts) == sorted(sample_prompt(s) for s in samples)
    assert {s.text for s in samples if s.multiple_input} <= set(prompts)  # winogrande: "... the _ carries ..."

    api = C3PO(world.model, load_reference(world.ref), C3POConfig(method="kernel", alpha=1.0))
    for result in api.score_samples(world.tokenizer, samples, progress=False):
        resps, metrics = hf[result.task][result.doc_id]
        assert result.scores == pytest.approx([r[0] for r in resps], abs=1e-4)
        assert (result.acc, result.acc_norm) == (metrics["acc"], metrics.get("acc_norm", result.acc_norm))


def test_winogrande_reference_is_lm_eval_success_set_with_mean_pathways(world, tmp_path):
    """A reference built on winogrande's train split: its samples are the documents lm-eval's `hf` gets right
    (acc) on that split; each pathway is the mean over choices of routing.probe_routing at the choice's last
    context token; its prompts are the choices' own; its embedded prompt is the question with a blank; its
    stored frozen prefixes (one per prompt) are what freeze computes."""
    import lm_eval.tasks

    winogrande = Path(lm_eval.tasks.__file__).parent / "winogrande" / "default.yaml"
    (tmp_path / "on_train.yaml").write_text(f"include: {winogrande}\ntask: winogrande_on_train\n"
                                           "validation_split: train\n")
    with world.hub.installed():
        hf = evaluate_api("hf", f"pretrained={world.model_dir}", ["winogrande_on_train"],
                          include_path=tmp_path)["winogrande_on_train"]
    right = sorted(doc_id for doc_id, (_, metrics) in hf.items() if metrics["acc"] == 1.0)
    reference = load_reference(world.ref)
    assert len(hf) == len(world.train) and 3 <= len(right) < len(hf)
    assert [record["doc_id"] for record in reference.metadata["samples"]] == right

    tok, layers = world.tokenizer, reference.layers
    train = {s.doc_id: s for s in world.train}
    for i, record in enumerate(reference.metadata["samples"]):
        sample, problem = train[record["doc_id"]], reference.problems[i]
        contexts = [encode_pair(tok, c, sample.continuations[0])[0] for c in sample.contexts]
        assert [list(map(int, c)) for c in problem.contexts] == contexts and len(contexts) == 2
        assert problem.gold == sample.gold and record["prompt"] == sample.text
        with torch.no_grad():
            routing = torch.stack([probe_routing(world.model, torch.tensor([c]), layers=layers)[0] for c in contexts])
        torch.testing.assert_close(reference.routing[i], routing.mean(0), atol=1e-6, rtol=0)

    stored = reference.stored_frozen(range(len(reference)), "cpu", torch.float32)
    for a, b in zip(stored, freeze(world.model, reference.problems, layers), strict=True):
        for name in ("token0", "tail_hidden", "prompt_routing"):
            torch.testing.assert_close(getattr(a, name), getattr(b, name), atol=1e-5, rtol=0)
        assert len(a.kv) == len(b.kv) == 2
        for kv_a, kv_b in zip(a.kv, b.kv):
            for (ka, va), (kb, vb) in zip(kv_a, kv_b, strict=True):
                torch.testing.assert_close(ka, kb, atol=1e-5, rtol=0)
                torch.testing.assert_close(va, vb, atol=1e-5, rtol=0)


def test_build_reference_and_plain_lm_eval_cli_on_winogrande_arc_and_mmlu(world, tmp_path):
    """`roma-eval c3po build-reference --tasks winogrande` and plain `lm_eval --model c3po` (NGD) on
    winogrande, arc_challenge and the mmlu group, in subprocesses on the synthetic hub rows: lm-eval writes
    its results with the mmlu group entry, and per sample they equal C3PO's Python API."""
    import roma_eval

    repo = str(Path(roma_eval.__file__).resolve().parents[1])  # this checkout's roma_eval in the subprocesses
    env = world.hub.subprocess_env(PYTHONPATH=os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH")) if p))
    ref, out = tmp_path / "ref", tmp_path / "out"
    build = subprocess.run([ROMA_EVAL, "c3po", "build-reference", "--pretrained", str(world.model_dir), "--tasks",
                            "winogrande", "--output_path", str(ref)], capture_output=True, text=True, env=env)
    assert build.returncode == 0, build.stderr[-3000:]
    reference = load_reference(ref)
    assert [len(p.contexts) for p in reference.problems] == [2] * len(reference)
    evaluation = subprocess.run([LM_EVAL, "--model", "c3po", "--model_args",
                                 f"pretrained={world.model_dir},reference={ref}", "--tasks",
                                 "winogrande,arc_challenge,mmlu", "--limit", "2", "--device", "cpu", "--batch_size",
                                 "4", "--output_path", str(out), "--log_samples"],
                                capture_output=True, text=True, env=env)
    assert evaluation.returncode == 0, evaluation.stderr[-3000:]
    (results_file,) = out.rglob("results_*.json")
    results = json.loads(results_file.read_text())
    assert "mmlu" in results["groups"] and results["results"]["mmlu"]["sample_len"] == 57 * 2
    assert {"winogrande", "arc_challenge"} <= set(results["results"])

    via_cli = {task: per_sample([json.loads(line) for f in out.rglob(f"samples_{task}_*.jsonl")
                                 for line in f.read_text().splitlines()]) for task in TASKS}
    with world.hub.installed():
        samples = load_samples(TASKS, limit=2)
    ours = C3PO(world.model, reference, C3POConfig()).score_samples(world.tokenizer, samples, progress=False)
    assert len(ours) == 4
    for result in ours:
        resps, metrics = via_cli[result.task][result.doc_id]
        assert result.scores == pytest.approx([r[0] for r in resps], abs=1e-4)
        assert result.acc == metrics["acc"]


def test_label_free_prompt_is_the_question_with_a_blank():
    """One rule for references and test prompts: an ordinary prompt as it is; per-choice prompts cut at a word
    boundary (also a line break: a blank at a paragraph's start), "_", the shared continuation."""
    assert label_free_prompt(["Q: 2+2?\nA:"] * 3, " 4") == "Q: 2+2?\nA:"
    assert label_free_prompt(["the rocket", "the river"], " flew.") == "the _ flew."
    assert label_free_prompt(["Ann", "Bob"], " ran.") == "_ ran."
    assert label_free_prompt(["Shot.\n\nAnn", "Shot.\n\nBob"], " ran.") == "Shot.\n\n_ ran."
