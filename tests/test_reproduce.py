"""`roma-eval reproduce` end to end on lm-eval's own YAMLs (offline synthetic rows of every dataset both groups
read): every stage, the report with all eight columns, a second run that does no work and keeps the recorded
wall times, a resumed interruption inside RoMA training, all ten rows on DeepSeekMoE's remote code, and methods
a model cannot run refused before anything is written."""

import json
import math

import pytest

from roma_eval.cli import main
from roma_eval.tiny import save_tiny_model

BUDGET = "epochs=2,batch_size=16,lr=0.01"  # --train_args: every trained row's
TRAINING = ["--train_args", BUDGET, "--roma_args", "k=1,layers=last:2", "--router_tuning_args", "layers=last:2"]


def reproduce(model, out):
    """`roma-eval reproduce` on the tiny model: (exit code, what it printed)."""
    import contextlib
    import io

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["reproduce", "--pretrained", str(model), "--output_path", str(out), "--limit", "1",
                     "--train_limit", "2", *TRAINING, "--oracle_args", "max_steps=1", "--c3po_args", "c3po_steps=2",
                     "--batch_size", "16", "--no_progress"])
    return code, printed.getvalue()


@pytest.fixture(scope="module")
def run(tmp_path_factory, tokenizer):
    """An interrupted run (stopped after RoMA's first epoch), then the same command again."""
    import offline_hub

    from roma_eval.training.loop import ResumePoint

    root = tmp_path_factory.mktemp("reproduce")
    model = save_tiny_model("olmoe", root / "model", seed=7, tokenizer=tokenizer)
    save = ResumePoint.save

    def save_then_stop(point, *args, **kwargs):
        save(point, *args, **kwargs)
        if "roma/" in str(point.directory) and "router_tuning" not in str(point.directory):
            raise KeyboardInterrupt

    with offline_hub.installed(), pytest.MonkeyPatch.context() as patch:
        patch.setattr(ResumePoint, "save", save_then_stop)
        assert reproduce(model, root / "out")[0] == 130  # interrupted inside RoMA training
        patch.setattr(ResumePoint, "save", save)
        code, printed = reproduce(model, root / "out")
        assert code == 0
    return model, root / "out", printed


def test_the_base_stage_is_plain_lm_eval_and_the_report_follows(tmp_path, tokenizer, capsys):
    """The pipeline's smallest run (the fast lane's): the base stage writes what plain lm-eval writes, per sample
    equal to lm-eval's own evaluation of the same model, records its plain command, and the report follows."""
    from lm_eval_helpers import evaluate_api, per_sample

    model = save_tiny_model("olmoe", tmp_path / "model", seed=7, tokenizer=tokenizer)
    out = tmp_path / "out"
    assert main(["reproduce", "--pretrained", str(model), "--output_path", str(out), "--methods", "base",
                 "--eval_tasks", "toy_boolq", "--train_tasks", "toy_train_zoology", "--limit", "3",
                 "--batch_size", "4", "--no_progress"]) == 0
    (samples_file,) = (out / "base").rglob("samples_toy_boolq_*.jsonl")
    ours = per_sample([json.loads(line) for line in samples_file.read_text().splitlines()])
    assert ours == evaluate_api("hf", f"pretrained={model}", ["toy_boolq"], include_path=None, limit=3)["toy_boolq"]
    manifest = json.loads((out / "experiment.json").read_text())
    assert "lm_eval --model hf" in " ".join(manifest["stages"]["base"]["commands"])
    rows = [line for line in (out / "report" / "report.md").read_text().splitlines() if line.startswith("| Base")]
    assert rows and "BoolQ" in (out / "report" / "report.md").read_text()
    assert "roma-eval analyze" in manifest["stages"]["routing"]["commands"][0]  # the routing stage, before the report
    assert json.loads(next((out / "base").rglob("routing_analysis.json")).read_text())["n_samples"] == 3


