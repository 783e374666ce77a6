"""Table 1's other rows end to end on lm-eval's own YAMLs (offline synthetic rows), tiny OLMoE: each method trained
or built by its verb on a few arc_easy / winogrande training documents, evaluated by lm-eval on arc_challenge,
winogrande and mmlu, and given its own labelled row, in the paper's order, by `roma-eval report`."""

import json

import pytest
from lm_eval_helpers import evaluate_to

from roma_eval.cli import main
from roma_eval.tiny import save_tiny_model, train_tokenizer

EVAL = ["arc_challenge", "winogrande", "mmlu"]
TRAIN = "arc_easy,winogrande"
ROUTERS = ["--limit", "8", "--layers", "last:2", "--epochs", "1", "--batch-size", "8"]
pytestmark = pytest.mark.slow


def evaluate(model: str, model_args: str, output, limit: int = 2) -> None:
    evaluate_to(output, model, model_args, EVAL, limit=limit)


def table_rows(markdown: str, title: str) -> dict[str, list[str]]:
    block = markdown.split(f"**{title}**")[1].split("\n\n")[1]
    return {line.split("|")[1].strip(): [c.strip() for c in line.strip().strip("|").split("|")[1:]]
            for line in block.splitlines()[2:] if line.split("|")[1].strip() not in ("n", "chance")}


def test_every_table_1_row_on_lm_evals_own_tasks(real_tasks, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # artefact paths as a user types them, relative to where lm_eval runs
    model = save_tiny_model("olmoe", tmp_path / "model", seed=5, tokenizer=train_tokenizer())
    runs = tmp_path / "runs"
    base = ["--pretrained", str(model)]
    evaluate("hf", f"pretrained={model}", runs / "base")

    # Router Tuning (RoMA's verb, task loss only) and RoMA, for the labels' sake
    for name, extra in (("router_tuning", ["--regulariser", "none"]), ("roma", [])):
        assert main(["train", *base, "--tasks", TRAIN, *ROUTERS, "--k", "1", *extra, "--output_path", name]) == 0
        evaluate("roma", f"pretrained={model},router_checkpoint={name}", runs / name)
    # Oracle Tuning: the oracle on the training documents first, then routers towards its routing
    assert main(["oracle", *base, "--tasks", TRAIN, "--split", "train", "--save_routing", "--limit", "8",
                 "--layers", "last:2", "--max-steps", "2", "--no-progress", "--output_path", "oracle_train"]) == 0
    assert main(["oracle-tuning", *base, "--tasks", TRAIN, *ROUTERS, "--oracle_routing", "oracle_train",
                 "--output_path", "oracle_tuning"]) == 0
    evaluate("roma", f"pretrained={model},router_checkpoint=oracle_tuning", runs / "oracle_tuning")
    # Dense BP
    assert main(["dense-bp", *base, "--tasks", TRAIN, *ROUTERS, "--output_path", "dense_bp"]) == 0
    evaluate("roma", f"pretrained={model},router_checkpoint=dense_bp", runs / "dense_bp")
    # Prefix and Prompt Tuning: peft adapters, lm-eval's hf with peft= (hf-peft: without the vocabulary resize)
    for verb in ("prefix-tuning", "prompt-tuning"):
        name = verb.replace("-", "_")
        assert main([verb, *base, "--tasks", TRAIN, "--limit", "8", "--epochs", "1", "--batch-size", "8",
                     "--num_virtual_tokens", "4", "--output_path", name]) == 0
        evaluate("hf-peft", f"pretrained={model},peft={name}", runs / name)
    # ICL: retrieved examples, lm-eval evaluates
    assert main(["icl", *base, "--tasks", ",".join(EVAL), "--train_tasks", TRAIN, "--train_limit", "8", "--k", "1",
                 "--limit", "2", "--batch_size", "8", "--output_path", str(runs / "icl")]) == 0
    icl_results = json.loads(next((runs / "icl").rglob("results_*.json")).read_text())
    assert icl_results["config"]["model"] == "icl" and set(icl_results["n-shot"].values()) == {1}
    assert (next((runs / "icl").rglob("results_*.json")).parent / "icl_demonstrations.json").is_file()

    assert main(["report", str(runs), "--output_path", str(tmp_path / "report"), "--format", "md", "--no-plots",
                 "--columns", "present"]) == 0
    text = (tmp_path / "report" / "report.md").read_text()
    scores = table_rows(text, "Accuracy (%)")
    assert list(scores) == ["Base", "ICL", "Router Tuning", "Oracle Tuning", "Prefix Tuning", "Prompt Tuning",
                            "Dense BP", "RoMA"]
    assert all(cell not in ("", "—") for row in scores.values() for cell in row), scores  # every column filled
    cost = table_rows(text, "Cost")
    routers = 2 * 8 * 32  # two tuned layers × 8 experts × hidden 32
    assert [cost[m][0] for m in ("Router Tuning", "Oracle Tuning", "Dense BP", "RoMA")] == [f"{routers:,}"] * 4
    assert cost["Prompt Tuning"][0] == f"{4 * 32:,}" and cost["Prefix Tuning"][0] == f"{4 * 4 * 2 * 16:,}"
    assert cost["Base"][0] == cost["ICL"][0] == "0"
    assert all(cost[m][1] not in ("", "—") for m in scores if m not in ("Base", "ICL"))  # training time recorded
