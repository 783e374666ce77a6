"""Every verb on lm-eval's own YAMLs (offline synthetic rows): base, RoMA, C3PO and the oracle on a tiny OLMoE,
then the report and the gate over all four runs."""

import contextlib
import io
import json
import re

import pytest
from lm_eval_helpers import evaluate_to

from roma_eval.cli import main
from roma_eval.tiny import save_tiny_model

EVAL = ["mmlu", "arc_challenge", "winogrande", "gsm8k"]
TRAIN = ["arc_easy", "winogrande"]
pytestmark = pytest.mark.slow


def evaluate(model: str, model_args: str, output, limit: int = 2) -> None:
    evaluate_to(output, model, model_args, EVAL, limit=limit, gen_kwargs="max_gen_toks=8")


def test_every_verb_on_lm_evals_own_tasks(real_tasks, tokenizer, tmp_path):
    model = save_tiny_model("olmoe", tmp_path / "model", seed=5, tokenizer=tokenizer)
    runs = tmp_path / "runs"
    evaluate("hf", f"pretrained={model}", runs / "base")
    assert main(["train", "--pretrained", str(model), "--tasks", ",".join(TRAIN), "--limit", "8", "--layers", "last:2",
                 "--epochs", "1", "--batch-size", "8", "--k", "1", "--output_path", str(tmp_path / "routers")]) == 0
    evaluate("roma", f"pretrained={model},router_checkpoint={tmp_path / 'routers'}", runs / "roma")
    assert main(["c3po", "build-reference", "--pretrained", str(model), "--tasks", ",".join(TRAIN), "--limit", "8",
                 "--output_path", str(tmp_path / "reference")]) == 0
    evaluate("c3po", f"pretrained={model},reference={tmp_path / 'reference'},c3po_steps=2", runs / "c3po")
    assert main(["oracle", "--pretrained", str(model), "--tasks", ",".join(EVAL), "--limit", "2", "--max-steps", "2",
                 "--no-progress", "--output_path", str(runs / "oracle")]) == 0

    assert main(["report", str(runs), "--output_path", str(tmp_path / "report"), "--format", "md", "--no-plots",
                 "--columns", "present"]) == 0
    table = (tmp_path / "report" / "report.md").read_text().split("\n\n")
    scores = next(block for block in table if "| Base |" in block)  # the first table: accuracy
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")[1:]]
            for line in scores.splitlines()[2:] if line.split("|")[1].strip() not in ("n", "chance")}
    assert set(rows) >= {"Base", "RoMA", "C3PO", "Oracle"}
    assert all(cell not in ("", "—") for row in rows.values() for cell in row), scores  # every column filled

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["check", "--baseline", str(runs / "base"), "--candidate", str(runs / "roma")])
    assert code in (0, 1), out.getvalue()
    lines = out.getvalue().splitlines()
    verdicts = {re.match(r"(better|worse|REGRESSION|no significant difference) +(\S+):", line).group(2)
                for line in lines[:-1]}
    assert verdicts == {"mmlu", "arc_challenge", "winogrande", "gsm8k", "average"}
    assert lines[-1].startswith(("REGRESSION: ", "NO REGRESSION: "))
    assert json.loads(next((runs / "oracle").rglob("results_*.json")).read_text())["config"]["model"] == "oracle"
