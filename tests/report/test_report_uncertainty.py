"""What a report's numbers mean and where they come from: paired intervals against base (against a Clopper-Pearson
interval computed here from the samples files), chance from the documents, one row per evaluated variant, artefacts
found in a copied tree, models named as a reader knows them."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
from scipy.stats import beta

from roma_eval.report.build import build_report
from roma_eval.report.formatting import MISSING, fmt
from roma_eval.report.provenance import model_title
from roma_eval.report.render import render
from roma_eval.results import find_artefact, load_runs, same_model_args


def samples(directory: Path, task: str) -> dict[int, dict]:
    (path,) = directory.rglob(f"samples_{task}_*.jsonl")
    return {line["doc_id"]: line for line in map(json.loads, path.read_text().splitlines())}


def rows(text: str, title: str) -> dict[str, list[str]]:
    """A Markdown table of the report, by row label."""
    table = text.split(f"**{title}**")[1].split("\n\n")[1]
    return {cells[0]: cells[1:] for line in table.splitlines()[2:]
            if (cells := [c.strip() for c in line.strip().strip("|").split("|")])}


def test_intervals_are_the_exact_paired_test_of_the_samples(runs):
    """RoMA − base on toy_boolq: Clopper-Pearson for RoMA's share of the discordant documents, from beta quantiles,
    mapped onto the accuracy difference; counted here from the samples files."""
    text = render(build_report(load_runs([str(runs / "base"), str(runs / "roma")]), plots=False), "md")
    base, roma = samples(runs / "base", "toy_boolq"), samples(runs / "roma", "toy_boolq")
    wins = sum(roma[d]["acc"] > base[d]["acc"] for d in base)
    losses = sum(roma[d]["acc"] < base[d]["acc"] for d in base)
    k, m, n = wins, wins + losses, len(base)
    low = float(beta.ppf(0.025, k, m - k + 1)) if k else 0.0
    high = float(beta.ppf(0.975, k + 1, m - k)) if k < m else 1.0
    expected = f"[{fmt(100 * m / n * (2 * low - 1), sign=True)}, {fmt(100 * m / n * (2 * high - 1), sign=True)}]"
    delta = rows(text, "Δ vs base (points), 95% paired interval")
    assert delta["RoMA"][6] == f"{fmt(100 * (wins - losses) / n, sign=True)} {expected}"
    assert delta["n (paired)"][6] == str(n) == rows(text, "Accuracy (%)")["n"][6]
    # The mark agrees with the interval: above 0 is ↑, straddling 0 no mark.
    scores = rows(text, "Accuracy (%)")["RoMA"]
    assert scores[6].endswith("↑") == (low * 2 - 1 > 0)


def test_chance_from_the_documents(runs):
    """1 / choices per document (counted in lm-eval's logged doc, not in its requests); GSM8K's worked answers never
    repeat, so it has no chance level."""
    text = render(build_report(load_runs([str(runs / "base")]), plots=False), "md")
    docs = [line["doc"] for task in ("toy_mmlu_math", "toy_mmlu_colour")
            for line in samples(runs / "base", task).values()]
    mmlu = 100 * sum(1 / len(d["choices"]) for d in docs) / len(docs)
    arc = [line["doc"] for line in samples(runs / "base", "toy_arc_easy").values()]
    answers = Counter(line["doc"]["answer"] for line in samples(runs / "base", "toy_gsm8k").values())
    assert max(answers.values()) == 1
    chance = rows(text, "Accuracy (%)")["chance"]
    assert chance[0] == fmt(mmlu) and chance[3] == fmt(100 * sum(1 / len(d["choices"]) for d in arc) / len(arc))
    assert chance[7] == MISSING


def retarget(directory: Path, checkpoint: str) -> None:
    """The run as `lm_eval --model roma --model_args ...,router_checkpoint=CHECKPOINT` records it."""
    for path in directory.rglob("results_*.json"):
        data = json.loads(path.read_text())
        data["config"]["model_args"] = {"pretrained": "tiny-olmoe", "router_checkpoint": checkpoint}
        path.write_text(json.dumps(data))


def test_two_runs_of_one_method_are_two_rows(runs, tmp_path, monkeypatch):
    """Two RoMA runs of different checkpoints: neither replaces the other (the latest used to win silently)."""
    monkeypatch.chdir(tmp_path)
    a, b = (Path(shutil.copytree(runs / "roma", tmp_path / "runs" / name)) for name in ("a", "b"))
    retarget(b, "checkpoints/roma-lr3e-3")
    text = render(build_report(load_runs([str(runs / "base"), "runs/a", "runs/b"]), plots=False), "md")
    scores = rows(text, "Accuracy (%)")
    assert scores["RoMA (runs/a)"] == scores["RoMA (runs/b)"] and "RoMA" not in scores
    assert ("_RoMA: 2 runs that differ in router_checkpoint are shown as separate rows, named by where they were read "
            "from; name them with LABEL=PATH._") in text
    labelled = render(build_report(load_runs([str(runs / "base"), "roma=runs/a", "lr3e-3=runs/b"]), plots=False), "md")
    assert {"RoMA", "lr3e-3"} <= rows(labelled, "Accuracy (%)").keys()


def test_a_rerun_of_the_same_variant_is_one_row_and_says_so(runs, tmp_path):
    again = Path(shutil.copytree(runs / "roma", tmp_path / "again")) / "tiny-olmoe"
    (old,) = again.glob("results_*.json")
    data = json.loads(old.read_text())
    data["date"] += 3600
    data["results"]["toy_boolq"]["acc,none"] = 0.25  # the later run's number must be the one shown
    old.rename(again / "results_2026-11-23T15-23-50.348796.json")
    (again / "results_2026-11-23T15-23-50.348796.json").write_text(json.dumps(data))
    for path in again.glob("samples_*.jsonl"):
        path.rename(path.with_name(path.name.replace("T14-23", "T15-23")))
    text = render(build_report(load_runs([str(runs / "base"), str(runs / "roma"), str(again)]), plots=False), "md")
    assert rows(text, "Accuracy (%)")["RoMA"][6] == "25.0"
    assert "_Re-runs: RoMA's MMLU, ARC-E, BoolQ, GSM8K from the latest of the runs with the same model_args; the " \
           "earlier ones (results_2026-11-23T14-23-50.348796.json) are in results.csv._" in text


def router_checkpoint(directory: Path, regulariser: str = "none") -> Path:
    directory.mkdir(parents=True)
    (directory / "router_config.json").write_text(json.dumps({"layers": [1], "num_experts": 2, "hidden_size": 4,
                                                              "training_config": {"regulariser": regulariser}}))
    return directory


def test_a_copied_tree_finds_its_own_artefacts(runs, tmp_path, monkeypatch):
    """router_checkpoint recorded absolute (the pipeline) or relative to the run's working directory (plain lm_eval):
    after the tree moves, both resolve inside it, and the original location is not needed."""
    old = tmp_path / "old" / "out"
    shutil.copytree(runs / "roma", old / "router_tuning")
    router_checkpoint(old / "router_tuning" / "router_checkpoint")
    for recorded in (str(old / "router_tuning" / "router_checkpoint"), "out/router_tuning/router_checkpoint"):
        retarget(old / "router_tuning", recorded)
        moved = tmp_path / "new" / "copy"
        shutil.copytree(old, moved)
        monkeypatch.chdir(tmp_path)
        shutil.move(old, tmp_path / "gone")
        (run,) = load_runs([str(moved)])
        assert run.method == "router_tuning"
        results = next(moved.rglob("results_*.json"))
        assert same_model_args(run.config["model_args"], f"pretrained=tiny-olmoe,router_checkpoint="
                               f"{moved / 'router_tuning' / 'router_checkpoint'}", results)
        assert not same_model_args(run.config["model_args"], "pretrained=tiny-olmoe,router_checkpoint=elsewhere",
                                   results)
        shutil.move(tmp_path / "gone", old)
        shutil.rmtree(moved)


def test_only_a_directory_holding_the_artefact_matches(tmp_path):
    """A recorded /ckpts/roma: the run's own directory runs/roma is not it (no router_config.json)."""
    checkpoint = router_checkpoint(tmp_path / "ckpts" / "roma")
    (tmp_path / "runs" / "roma" / "m").mkdir(parents=True)
    parents = [tmp_path / "runs" / "roma" / "m", tmp_path / "runs" / "roma", tmp_path / "runs"]
    assert find_artefact(str(checkpoint), parents, "router_config.json") == checkpoint
    assert find_artefact(str(tmp_path / "moved" / "roma"), parents, "router_config.json") is None


def test_models_are_named_as_a_reader_knows_them(tmp_path):
    from roma_eval.toy.config import preset

    toy = tmp_path / "olmoe-0123456789abcdef"
    toy.mkdir()
    (toy / "toy_config.json").write_text(json.dumps({"config": preset("fast", 3).to_dict()}))
    assert model_title(str(toy)) == "toy olmoe, fast preset, seed 3"
    assert model_title("allenai/OLMoE-1B-7B-0924") == "allenai/OLMoE-1B-7B-0924"
    snapshot = "/hf/hub/models--allenai--OLMoE-1B-7B-0924/snapshots/0123abcd"
    assert model_title(snapshot) == "allenai/OLMoE-1B-7B-0924"
    assert model_title(str(tmp_path / "local" / "tiny-olmoe")) == "tiny-olmoe"


@pytest.mark.parametrize("paper_style", [False, True])
def test_how_each_row_was_produced(runs, paper_style):
    text = render(build_report(load_runs([str(runs / "base"), str(runs / "oracle")]), plots=False,
                               paper_style=paper_style), "md")
    produced = text.split("**How these numbers were produced**")[-1]
    assert ("- Base: `lm_eval --model hf --model_args pretrained=tiny-olmoe --tasks toy_suite --batch_size 8 "
            "--device cpu --log_samples` — results_2026-11-23T14-23-50.348796.json (2026-11-23 14:22 UTC), "
            "lm-eval 0.4.13, transformers 5.23.0, roma-eval not recorded, seeds 0/1234/1234/1234") in produced
    assert "- Oracle: `roma-eval oracle --pretrained tiny-olmoe --tasks toy_suite" in produced
