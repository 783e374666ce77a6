"""`roma-eval export`: a model directory with the tuned routers in its weights evaluates, under lm-eval's plain `hf`
model, exactly as `--model roma` evaluates the base model with the router checkpoint; only the shards holding a tuned
router are written, the rest are links; bad inputs are refused in one line with nothing written.  And `reproduce
--backend vllm`: its dry run prints the plain `roma-eval export` / `lm_eval --model vllm` commands."""

import contextlib
import errno
import functools
import io
import json
import os
import shlex
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from lm_eval_helpers import FIXTURE_TASKS, per_sample
from safetensors.torch import load_file, save_file

from roma_eval import registry
from roma_eval.checkpoint import RouterRecord, save_router_checkpoint
from roma_eval.cli import main
from roma_eval.results import load_run
from roma_eval.results.provenance import EXPORT_RECORD, method_of, training_cost
from roma_eval.routing import resolve_layers, router_fingerprint, router_parameter_names, router_weights
from roma_eval.tiny import build_tiny_model

TASKS = ["tiny_animals"]
TRAINING_CONFIG = {"lam": 0.5, "k": 3, "epochs": 2}


def tuned_checkpoint(model, directory, layers="last:2", method="roma"):
    """A router checkpoint of ``model`` whose routers at ``layers`` are changed (negated and scaled): answers move."""
    fingerprint = router_fingerprint(model)
    layers = resolve_layers(model, layers)
    with torch.no_grad():
        for weight in router_weights(model, layers).values():
            weight.mul_(-2.0)
    record = RouterRecord(str(directory.parent / "base"), fingerprint, method=method, training_config=TRAINING_CONFIG)
    return save_router_checkpoint(model, directory, layers, record)


def save_base(model, tokenizer, directory, **save):
    model.save_pretrained(directory, **save)
    tokenizer.save_pretrained(directory)
    return directory


