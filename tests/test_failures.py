"""Failures that used to answer wrongly or leave a state the rerun could not recover from (issue 27): non-finite
tensors on every load path and in training, a full disk, tracebacks, misspelt model_args of ours, messages naming
refused flags, refused commands leaving debris, concurrent writers."""

import argparse
import ast
import contextlib
import errno
import io
import json
import math
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from lm_eval_helpers import FIXTURE_TASKS
from safetensors.torch import load_file, save_file

from roma_eval import cli, storage
from roma_eval.errors import RomaEvalError
from roma_eval.tiny import build_tiny_model, save_tiny_model

REPO = Path(__file__).resolve().parents[1]
REPORT_RUNS = REPO / "tests" / "report" / "fixtures" / "runs"
ROUTERS = ["--tasks", "tiny_parity", "--include_path", str(FIXTURE_TASKS), "--layers", "last:2", "--batch-size", "8",
           "--no_progress"]  # the flags every router-training verb has
TRAIN = [*ROUTERS, "--k", "2"]


def run(argv):
    """(exit status, the error lines on stderr) of `roma-eval ARGV` in this process (notices are not errors)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = cli.main(argv)
    return code, [line for line in err.getvalue().splitlines() if re.search(r"error|Traceback", line, re.I)]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer):
    return save_tiny_model("olmoe", tmp_path_factory.mktemp("model") / "tiny", seed=11, tokenizer=tokenizer)


@pytest.fixture(scope="module")
def embedder():
    from roma_eval.embedding import load_embedder

    return load_embedder()


@pytest.fixture
def no_loading(monkeypatch):
    """Loading a model or a task fails the test: a refusal must come before either."""
    import roma_eval.model_loading
    import roma_eval.samples

    def loaded(*args, **kwargs):
        raise AssertionError("something was loaded before the refusal")

    monkeypatch.setattr(roma_eval.model_loading, "load_model", loaded)
    monkeypatch.setattr(roma_eval.samples, "load_samples", loaded)


def poison(path: Path, name: str | None = None) -> str:
    """Put a NaN into tensor ``name`` (default: the first) of a safetensors file; its name."""
    tensors = {k: v.clone() for k, v in load_file(path).items()}
    name = name or sorted(tensors)[0]
    tensors[name].view(-1)[0] = math.nan
    save_file(tensors, path, metadata={"format": "pt"})
    return name


# ------------------------------------------------------------------ 1. non-finite tensors


def test_a_nan_router_checkpoint_is_refused_naming_file_and_tensor_before_the_model_loads(tmp_path, tokenizer,
                                                                                         model_dir):
    from roma_eval.checkpoint import WEIGHTS_NAME, RouterRecord, load_router_checkpoint, save_router_checkpoint
    from roma_eval.methods.roma.lm_eval import RomaLM
    from roma_eval.routing import router_fingerprint, router_weights

    model = build_tiny_model("olmoe", tokenizer, seed=11)
    save_router_checkpoint(model, tmp_path / "ck", [2, 3], RouterRecord("tiny", router_fingerprint(model)))
    name = poison(tmp_path / "ck" / WEIGHTS_NAME)
    with pytest.raises(RomaEvalError, match=rf"{WEIGHTS_NAME}: {re.escape(name)} holds non-finite values "
                                            r"\(NaN or inf: 1 of \d+\); .*lower --lr"):
        load_router_checkpoint(tmp_path / "ck")
    with pytest.raises(RomaEvalError, match="non-finite"):  # `lm_eval --model roma`'s model
        RomaLM(pretrained=str(model_dir), router_checkpoint=str(tmp_path / "ck"), device="cpu")
    with torch.no_grad():
        router_weights(model, [3])[3][0, 0] = math.inf
    with pytest.raises(RomaEvalError, match="the tuned routers: model.layers.3.mlp.gate.weight holds non-finite"):
        save_router_checkpoint(model, tmp_path / "inf", [2, 3], RouterRecord("tiny", "x"))
    assert not (tmp_path / "inf").exists()  # never written either


def test_nan_training_state_is_refused_when_saved_and_when_resumed(tmp_path):
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.AdamW([weight])
    weight.grad = torch.ones(3)
    optimizer.step()
    storage.save_training_state(tmp_path / "state", {"w": weight}, optimizer, {"step": 1})
    poison(tmp_path / "state" / storage.STATE_TENSORS, "weights.w")
    with pytest.raises(RomaEvalError, match=r"state.safetensors: weights.w holds non-finite .*delete"):
        storage.load_training_state(tmp_path / "state", optimizer)
    with torch.no_grad():
        weight[0] = math.nan
    with pytest.raises(RomaEvalError, match=r"before step 7: w holds non-finite .*lower --lr"):
        storage.save_training_state(tmp_path / "next", {"w": weight}, optimizer, {"step": 7})
    assert not (tmp_path / "next").exists()


def test_nan_in_a_c3po_reference_is_refused_on_load_and_when_its_prefixes_are_read(tmp_path, tokenizer):
    from roma_eval.methods.c3po import ReferenceBuild, build_reference, load_reference
    from roma_eval.methods.c3po.reference import TENSORS_NAME
    from roma_eval.samples import load_samples

    model = build_tiny_model("olmoe", tokenizer, seed=5, initializer_range=0.2)
    samples = load_samples(["c3po_fish_train"], split="train", include_path=[FIXTURE_TASKS])
    build_reference(model, tokenizer, samples, tmp_path / "ref", ReferenceBuild(base_model="tiny", layers="last:2"),
                    progress=False)
    path = tmp_path / "ref" / TENSORS_NAME
    clean = {k: v.clone() for k, v in load_file(path).items()}
    poison(path, "routing")
    with pytest.raises(RomaEvalError, match=rf"{TENSORS_NAME}: routing holds non-finite values .*rebuild"):
        load_reference(tmp_path / "ref")
    prefix = sorted(k for k in clean if k.startswith("prefix."))[0]
    save_file({**clean, prefix: torch.full_like(clean[prefix], math.nan)}, path, metadata={"format": "pt"})
    reference = load_reference(tmp_path / "ref")  # the prefixes are read (and checked) only when used
    with pytest.raises(RomaEvalError, match=rf"{re.escape(prefix)} holds non-finite values"):
        reference.stored_frozen(range(len(reference)), "cpu", torch.float32)


def test_nan_oracle_routing_is_refused(tmp_path):
    from roma_eval.methods.oracle.store import MANIFEST, PROGRESS, load_oracle_routing

    run_dir = tmp_path / "oracle" / "tiny"
    (run_dir / PROGRESS).mkdir(parents=True)
    (run_dir / MANIFEST).write_text(json.dumps({"settings": {"save_routing": True}}))
    records = [{"doc_id": 0, "routing": {"base": [[[0.5, 0.5]]], "oracle": [[[1.0, 0.0]]]}},
               {"doc_id": 1, "routing": {"base": [[[0.5, 0.5]]], "oracle": [[[math.nan, 0.0]]]}}]
    (run_dir / PROGRESS / "toy.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(RomaEvalError, match=r"toy.jsonl: doc 1's oracle routing holds non-finite values"):
        load_oracle_routing(tmp_path / "oracle", "toy")


def test_a_nan_peft_adapter_is_refused(tmp_path, tokenizer, model_dir):
    import peft

    from roma_eval.methods.peft_tuning.lm_eval import PeftLM

    model = build_tiny_model("olmoe", tokenizer, seed=11)
    wrapped = peft.get_peft_model(model, peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=2))
    wrapped.save_pretrained(tmp_path / "adapter")
    name = poison(tmp_path / "adapter" / "adapter_model.safetensors")
    with pytest.raises(RomaEvalError, match=rf"peft adapter .*: {re.escape(name)} holds non-finite values"):
        PeftLM(pretrained=str(model_dir), peft=str(tmp_path / "adapter"), device="cpu")


@pytest.fixture
def overflowing_update(monkeypatch):
    """AdamW's update makes one value of its first parameter inf after a finite loss (as an fp16 overflow would)."""
    real = torch.optim.AdamW.step

    def step(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        with torch.no_grad():
            self.param_groups[0]["params"][0].view(-1)[0] = math.inf
        return out

    monkeypatch.setattr(torch.optim.AdamW, "step", step)


def test_a_router_update_that_is_not_finite_stops_training_before_anything_is_written(tmp_path, tokenizer,
                                                                                      embedder, overflowing_update):
    """One step, a finite loss, an update that is not: stopped at that step with nothing saved: neither the inf
    routers as training state nor a checkpoint (checking the losses alone would save both)."""
    from roma_eval.methods.roma import RomaConfig, train_roma
    from roma_eval.samples import load_samples

    samples = load_samples(["tiny_parity"], split="train", include_path=[FIXTURE_TASKS])
    config = RomaConfig(layers="last:2", epochs=1, batch_size=len(samples), k=2)
    with pytest.raises(RomaEvalError, match=r"router update of step 0 made 1 router values NaN or inf; lower --lr"):
        train_roma(build_tiny_model("olmoe", tokenizer, seed=11), tokenizer, samples, tmp_path / "ck", config,
                   base_model="tiny", embedder=embedder, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_an_adapter_update_that_is_not_finite_stops_peft_training_before_anything_is_written(tmp_path, tokenizer,
                                                                                            overflowing_update):
    from roma_eval.methods.peft_tuning import PeftTuningConfig, train_peft_tuning
    from roma_eval.samples import load_samples

    samples = load_samples(["tiny_parity"], split="train", include_path=[FIXTURE_TASKS])
    config = PeftTuningConfig(method="prompt_tuning", epochs=1, batch_size=len(samples))
    with pytest.raises(RomaEvalError, match=r"adapter update of step 0 made \d+ adapter values NaN or inf; lower --lr"):
        train_peft_tuning(build_tiny_model("olmoe", tokenizer, seed=11), tokenizer, samples, tmp_path / "adapter",
                          config, base_model="tiny", progress=False)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ 2. a full disk


@pytest.fixture
def disk_full_at(monkeypatch):
    """``disk_full_at(n)``: roma-eval's own writes fail with ENOSPC once ``n`` bytes are written (the bytes before
    it reach the file, as on a real device); ``disk_full_at(None)`` frees the space again."""
    real = getattr(storage, "_write_all", None)

    def install(limit):
        if limit is None:
            monkeypatch.setattr(storage, "_write_all", real, raising=False)
            return
        written = [0]

        def write_all(out, payload):
            room = max(limit - written[0], 0)
            out.write(payload[:room])
            written[0] += min(len(payload), room)
            if len(payload) > room:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(storage, "_write_all", write_all, raising=False)

    return install


def files_under(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_report_on_a_full_disk_is_one_line_leaves_nothing_and_the_rerun_succeeds(tmp_path, disk_full_at):
    argv = ["report", str(REPORT_RUNS / "base"), str(REPORT_RUNS / "roma"), "--output_path", str(tmp_path / "rep")]
    disk_full_at(30_000)  # past the first figure (about 25 kB)
    code, err = run(argv)
    assert code == 2 and len(err) == 1 and "no space left on the device of" in err[0] and "it needed" in err[0]
    assert list(tmp_path.iterdir()) == []  # no figure, no temporary file, no directory
    disk_full_at(None)
    code, err = run(argv)
    assert code == 0, err
    first = files_under(tmp_path / "rep")
    assert "plots/tiny-olmoe_toy_bars.png" in first and "report.md" in first
    disk_full_at(40_000)  # --overwrite on a full disk: the previous report stays as it was
    code, err = run([*argv, "--overwrite", "--title", "another title"])
    assert code == 2 and len(err) == 1 and "no space left" in err[0]
    assert files_under(tmp_path / "rep") == first


def test_report_checks_the_free_space_before_writing(tmp_path, monkeypatch):
    monkeypatch.setattr(storage, "free_bytes", lambda path: 1_000, raising=False)
    code, err = run(["report", str(REPORT_RUNS / "base"), "--output_path", str(tmp_path / "rep")])
    assert code == 2 and len(err) == 1 and re.search(r"needs about [\d.]+ kB at .* but 1.0 kB are free", err[0])
    assert list(tmp_path.iterdir()) == []


def test_training_on_a_full_disk_is_one_line_keeps_the_last_epoch_and_the_rerun_finishes(tmp_path, model_dir,
                                                                                        disk_full_at, monkeypatch):
    from roma_eval.checkpoint import load_router_checkpoint

    monkeypatch.setenv("ROMA_EVAL_EMBEDDING_CACHE", "off")  # only the training's own writes count

    argv = ["train", "--pretrained", str(model_dir), *TRAIN, "--epochs", "2", "--output_path", str(tmp_path / "ck")]
    # the first epoch's state (fp32 routers and AdamW's two moments of the 2 tuned routers) fits, the second does not
    state = 3 * 2 * 4 * int(torch.tensor(load_file(model_dir / "model.safetensors")[
        "model.layers.3.mlp.gate.weight"].shape).prod())
    disk_full_at(2 * state)
    code, err = run(argv)
    assert code == 2 and len(err) == 1 and "no space left on the device of" in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.partial"]  # no staging, no checkpoint, no claim
    assert storage.read_progress(tmp_path / "ck.partial")["epoch"] == 0
    disk_full_at(None)
    code, err = run(argv)
    assert code == 0, err
    assert load_router_checkpoint(tmp_path / "ck").metadata["training_config"]["summary"]["steps"] == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def full_disk_shell(script: str, size: str) -> subprocess.CompletedProcess:
    """``script`` (bash) with a ``size`` tmpfs mounted at $FULL, in a user and mount namespace of its own."""
    mount = f'FULL=$(mktemp -d) && mount -t tmpfs -o size={size} tmpfs "$FULL" && cd "$FULL" && {script}'
    return subprocess.run(["unshare", "-rm", "bash", "-c", mount], capture_output=True, text=True,
                          env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})


def unshare_works() -> bool:
    try:
        return full_disk_shell("true", "64k").returncode == 0
    except FileNotFoundError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not unshare_works(), reason="needs unshare -rm (a user namespace) to mount a small tmpfs")
def test_report_on_a_real_full_device(tmp_path):
    """On a 200 kB tmpfs holding 120 kB: the report (117 kB) is refused in one line before anything is written, and
    fits once the filler is gone."""
    report = f"roma-eval report {REPORT_RUNS / 'base'} {REPORT_RUNS / 'roma'} --output_path rep"
    proc = full_disk_shell(f'head -c 120000 /dev/zero > filler; {report}; echo "rc=$?"; ls -A; rm filler; '
                           f'{report} > /dev/null && ls rep', "200k")
    lines = proc.stdout.splitlines()
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert lines[:2] == ["rc=2", "filler"], proc.stdout + proc.stderr
    assert len(errors) == 1 and re.search(r"needs about 1\d\d.\d kB at rep but \d+.\d kB are free", errors[0])
    assert "report.md" in lines[2:]


@pytest.mark.slow
@pytest.mark.skipif(not unshare_works(), reason="needs unshare -rm (a user namespace) to mount a small tmpfs")
def test_oracle_on_a_real_full_device_leaves_no_cut_off_results_and_the_rerun_finishes(model_dir):
    """On a 64 kB tmpfs holding 52 kB the oracle stops in one line with no lm-eval file written; once the filler is
    gone the same command finishes (lm-eval's tracker only logs a failed write: no cut-off file may stay)."""
    oracle = (f"roma-eval oracle --pretrained {model_dir} --tasks tiny_parity --include_path {FIXTURE_TASKS} "
              "--limit 8 --output_path orc --no_progress")
    lm_eval_files = 'find orc -name "results_*" -o -name "samples_*" | sort'
    proc = full_disk_shell(f'head -c 52000 /dev/zero > filler; {oracle} > /dev/null; echo "rc=$?"; {lm_eval_files}; '
                           f'rm filler; {oracle} > /dev/null; echo "rc=$?"; {lm_eval_files}', "64k")
    lines = proc.stdout.splitlines()
    errors = [line for line in proc.stderr.splitlines() if re.search(r"error|Traceback", line, re.I)]
    assert lines[:2] == ["rc=2", "rc=0"], proc.stdout + proc.stderr[-3000:]
    assert len(errors) == 1 and "no space left on the device of orc" in errors[0]
    assert [Path(line).name.split("_2")[0] for line in lines[2:]] == ["results", "samples_tiny_parity"]


# ------------------------------------------------------------------ 3. tracebacks that are now one line


@pytest.mark.parametrize("argv", [
    ["train", "--pretrained", "M", *TRAIN],
    ["report", str(REPORT_RUNS / "base")],
])
def test_an_output_path_below_a_file_is_one_line_before_anything_loads(tmp_path, argv, no_loading):
    (tmp_path / "afile").write_text("mine")
    code, err = run([*argv, "--output_path", str(tmp_path / "afile" / "out")])
    assert code == 2 and len(err) == 1 and f"{tmp_path / 'afile'} is a file, not a directory" in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_reproduce_with_a_missing_model_is_one_line_and_writes_nothing(tmp_path, no_loading):
    code, err = run(["reproduce", "--pretrained", str(tmp_path / "missing"), "--methods", "base", "--output_path",
                     str(tmp_path / "out")])
    assert code == 2 and len(err) == 1 and "could not load model" in err[0], err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_eval_with_an_unknown_task_is_one_line(model_dir):
    proc = subprocess.run([sys.executable, "-m", "roma_eval.cli", "eval", "--model", "hf", "--model_args",
                           f"pretrained={model_dir}", "--tasks", "tiny_parity,no_such_task", "--include_path",
                           str(FIXTURE_TASKS), "--device", "cpu"], capture_output=True, text=True)
    errors = [line for line in proc.stderr.splitlines() if "Traceback" in line or "error" in line.lower()]
    assert proc.returncode == 2 and errors == [
        "roma-eval eval: error: unknown task(s) no_such_task; check the names with `lm_eval ls tasks` or pass "
        "--include_path DIR holding their YAMLs"], proc.stderr[-2000:]


# ------------------------------------------------------------------ 4. misspelt model_args of ours


def test_misspelt_roma_and_c3po_model_args_are_refused_with_the_valid_names(model_dir):
    from roma_eval.methods.c3po.lm_eval import C3POLM
    from roma_eval.methods.roma.lm_eval import RomaLM

    with pytest.raises(RomaEvalError, match=r"router_checkpont= is not a roma setting; did you mean "
                                            r"router_checkpoint=\? roma's own are force_router_checkpoint=, "):
        RomaLM(pretrained=str(model_dir), router_checkpont="ck", device="cpu")
    with pytest.raises(RomaEvalError, match=r"c3po_metod= is not a c3po setting; did you mean c3po_method=\?"):
        C3POLM(pretrained=str(model_dir), reference="ref", c3po_metod="ngd", device="cpu")
    with pytest.raises(RomaEvalError, match=r"c3po_bogus= is not a c3po setting; c3po's own are"):
        C3POLM(pretrained=str(model_dir), reference="ref", c3po_bogus=1, device="cpu")
    with pytest.raises(RomaEvalError, match=r"refrence= .* did you mean reference=\?"):
        C3POLM(pretrained=str(model_dir), refrence="ref", device="cpu")
    # Generic Hugging Face keys still reach transformers, as with lm-eval's hf (a config field here).
    lm = RomaLM(pretrained=str(model_dir), output_router_logits=True, device="cpu")
    assert lm.model.config.output_router_logits is True


# ------------------------------------------------------------------ 5. messages name only flags the CLI accepts


def _message_texts():
    """The literal text of every RomaEvalError raised in roma_eval (f-strings: their literal parts)."""
    package = Path(cli.__file__).parent
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "RomaEvalError" and node.args:
                parts = [n.value for n in ast.walk(node.args[0]) if isinstance(n, ast.Constant)
                         and isinstance(n.value, str)]
                yield f"{path.relative_to(package.parent)}:{node.lineno}", " ".join(parts)


def _accepted_flags() -> set[str]:
    from lm_eval._cli.harness import HarnessCLI

    def options(parser):
        found = set(parser._option_string_actions)
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    found |= options(sub)
        return found

    found = options(HarnessCLI()._parser)
    for verb in cli.VERBS:
        found |= options(cli.build_parser(verb)[1])
    return found


def test_every_message_names_only_flags_the_cli_accepts():
    from roma_eval.commands.options import RENAMED

    accepted = _accepted_flags()
    wrong = []
    for where, text in _message_texts():
        for flag in re.findall(r"(?<![\w-])--[A-Za-z][\w-]*", text):
            # lm-eval's --model names a backend (`--model hf`); roma-eval's verbs refuse --model (it named the MoE)
            lm_eval_backend = flag == "--model" and re.search(r"--model (hf|hf-peft|roma|c3po)\b", text)
            if flag not in accepted or (flag in RENAMED and not lm_eval_backend):
                wrong.append(f"{where}: {flag}")
    assert wrong == []
    assert any("choose another --output_path" in text for _, text in _message_texts())  # the test reads messages


# ------------------------------------------------------------------ 6. refused commands leave nothing behind


@pytest.mark.parametrize("extra, message", [
    pytest.param(["--eval_tasks", "no_such_task"], "unknown task(s) no_such_task",
                 marks=pytest.mark.slow),  # lm-eval indexes its ~14k YAMLs before it can say a name is unknown
    (["--methods", "base,c3po", "--c3po_args", "method=ngd"], "method= is now c3po_method="),
    (["--methods", "base,c3po", "--c3po_args", "c3po_metod=ngd"], "did you mean c3po_method="),
])
def test_refused_reproduce_leaves_no_directory_and_runs_no_stage(tmp_path, model_dir, monkeypatch, extra, message):
    import roma_eval.pipeline

    monkeypatch.setitem(roma_eval.pipeline.STAGES, "base", lambda exp: pytest.fail("a stage ran"))
    code, err = run(["reproduce", "--pretrained", str(model_dir), "--output_path", str(tmp_path / "new" / "out"),
                     "--eval_tasks", "tiny_parity", "--train_tasks", "tiny_parity", "--include_path",
                     str(FIXTURE_TASKS), "--limit", "2", *extra])
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert list(tmp_path.iterdir()) == []


def test_reproduce_on_a_dense_model_is_refused_and_leaves_nothing(tmp_path, tokenizer, monkeypatch):
    from transformers import LlamaConfig, LlamaForCausalLM

    import roma_eval.pipeline

    dense = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2))
    dense.save_pretrained(tmp_path / "dense")
    tokenizer.save_pretrained(tmp_path / "dense")
    monkeypatch.setitem(roma_eval.pipeline.STAGES, "base", lambda exp: pytest.fail("a stage ran"))
    code, err = run(["reproduce", "--pretrained", str(tmp_path / "dense"), "--output_path", str(tmp_path / "out"),
                     "--eval_tasks", "tiny_parity", "--train_tasks", "tiny_parity", "--include_path",
                     str(FIXTURE_TASKS), "--methods", "base,roma"])
    assert code == 2 and len(err) == 1 and "no recognised MoE routers" in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dense"]


