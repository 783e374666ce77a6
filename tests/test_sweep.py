"""`roma-eval sweep`: several router checkpoints, one load of the base model, each run equal per sample to a separate
`lm_eval --model roma` run of its checkpoint; the base routers back in the model afterwards; bad inputs refused in
one line before anything is loaded or written."""

import contextlib
import io
import json
import re
import shutil

import pytest
import torch
from lm_eval_helpers import FIXTURE_TASKS, evaluate_api, evaluate_cli, per_sample

from roma_eval.checkpoint import RouterRecord, save_router_checkpoint
from roma_eval.cli import main
from roma_eval.routing import router_fingerprint, router_weights
from roma_eval.tiny import randomise_routers, save_tiny_model

TASKS = ["tiny_animals", "tiny_sums", "toy_arc_easy"]  # multiple choice, generation, and a task of a report suite
LIMIT = 6
LAYERS = [2, 3]
# name -> (method recorded, its training config, how far its routers move from the base model's)
CHECKPOINTS = {"roma_lam05": ("roma", {"lam": 0.5}, 1), "roma_lam1": ("roma", {"lam": 1.0}, 2),
               "router_tuning": ("router_tuning", {"regulariser": "none"}, 3)}


@pytest.fixture(scope="module", autouse=True)
def _no_environment_survey():
    """lm-eval records torch's environment survey in every results file; it runs `pip list` and others (~1 s per
    evaluation, most of one here).  These tests compare samples and settings, not the survey."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("torch.utils.collect_env.get_pretty_env_info", lambda: "(not surveyed in tests)")
        yield


@contextlib.contextmanager
def counting_loads():
    """The model paths transformers' ``from_pretrained`` loads while inside (every model class goes through it)."""
    from transformers import PreTrainedModel

    loads = []
    original = PreTrainedModel.from_pretrained.__func__

    def counted(cls, *args, **kwargs):
        loads.append(str(args[0] if args else kwargs.get("pretrained_model_name_or_path")))
        return original(cls, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(PreTrainedModel, "from_pretrained", classmethod(counted))
        yield loads


def sweep_cli(argv):
    """(exit status, stdout, stderr lines, model loads) of `roma-eval sweep ARGV` in this process."""
    out, err = io.StringIO(), io.StringIO()
    with counting_loads() as loads, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["sweep", *argv])
    return code, out.getvalue(), err.getvalue().splitlines(), loads


def save_checkpoint(model, base, fingerprint, directory, method, training_config, seed):
    """The model's routers at ``LAYERS`` moved by random noise, saved as a checkpoint; the model left as it was."""
    saved = {i: w.detach().clone() for i, w in router_weights(model).items()}
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for i in LAYERS:
            weight = router_weights(model)[i]
            weight.add_(torch.randn(weight.shape, generator=generator))
    save_router_checkpoint(model, directory, LAYERS, RouterRecord(str(base), fingerprint, method=method,
                                                                  training_config=training_config))
    with torch.no_grad():
        for i, weight in router_weights(model).items():
            weight.copy_(saved[i])
    return str(directory)


@pytest.fixture(scope="module")
def world(tmp_path_factory, tokenizer):
    """A base model, three checkpoints of it (RoMA at two λ, Router Tuning) and one of another base model."""
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("sweep")
    base = save_tiny_model("olmoe", root / "base", seed=5, tokenizer=tokenizer)
    model = AutoModelForCausalLM.from_pretrained(base)
    fingerprint = router_fingerprint(model)
    checkpoints = [save_checkpoint(model, base, fingerprint, root / "ckpts" / name, method, config, seed)
                   for name, (method, config, seed) in CHECKPOINTS.items()]
    randomise_routers(model)  # another base model of the same shape: other router weights
    alien = save_checkpoint(model, root / "other", router_fingerprint(model), root / "other_ckpts" / "roma", "roma",
                            {}, 9)
    return {"root": root, "base": str(base), "checkpoints": checkpoints, "alien": alien}


def sweep_args(world, out, checkpoints=None, tasks=TASKS, limit=LIMIT):
    args = ["--pretrained", world["base"], "--router_checkpoints", ",".join(checkpoints or world["checkpoints"]),
            "--tasks", ",".join(tasks), "--include_path", str(FIXTURE_TASKS), "--device", "cpu", "--batch_size", "4",
            "--output_path", str(out)]
    return args + (["--limit", str(limit)] if limit is not None else [])


@pytest.fixture(scope="module")
def swept(world):
    out = world["root"] / "sweep"
    code, stdout, stderr, loads = sweep_cli(sweep_args(world, out))
    assert code == 0, stderr[-20:]
    return {"out": out, "stdout": stdout, "loads": loads}


def run_files(out, name):
    """(results, per task the samples) of the run directory OUT/<name>."""
    [results_file] = (out / name).rglob("results_*.json")
    samples = {task: [json.loads(line) for path in results_file.parent.glob(f"samples_{task}_*.jsonl")
                      for line in path.read_text().splitlines()] for task in TASKS}
    return json.loads(results_file.read_text()), samples


