"""The paper's own tables: averages recomputed independently, bundled copies, golden renderings."""

from __future__ import annotations

import csv
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest

from roma_eval.errors import RomaEvalError
from roma_eval.report import paper
from roma_eval.report.build import PaperSource, build_report
from roma_eval.report.formatting import fmt
from roma_eval.report.render import render
from roma_eval.results import load_runs

SHARED_PAPER = Path(__file__).resolve().parents[3] / "shared" / "paper"  # the project's copy, beside the repo
CSVS = ("table1_olmoe.csv", "table1_deepseekmoe.csv", "table1_qwen3.csv", "c3po_table1.csv")


def published_rows():
    for name in CSVS:
        with (paper.PUBLISHED_DIR / name).open() as handle:
            for row in csv.DictReader(handle):
                yield name, row


def test_every_published_average_is_the_rounded_mean_of_its_columns():
    # Exact decimal arithmetic on the CSV strings: independent of the float path in tables.fmt.
    rows = list(published_rows())
    assert len(rows) == 36  # 3 × 10 methods + 2 × 3 C3PO variants
    for name, row in rows:
        values = [Decimal(v) for k, v in row.items() if k not in ("model", "method", "avg")]
        assert len(values) == (6 if name.startswith("c3po") else 8)
        mean = (sum(values) / len(values)).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)
        assert str(mean) == row["avg"], (name, row["method"])


def test_our_recomputation_agrees_and_says_so():
    grids = list(paper.table1_grids().values()) + list(paper.c3po_grids().values())
    assert len(grids) == 5
    for g in grids:
        for method in g.methods:
            assert fmt(paper.recomputed_average(g, method)) == fmt(g.published_average[method])
        assert "it matches for all" in paper.average_check_note(g)


def test_a_wrong_published_average_is_reported(tmp_path):
    for name in CSVS:
        (tmp_path / name).write_text((paper.PUBLISHED_DIR / name).read_text())
    path = tmp_path / "table1_olmoe.csv"
    path.write_text(path.read_text().replace(",67.6\n", ",67.9\n"))
    note = paper.average_check_note(paper.table1_grids(tmp_path)["olmoe"])
    assert note == "Recomputed averages differ from the published ones: Base 67.6 vs 67.9."


def test_a_malformed_csv_names_the_file(tmp_path):
    path = tmp_path / "table1_olmoe.csv"
    path.write_text("method,mmlu,avg\nbase,n/a,1.0\n")
    with pytest.raises(RomaEvalError, match="line 2 of .*table1_olmoe.csv"):
        paper.table1_grids(tmp_path)


@pytest.mark.skipif(not SHARED_PAPER.is_dir(), reason="the project's paper/ directory is not beside this checkout")
def test_bundled_csvs_are_the_projects():
    for name in CSVS:
        assert (paper.PUBLISHED_DIR / name).read_bytes() == (SHARED_PAPER / name).read_bytes(), name


def test_paper_model_from_a_model_name():
    assert paper.paper_model_for("allenai/OLMoE-1B-7B-0924") == "olmoe"
    assert paper.paper_model_for("deepseek-ai/deepseek-moe-16b-base") == "deepseekmoe"
    assert paper.paper_model_for("Qwen/Qwen3-30B-A3B") == "qwen3"
    assert paper.paper_model_for("mistralai/Mixtral-8x7B-v0.1") is None


def test_ours_next_to_the_papers(runs):
    report = build_report(load_runs([str(runs / "olmoe_paper")]), plots=False)
    (section,) = report.sections
    side = next(t for t in section.tables if t.title.startswith("Ours vs"))
    rows = {label: [c.text for c in cells] for label, cells in side.rows}
    assert list(rows) == ["Base (ours)", "Base (paper)", "RoMA (ours)", "RoMA (paper)"]
    assert rows["RoMA (paper)"] == ["69.0", "86.7", "67.2", "88.0", "85.8", "81.8", "81.7", "49.4", "76.2"]
    assert rows["Base (ours)"][0] == "54.1"


def paper_runs(tmp_path, runs, checkpoint: str, **recorded) -> list:
    """The hand-made olmoe_paper runs (base, RoMA) as if lm-eval had evaluated ``checkpoint`` (``pretrained=``), with
    ``recorded`` (chat_template=..., fewshot_as_multiturn=...) at the top of each results file, as lm-eval writes."""
    import json
    import shutil

    directory = Path(shutil.copytree(runs / "olmoe_paper", tmp_path / checkpoint.replace("/", "_")))
    for path in directory.rglob("results_*.json"):
        data = json.loads(path.read_text())
        data["config"]["model_args"]["pretrained"] = data["model_name"] = checkpoint
        path.write_text(json.dumps({**data, **recorded}))
    return load_runs([str(directory)])