def test_a_reproduce_that_fails_before_any_stage_finishes_leaves_nothing(tmp_path, model_dir, monkeypatch):
    import roma_eval.pipeline

    def refused(exp):
        raise RomaEvalError("refused in the base stage")

    monkeypatch.setitem(roma_eval.pipeline.STAGES, "base", refused)
    argv = ["reproduce", "--pretrained", str(model_dir), "--methods", "base", "--output_path", str(tmp_path / "out"),
            "--eval_tasks", "tiny_parity", "--include_path", str(FIXTURE_TASKS)]
    code, err = run(argv)
    assert code == 2 and err == ["roma-eval reproduce: error: refused in the base stage"]
    assert list(tmp_path.iterdir()) == []  # an experiment.json left here would block the corrected command
    (tmp_path / "out").mkdir()  # a directory the user made is theirs: kept
    code, err = run(argv)
    assert code == 2 and (tmp_path / "out").is_dir() and not (tmp_path / "out.claim").exists()


# ------------------------------------------------------------------ 7. concurrent writers


def write_claim(target: Path, pid: int, host: str | None = None) -> Path:
    file = target.with_name(target.name + ".claim")
    file.write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(), "started": "2026-01-01T00:00:00",
                                "command": "roma-eval train ..."}))
    return file


@pytest.mark.slow
def test_a_second_train_into_the_same_output_is_refused_before_loading_anything(tmp_path, model_dir, no_loading):
    """A real `roma-eval train` claims its output at the start; a second one is refused in one line while it runs."""
    out = tmp_path / "ck"
    first = subprocess.Popen([sys.executable, "-m", "roma_eval.cli", "train", "--pretrained", str(model_dir), *TRAIN,
                              "--epochs", "50", "--output_path", str(out)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        claim = out.with_name("ck.claim")
        deadline = time.monotonic() + 120
        while not claim.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert claim.exists(), "the first run did not claim its output"
        holder = json.loads(claim.read_text())
        assert holder["pid"] == first.pid and holder["host"] == socket.gethostname()
        code, err = run(["train", "--pretrained", str(model_dir), *TRAIN, "--output_path", str(out)])
        assert code == 2 and len(err) == 1, err
        assert f"--output_path {out} is being written by another run (pid {first.pid} on" in err[0]
        assert "wait for it to end or choose another --output_path" in err[0]
    finally:
        first.kill()  # killed: its claim stays behind, stale
        first.wait()
    assert json.loads(claim.read_text())["pid"] == first.pid


def test_a_stale_claim_is_taken_over_and_released(tmp_path, model_dir, monkeypatch):
    import roma_eval.model_loading

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    write_claim(tmp_path / "ck", int(dead.stdout))
    seen = []

    def loaded(*args, **kwargs):
        seen.append(json.loads((tmp_path / "ck.claim").read_text())["pid"])
        raise RomaEvalError("stop here")

    monkeypatch.setattr(roma_eval.model_loading, "load_model", loaded)
    code, err = run(["train", "--pretrained", str(model_dir), *TRAIN, "--output_path", str(tmp_path / "ck")])
    assert code == 2 and err[-1] == "roma-eval train: error: stop here"
    assert seen == [os.getpid()]  # this run held the claim while it loaded
    assert list(tmp_path.iterdir()) == []  # and gave it up


def test_a_claim_from_another_host_names_the_file_to_delete(tmp_path, no_loading):
    file = write_claim(tmp_path / "rep", 12345, host="elsewhere")
    code, err = run(["report", str(REPORT_RUNS / "base"), "--output_path", str(tmp_path / "rep")])
    assert code == 2 and len(err) == 1 and "a run on another machine (pid 12345 on elsewhere" in err[0]
    assert f"delete {file}" in err[0]


# ------------------------------------------------------------------ the catalogue: every writing verb


WRITERS = {
    "train": ["train", "--pretrained", "{model}", *TRAIN],
    "dense-bp": ["dense-bp", "--pretrained", "{model}", *ROUTERS],
    "oracle-tuning": ["oracle-tuning", "--pretrained", "{model}", *ROUTERS, "--oracle_routing", "oracle"],
    "prefix-tuning": ["prefix-tuning", "--pretrained", "{model}", "--tasks", "tiny_parity"],
    "prompt-tuning": ["prompt-tuning", "--pretrained", "{model}", "--tasks", "tiny_parity"],
    "icl": ["icl", "--pretrained", "{model}", "--tasks", "tiny_parity"],
    "oracle": ["oracle", "--pretrained", "{model}", "--tasks", "tiny_parity"],
    "c3po": ["c3po", "build-reference", "--pretrained", "{model}", "--tasks", "tiny_parity"],
    "reproduce": ["reproduce", "--pretrained", "{model}", "--eval_tasks", "tiny_parity", "--train_tasks",
                  "tiny_parity", "--include_path", str(FIXTURE_TASKS)],
    "report": ["report", str(REPORT_RUNS / "base")],
}
RUN_DIRECTORY = {"icl", "oracle"}  # these write OUT/<model name, sanitized>/, as lm-eval does


def writer_argv(verb: str, model: Path, out: Path) -> list[str]:
    return [item.replace("{model}", str(model)) for item in WRITERS[verb]] + ["--output_path", str(out)]


def claimed_target(verb: str, model: Path, out: Path) -> Path:
    from lm_eval.utils import sanitize_model_name

    return out / sanitize_model_name(str(model)) if verb in RUN_DIRECTORY else out


@pytest.mark.parametrize("verb", sorted(WRITERS))
def test_every_writing_verb_refuses_a_claimed_output_in_one_line_before_loading(tmp_path, model_dir, verb,
                                                                               no_loading):
    out = tmp_path / "out"
    target = claimed_target(verb, model_dir, out)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_claim(target, os.getppid())  # a live process of this host that is not this one
    code, err = run(writer_argv(verb, model_dir, out))
    assert code == 2 and len(err) == 1 and "is being written by another run" in err[0], err


@pytest.mark.parametrize("verb", sorted(WRITERS))
def test_every_writing_verb_refuses_an_output_below_a_file_in_one_line(tmp_path, model_dir, verb, no_loading):
    (tmp_path / "afile").write_text("mine")
    code, err = run(writer_argv(verb, model_dir, tmp_path / "afile" / "out"))
    assert code == 2 and len(err) == 1 and "is a file, not a directory" in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


@pytest.mark.parametrize("verb", sorted(set(WRITERS) - {"report"}))
def test_every_model_verb_refuses_a_missing_model_in_one_line_and_leaves_nothing(tmp_path, verb, no_loading):
    code, err = run(writer_argv(verb, tmp_path / "missing", tmp_path / "new" / "out"))
    assert code == 2 and len(err) == 1 and "could not load model" in err[0], err
    assert list(tmp_path.iterdir()) == []


def test_check_claims_its_summary_file(tmp_path):
    write_claim(tmp_path / "summary.md", os.getppid())
    code, err = run(["check", "--baseline", str(REPORT_RUNS / "base"), "--candidate", str(REPORT_RUNS / "roma"),
                     "--summary", str(tmp_path / "summary.md")])
    assert code == 2 and len(err) == 1 and "--summary" in err[0] and "being written by another run" in err[0]
    assert not (tmp_path / "summary.md").exists()