def export(*args) -> tuple[int, str, str]:
    """`roma-eval export ARGS`: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["export", *map(str, args)])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def sharded(tmp_path_factory, tokenizer):
    """A tiny OLMoE saved in several shards, a router checkpoint of its last two MoE layers and its export."""
    root = tmp_path_factory.mktemp("export")
    model = build_tiny_model("olmoe", tokenizer, seed=4)
    base = save_base(model, tokenizer, root / "base", max_shard_size="40KB")
    checkpoint = tuned_checkpoint(model, root / "ckpt")
    code, out, err = export("--pretrained", base, "--router_checkpoint", checkpoint, "--output_path", root / "export")
    assert code == 0, err
    return SimpleNamespace(root=root, base=base, checkpoint=checkpoint, export=root / "export", printed=out,
                           tuned=model, names=router_parameter_names(model, resolve_layers(model, "last:2")))


def evaluate(model: str, model_args: str, out=None, tasks=TASKS, include_path=FIXTURE_TASKS, manager=None,
             **options) -> dict:
    """Per-sample results of lm-eval on ``tasks``, written as `lm_eval --output_path out --log_samples` when given."""
    from roma_eval.harness import evaluate as lm_eval_evaluate
    from roma_eval.harness import task_manager

    manager = manager or task_manager(() if include_path is None else (include_path,), tasks)
    evaluation = lm_eval_evaluate(model, out, tasks, model_args=model_args, task_manager=manager, device="cpu",
                                  batch_size=4, **options)
    if out is not None:
        evaluation.save()
    return {task: per_sample(evaluation.samples[task]) for task in tasks}


def test_only_the_shards_holding_a_tuned_router_are_written(sharded):
    index = json.loads((sharded.base / "model.safetensors.index.json").read_text())["weight_map"]
    holding = {index[name] for name in sharded.names.values()}
    shards = set(index.values())
    assert len(shards) > len(holding) + 2  # enough shards that a rewrite of all of them would show
    written = {shard for shard in shards
               if os.stat(sharded.export / shard).st_ino != os.stat(sharded.base / shard).st_ino}
    assert written == holding
    assert all((sharded.export / shard).stat().st_nlink >= 2 for shard in shards - holding)
    for shard in holding:  # the tuned routers are the checkpoint's, every other tensor and the length the base's
        base, new = load_file(sharded.base / shard), load_file(sharded.export / shard)
        assert base.keys() == new.keys()
        assert (sharded.base / shard).stat().st_size == (sharded.export / shard).stat().st_size
        for key, tensor in new.items():
            expected = sharded.tuned.state_dict()[key] if key in sharded.names.values() else base[key]
            assert torch.equal(tensor, expected.to(tensor.dtype)), key
    assert "hard link (unchanged)" in sharded.printed and "rewritten (tuned routers)" in sharded.printed


def test_the_export_under_hf_evaluates_as_roma_with_the_checkpoint(sharded):
    """Per sample, `--model hf` on the export is `--model roma` on the base with the checkpoint (fixture tasks), and
    the tuned routers change the answers (the comparison could fail)."""
    exported = evaluate("hf", f"pretrained={sharded.export}", sharded.root / "hf_export")
    roma = evaluate("roma", f"pretrained={sharded.base},router_checkpoint={sharded.checkpoint}",
                    sharded.root / "roma_run")
    assert exported == roma
    assert exported != evaluate("hf", f"pretrained={sharded.base}")


def test_roma_export_json_labels_a_plain_run_with_its_method(sharded):
    """roma_export.json: what the export is; an `hf` (or `vllm`) run of it is the method's row, its training cost
    the tuned routers'; the base model's own run stays "base"."""
    record = json.loads((sharded.export / EXPORT_RECORD).read_text())
    assert record["method"] == "roma" and record["layers"] == sorted(sharded.names)
    assert record["base_router_fingerprint"] != record["router_fingerprint"]
    assert record["router_fingerprint"] == router_fingerprint(sharded.tuned)
    if not any((sharded.root / "hf_export").rglob("results_*.json")):
        evaluate("hf", f"pretrained={sharded.export}", sharded.root / "hf_export")
    run = load_run(next((sharded.root / "hf_export").rglob("results_*.json")))
    assert run.method == "roma"
    assert run.training.trainable_parameters == len(sharded.names) * 8 * 32  # layers × experts × hidden
    assert method_of("vllm", {"pretrained": str(sharded.export), "tensor_parallel_size": 2}) == "roma"
    assert method_of("hf", {"pretrained": str(sharded.base)}) == "base"
    cost = training_cost("vllm", {"pretrained": str(sharded.export)})
    assert cost.trainable_parameters == run.training.trainable_parameters


def _front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_the_model_cards_of_the_export_and_of_the_checkpoint(sharded):
    card = (sharded.export / "README.md").read_text()
    meta = _front_matter(card)
    assert meta["library_name"] == "transformers" and meta["tags"] == ["roma-eval", "moe", "roma"]
    assert "base_model" not in meta  # a local base has no hub id to name; the card says to add it
    record = json.loads((sharded.export / EXPORT_RECORD).read_text())
    assert record["router_fingerprint"] in card and record["base_router_fingerprint"] in card
    assert str(sharded.base) in card and '"lam": 0.5' in card
    checkpoint_card = (sharded.checkpoint / "README.md").read_text()
    assert _front_matter(checkpoint_card) == {"tags": ["roma-eval", "moe", "roma"]}
    assert "roma-eval export" in checkpoint_card and "router_checkpoint=THIS_DIRECTORY" in checkpoint_card


def test_the_card_holds_the_results_of_the_checkpoints_run(sharded, tmp_path):
    """An lm-eval run of the checkpoint beside it (`--model roma ... router_checkpoint=`) becomes the card's table."""
    if not any((sharded.root / "roma_run").rglob("results_*.json")):
        evaluate("roma", f"pretrained={sharded.base},router_checkpoint={sharded.checkpoint}", sharded.root / "roma_run")
    code, _, err = export("--pretrained", sharded.base, "--router_checkpoint", sharded.checkpoint,
                          "--output_path", tmp_path / "with_results")
    assert code == 0, err
    card = (tmp_path / "with_results" / "README.md").read_text()
    assert "## Results (lm-eval)" in card and "|tiny_animals|" in card and "acc_norm" in card


