"""The contract of every router-training method (the registry's methods whose artefact is a router checkpoint): it
changes the tuned routers and nothing else, writes a checkpoint that lm-eval's `--model roma` loads into exactly the
trained model, continues an interrupted run from OUT.partial to the uninterrupted run bit for bit (same machine), and
records its method name in the checkpoint.  Each method trains as its `roma-eval` verb does, 2 epochs of 2 steps."""

import importlib
import json

import pytest
import torch
from lm_eval_helpers import FIXTURE_TASKS

from roma_eval import registry
from roma_eval.checkpoint import CONFIG_NAME
from roma_eval.routing import router_parameter_names
from roma_eval.samples import load_samples
from roma_eval.storage import read_progress
from roma_eval.tiny import save_tiny_model
from roma_eval.training.loop import ResumePoint

ROUTER_METHODS = [m.name for m in registry.METHODS if m.artefact == registry.ROUTER_CHECKPOINT]
BUDGET = dict(layers="last:2", epochs=2, batch_size=8, lr=5e-2)
TUNED = [2, 3]


@pytest.fixture(scope="module")
def setting(tokenizer, tmp_path_factory):
    """A saved tiny base model, 16 training samples, the embedder (RoMA's neighbourhoods) and, standing in for
    `roma-eval oracle --split train --save_routing`, random oracle routing for every sample (Oracle Tuning's
    targets; tests/methods/test_router_baselines.py runs the oracle itself)."""
    from roma_eval.embedding import load_embedder
    from roma_eval.methods.oracle_tuning import OracleTargets

    model_dir = save_tiny_model("olmoe", tmp_path_factory.mktemp("base"), seed=11, tokenizer=tokenizer)
    samples = load_samples(["tiny_parity"], split="train", include_path=[FIXTURE_TASKS])[:16]
    generator = torch.Generator().manual_seed(0)
    routing = {(s.task, s.doc_id): torch.softmax(torch.randn(len(TUNED), 8, generator=generator), -1).flatten()
               for s in samples}
    oracle = OracleTargets(tmp_path_factory.mktemp("oracle"), routing, {"settings": {"layers": "last:2"}})
    return {"model_dir": model_dir, "tokenizer": tokenizer, "samples": samples, "embedder": load_embedder(),
            "oracle": oracle}


def train(method: str, setting: dict, out):
    """(model, result): a fresh copy of the base model trained with ``method``'s own function and settings."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(setting["model_dir"])
    args = (model, setting["tokenizer"], setting["samples"], out)
    options = dict(base_model=str(setting["model_dir"]), progress=False)
    if method in ("roma", "router_tuning"):
        from roma_eval.methods.roma import RomaConfig, train_roma

        config = RomaConfig(**BUDGET, k=2, regulariser="manifold" if method == "roma" else "none")
        return model, train_roma(*args, config, embedder=setting["embedder"], **options)
    if method == "oracle_tuning":
        from roma_eval.methods.oracle_tuning import OracleTuningConfig
        from roma_eval.methods.oracle_tuning import train as oracle_tuning

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(oracle_tuning, "load_oracle_targets", lambda *a, **k: setting["oracle"])
            config = OracleTuningConfig(oracle_routing=str(setting["oracle"].run), **BUDGET)
            return model, oracle_tuning.train_oracle_tuning(*args, config, **options)
    if method == "dense_bp":
        from roma_eval.methods.dense_bp import DenseBPConfig, train_dense_bp

        return model, train_dense_bp(*args, DenseBPConfig(**BUDGET), **options)
    raise AssertionError(f"{method} trains routers (registry) but this contract test does not train it yet")


@pytest.fixture(scope="module", params=ROUTER_METHODS)
def trained(request, setting, tmp_path_factory):
    """(method, base state, trained model, result) of an uninterrupted run."""
    from transformers import AutoModelForCausalLM

    before = AutoModelForCausalLM.from_pretrained(setting["model_dir"]).state_dict()
    model, result = train(request.param, setting, tmp_path_factory.mktemp(request.param) / "routers")
    return request.param, before, model, result


def test_only_the_tuned_routers_change(trained):
    method, before, model, _ = trained
    after = model.state_dict()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed == set(router_parameter_names(model, TUNED).values()), method


def test_lm_eval_roma_loads_the_trained_model(trained, setting):
    method, _, model, result = trained
    module, _, cls = registry.LM_EVAL_MODELS[registry.method(method).lm_eval_model].partition(":")
    lm = getattr(importlib.import_module(module), cls)(pretrained=str(setting["model_dir"]),
                                                       router_checkpoint=str(result.checkpoint), device="cpu")
    loaded, trained_state = lm.model.state_dict(), model.state_dict()
    assert loaded.keys() == trained_state.keys()
    assert all(torch.equal(loaded[name], trained_state[name]) for name in loaded), method


def test_the_checkpoint_records_the_method(trained):
    method, _, _, result = trained
    assert json.loads((result.checkpoint / CONFIG_NAME).read_text())["method"] == method


def test_an_interrupted_run_resumes_to_the_same_routers(trained, setting, tmp_path, monkeypatch):
    method, _, straight, straight_result = trained
    save = ResumePoint.save

    def save_then_stop(self, *args, **kwargs):  # killed right after the first epoch's resume point
        save(self, *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(ResumePoint, "save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train(method, setting, tmp_path / "routers")
    assert read_progress(tmp_path / "routers.partial")["epoch"] == 0 and not (tmp_path / "routers").exists()
    monkeypatch.setattr(ResumePoint, "save", save)
    resumed, result = train(method, setting, tmp_path / "routers")
    for name in router_parameter_names(straight, TUNED).values():
        assert torch.equal(resumed.state_dict()[name], straight.state_dict()[name]), (method, name)

    def without_time(log):
        return [{k: v for k, v in entry.items() if k != "seconds"} for entry in log]

    assert without_time(result.log) == without_time(straight_result.log) and len(result.log) == 4
    assert not (tmp_path / "routers.partial").exists()
