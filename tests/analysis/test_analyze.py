"""`roma-eval analyze` on the fixture task (tiny_animals): runs of one base model share one load, a router
checkpoint's analysis is the analysis of a model holding those routers, a second run reuses what is there, and every
bad input is one line, exit 2, nothing written."""

import json
from pathlib import Path

import numpy as np
import pytest
from run_helpers import fake_run, tuned_checkpoint

from roma_eval.analysis.dump import DUMP_NAME, read_routing_dump
from roma_eval.analysis.runs import ANALYSIS_FILE
from roma_eval.cli import main
from roma_eval.results.routing import read_routing_analysis
from roma_eval.tiny import save_tiny_model

FIXTURES = str(Path(__file__).resolve().parents[1] / "fixtures" / "tasks")
COUNTS = {"tiny_animals": 12}
FLAGS = ["--include_path", FIXTURES, "--k", "3", "--bootstrap", "200", "--no_progress"]


@pytest.fixture(scope="module")
def world(tmp_path_factory, tokenizer):
    """A tiny OLMoE, two router checkpoints of it, the model with the first one's routers saved whole (an export),
    and a run of each as lm-eval writes it."""
    from transformers import AutoModelForCausalLM

    from roma_eval.checkpoint import apply_router_checkpoint, load_router_checkpoint

    root = tmp_path_factory.mktemp("analyze")
    model_dir = save_tiny_model("olmoe", root / "model", seed=1, tokenizer=tokenizer)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    first = tuned_checkpoint(model, root / "ckpt_a", [2, 3], str(model_dir), seed=1)
    second = tuned_checkpoint(model, root / "ckpt_b", [2, 3], str(model_dir), seed=2, method="router_tuning")
    apply_router_checkpoint(model, load_router_checkpoint(first))
    model.save_pretrained(root / "export")
    tokenizer.save_pretrained(root / "export")
    runs = {"base": fake_run(root / "runs" / "base", "hf", f"pretrained={model_dir}", COUNTS),
            "roma": fake_run(root / "runs" / "roma", "roma", f"pretrained={model_dir},router_checkpoint={first}",
                             COUNTS),
            "router_tuning": fake_run(root / "runs" / "rt", "roma",
                                      f"pretrained={model_dir},router_checkpoint={second}", COUNTS),
            "export": fake_run(root / "runs" / "export", "hf", f"pretrained={root / 'export'}", COUNTS)}
    return root, {name: path.parent for name, path in runs.items()}


@pytest.fixture
def loads(monkeypatch):
    """Counts the models transformers loads."""
    from transformers import AutoModelForCausalLM

    calls = []
    original = AutoModelForCausalLM.from_pretrained.__func__

    def counting(cls, *args, **kwargs):
        calls.append(str(args[0]))
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", classmethod(counting))
    return calls


@pytest.fixture(scope="module")
def analysed(world):
    """Every run analysed by one command; the models transformers loaded meanwhile."""
    from transformers import AutoModelForCausalLM

    root, runs = world
    patch = pytest.MonkeyPatch()
    patch.setenv("ROMA_EVAL_CACHE", str(root / "cache"))
    calls = []
    original = AutoModelForCausalLM.from_pretrained.__func__
    patch.setattr(AutoModelForCausalLM, "from_pretrained",
                  classmethod(lambda cls, *a, **k: calls.append(str(a[0])) or original(cls, *a, **k)))
    try:
        assert main(["analyze", *(str(runs[name]) for name in ("base", "roma", "router_tuning", "export")),
                     *FLAGS]) == 0
    finally:
        patch.undo()
    return calls


def analysis(directory: Path) -> dict:
    return json.loads((directory / ANALYSIS_FILE).read_text())


