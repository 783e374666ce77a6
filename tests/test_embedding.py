"""The embedder: the same vectors whatever the batching, an on-disk cache per (embedder, text) that makes a second
embed of the same texts compute nothing, across processes, and that an interruption cannot corrupt."""

import numpy as np
import pytest
import torch

from roma_eval import embedding
from roma_eval.embedding import EmbeddingCache, embed, embedder_identity, load_embedder

TEXTS = [f"Question: which of these animals number {i} is a mammal? Answer with one word." for i in range(40)] + \
    ["short", "a much longer text " * 30, "Ünïcödé — text ✓"]


@pytest.fixture(scope="module")
def embedder():
    return load_embedder(device="cpu")


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ROMA_EVAL_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(embedding.CACHE_ENV, raising=False)
    monkeypatch.setattr(EmbeddingCache, "_open", {})
    return tmp_path / "cache" / "embeddings"


class Counting:
    """An embedder wrapper counting the texts it encodes."""

    def __init__(self, embedder):
        self.inner, self.encoded = embedder, []

    def encode(self, texts, **kwargs):
        self.encoded += list(texts)
        return self.inner.encode(texts, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __repr__(self):
        return repr(self.inner)


def new_process(monkeypatch):
    """What a fresh process knows: nothing in memory, only the files."""
    monkeypatch.setattr(EmbeddingCache, "_open", {})


def test_batching_does_not_change_the_vectors(embedder):
    """One text at a time, in reverse order, vs batches of 64: the same vectors to float rounding (the GPU check
    script compares the accelerator's vectors with these the same way)."""
    a = embed(TEXTS, embedder, batch_size=64, cache=False)
    b = embed(TEXTS[::-1], embedder, batch_size=1, cache=False)[::-1]
    assert a.shape == (len(TEXTS), 384) and a.dtype == np.float32
    assert (a * b).sum(1).min() > 1 - 1e-4
    assert np.abs(a - b).max() < 1e-4


def test_a_second_embed_computes_nothing_even_in_another_process(embedder, cache_dir, monkeypatch):
    counting = Counting(embedder)
    first = embed(TEXTS, counting)
    assert len(counting.encoded) == len(TEXTS)
    assert np.array_equal(first, embed(TEXTS, embedder, cache=False))  # a cold cache changes nothing
    counting.encoded.clear()
    assert np.array_equal(embed(TEXTS, counting), first) and counting.encoded == []
    new_process(monkeypatch)
    assert np.array_equal(embed(TEXTS[::-1], counting), first[::-1]) and counting.encoded == []
    # only what is new is embedded, each text once
    assert np.array_equal(embed(TEXTS[:3] + ["new text", "new text"], counting)[:3], first[:3])
    assert counting.encoded == ["new text"]
    assert len(list(cache_dir.glob("*/shard-*.safetensors"))) == 2


def test_the_cache_is_keyed_by_the_embedder_and_normalisation(embedder, cache_dir):
    identity = embedder_identity(embedder)
    assert identity == embedder_identity(load_embedder(device="cpu")) != embedder_identity(embedder, normalize=False)
    other = load_embedder(device="cpu")
    with torch.no_grad():
        next(other.parameters())[0, 0] += 1e-3
    other._roma_eval_identity = None
    assert embedder_identity(other) != identity
    counting = Counting(other)
    embed(TEXTS[:5], embedder)
    embed(TEXTS[:5], counting)
    assert len(counting.encoded) == 5  # the other embedder's vectors are not this one's
    assert len({p.parent for p in cache_dir.glob("*/shard-*.safetensors")}) == 2


def test_an_interrupted_write_leaves_nothing_half_written(embedder, cache_dir, monkeypatch):
    import os

    real_replace = os.replace

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        embed(TEXTS[:4], embedder)
    monkeypatch.setattr(os, "replace", real_replace)
    assert list(cache_dir.rglob("*.safetensors")) == [] and list(cache_dir.rglob("*.tmp")) == []
    new_process(monkeypatch)
    (cache_dir / embedder_identity(embedder)).mkdir(parents=True, exist_ok=True)
    (cache_dir / embedder_identity(embedder) / "shard-garbage.safetensors").write_bytes(b"not a safetensors file")
    counting = Counting(embedder)
    vectors = embed(TEXTS[:4], counting)  # the unreadable file is skipped, the texts embedded
    assert len(counting.encoded) == 4 and np.array_equal(vectors, embed(TEXTS[:4], embedder, cache=False))


def test_many_shards_are_merged(embedder, cache_dir, monkeypatch):
    monkeypatch.setattr(embedding, "MAX_SHARDS", 3)
    for i in range(6):
        embed([TEXTS[i]], embedder)
    assert len(list(cache_dir.glob("*/shard-*.safetensors"))) <= 3
    new_process(monkeypatch)
    counting = Counting(embedder)
    embed(TEXTS[:6], counting)
    assert counting.encoded == []


def test_the_cache_can_be_turned_off(embedder, cache_dir, monkeypatch):
    monkeypatch.setenv(embedding.CACHE_ENV, "off")
    embed(TEXTS[:3], embedder)
    assert not cache_dir.exists()
