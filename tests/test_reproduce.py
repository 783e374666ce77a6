"""`roma-eval reproduce` end to end on lm-eval's own YAMLs (offline synthetic rows of every dataset both groups
read): every stage, the report with all eight columns, a second run that does no work, and a resumed
interruption inside RoMA training."""

import json

import pytest

from roma_eval.cli import main
from roma_eval.tiny import save_tiny_model

pytestmark = pytest.mark.slow
TRAINING = "epochs=2,k=1,layers=last:2,batch_size=16,lr=0.01"


def reproduce(model, out):
    return main(["reproduce", "--pretrained", str(model), "--output_path", str(out), "--limit", "1",
                 "--train_limit", "2", "--roma_args", TRAINING, "--router_tuning_args", TRAINING,
                 "--oracle_args", "max_steps=1", "--c3po_args", "c3po_steps=2", "--batch_size", "16",
                 "--no_progress"])


@pytest.fixture(scope="module")
def run(tmp_path_factory, tokenizer):
    """An interrupted run (stopped after RoMA's first epoch), then the same command again."""
    import offline_hub

    from roma_eval.methods.roma import train as roma_train

    root = tmp_path_factory.mktemp("reproduce")
    model = save_tiny_model("olmoe", root / "model", seed=7, tokenizer=tokenizer)
    save = roma_train._save_resume
    calls = []

    def save_then_stop(directory, *args, **kwargs):
        save(directory, *args, **kwargs)
        calls.append(directory)
        if "roma/" in str(directory) and "router_tuning" not in str(directory):
            raise KeyboardInterrupt

    with offline_hub.installed(), pytest.MonkeyPatch.context() as patch:
        patch.setattr(roma_train, "_save_resume", save_then_stop)
        assert reproduce(model, root / "out") == 130  # interrupted inside RoMA training
        patch.setattr(roma_train, "_save_resume", save)
        assert reproduce(model, root / "out") == 0
    return model, root / "out"


def test_every_stage_fills_every_column_of_the_report(run):
    _, out = run
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
    assert set(manifest["stages"]) == {"base", "router_tuning", "roma", "oracle", "c3po", "report"}
    roma = manifest["stages"]["roma"]["commands"]
    assert roma[0].startswith("roma-eval train --pretrained") and "--model roma" in roma[1]


def test_the_interrupted_roma_training_resumed_from_its_first_epoch(run):
    _, out = run
    log = (out / "roma" / "router_checkpoint" / "training_log.jsonl").read_text().splitlines()
    epochs = [json.loads(line)["epoch"] for line in log]
    assert sorted(set(epochs)) == [0, 1] and not (out / "roma" / "router_checkpoint.partial").exists()


def test_a_second_run_does_no_work(run, monkeypatch):
    import offline_hub

    model, out = run

    def fail(*args, **kwargs):
        raise AssertionError("recomputed something a second run should reuse")

    for target in ("lm_eval.simple_evaluate", "roma_eval.methods.roma.train.train_roma",
                   "roma_eval.methods.c3po.reference.build_reference", "roma_eval.methods.oracle.run.descend"):
        monkeypatch.setattr(target, fail)
    with offline_hub.installed():
        assert reproduce(model, out) == 0


def test_another_model_into_the_same_directory_is_refused(run, tmp_path, capsys):
    _, out = run
    assert main(["reproduce", "--pretrained", str(tmp_path / "other"), "--output_path", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "other settings" in err[0]


def test_all_ten_rows_of_table_1(tmp_path, tokenizer):
    """`--methods all`: every row of the paper's Table 1 in the report, in the paper's order."""
    import offline_hub

    model = save_tiny_model("olmoe", tmp_path / "model", seed=7, tokenizer=tokenizer)
    with offline_hub.installed():
        assert main(["reproduce", "--pretrained", str(model), "--output_path", str(tmp_path / "out"), "--limit", "1",
                     "--train_limit", "2", "--methods", "all", "--roma_args", TRAINING, "--router_tuning_args",
                     TRAINING, "--oracle_args", "max_steps=1", "--c3po_args", "c3po_steps=2", "--batch_size", "16",
                     "--no_progress"]) == 0
    table = (tmp_path / "out" / "report" / "report.md").read_text().split("\n\n")
    scores = next(block for block in table if "| Base |" in block)
    rows = [line.split("|")[1].strip() for line in scores.splitlines()[2:]]
    assert rows == ["Base", "Oracle", "ICL", "C3PO", "Router Tuning", "Oracle Tuning", "Prefix Tuning",
                    "Prompt Tuning", "Dense BP", "RoMA"]
