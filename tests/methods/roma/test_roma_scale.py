"""RoMA training at scale: pre-tokenised batches equal lm-eval's tokenisation, the frozen-layer cache on the device or
the host gives ``build_choice_batch``'s padding, no host waits inside the step loop, length grouping, the uncached
path."""

import collections
import random
import traceback

import numpy as np
import pytest
import torch
from lm_eval_helpers import FIXTURE_TASKS

from roma_eval.checkpoint import load_router_checkpoint
from roma_eval.methods.roma import train as roma
from roma_eval.methods.roma.config import RomaConfig
from roma_eval.methods.roma.data import LayerCache, TrainingRows
from roma_eval.methods.roma.recipe import RouterTraining
from roma_eval.routing.partial import capture_layer_input
from roma_eval.samples import Sample, load_samples
from roma_eval.scoring import build_choice_batch
from roma_eval.tiny import build_tiny_model
from roma_eval.training.loop import ResumePoint, epoch_batches

FAST = dict(layers="last:2", epochs=2, batch_size=8, lr=5e-2, k=2)


@pytest.fixture(scope="module")
def train_samples():
    samples = load_samples(["tiny_parity"], split="train", include_path=[FIXTURE_TASKS])
    # one multiple-input sample (a prompt per choice, one continuation), as lm-eval's winogrande builds them
    contexts = ("The cup is on the table because the cup", "The cup is on the table because the table")
    return samples + [Sample("mi", 0, "The cup is on the table because the ", "multiple_choice", "x",
                             continuations=(" is flat.",) * 2, choices=("cup", "table"), gold=1,
                             choice_contexts=contexts)]


@pytest.fixture(scope="module")
def embedder():
    from roma_eval.embedding import load_embedder

    return load_embedder()


def _train(tokenizer, samples, out, embedder, **overrides):
    model = build_tiny_model("olmoe", tokenizer, seed=11)
    result = roma.train_roma(model, tokenizer, samples, out, RomaConfig(**{**FAST, **overrides}), base_model="tiny",
                             embedder=embedder, progress=False)
    return model, result


def test_pre_tokenised_batches_equal_build_choice_batch(tokenizer, train_samples):
    """Every field of every step's batch is what build_choice_batch gives for the same samples (ragged choices,
    a multiple-input sample, truncation to max_length)."""
    for max_length in (512, 12):
        rows = TrainingRows(tokenizer, train_samples, max_length, "cpu")
        rng = random.Random(0)
        batches = [rng.sample(range(len(train_samples)), k) for k in (1, 5, 8, len(train_samples))]
        plan = rows.plan(batches)
        for n, batch in enumerate(batches):
            expected = build_choice_batch(tokenizer, [train_samples[i] for i in batch], max_length)
            got = rows.batch(plan, n, input_ids=True)
            for name, value in vars(expected).items():
                assert torch.equal(getattr(got, name), value), (max_length, n, name)
                assert getattr(got, name).dtype == value.dtype, name


@pytest.mark.parametrize("placement", ["device", "host"])
def test_layer_cache_gives_the_zero_padded_states(tokenizer, train_samples, placement):
    """The cache written from padded base-pass batches and gathered for other batches equals the per-row states
    zero-padded to the batch's longest row (what every step used to build on the host)."""
    model = build_tiny_model("olmoe", tokenizer, seed=3)
    rows = TrainingRows(tokenizer, train_samples, 512, "cpu")
    cache = LayerCache.allocate(rows, model.config.hidden_size, torch.float32, "cpu", placement=placement)
    assert cache.on_device == (placement == "device")
    order = list(range(len(train_samples)))
    base = rows.plan([order[s:s + 4] for s in range(0, len(order), 4)])
    states = {}
    for n in range(len(base)):
        batch = rows.batch(base, n, input_ids=True)
        with torch.no_grad(), capture_layer_input(model, 2) as captured:
            model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
        cache.write(rows, base, n, captured["hidden_states"])
        for r, row in enumerate(base.host_rows[n]):
            states[int(row)] = captured["hidden_states"][r, : rows.row_len[row]]
    shuffled = random.Random(1).sample(order, len(order))
    plan = rows.plan([shuffled[:7], shuffled[7:]])
    for n in range(len(plan)):
        ids = plan.host_rows[n]
        expected = torch.zeros(len(ids), plan.steps[n][4], model.config.hidden_size)
        for r, row in enumerate(ids):
            expected[r, : rows.row_len[row]] = states[int(row)]
        assert torch.equal(cache.gather(rows, plan, n), expected)