def side_by_side(runs, paper_model=None):
    report = build_report(runs, plots=False, paper_source=PaperSource(model=paper_model))
    (section,) = report.sections
    table = next(t for t in section.tables if t.title.startswith("Ours vs"))
    return table, render(report, "md")


VARIANTS = [  # (checkpoint, the paper's model it is compared with, its variant); the paper's rows: post-trained
    ("allenai/OLMoE-1B-7B-0924", "olmoe", "base"), ("allenai/OLMoE-1B-7B-0125", "olmoe", "base"),
    ("allenai/OLMoE-1B-7B-0125-Instruct", "olmoe", None), ("deepseek-ai/deepseek-moe-16b-base", "deepseekmoe", "base"),
    ("deepseek-ai/deepseek-moe-16b-chat", "deepseekmoe", None), ("Qwen/Qwen3-30B-A3B-Base", "qwen3", "base"),
    ("Qwen/Qwen3-30B-A3B", "qwen3", None),
]


@pytest.mark.parametrize(("checkpoint", "model", "variant"), VARIANTS)
def test_ours_vs_paper_says_when_the_runs_are_another_variant(tmp_path, runs, checkpoint, model, variant):
    """Runs whose model_args name a base checkpoint are compared with the paper's post-trained rows under a note
    that says so (under the table, in the rendered report too); runs of the paper's variant get no such note."""
    table, text = side_by_side(paper_runs(tmp_path, runs, checkpoint))
    assert table.title == f"Ours vs RoMA Table 1 — {paper.PAPER_MODELS[model]}"
    notes = [n for n in table.notes if "variant" in n]
    if variant is None:
        assert notes == []
        return
    (note,) = notes
    assert f"its rows are taken to be {paper.PAPER_CHECKPOINTS[model].hub_id}, a post-trained model" in note
    assert f"These runs evaluate {checkpoint}, a base model" in note
    assert text.index(note) > text.index("| RoMA (paper) |")  # under the table


def test_a_nameless_checkpoint_is_judged_by_its_config_or_flagged(tmp_path, runs):
    """A local directory whose name does not say its variant: the hub id its config.json records decides; without
    one the note says the variant cannot be told."""
    import json

    local = tmp_path / "models" / "moe"
    local.mkdir(parents=True)
    table, _ = side_by_side(paper_runs(tmp_path, runs, str(local)), paper_model="olmoe")
    assert any(f"Whether {local} is a base or a post-trained model cannot be told" in n for n in table.notes)
    (local / "config.json").write_text(json.dumps({"_name_or_path": "allenai/OLMoE-1B-7B-0125-Instruct"}))
    table, _ = side_by_side(paper_runs(tmp_path / "again", runs, str(local)), paper_model="olmoe")
    assert not any("variant" in n for n in table.notes)
    (local / "config.json").write_text(json.dumps({"_name_or_path": "allenai/OLMoE-1B-7B-0924"}))
    table, _ = side_by_side(paper_runs(tmp_path / "base", runs, str(local)), paper_model="olmoe")
    assert any(f"These runs evaluate {local}, a base model" in n for n in table.notes)


def test_ours_vs_paper_names_the_chat_template(tmp_path, runs):
    """Whether lm-eval applied a chat template (its results' chat_template, fewshot_as_multiturn) is named under
    "Ours vs paper", and a mix of the two is flagged beside the scores as a setting that differs."""
    checkpoint = "allenai/OLMoE-1B-7B-0125-Instruct"
    chat = {"chat_template": "{% for message in messages %}{{ message['content'] }}{% endfor %}",
            "fewshot_as_multiturn": True}
    table, _ = side_by_side(paper_runs(tmp_path, runs, checkpoint, **chat))
    assert ("Prompts: the model's chat template (applied, few-shot as multi-turn: lm-eval --apply_chat_template). "
            "The paper does not say whether it applied a chat template.") in table.notes
    table, _ = side_by_side(paper_runs(tmp_path / "plain", runs, checkpoint, chat_template=None,
                                       fewshot_as_multiturn=False))
    assert "Prompts: lm-eval's plain prompts (no chat template). The paper does not say" in " ".join(table.notes)
    scores = build_report(paper_runs(tmp_path / "plain2", runs, checkpoint, chat_template=None), plots=False)
    assert "Prompts: lm-eval's plain prompts (no chat template)." in scores.sections[0].tables[0].notes
    mixed = paper_runs(tmp_path / "mixed", runs, checkpoint, chat_template=None)
    mixed[1].data.update(chat)  # one of the two runs with the chat template
    report = build_report(mixed, plots=False)
    scores = report.sections[0].tables[0]
    assert any("chat template in" in n and "Base none" in n and "RoMA applied" in n for n in scores.notes), scores.notes


@pytest.mark.parametrize("kind", ["md", "tex"])
def test_paper_tables_golden(matches_golden, kind):
    text = render(build_report([], paper=True, plots=False, title="RoMA and C3PO, as published"), kind)
    assert matches_golden(f"paper.{kind}", text)