def test_a_hub_id_in_the_cache_exports_with_its_commit(sharded, tmp_path, monkeypatch):
    """A hub id is read from the local hub cache (offline: nothing downloads); the shards there are symlinks to
    blobs, and the export hard-links the blobs.  The card names the hub id as base_model, the record the commit."""
    import huggingface_hub.constants

    commit = "1" * 40
    repo = tmp_path / "hub" / "models--someone--tiny-moe"
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for number, path in enumerate(sorted(sharded.base.iterdir())):
        blob = repo / "blobs" / f"blob{number}"
        blob.write_bytes(path.read_bytes())
        (snapshot / path.name).symlink_to(Path("..", "..", "blobs", blob.name))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    code, _, err = export("--pretrained", "someone/tiny-moe", "--router_checkpoint", sharded.checkpoint,
                          "--output_path", tmp_path / "out")
    assert code == 0, err
    meta = _front_matter((tmp_path / "out" / "README.md").read_text())
    assert meta["base_model"] == "someone/tiny-moe" and meta["base_model_relation"] == "finetune"
    record = json.loads((tmp_path / "out" / EXPORT_RECORD).read_text())
    assert record["revision"] == commit and record["base_model"] == "someone/tiny-moe"
    linked = next(iter(record["linked_shards"]))
    assert os.stat(tmp_path / "out" / linked).st_ino == os.stat((snapshot / linked).resolve()).st_ino


def test_shards_are_symlinked_where_a_hard_link_cannot_be_made(sharded, tmp_path, monkeypatch):
    def no_hard_link(source, target):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_hard_link)
    code, out, err = export("--pretrained", sharded.base, "--router_checkpoint", sharded.checkpoint,
                            "--output_path", tmp_path / "out")
    assert code == 0, err
    assert "symlink (Invalid cross-device link) (unchanged):" in out
    record = json.loads((tmp_path / "out" / EXPORT_RECORD).read_text())
    for shard in record["linked_shards"]:
        assert (tmp_path / "out" / shard).resolve() == (sharded.base / shard).resolve()
    assert not any((tmp_path / "out" / shard).is_symlink() for shard in record["rewritten_shards"])


def _other_base(root, tokenizer):
    return save_base(build_tiny_model("olmoe", tokenizer, seed=9), tokenizer, root / "other_base")


def _pickled(root, tokenizer):
    directory = root / "pickled"
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps({"model_type": "olmoe"}))
    (directory / "pytorch_model.bin").write_bytes(b"not read")
    return directory


def _one_file(root, tokenizer, rename=None, dtype=None):
    """The base model in one model.safetensors with its last router stored under another name or dtype."""
    directory = save_base(build_tiny_model("olmoe", tokenizer, seed=4), tokenizer, root / "one_file")
    tensors = load_file(directory / "model.safetensors")
    key = "model.layers.3.mlp.gate.weight"
    weight = tensors.pop(key)
    tensors[rename or key] = weight.to(dtype) if dtype else weight
    save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})
    return directory