@pytest.mark.slow
def test_every_stage_fills_every_column_of_the_report(run):
    _, out, _ = run
    table = (out / "report" / "report.md").read_text().split("\n\n")
    scores = next(block for block in table if "| Base |" in block)
    header = [c.strip() for c in scores.splitlines()[0].strip("|").split("|")]
    assert header[1:9] == ["MMLU", "HellaSwag", "ARC-C", "ARC-E", "PIQA", "WinoGrande", "BoolQ", "GSM8K"]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")[1:9]]
            for line in scores.splitlines()[2:]}
    assert set(rows) >= {"Base", "Router Tuning", "RoMA", "C3PO", "Oracle"}
    assert all(cell not in ("", "—") for name in ("Base", "Router Tuning", "RoMA", "C3PO", "Oracle")
               for cell in rows[name]), scores
    manifest = json.loads((out / "experiment.json").read_text())
    assert set(manifest["stages"]) == {"base", "router_tuning", "roma", "oracle", "c3po", "routing", "report"}
    roma = manifest["stages"]["roma"]["commands"]
    assert roma[0].startswith("roma-eval train --pretrained") and "--model roma" in roma[1]
    assert "--lr 0.01" in roma[0] and "--epochs 2" in roma[0]  # the shared budget, in the plain command too
    budget = manifest["training_budget"]["rows"]
    assert all(budget[row]["lr"] == {"value": 0.01, "source": "shared budget"} for row in ("roma", "router_tuning"))


@pytest.mark.slow
def test_each_stage_prints_lm_evals_table_and_the_oracle_its_gap_per_benchmark(run):
    """What `reproduce` prints: each stage's lm-eval table as `lm_eval` prints it (from the results file it wrote),
    the oracle's gap table with a row per benchmark of roma_paper (a group without an aggregate), no budget note."""
    from lm_eval.utils import make_table

    _, out, printed = run
    for stage in ("base", "router_tuning", "roma", "oracle", "c3po"):
        results = json.loads(max((out / stage).rglob("results_*.json")).read_text())
        block = printed.split(f"== {stage}\n")[1]
        assert make_table(results) in block, stage
    gap = printed.split("oracle against base:\n")[1].split("\n\n")[0].splitlines()
    tasks = [line.split("|")[1].strip() for line in gap[2:] if line.split("|")[1].strip()]
    assert tasks == ["mmlu", "hellaswag", "arc_challenge", "arc_easy", "piqa", "winogrande", "boolq", "gsm8k"]
    assert "note:" not in printed


@pytest.mark.slow
def test_the_interrupted_roma_training_resumed_from_its_first_epoch(run):
    _, out, _ = run
    log = (out / "roma" / "router_checkpoint" / "training_log.jsonl").read_text().splitlines()
    epochs = [json.loads(line)["epoch"] for line in log]
    assert sorted(set(epochs)) == [0, 1] and not (out / "roma" / "router_checkpoint.partial").exists()


@pytest.mark.slow
def test_a_second_run_does_no_work(run, monkeypatch):
    import offline_hub

    model, out, _ = run

    def fail(*args, **kwargs):
        raise AssertionError("recomputed something a second run should reuse")

    for target in ("lm_eval.simple_evaluate", "roma_eval.methods.roma.train.train_roma",
                   "roma_eval.methods.c3po.reference.build_reference", "roma_eval.methods.oracle.solver.descend"):
        monkeypatch.setattr(target, fail)
    before = json.loads((out / "experiment.json").read_text())["stages"]
    with offline_hub.installed():
        assert reproduce(model, out)[0] == 0
    after = json.loads((out / "experiment.json").read_text())["stages"]
    for stage in ("base", "router_tuning", "roma", "oracle", "c3po"):  # the cost figures survive the rerun
        assert after[stage]["skipped"] and before[stage]["seconds"] > 1, stage
        assert (after[stage]["seconds"], after[stage]["finished"]) == (before[stage]["seconds"],
                                                                       before[stage]["finished"]), stage
    assert not before["roma"]["skipped"]  # computed (resumed) by the fixture's second run
    assert not after["report"]["skipped"]  # rebuilt every time