def test_epoch_batches_keep_the_order_and_group_by_length_deterministically():
    n, size = 103, 8
    order = list(range(n))
    random.Random(5 + 2).shuffle(order)
    assert epoch_batches(n, size, seed=5, epoch=2) == [order[s:s + size] for s in range(0, n, size)]
    lengths = np.random.default_rng(0).integers(1, 300, n)
    grouped = epoch_batches(n, size, seed=5, epoch=2, lengths=lengths)
    assert grouped == epoch_batches(n, size, seed=5, epoch=2, lengths=lengths)  # deterministic for a seed
    assert grouped != epoch_batches(n, size, seed=5, epoch=3, lengths=lengths)  # a new shuffle each epoch
    assert sorted(i for b in grouped for i in b) == list(range(n)) and max(map(len, grouped)) == size

    def padding(batches):
        return sum(len(b) * max(lengths[b]) - lengths[b].sum() for b in batches)

    assert padding(grouped) < padding(epoch_batches(n, size, seed=5, epoch=2)) / 4


def test_log_every_does_not_change_the_run(tokenizer, train_samples, embedder, tmp_path):
    a, log_a = _train(tokenizer, train_samples, tmp_path / "a", embedder, log_every=1)
    b, log_b = _train(tokenizer, train_samples, tmp_path / "b", embedder, log_every=50)
    key = "model.layers.3.mlp.gate.weight"
    assert torch.equal(a.state_dict()[key], b.state_dict()[key])
    strip = [{k: v for k, v in e.items() if k != "seconds"} for e in log_a.log]
    assert strip == [{k: v for k, v in e.items() if k != "seconds"} for e in log_b.log]


def test_group_by_length_trains_and_changes_the_order(tokenizer, train_samples, embedder, tmp_path):
    plain, _ = _train(tokenizer, train_samples, tmp_path / "plain", embedder)
    grouped, result = _train(tokenizer, train_samples, tmp_path / "grouped", embedder, group_by_length=True)
    assert len(result.log) == len(_train(tokenizer, train_samples, tmp_path / "again", embedder)[1].log)
    assert not torch.equal(plain.state_dict()["model.layers.3.mlp.gate.weight"],
                           grouped.state_dict()["model.layers.3.mlp.gate.weight"])


def test_no_host_waits_inside_the_step_loop(tokenizer, train_samples, embedder, tmp_path, monkeypatch):
    """Between two log writes a step makes no call that would make the host wait for a GPU (item, tolist, cpu,
    numpy, bool/float/int of a tensor) from roma-eval's training code: reading the losses back (tolist) or copying
    each batch from the host would stall every step on an accelerator."""
    calls = collections.Counter()
    state = {"steps": False}
    for name in ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__"):
        original = getattr(torch.Tensor, name)

        def counting(self, *a, _original=original, _name=name, **kw):
            if state["steps"]:
                frame = traceback.extract_stack()[-2]
                if "roma_eval" in frame.filename:
                    calls[f"{_name} {frame.filename.rsplit('/', 1)[-1]}:{frame.name}"] += 1
            return _original(self, *a, **kw)

        monkeypatch.setattr(torch.Tensor, name, counting)
    step = torch.optim.AdamW.step

    def marked(self, *a, **kw):
        state["steps"] = True
        return step(self, *a, **kw)

    monkeypatch.setattr(torch.optim.AdamW, "step", marked)
    monkeypatch.setattr(ResumePoint, "save", lambda *a, **k: None)  # its copies to the host are once per epoch
    _, result = _train(tokenizer, train_samples, tmp_path / "out", embedder, epochs=3, log_every=4)
    steps = len(result.log)  # 3 epochs of 5 steps: logs after steps 4, 5 of each epoch
    assert steps == 15
    # The saved checkpoint's finiteness check (checkpoint.py, once per tuned router after the loop) is the only
    # other copy to the host.
    saved = calls.pop("__bool__ storage.py:require_finite", 0)
    assert dict(calls) == {"tolist loop.py:_write_log": 6}
    assert saved == len(load_router_checkpoint(result.checkpoint).layers)


def test_the_uncached_path_feeds_the_model_its_embedding_device(tokenizer, train_samples, embedder, tmp_path,
                                                               monkeypatch):
    """--no_layer_cache runs the whole model from token ids that live where its embedding does (the bench's
    uncached variant fed CPU ids to a CUDA model) and writes the same checkpoint as the cached run."""
    seen = []
    original = RouterTraining.forward

    def spy(self, *args, **kwargs):
        batch, logits, record = original(self, *args, **kwargs)
        seen.append((self.base.cache is None,
                     batch.input_ids.device == self.model.get_input_embeddings().weight.device))
        return batch, logits, record

    monkeypatch.setattr(RouterTraining, "forward", spy)
    model, _ = _train(tokenizer, train_samples, tmp_path / "uncached", embedder, no_layer_cache=True, epochs=1)
    assert seen and all(uncached and same for uncached, same in seen)
