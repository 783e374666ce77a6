"""The oracle on lm-eval's own task YAMLs (tests/offline_hub: synthetic rows, nothing downloaded): lm-eval writes
its results (MMLU's group total, n-shot, configs, sample lines with their arguments) and the report reads the
oracle row; per sample and metric the oracle is never below lm-eval's own base answer (ARC with 3, 4 and 5
choices, winogrande's one prompt per choice, a toy-suite task)."""

import json
import statistics

import pytest
from lm_eval_helpers import evaluate_api

from roma_eval.methods.oracle import OracleConfig, load_oracle_tasks, run_oracle
from roma_eval.resources import tasks_dir
from roma_eval.tiny import save_tiny_model

pytestmark = pytest.mark.slow  # runs lm-eval's CLI or a whole toy pipeline

PAPER_TASKS = ["mmlu", "winogrande", "arc_challenge", "gsm8k"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer):
    return save_tiny_model("olmoe", tmp_path_factory.mktemp("model") / "olmoe", seed=3, tokenizer=tokenizer,
                           initializer_range=0.3)


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, model_dir):
    """`roma-eval oracle --tasks mmlu,winogrande,arc_challenge,gsm8k --limit 2`, in-process on the offline hub."""
    import offline_hub

    from roma_eval.cli import main

    out = tmp_path_factory.mktemp("oracle")
    with offline_hub.installed():
        code = main(["oracle", "--pretrained", str(model_dir), "--tasks", ",".join(PAPER_TASKS), "--limit", "2",
                     "--max-steps", "2", "--output_path", str(out), "--no-progress"])
    assert code == 0
    (results_file,) = out.glob("*/results_*.json")
    return out, results_file, json.loads(results_file.read_text())


def samples_of(results_file, task):
    (path,) = results_file.parent.glob(f"samples_{task}_*.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


def leaves(name, group_subtasks):
    children = group_subtasks.get(name)
    return [leaf for child in children for leaf in leaves(child, group_subtasks)] if children else [name]


def test_lm_eval_writes_the_oracle_results_with_mmlus_group_total(cli_run, model_dir):
    from lm_eval.utils import sanitize_model_name

    out, results_file, data = cli_run
    assert results_file.parent == out / sanitize_model_name(str(model_dir))  # lm-eval's layout
    assert data["config"]["model"] == "oracle" and data["config"]["model_args"]["pretrained"] == str(model_dir)
    subjects = leaves("mmlu", data["group_subtasks"])
    assert len(subjects) == 57 and {"mmlu_stem", "mmlu_humanities"} <= set(data["group_subtasks"])
    # lm-eval's MMLU total is the size-weighted mean of its subjects: computed here from the sample lines.
    per_sample = [line["acc"] for subject in subjects for line in samples_of(results_file, subject)]
    assert len(per_sample) == 2 * 57
    assert data["results"]["mmlu"]["acc,none"] == pytest.approx(statistics.fmean(per_sample), abs=1e-12)
    weighted = sum(data["results"][s]["acc,none"] * data["n-samples"][s]["effective"] for s in subjects) / 114
    assert data["results"]["mmlu"]["acc,none"] == pytest.approx(weighted, abs=1e-12)
    base = [line["oracle"]["before"]["acc"] for subject in subjects for line in samples_of(results_file, subject)]
    assert data["oracle"]["base"]["mmlu"]["acc,none"] == pytest.approx(statistics.fmean(base), abs=1e-12)
    assert data["n-shot"]["gsm8k"] == 5 and "arc_challenge" in data["configs"] and "winogrande" in data["versions"]
    for task in ("winogrande", "arc_challenge", "gsm8k", subjects[0]):
        for line in samples_of(results_file, task):
            assert {"arguments", "resps", "filtered_resps", "doc_hash", "prompt_hash", "oracle"} <= set(line)
    gsm8k = samples_of(results_file, "gsm8k")
    assert {line["filter"] for line in gsm8k} == {"strict-match", "flexible-extract"}
    assert data["oracle"]["convergence"]["gsm8k"]["samples"] == 2


def test_the_report_reads_the_oracle_row_with_every_cell(cli_run, tmp_path, capsys):
    from roma_eval.cli import main
    from roma_eval.results import choose_metric, load_runs, metric_preferences

    out, _, _ = cli_run
    (run,) = load_runs([str(out)])
    assert run.method == "oracle"
    cells = {b.name: choose_metric(run.metrics(b), b.name, metric_preferences()) for b in run.benchmarks}
    assert {name: cells.get(name) for name in PAPER_TASKS} == {
        "mmlu": "acc,none", "winogrande": "acc,none", "arc_challenge": "acc_norm,none",
        "gsm8k": "exact_match,flexible-extract"}
    assert main(["report", str(out), "--output_path", str(tmp_path / "report"), "--format", "md", "--no-plots",
                 "--columns", "present"]) == 0
    lines = (tmp_path / "report" / "report.md").read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("| Oracle |"))  # the first table's row
    header = [c.strip() for c in next(line for line in reversed(lines[:at]) if line.startswith("| Method |"))
              .strip("|").split("|")]
    row = dict(zip(header, (c.strip() for c in lines[at].strip("|").split("|"))))
    assert {"MMLU", "ARC-C", "WinoGrande", "GSM8K"} <= set(header)
    assert all(0 <= float(row[column].rstrip("↑↓")) <= 100  # filled (a mark: significantly above / below base)
               for column in ("MMLU", "ARC-C", "WinoGrande", "GSM8K"))


@pytest.fixture(scope="module")
def never_below(tmp_path_factory, model_dir):
    """The oracle and lm-eval's own hf model on ARC-Challenge (3, 4 and 5 choices), winogrande and toy ARC."""
    import offline_hub
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("never_below")
    model, tokenizer = AutoModelForCausalLM.from_pretrained(model_dir).eval(), AutoTokenizer.from_pretrained(model_dir)
    config = OracleConfig(lr=1.0, max_steps=6, layers="all", tokens="last:4")
    with offline_hub.installed():
        tasks = load_oracle_tasks(["arc_challenge", "winogrande", "toy_arc_challenge"], limit=8)
        run = run_oracle(model, tokenizer, tasks, out, config, model_name=str(model_dir), progress=False)
        base = {**evaluate_api("hf", f"pretrained={model_dir}", ["arc_challenge", "winogrande"], include_path=None,
                               limit=8),
                **evaluate_api("hf", f"pretrained={model_dir}", ["toy_arc_challenge"], include_path=tasks_dir(),
                               limit=8)}
    return run, base


@pytest.mark.parametrize("task", ["arc_challenge", "winogrande", "toy_arc_challenge"])
def test_per_sample_and_metric_the_oracle_is_never_below_lm_eval_base(never_below, task):
    run, base = never_below
    lines = {line["doc_id"]: line for line in samples_of(run.results_file, task)}
    assert len(lines) == len(base[task]) == 8
    for doc_id, (_, metrics) in base[task].items():
        line = lines[doc_id]
        assert line["oracle"]["before"] == metrics, (task, doc_id)  # step 0 is lm-eval's own answer
        for metric, value in metrics.items():
            assert line[metric] >= value, (task, doc_id, metric)
    if task == "arc_challenge":
        assert {len(line["arguments"]) for line in lines.values()} == {3, 4, 5}
    if task == "winogrande":  # one prompt per choice, one shared continuation
        for line in lines.values():
            prompts = [args["arg_0"] for args in line["arguments"].values()]
            assert len(set(prompts)) == 2 and len({args["arg_1"] for args in line["arguments"].values()}) == 1