def flat(value, prefix=""):
    """Nested dicts and lists as {dotted key: leaf}, to compare numbers with a tolerance."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in flat(item, f"{prefix}{key}.").items()}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value) for k, v in flat(item, f"{prefix}{i}.").items()}
    return {prefix: value}


def test_runs_of_one_base_model_share_one_load(world, analysed):
    root, runs = world
    assert analysed == [str(root / "model"), str(root / "export")]  # three runs of the first model: one load
    for name in ("base", "roma", "router_tuning"):
        found = read_routing_analysis(runs[name] / ANALYSIS_FILE)  # the report's reader accepts it
        assert found.method == name and found.n_samples == 12 and found.tasks == ("tiny_animals",)
        assert found.layers == (0, 1, 2, 3) and found.num_experts == 8 and found.top_k == 2
        dump = read_routing_dump(runs[name] / DUMP_NAME)
        assert dump.routing.shape == (12, 4 * 8) and dump.embedding.shape[0] == 12
    base, roma = analysis(runs["base"]), analysis(runs["roma"])
    assert all(entry["movement"] is None for entry in base["per_layer"].values())
    # the checkpoint tunes layers 2 and 3: layers 0 and 1 keep the base routing, the tuned ones move
    assert [roma["per_layer"][str(i)]["movement"]["median"] == 0 for i in range(4)] == [True, True, False, False]
    assert roma["per_layer"]["0"] == {**base["per_layer"]["0"], "movement": {"median": 0.0, "p90": 0.0}}


def test_a_checkpoint_run_is_analysed_as_a_model_holding_its_routers(world, analysed):
    """The router checkpoint applied in place (and the base routers restored for the next run) gives the analysis of
    the model saved with those routers, loaded on its own (another model: its own load)."""
    _, runs = world
    roma, export = analysis(runs["roma"]), analysis(runs["export"])
    for layer, entry in roma["per_layer"].items():
        assert flat({**entry, "movement": None}) == pytest.approx(flat(export["per_layer"][layer]), abs=1e-9), layer
    assert flat(roma["alignment"]) == pytest.approx(flat(export["alignment"]), abs=1e-9)
    np.testing.assert_allclose(read_routing_dump(runs["roma"] / DUMP_NAME).routing,
                               read_routing_dump(runs["export"] / DUMP_NAME).routing, atol=1e-7)
    # the second checkpoint was applied to the base routers, not on top of the first
    assert analysis(runs["router_tuning"])["per_layer"]["3"] != roma["per_layer"]["3"]


def test_a_second_run_reuses_the_analyses(world, analysed, loads, capsys):
    _, runs = world
    before = {p: p.stat().st_mtime_ns for d in runs.values() for p in d.iterdir()}
    assert main(["analyze", str(runs["base"]), str(runs["roma"]), *FLAGS]) == 0
    assert loads == []
    assert capsys.readouterr().out.count("already analysed with these settings") == 2
    assert {p: p.stat().st_mtime_ns for d in runs.values() for p in d.iterdir()} == before
    # other settings: refused without --overwrite, before anything is loaded
    assert main(["analyze", str(runs["base"]), *FLAGS[:-5], "--k", "4", "--no_progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--overwrite" in err[0] and "settings" in err[0] and loads == []


def refused(args, capsys) -> str:
    assert main(["analyze", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_bad_inputs_are_one_line_and_write_nothing(world, tmp_path, capsys, loads):
    root, runs = world
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no lm-eval results" in refused([str(empty)], capsys)
    oracle = fake_run(tmp_path / "oracle", "oracle", f"pretrained={root / 'model'}", COUNTS).parent
    assert "Oracle: it changes the routing of every sample" in refused([str(oracle), *FLAGS], capsys)
    missing = fake_run(tmp_path / "missing", "roma", f"pretrained={root / 'model'},router_checkpoint={tmp_path}/gone",
                       COUNTS).parent
    line = refused([str(missing), *FLAGS], capsys)
    assert "router checkpoint" in line and "gone" in line
    for directory in (empty, oracle, missing):
        assert sorted(p.name for p in directory.iterdir()) == sorted(p.name for p in directory.iterdir()
                                                                     if p.name.startswith("results_")), directory
    assert loads == []


def test_among_several_runs_one_without_a_single_routing_is_skipped(world, tmp_path, capsys):
    root, runs = world
    c3po = fake_run(tmp_path / "c3po", "c3po", f"pretrained={root / 'model'},reference=x", COUNTS).parent
    assert main(["analyze", str(runs["base"]), str(c3po), *FLAGS]) == 0
    captured = capsys.readouterr()
    assert "skipped" in captured.err and "C3PO: it re-mixes the routing" in captured.err
    assert "already analysed" in captured.out and not (c3po / ANALYSIS_FILE).exists()