def test_each_run_equals_a_separate_lm_eval_roma_run_per_sample(world, swept):
    seen = []
    for checkpoint in world["checkpoints"]:
        model_args = f"pretrained={world['base']},router_checkpoint={checkpoint}"
        results, samples = run_files(swept["out"], checkpoint.rsplit("/", 1)[-1])
        assert results["config"]["model"] == "roma" and results["model_source"] == "roma"
        assert results["config"]["model_args"] == {"pretrained": world["base"], "router_checkpoint": checkpoint}
        ours = {task: per_sample(samples[task]) for task in TASKS}
        assert all(len(ours[task]) == LIMIT for task in TASKS)
        assert ours == evaluate_api("roma", model_args, TASKS, limit=LIMIT, batch_size=4)
        seen.append(ours)
    assert seen[0] != seen[1] != seen[2] != seen[0]  # the runs evaluated different routers


def test_the_base_model_is_loaded_once(world, swept):
    assert swept["loads"] == [world["base"]]
    lines = [line for line in swept["stdout"].splitlines() if re.match(r"\[\d/3\] ", line)]
    first, second, _ = world["checkpoints"]
    assert [line.split()[1:3] for line in lines] == [["RoMA", first], ["RoMA", second], ["Router", "Tuning"]]
    assert sum("|Version|Filter|" in line for line in swept["stdout"].splitlines()) == 3  # lm-eval's table after each


def table_rows(markdown: str, title: str) -> list[str]:
    block = markdown.split(f"**{title}**")[1].split("\n\n")[1]
    return [line.split("|")[1].strip() for line in block.splitlines()[2:]
            if line.split("|")[1].strip() not in ("n", "chance")]


def test_report_gives_one_row_per_checkpoint(world, swept, tmp_path):
    report = tmp_path / "report"
    assert main(["report", str(swept["out"]), "--output_path", str(report), "--format", "md", "--no-plots",
                 "--columns", "present"]) == 0
    text = (report / "report.md").read_text()
    rows = table_rows(text, "Accuracy (%)")
    assert len(rows) == 3 and rows[0] == "Router Tuning", rows  # the paper's order, RoMA's runs as found
    assert rows[1].startswith("RoMA (") and "roma_lam05" in rows[1] and rows[2].startswith("RoMA (")
    assert "roma_lam1" in rows[2]
    assert "RoMA: 2 runs that differ in router_checkpoint are shown as separate rows" in text


def test_a_rerun_skips_what_is_done_and_overwrite_recomputes(world, swept, tmp_path):
    out = tmp_path / "sweep"
    shutil.copytree(swept["out"], out)
    before = sorted(p.name for p in out.rglob("results_*.json"))
    code, stdout, _, loads = sweep_cli(sweep_args(world, out))
    assert code == 0 and loads == [] and stdout.count("evaluated before with these settings") == 3
    assert sorted(p.name for p in out.rglob("results_*.json")) == before

    first = world["checkpoints"][:1]
    code, _, stderr, loads = sweep_cli(sweep_args(world, out, first, limit=LIMIT - 1))
    assert code == 2 and loads == [] and "holds no evaluation of" in stderr[-1] and "--overwrite" in stderr[-1]
    assert sorted(p.name for p in out.rglob("results_*.json")) == before

    code, _, _, loads = sweep_cli([*sweep_args(world, out, first, limit=LIMIT - 1), "--overwrite"])
    assert code == 0 and loads == [world["base"]]
    [results_file] = (out / "roma_lam05").rglob("results_*.json")  # replaced, not added to
    assert results_file.name not in before and json.loads(results_file.read_text())["config"]["limit"] == LIMIT - 1


def _settings(world, out, tasks=("tiny_animals",)):
    from roma_eval.harness import task_manager
    from roma_eval.methods.roma.sweep import SweepSettings

    return SweepSettings({"pretrained": world["base"]}, tuple(tasks), out, task_manager([FIXTURE_TASKS], tasks),
                         {"limit": 2, "batch_size": 4, "device": "cpu"})