REFUSALS = {
    "another base": (_other_base, "was tuned on .* whose routers differ from these"),
    "pickle weights": (_pickled, r"is stored as pytorch_model.bin, not safetensors"),
    "quantized router": (lambda root, tok: _one_file(root, tok, dtype=torch.float8_e4m3fn),
                         r"olmoe \(model_type 'olmoe'\): the router weight model.layers.3.mlp.gate.weight is stored as "
                         r"F8_E4M3 \[8, 32\], not a plain \[8, 32\] floating-point tensor"),
    "router not in the shards": (lambda root, tok: _one_file(root, tok, rename="model.layers.3.mlp.gate.qweight"),
                                 r"the router weight model.layers.3.mlp.gate.weight is not in .* shards under that "
                                 "name"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_model_that_cannot_be_exported_is_refused_in_one_line(case, sharded, tokenizer, tmp_path):
    make, message = REFUSALS[case]
    base = make(tmp_path, tokenizer)
    code, _, err = export("--pretrained", base, "--router_checkpoint", sharded.checkpoint,
                          "--output_path", tmp_path / "out")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("roma-eval export: error: ")
    import re

    assert re.search(message, err), err
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def test_a_fused_router_is_refused_naming_the_family(sharded, tokenizer, tmp_path, monkeypatch):
    """A family whose router reaches the model through a conversion on load (here: stored in two halves that
    transformers concatenates) is refused: no plain tensor to rewrite."""
    from transformers import conversion_mapping
    from transformers.core_model_loading import Concatenate, WeightConverter

    olmoe = conversion_mapping.get_checkpoint_conversion_mapping("olmoe")
    fused = WeightConverter(source_patterns=["mlp.gate_lo.weight", "mlp.gate_hi.weight"],
                            target_patterns="mlp.gate.weight", operations=[Concatenate(dim=0)])
    directory = save_base(build_tiny_model("olmoe", tokenizer, seed=4), tokenizer, tmp_path / "fused")
    monkeypatch.setitem(conversion_mapping._checkpoint_conversion_mapping_cache, "OlmoeForCausalLM", [*olmoe, fused])
    tensors = load_file(directory / "model.safetensors")
    weight = tensors.pop("model.layers.3.mlp.gate.weight")
    tensors.update({"model.layers.3.mlp.gate_lo.weight": weight[:4].clone(),
                    "model.layers.3.mlp.gate_hi.weight": weight[4:].clone()})
    save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})
    code, _, err = export("--pretrained", directory, "--router_checkpoint", sharded.checkpoint,
                          "--output_path", tmp_path / "out")
    assert code == 2 and "olmoe (model_type 'olmoe'): the router weight model.layers.3.mlp.gate.weight is stored " \
                          "fused with other tensors" in err, err
    assert not (tmp_path / "out").exists()


def test_an_existing_output_is_kept_unless_overwrite(sharded, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    args = ["--pretrained", sharded.base, "--router_checkpoint", sharded.checkpoint, "--output_path", out]
    code, _, err = export(*args)
    assert code == 2 and "exists and is not empty" in err and (out / "keep.txt").read_text() == "mine"
    code, _, err = export(*args, "--overwrite")
    assert code == 0, err
    assert not (out / "keep.txt").exists() and (out / EXPORT_RECORD).is_file()
    code, _, err = export("--pretrained", sharded.base, "--router_checkpoint", sharded.checkpoint,
                          "--output_path", sharded.base.parent, "--overwrite")
    assert code == 2 and "which the export reads" in err and (sharded.base / "config.json").is_file()


def test_a_failed_write_leaves_nothing(sharded, tmp_path, monkeypatch):
    import roma_eval.export

    def full_disk(source, target, tensors):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(roma_eval.export, "rewrite_shard", full_disk)
    code, _, err = export("--pretrained", sharded.base, "--router_checkpoint", sharded.checkpoint,
                          "--output_path", tmp_path / "nested" / "out")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "space" in err, err
    assert not (tmp_path / "nested").exists()


def _reproduce(*args) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["reproduce", *map(str, args)])
    return code, out.getvalue(), err.getvalue()


