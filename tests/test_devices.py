"""No method assumes a model lives where its first parameter does.

A model split across devices (``device_map="auto"``, lm-eval's ``parallelize=True``) takes token ids on its input
embedding's device, returns logits from its head's device and keeps each layer's cache on that layer's device.  On a
CPU we cannot split a model, but we can move its first parameter somewhere else: a meta tensor registered first.
Code that sends inputs to ``next(model.parameters()).device`` then fails; code that asks the embedding succeeds
and computes exactly what it computes without the extra parameter.
"""

import numpy as np
import pytest
import torch
from lm_eval_helpers import FIXTURE_TASKS

from roma_eval.devices import input_device
from roma_eval.samples import load_samples
from roma_eval.tiny import build_tiny_model


def first_parameter_elsewhere(model):
    model.register_parameter("a_parameter_elsewhere", torch.nn.Parameter(torch.zeros(1, device="meta")))
    assert next(model.parameters()).device.type == "meta" and input_device(model).type == "cpu"
    return model


@pytest.fixture(scope="module")
def samples():
    return load_samples(["tiny_parity"], split="train", include_path=[FIXTURE_TASKS])


@pytest.fixture(scope="module")
def embeddings(samples):
    """The samples' embeddings, computed once (an embedder stand-in returns them)."""
    from roma_eval.embedding import embed, load_embedder

    return embed([s.text for s in samples], load_embedder(device="cpu"), cache=False)


class FixedEmbedder:
    def __init__(self, texts, vectors):
        self.table = dict(zip(texts, vectors))

    def encode(self, texts, **kwargs):
        return np.stack([self.table[t] for t in texts])

    def get_embedding_dimension(self):
        return next(iter(self.table.values())).shape[0]


def test_roma_training(tokenizer, samples, embeddings, tmp_path, monkeypatch):
    from roma_eval.methods.roma import RomaConfig, train_roma

    monkeypatch.setenv("ROMA_EVAL_EMBEDDING_CACHE", "off")
    embedder = FixedEmbedder([s.text for s in samples], embeddings)
    config = RomaConfig(layers="last:2", epochs=1, batch_size=8, lr=5e-2, k=2)
    plain, moved = (build_tiny_model("olmoe", tokenizer, seed=11) for _ in range(2))
    first_parameter_elsewhere(moved)
    for name, model in (("plain", plain), ("moved", moved)):
        train_roma(model, tokenizer, samples, tmp_path / name, config, base_model="tiny", embedder=embedder,
                   progress=False)
    key = "model.layers.3.mlp.gate.weight"
    assert torch.equal(plain.state_dict()[key], moved.state_dict()[key])


def test_roma_training_without_the_layer_cache(tokenizer, samples, embeddings, tmp_path, monkeypatch):
    from roma_eval.methods.roma import RomaConfig, train_roma

    monkeypatch.setenv("ROMA_EVAL_EMBEDDING_CACHE", "off")
    embedder = FixedEmbedder([s.text for s in samples], embeddings)
    model = first_parameter_elsewhere(build_tiny_model("olmoe", tokenizer, seed=11))
    train_roma(model, tokenizer, samples, tmp_path / "uncached", RomaConfig(layers="last:2", epochs=1, batch_size=8,
                                                                             k=2, no_layer_cache=True),
               base_model="tiny", embedder=embedder, progress=False)


def test_oracle_descent(tokenizer, samples):
    from roma_eval.methods.oracle.config import OracleConfig
    from roma_eval.methods.oracle.descent import descend
    from roma_eval.scoring import build_choice_batch

    batch = build_choice_batch(tokenizer, samples[:6], 512)
    config = OracleConfig(layers="last:2", max_steps=4, batch_size=6)
    plain = descend(build_tiny_model("olmoe", tokenizer, seed=11), batch, config, [2, 3])
    moved = descend(first_parameter_elsewhere(build_tiny_model("olmoe", tokenizer, seed=11)), batch, config, [2, 3])
    assert [o.losses for o in plain] == [o.losses for o in moved]
    assert [o.after.scores for o in plain] == [o.after.scores for o in moved]


def test_c3po(tokenizer, tmp_path, monkeypatch):
    from roma_eval.methods.c3po import C3PO, C3POConfig, ReferenceBuild, build_reference, load_reference
    from roma_eval.methods.c3po.reference import problem_of, sample_prompt

    monkeypatch.setenv("ROMA_EVAL_EMBEDDING_CACHE", "off")
    model = build_tiny_model("olmoe", tokenizer, seed=5, initializer_range=0.2)
    train = load_samples(["c3po_fish_train"], split="train", include_path=[FIXTURE_TASKS])
    build_reference(model, tokenizer, train, tmp_path / "ref", ReferenceBuild(base_model="tiny", layers="last:2"),
                    progress=False)
    reference = load_reference(tmp_path / "ref")
    tests = load_samples(["tiny_animals"], include_path=[FIXTURE_TASKS], limit=6)
    problems = [problem_of(tokenizer, s, 512) for s in tests]
    prompts = [sample_prompt(s) for s in tests]
    config = C3POConfig(group=4)
    plain = C3PO(model, reference, config).run(problems, prompts, progress=False)
    moved = C3PO(first_parameter_elsewhere(build_tiny_model("olmoe", tokenizer, seed=5, initializer_range=0.2)),
                 reference, config).run(problems, prompts, progress=False)
    assert plain[1] == moved[1]
    assert all(torch.equal(a, b) for a, b in zip(plain[0], moved[0]))
