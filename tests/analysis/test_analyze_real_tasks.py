"""`roma-eval analyze` on lm-eval's own task YAMLs (arc_challenge, winogrande: a prompt per choice, gsm8k: generation;
tests/offline_hub's synthetic rows) for runs of tiny models of three families: softmax (OLMoE), sigmoid scores with a
correction bias and group-limited top-k (DeepSeek-V3, its first layer dense) and shared experts (Qwen2-MoE).  The
prompts it analyses are the ones lm-eval logged for the run."""

import json

import pytest
from lm_eval_helpers import evaluate_to

from roma_eval.analysis.analyse import run_samples
from roma_eval.analysis.runs import ANALYSIS_FILE, read_run
from roma_eval.cli import main
from roma_eval.harness import task_manager
from roma_eval.results.routing import read_routing_analysis
from roma_eval.tiny import save_tiny_model

pytestmark = pytest.mark.slow  # lm-eval's task index (~8 s) and an lm-eval run per family

TASKS = ["arc_challenge", "winogrande", "gsm8k"]
LIMIT = 4
FAMILIES = {"olmoe": ("softmax", [0, 1, 2, 3]), "deepseek_v3": ("sigmoid", [1, 2, 3]),
            "qwen2_moe": ("softmax", [0, 1, 2, 3])}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tokenizer):
    """An lm-eval run of each family's tiny model (``lm_eval --model hf --log_samples``), analysed by one command;
    the offline hub stays installed for the module's tests."""
    import offline_hub

    root = tmp_path_factory.mktemp("real")
    patch = pytest.MonkeyPatch()
    patch.setenv("ROMA_EVAL_CACHE", str(root / "cache"))
    with offline_hub.installed():
        directories = {}
        for arch in FAMILIES:
            model = save_tiny_model(arch, root / "models" / arch, seed=1, tokenizer=tokenizer)
            evaluate_to(root / "runs" / arch, "hf", f"pretrained={model}", TASKS, limit=LIMIT,
                        gen_kwargs="max_gen_toks=4")
            directories[arch] = next((root / "runs" / arch).rglob("results_*.json")).parent
        assert main(["analyze", *map(str, directories.values()), "--k", "3", "--bootstrap", "100",
                     "--no_progress"]) == 0
        yield directories
    patch.undo()


@pytest.mark.parametrize("arch", FAMILIES)
def test_each_family_is_analysed_on_the_runs_documents(runs, arch):
    scoring, layers = FAMILIES[arch]
    analysis = read_routing_analysis(runs[arch] / ANALYSIS_FILE)
    assert analysis.scoring == scoring and list(analysis.layers) == layers and analysis.top_k == 2
    assert analysis.tasks == tuple(sorted(TASKS)) and analysis.n_samples == len(TASKS) * LIMIT
    assert sorted(analysis.per_task) == sorted(TASKS) and analysis.overall.n == len(TASKS) * LIMIT
    raw = json.loads((runs[arch] / ANALYSIS_FILE).read_text())
    assert raw["model_type"] == arch and raw["method"] == "base"
    for layer in layers:
        entry = analysis.per_layer[layer]
        assert abs(sum(entry.load_last) - 1) < 1e-9 and abs(sum(entry.load_context) - 1) < 1e-9
        assert entry.topk_margin.p10 > 0 and entry.movement is None


def test_the_prompts_are_the_ones_lm_eval_logged(runs):
    """Per document, the contexts the analysis reads are the contexts lm-eval sent the model (winogrande: one per
    choice)."""
    run = read_run(next(runs["olmoe"].glob("results_*.json")))
    samples = run_samples(task_manager((), TASKS), run, None)
    for task in TASKS:
        logged = {}
        for line in next(runs["olmoe"].glob(f"samples_{task}_*.jsonl")).read_text().splitlines():
            row = json.loads(line)
            logged[row["doc_id"]] = {argument["arg_0"] for argument in row["arguments"].values()}
        ours = {s.doc_id: set(s.choice_contexts or (s.context,)) for s in samples if s.task == task}
        assert ours == logged, task