def test_reproduce_dry_run_prints_the_vllm_commands_and_writes_nothing(sharded, tmp_path):
    """Every router-checkpoint row is exported and evaluated by `lm_eval --model vllm` on the export, the base model
    directly; every other row stays on transformers; nothing is loaded or written."""
    out = tmp_path / "experiment"
    code, printed, err = _reproduce(
        "--pretrained", sharded.base, "--output_path", out, "--methods", "all", "--backend", "vllm", "--dry_run",
        "--eval_tasks", "tiny_animals", "--train_tasks", "tiny_animals_train", "--include_path", FIXTURE_TASKS,
        "--dtype", "bfloat16", "--vllm_args", "tensor_parallel_size=2,gpu_memory_utilization=0.8")
    assert code == 0, err
    assert not out.exists()
    lines = printed.splitlines()
    commands = [shlex.split(line) for line in lines if line.startswith("  ")]
    exports = {Path(c[c.index("--router_checkpoint") + 1]).parent.name: c for c in commands if c[1] == "export"}
    exported = {name: (out / name / "export" / sharded.base.name).resolve() for name in exports}
    served = {Path(c[c.index("--output_path") + 1]).name: c for c in commands if c[0] == "lm_eval"}
    routers = {m.name for m in registry.METHODS if m.artefact == registry.ROUTER_CHECKPOINT}
    plain = {m.name for m in registry.METHODS if m.artefact is None and m.lm_eval_model in
             registry.PLAIN_LM_EVAL_MODELS}
    assert set(exports) == routers and set(served) == routers | plain
    for name, command in exports.items():
        assert command[:2] == ["roma-eval", "export"]
        assert command[command.index("--pretrained") + 1] == str(sharded.base)
        assert command[command.index("--router_checkpoint") + 1] == str((out / name / "router_checkpoint").resolve())
        assert command[command.index("--output_path") + 1] == str(exported[name])
    for name, command in served.items():
        assert command[:3] == ["lm_eval", "--model", "vllm"] and command[-1] == "--log_samples"
        args = dict(item.split("=", 1) for item in command[command.index("--model_args") + 1].split(","))
        model = sharded.base if name in plain else exported[name]
        assert args == {"pretrained": str(model), "dtype": "bfloat16", "tensor_parallel_size": "2",
                        "gpu_memory_utilization": "0.8"}
        assert command[command.index("--tasks") + 1] == "tiny_animals"
        assert command[command.index("--output_path") + 1] == str(out / name)
        assert command[command.index("--batch_size") + 1] == "auto"
    for name in set(registry.NAMES) - routers - plain:
        assert any(line.startswith(f"{name}: on transformers (") for line in lines), name


def test_reproduce_with_vllm_absent_is_refused_before_anything_is_written(sharded, tmp_path):
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    code, _, err = _reproduce("--pretrained", sharded.base, "--output_path", tmp_path / "x", "--methods", "base",
                              "--backend", "vllm", "--eval_tasks", "tiny_animals", "--include_path", FIXTURE_TASKS)
    assert code == 2 and "vLLM is not installed here (rows base)" in err and not (tmp_path / "x").exists()


@functools.cache
def _lm_eval_tasks(tasks: tuple[str, ...]):
    """One task manager over lm-eval's own YAMLs for every family (indexing them takes seconds)."""
    from roma_eval.harness import task_manager

    return task_manager((), list(tasks))


REAL_TASKS = ("arc_easy", "winogrande", "gsm8k")
# The families of the check, each with what it exercises: several shards, the keys transformers renames on load
# (Mixtral's block_sparse_moe.gate), sigmoid scores with a correction bias (DeepSeek-V3), remote code (DeepSeekMoE).
EXPORTED_FAMILIES = {"olmoe": {"max_shard_size": "40KB"}, "mixtral": {}, "deepseek_v3": {}, "deepseek": {}}


