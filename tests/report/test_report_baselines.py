"""Table 1's other rows in the report: each run's method read from the artefact it evaluated (a router
checkpoint's training_config, a peft adapter's files), the paper's row order, the cost columns."""

import json
import shutil

import pytest

from roma_eval.report.build import build_report
from roma_eval.report.render import render
from roma_eval.results import TrainingCost, load_runs, method_of, router_method, training_cost


def router_checkpoint(directory, training_config, layers=(14, 15), experts=64, hidden=2048, steps=3):
    directory.mkdir(parents=True)
    (directory / "router_config.json").write_text(json.dumps({
        "layers": list(layers), "num_experts": experts, "hidden_size": hidden, "training_config": training_config}))
    (directory / "training_log.jsonl").write_text("".join(json.dumps({"step": i, "seconds": 0.5}) + "\n"
                                                          for i in range(steps)))
    return directory


def adapter(directory, peft_type, method=None, parameters=None):
    directory.mkdir(parents=True)
    (directory / "adapter_config.json").write_text(json.dumps({"peft_type": peft_type}))
    if method:
        (directory / "training_config.json").write_text(json.dumps(
            {"method": method, "summary": {"trainable_parameters": parameters}}))
        (directory / "training_log.jsonl").write_text(json.dumps({"step": 0, "seconds": 2.0}) + "\n")
    return directory


@pytest.mark.parametrize("training_config, method", [
    ({"regulariser": "manifold", "lam": 0.8}, "roma"), ({"regulariser": "none", "lam": 0.8}, "router_tuning"),
    ({"regulariser": "manifold", "lam": 0.0}, "router_tuning"), ({"regulariser": "l2", "lam": 0.8}, "roma"),
    ({"method": "oracle_tuning", "lam": 0.8}, "oracle_tuning"), ({"method": "dense_bp"}, "dense_bp"),
])
def test_router_checkpoints_written_before_the_method_field_are_still_read(tmp_path, training_config, method):
    assert router_method({"training_config": training_config}) == method
    ckpt = router_checkpoint(tmp_path / "ckpt", training_config)
    assert method_of("roma", {"pretrained": "m", "router_checkpoint": str(ckpt)}) == method
    assert training_cost("roma", {"router_checkpoint": str(ckpt)}) == TrainingCost(2 * 64 * 2048, 1.5)


def test_the_recorded_method_decides_over_the_training_settings():
    # A checkpoint records its method (every training method writes it); its settings are never read for it then.
    assert router_method({"method": "router_tuning", "training_config": {"lam": 0.8}}) == "router_tuning"
    assert router_method({"method": "roma", "training_config": {"lam": 0.0}}) == "roma"


def test_peft_adapters_say_which_method_trained_them(tmp_path):
    prefix = adapter(tmp_path / "prefix", "PREFIX_TUNING", "prefix_tuning", 1310720)
    for model in ("hf", "hf-peft"):
        assert method_of(model, {"pretrained": "m", "peft": str(prefix)}) == "prefix_tuning"
    assert method_of("hf", {"peft": str(adapter(tmp_path / "other", "PROMPT_TUNING"))}) == "prompt_tuning"
    assert method_of("hf", {"peft": str(adapter(tmp_path / "lora", "LORA"))}) == "lora"
    assert method_of("hf", {"peft": str(tmp_path / "missing")}) == "peft"
    assert method_of("hf", {"pretrained": "m"}) == "base" and method_of("icl", {"pretrained": "m"}) == "icl"
    assert training_cost("hf-peft", {"peft": str(prefix)}) == TrainingCost(1310720, 2.0)
    assert training_cost("icl", {}) == TrainingCost(0) and training_cost("hf", {}) == TrainingCost(0)


def test_relative_artefact_paths_are_found_from_the_run(tmp_path, monkeypatch):
    """lm_eval records router_checkpoint as typed; the report may run elsewhere: the results file's parents count."""
    root = tmp_path / "experiment"
    router_checkpoint(root / "ckpt" / "rt", {"regulariser": "none"})
    assert method_of("roma", {"router_checkpoint": "ckpt/rt"}, [root / "runs" / "m", root / "runs", root]) == \
        "router_tuning"
    monkeypatch.chdir(tmp_path)
    assert method_of("roma", {"router_checkpoint": "ckpt/rt"}) == "roma"  # not found: RoMA, with a warning


def test_report_rows_in_the_papers_order_with_costs(runs, tmp_path, monkeypatch):
    """Copies of the base fixture run relabelled as each Table 1 method through its artefact (what lm-eval would
    record for `--model roma ... router_checkpoint=`, `--model hf-peft ... peft=`, `roma-eval icl`)."""
    monkeypatch.chdir(tmp_path)
    def roma(name, training_config):
        return "roma", {"router_checkpoint": str(router_checkpoint(tmp_path / name, training_config))}

    artefacts = {
        "router_tuning": roma("rt", {"regulariser": "none"}), "roma": roma("roma", {"regulariser": "manifold"}),
        "oracle_tuning": roma("ot", {"method": "oracle_tuning"}), "dense_bp": roma("dbp", {"method": "dense_bp"}),
        "prefix_tuning": ("hf-peft", {"peft": str(adapter(tmp_path / "pre", "PREFIX_TUNING", "prefix_tuning", 500))}),
        "prompt_tuning": ("hf-peft", {"peft": str(adapter(tmp_path / "pro", "PROMPT_TUNING", "prompt_tuning", 80))}),
        "icl": ("icl", {}),
    }
    source = next((runs / "base").rglob("results_*.json"))
    paths = [str(runs / "base"), str(runs / "oracle"), str(runs / "c3po")]
    for name, (model, args) in artefacts.items():
        target = tmp_path / "runs" / name / "tiny-olmoe"
        shutil.copytree(source.parent, target)
        results = next(target.glob("results_*.json"))
        data = json.loads(results.read_text())
        data["config"]["model"], data["config"]["model_args"] = model, {"pretrained": "tiny-olmoe", **args}
        results.write_text(json.dumps(data))
        paths.append(str(target.parent))
    runs_loaded = load_runs(paths)
    assert {r.method for r in runs_loaded} == {"base", "oracle", "c3po", *artefacts}
    text = render(build_report(runs_loaded, plots=False), "md")
    scores = text.split("**Accuracy (%)**")[1].split("\n\n")[1]  # the table after the title
    rows = [line.split("|")[1].strip() for line in scores.splitlines()[2:]]
    assert rows[:2] == ["n", "chance"]  # the documents per benchmark and the score of guessing, then the methods
    assert rows[2:] == ["Base", "Oracle", "ICL", "C3PO", "Router Tuning", "Oracle Tuning", "Prefix Tuning",
                    "Prompt Tuning", "Dense BP", "RoMA"]
    cost = {line.split("|")[1].strip(): [c.strip() for c in line.strip().strip("|").split("|")[1:]]
            for line in text.split("**Cost**")[1].split("_Trainable")[0].splitlines() if line.startswith("| ")}
    assert cost["RoMA"][:2] == ["262,144", "1.5"] and cost["Prefix Tuning"][:2] == ["500", "2.0"]
    assert cost["ICL"][:2] == ["0", "—"] and cost["Base"][:2] == ["0", "—"] and cost["C3PO"][0] == "0"