@pytest.mark.slow
def test_another_model_into_the_same_directory_is_refused(run, tmp_path, capsys):
    _, out, _ = run
    assert main(["reproduce", "--pretrained", str(tmp_path / "other"), "--output_path", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "other settings" in err[0]


@pytest.mark.slow
def test_all_ten_rows_of_table_1(tmp_path, tokenizer):
    """`--methods all`: every row of the paper's Table 1 in the report, in the paper's order."""
    import offline_hub

    model = save_tiny_model("olmoe", tmp_path / "model", seed=7, tokenizer=tokenizer)
    with offline_hub.installed():
        assert main(["reproduce", "--pretrained", str(model), "--output_path", str(tmp_path / "out"), "--limit", "1",
                     "--train_limit", "2", "--methods", "all", *TRAINING, "--oracle_args", "max_steps=1",
                     "--c3po_args", "c3po_steps=2", "--batch_size", "16", "--no_progress"]) == 0
    table = (tmp_path / "out" / "report" / "report.md").read_text().split("\n\n")
    scores = next(block for block in table if "| Base |" in block)
    rows = [line.split("|")[1].strip() for line in scores.splitlines()[2:]]
    assert rows == ["n", "chance", "Base", "Oracle", "ICL", "C3PO", "Router Tuning", "Oracle Tuning", "Prefix Tuning",
                    "Prompt Tuning", "Dense BP", "RoMA"]


@pytest.mark.parametrize("arch, method, reason", [("qwen3_next", "c3po", "C3PO needs a reusable prefix cache"),
                                                  ("dbrx", "dense_bp", "Dense BP needs a router that returns")])
def test_a_method_the_model_cannot_run_is_refused_before_anything_is_written(arch, method, reason, tmp_path,
                                                                           tokenizer, capsys):
    model = save_tiny_model(arch, tmp_path / "model", seed=1, tokenizer=tokenizer)
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(["reproduce", "--pretrained", str(model), "--output_path", str(out), "--methods",
                 f"base,roma,{method}", "--eval_tasks", "toy_boolq", "--train_tasks", "toy_train_zoology",
                 "--no_progress"]) == 2  # roma-eval's own tasks: no lm-eval task index needed to check the names
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and reason in err[0] and f"leave {method} out of --methods" in err[0], err
    assert not out.exists()


# ---------------------------------------------------------------- DeepSeekMoE's remote code, every row

DEEPSEEK_BUDGET = "epochs=1,batch_size=16,lr=0.01"  # the default layers: the last five of nine MoE layers


@pytest.fixture(scope="module")
def deepseek_run(tmp_path_factory, tokenizer):
    """`reproduce --methods all --limit 2` on the DeepSeekMoE stand-in (tuple-returning layers, a no-grad eval-mode
    MoE sum, a training-mode balance loss), loaded with --trust_remote_code."""
    import offline_hub
    from family_helpers import build_family_model

    root = tmp_path_factory.mktemp("deepseek_reproduce")
    build_family_model("deepseek", tokenizer, seed=7).save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    with offline_hub.installed():
        assert main(["reproduce", "--pretrained", str(root / "model"), "--trust_remote_code", "--output_path",
                     str(root / "out"), "--limit", "2", "--train_limit", "2", "--methods", "all", "--train_args",
                     DEEPSEEK_BUDGET, "--roma_args", "k=1", "--oracle_args", "max_steps=1",
                     "--c3po_args", "c3po_steps=2", "--batch_size", "16", "--no_progress"]) == 0
    return root / "model", root / "out"


@pytest.mark.slow
def test_every_row_runs_on_deepseek_moe_remote_code(deepseek_run):
    _, out = deepseek_run
    manifest = json.loads((out / "experiment.json").read_text())
    assert set(manifest["stages"]) == {"base", "router_tuning", "roma", "oracle", "c3po", "icl", "oracle_tuning",
                                       "prefix_tuning", "prompt_tuning", "dense_bp", "routing", "report"}
    table = (out / "report" / "report.md").read_text().split("\n\n")
    scores = next(block for block in table if "| Base |" in block)
    rows = {label: line for line in scores.splitlines()[2:]
            if (label := line.split("|")[1].strip()) not in ("n", "chance")}  # the methods
    assert list(rows) == ["Base", "Oracle", "ICL", "C3PO", "Router Tuning", "Oracle Tuning", "Prefix Tuning",
                          "Prompt Tuning", "Dense BP", "RoMA"]
    assert all("—" not in rows[name] for name in rows), scores


@pytest.mark.slow
def test_the_roma_checkpoint_through_plain_lm_eval_equals_the_reproduce_stage(deepseek_run, tmp_path):
    """The RoMA stage's own `lm_eval --model roma` command (from the manifest), run again as a plain CLI into another
    directory, gives the stage's per-sample results."""
    import shlex
    import subprocess

    import offline_hub
    from lm_eval_helpers import LM_EVAL, per_sample

    _, out = deepseek_run
    command = shlex.split(json.loads((out / "experiment.json").read_text())["stages"]["roma"]["commands"][1])
    assert command[:3] == ["lm_eval", "--model", "roma"] and "trust_remote_code=True" in command[4]
    command[command.index("--output_path") + 1] = str(tmp_path / "cli")
    proc = subprocess.run([LM_EVAL, *command[1:]], capture_output=True, text=True, env=offline_hub.subprocess_env())
    assert proc.returncode == 0, proc.stderr[-3000:]

    def samples(directory):
        found = {}
        for path in directory.rglob("samples_*.jsonl"):
            task = path.name[len("samples_"):].rsplit("_", 1)[0]
            found[task] = per_sample([json.loads(line) for line in path.read_text().splitlines()])
        return found

    stage, cli = samples(out / "roma"), samples(tmp_path / "cli")
    assert set(stage) == set(cli) and len(stage) >= 8
    for task in stage:
        assert stage[task].keys() == cli[task].keys(), task
        for doc, (resps, metrics) in stage[task].items():
            assert metrics == cli[task][doc][1], (task, doc)
            assert close(resps, cli[task][doc][0]), (task, doc)


def close(a, b, tolerance=1e-4) -> bool:
    """Nested lm-eval responses (lists of [log-likelihood, is_greedy] or strings) equal up to float rounding."""
    if isinstance(a, list | tuple):
        return isinstance(b, list | tuple) and len(a) == len(b) and all(close(x, y, tolerance) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= tolerance
    return a == b


@pytest.mark.slow
@pytest.mark.parametrize("method", ["ngd", "kernel", "mode"])
def test_every_c3po_variant_runs_on_deepseek_moe_remote_code(deepseek_run, tokenizer, method):
    from transformers import AutoModelForCausalLM

    from roma_eval.methods.c3po import C3PO, C3POConfig, load_reference
    from roma_eval.samples import Sample

    model_dir, out = deepseek_run
    model = AutoModelForCausalLM.from_pretrained(model_dir, trust_remote_code=True).eval()
    choices = (" whale", " shark fish")
    samples = [Sample("t", i, context, "multiple_choice", context, continuations=choices,
                      choices=tuple(c.strip() for c in choices), gold=0)
               for i, context in enumerate(["Question: which animal is a mammal?\nAnswer:", "Which one swims?"])]
    config = C3POConfig(method=method, steps=2, lr=1.0)
    results = C3PO(model, load_reference(out / "c3po" / "reference"), config).score_samples(tokenizer, samples,
                                                                                           progress=False)
    assert len(results) == 2 and all(all(map(math.isfinite, r.scores)) for r in results)


# ---------------------------------------------------------------- one training budget for every trained row

ROUTER_ROWS = ("router_tuning", "roma", "oracle_tuning", "dense_bp")


@pytest.fixture
def budget_run(tmp_path, tokenizer, monkeypatch, capsys):
    """`reproduce ARGS` with every stage replaced by one that keeps the configs it would train with: (exit code,
    printed lines, experiment.json, row -> config)."""
    from roma_eval.pipeline import STAGES, stages

    model = save_tiny_model("olmoe", tmp_path / "model", seed=7, tokenizer=tokenizer)
    configs = {}

    def keep(exp, row):
        configs[row] = {"router_tuning": exp.router_tuning, "roma": exp.roma, "dense_bp": exp.dense_bp,
                        "oracle_tuning": stages.oracle_tuning_config(exp)}.get(row) or stages.peft_config(exp, row)
        return []

    for row in (*ROUTER_ROWS, "prefix_tuning"):
        monkeypatch.setitem(STAGES, row, lambda exp, row=row: keep(exp, row))
    monkeypatch.setattr("roma_eval.pipeline.report_stage", lambda *args, **kwargs: [])

    def run(*args):
        out = tmp_path / f"out{len(list(tmp_path.glob('out*')))}"
        capsys.readouterr()
        code = main(["reproduce", "--pretrained", str(model), "--output_path", str(out), "--methods",
                     ",".join((*ROUTER_ROWS, "prefix_tuning")), "--no_progress", *args])
        printed = capsys.readouterr()
        manifest = json.loads((out / "experiment.json").read_text()) if code == 0 else None
        return code, (printed.out + printed.err).splitlines(), manifest, dict(configs)

    return run


@pytest.mark.slow
def test_train_args_set_one_budget_for_every_trained_row(budget_run):
    code, printed, manifest, configs = budget_run("--train_args", "lr=0.02,epochs=1,lr_schedule=linear")
    assert code == 0
    for row in ROUTER_ROWS:
        assert (configs[row].lr, configs[row].epochs, configs[row].lr_schedule) == (0.02, 1, "linear"), row
        recorded = manifest["training_budget"]["rows"][row]
        assert recorded["lr"] == {"value": 0.02, "source": "shared budget"}
        assert recorded["batch_size"] == {"value": 32, "source": "default"}
    peft = configs["prefix_tuning"]  # the shared budget but its lr: a soft prompt's is the peft method's own
    assert (peft.lr, peft.epochs, peft.lr_schedule) == (1e-2, 1, "linear")
    assert manifest["training_budget"]["rows"]["prefix_tuning"]["lr"]["source"] == "the peft method's own default"
    assert manifest["training_budget"]["shared"] == {"lr": 0.02, "epochs": 1, "lr_schedule": "linear"}
    assert not any(line.startswith("note:") for line in printed)
    assert any(line.split()[:3] == ["roma", "lr", "0.02"] for line in printed), printed


@pytest.mark.slow
def test_a_row_that_overrides_the_budget_is_named_in_the_summary_and_the_manifest(budget_run):
    code, printed, manifest, configs = budget_run("--roma_args", "lr=0.03")
    assert code == 0
    assert (configs["roma"].lr, configs["router_tuning"].lr, configs["dense_bp"].lr) == (0.03, 7e-5, 7e-5)
    rows = manifest["training_budget"]["rows"]
    assert rows["roma"]["lr"] == {"value": 0.03, "source": "row override"}
    assert rows["router_tuning"]["lr"] == {"value": 7e-5, "source": "default"}
    notes = [line for line in printed if line.startswith("note: the trained rows differ in lr")]
    assert len(notes) == 2  # before the stages and again at the end, above the report
    assert "roma 0.03 (row override)" in notes[0] and "router_tuning 7e-05 (default)" in notes[0]
    # The shared budget and a row's own value together: the row's wins, the others share.
    code, printed, manifest, configs = budget_run("--train_args", "lr=0.02", "--router_tuning_args", "lr=0.05")
    assert (configs["router_tuning"].lr, configs["roma"].lr, configs["oracle_tuning"].lr) == (0.05, 0.02, 0.02)
    assert manifest["training_budget"]["rows"]["oracle_tuning"]["lr"]["source"] == "shared budget"
    assert any("router_tuning 0.05 (row override)" in line for line in printed if line.startswith("note:"))


def test_train_args_outside_the_budget_are_one_line(budget_run):
    code, printed, _, _ = budget_run("--train_args", "lam=0.5")
    errors = [line for line in printed if "error" in line]
    assert code == 2 and len(errors) == 1 and "unknown setting(s) lam" in errors[0], printed
    assert "choose among batch_size, epochs, lr, lr_schedule, warmup_ratio, warmup_steps" in errors[0]
    assert "its own --<row>_args" in errors[0]
    code, printed, _, _ = budget_run("--oracle_tuning_args", "oracle_routing=elsewhere")
    errors = [line for line in printed if "error" in line]
    assert code == 2 and len(errors) == 1 and "sets oracle_routing" in errors[0], printed