def test_base_routers_are_restored_after_a_sweep_and_after_a_failure(world, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    import roma_eval.harness
    from roma_eval.methods.roma import sweep as sweeping

    base = router_weights(AutoModelForCausalLM.from_pretrained(world["base"]))
    settings = _settings(world, tmp_path / "out")
    entries = sweeping.prepare(world["checkpoints"], settings)
    lm = sweeping.load_base(settings)

    def same_as_base():
        return all(torch.equal(w.detach().cpu(), base[i].detach()) for i, w in router_weights(lm.model).items())

    assert len(list(sweeping.sweep(lm, entries[:1], settings))) == 1 and same_as_base()

    evaluate, calls = roma_eval.harness.evaluate, []

    def fails_second(*args, **kwargs):
        calls.append(router_fingerprint(lm.model))  # the routers lm-eval would have evaluated
        if len(calls) == 2:
            raise RuntimeError("an evaluation failed")
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(roma_eval.harness, "evaluate", fails_second)
    with pytest.raises(RuntimeError, match="an evaluation failed"):
        list(sweeping.sweep(lm, entries[1:], settings))
    assert same_as_base() and len(set(calls)) == 2 and router_fingerprint(lm.model) not in calls
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["roma_lam05", "roma_lam1"]  # nothing cut off


def test_a_checkpoint_of_other_weights_is_caught_after_the_load_where_not_before(world, tmp_path, monkeypatch):
    """Where the base model's stored routers cannot be read by name, the loaded model's are compared, before any
    evaluation."""
    from roma_eval.errors import RomaEvalError
    from roma_eval.methods.roma import sweep as sweeping

    monkeypatch.setattr(sweeping, "read_stored_routers", lambda *args: False)
    settings = _settings(world, tmp_path / "out")
    entries = sweeping.prepare([world["checkpoints"][0], world["alien"]], settings)  # passes without the weights
    lm = sweeping.load_base(settings)
    with pytest.raises(RomaEvalError, match="whose routers differ from those of"):
        next(sweeping.sweep(lm, entries, settings))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("bad, message", [
    ("missing", "is neither a checkpoint directory nor a hub repo id"),
    ("alien", "whose routers differ from those of"),
    ("empty", "--router_checkpoints is empty"),
    ("twice", "twice; list each checkpoint once"),
    pytest.param("task", "unknown task(s) no_such_task", marks=pytest.mark.slow),  # lm-eval indexes its ~14k YAMLs
])
def test_a_bad_input_is_one_line_before_anything_loads_or_is_written(world, tmp_path, bad, message):
    good = world["checkpoints"][0]
    checkpoints = {"missing": [good, str(tmp_path / "no_such_checkpoint")], "alien": [good, world["alien"]],
                   "empty": [""], "twice": [good, good + "/"], "task": [good]}[bad]
    out = tmp_path / "runs" / "sweep"
    code, _, stderr, loads = sweep_cli(sweep_args(world, out, checkpoints,
                                                  tasks=["tiny_animals", "no_such_task"] if bad == "task" else TASKS))
    errors = [line for line in stderr if "error" in line]
    assert code == 2 and loads == [] and len(errors) == 1 and message in errors[0], stderr
    if bad in ("missing", "alien"):
        assert checkpoints[1] in errors[0]
    assert not (tmp_path / "runs").exists()


def test_run_names_tell_checkpoints_apart():
    from roma_eval.methods.roma.sweep import run_names

    assert run_names(["runs/a/roma", "runs/b/roma", "runs/rt", "owner/hub-ckpt"]) == ["a__roma", "b__roma", "rt",
                                                                                       "hub-ckpt"]


@pytest.mark.slow
def test_each_run_equals_a_plain_lm_eval_cli_run(world, tmp_path):
    """The whole run directory against `lm_eval --model roma ... --log_samples`'s: per sample, and the config."""
    tasks = ["tiny_animals", "tiny_sums"]
    out = tmp_path / "sweep"
    code, _, stderr, _ = sweep_cli(sweep_args(world, out, tasks=tasks, limit=None))
    assert code == 0, stderr[-20:]
    for checkpoint in world["checkpoints"]:
        name = checkpoint.rsplit("/", 1)[-1]
        cli_out = tmp_path / "cli" / name
        via_cli = evaluate_cli("roma", f"pretrained={world['base']},router_checkpoint={checkpoint}", tasks, cli_out)
        [ours_file] = (out / name).rglob("results_*.json")
        ours = {task: per_sample([json.loads(line) for path in ours_file.parent.glob(f"samples_{task}_*.jsonl")
                                  for line in path.read_text().splitlines()]) for task in tasks}
        assert ours == via_cli
        [cli_file] = cli_out.rglob("results_*.json")
        theirs, mine = json.loads(cli_file.read_text()), json.loads(ours_file.read_text())
        assert ours_file.parent.name == cli_file.parent.name  # OUT/<name>/<model name, sanitized>/
        for key in ("model", "model_args", "batch_size", "device", "limit", "random_seed", "fewshot_seed"):
            assert mine["config"][key] == theirs["config"][key], key
        assert mine["model_source"] == theirs["model_source"] and mine["task_hashes"] == theirs["task_hashes"]


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["olmoe", "qwen2_moe", "qwen3_moe", "mixtral", "deepseek_v2", "deepseek_v3"])
def test_stored_routers_fingerprint_as_the_loaded_model(arch, tmp_path, tokenizer):
    """The routers read from the base model's files (before any load) fingerprint as the loaded model's; Mixtral's
    keys are renamed on loading."""
    from transformers import AutoModelForCausalLM

    from roma_eval.methods.roma.sweep import read_stored_routers
    from roma_eval.model_loading import model_skeleton

    path = save_tiny_model(arch, tmp_path / arch, seed=3, tokenizer=tokenizer)
    skeleton = model_skeleton(str(path))
    assert read_stored_routers(skeleton, str(path))
    assert router_fingerprint(skeleton) == router_fingerprint(AutoModelForCausalLM.from_pretrained(path))