@pytest.mark.slow
@pytest.mark.parametrize("arch", list(EXPORTED_FAMILIES))
def test_the_export_equals_roma_per_sample_on_lm_evals_own_tasks(arch, real_tasks, tokenizer, tmp_path):
    """`lm_eval --model hf --model_args pretrained=EXPORT` and `lm_eval --model roma --model_args
    pretrained=M,router_checkpoint=C` give the same per-sample results on lm-eval's YAMLs (ARC, WinoGrande's
    multiple inputs, GSM8K's generations), and the tuned routers change some answers."""
    from family_helpers import REMOTE, build_family_model

    model = build_family_model(arch, tokenizer, seed=6)
    base = save_base(model, tokenizer, tmp_path / "base", **EXPORTED_FAMILIES[arch])
    checkpoint = tuned_checkpoint(model, tmp_path / "ckpt")
    remote = ["--trust_remote_code"] if arch in REMOTE else []
    code, _, err = export("--pretrained", base, "--router_checkpoint", checkpoint, "--output_path",
                          tmp_path / "export", *remote)
    assert code == 0, err
    if remote:
        assert {p.name for p in base.glob("*.py")} == {p.name for p in (tmp_path / "export").glob("*.py")} != set()
    flags = ",trust_remote_code=True" if remote else ""
    manager = _lm_eval_tasks(REAL_TASKS)
    options = dict(tasks=list(REAL_TASKS), include_path=None, manager=manager, limit=3,
                   gen_kwargs="max_gen_toks=8")
    exported = evaluate("hf", f"pretrained={tmp_path / 'export'}{flags}", **options)
    assert exported == evaluate("roma", f"pretrained={base},router_checkpoint={checkpoint}{flags}", **options)
    assert exported != evaluate("hf", f"pretrained={base}{flags}", **options)


@pytest.mark.slow
def test_reproduce_with_vllm_evaluates_the_export_as_roma_evaluates_the_checkpoint(tmp_path, tokenizer, monkeypatch):
    """`reproduce --backend vllm` end to end, lm-eval's vllm model stood in for by its transformers model reading the
    same model_args (vLLM cannot run here): the base row on the base model, Router Tuning on its export, each with
    the per-sample results of `--model hf` / `--model roma` with the checkpoint; experiment.json records the backend
    and the plain commands; the report's rows are labelled by method."""
    import importlib.util

    from lm_eval.api.registry import model_registry
    from lm_eval.models.huggingface import HFLM

    class TransformersForVLLM(HFLM):
        def __init__(self, pretrained, tensor_parallel_size=1, batch_size="auto", **kwargs):
            assert int(tensor_parallel_size) == 1
            super().__init__(pretrained=pretrained, batch_size=4, device="cpu", **kwargs)

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: find_spec("torch") if name == "vllm"
                        else find_spec(name, *a))
    monkeypatch.setitem(model_registry._objs, "vllm", TransformersForVLLM)
    base = save_base(build_tiny_model("olmoe", tokenizer, seed=8), tokenizer, tmp_path / "base")
    out = tmp_path / "experiment"
    code, printed, err = _reproduce(
        "--pretrained", base, "--output_path", out, "--methods", "base,router_tuning", "--backend", "vllm",
        "--eval_tasks", "tiny_animals", "--train_tasks", "tiny_animals_train", "--include_path", FIXTURE_TASKS,
        "--train_args", "epochs=2,lr=0.05", "--router_tuning_args", "layers=last:2", "--no_progress")
    assert code == 0, err
    assert "router_tuning: routers trained on transformers" in printed
    manifest = json.loads((out / "experiment.json").read_text())
    assert manifest["identity"]["backend"] == "vllm"
    commands = [shlex.split(c) for c in manifest["stages"]["router_tuning"]["commands"]]
    assert [c[:3] for c in commands][1:] == [["roma-eval", "export", "--pretrained"], ["lm_eval", "--model", "vllm"]]

    def stage_samples(stage):
        (samples,) = (out / stage).rglob("samples_tiny_animals_*.jsonl")
        return per_sample([json.loads(line) for line in samples.read_text().splitlines()])

    checkpoint = out / "router_tuning" / "router_checkpoint"
    assert stage_samples("base") == evaluate("hf", f"pretrained={base}")["tiny_animals"]
    assert stage_samples("router_tuning") == evaluate(
        "roma", f"pretrained={base},router_checkpoint={checkpoint}")["tiny_animals"]
    (results,) = (out / "router_tuning").rglob("results_*.json")
    assert load_run(results).method == "router_tuning" and json.loads(results.read_text())["config"]["model"] == "vllm"
