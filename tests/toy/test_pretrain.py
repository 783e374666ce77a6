"""Pretraining: packing, schedule, bit-identical weights for a seed, and the atomic on-disk cache."""

from dataclasses import replace

import pytest
import torch

from roma_eval.toy import cache
from roma_eval.toy.config import ToyConfig, TrainConfig, preset
from roma_eval.toy.pretrain import (
    IGNORE,
    build_tokenizer,
    learning_rate,
    packed_batches,
    pretrain,
)

# Small enough to train in seconds; determinism does not depend on size.
TINY = ToyConfig(train=TrainConfig(steps=4, batch_size=4, seq_len=128, warmup_steps=2))


@pytest.fixture(scope="module")
def toy_tokenizer():
    return build_tokenizer(TINY)


def test_tokenizer_has_one_token_per_word_of_the_toy_world(toy_tokenizer):
    # The model then learns facts as token associations ("Japan" -> "Tokyo"), which a
    # character-level model of this size does not manage within the time budget.
    from roma_eval.toy import world

    words = [w for c, cap, cont in world.COUNTRIES for w in (c, cap)] + list(world.ANIMALS) + list(world.OBJECTS)
    for word in words:
        assert len(toy_tokenizer.tokenize(" " + word)) == 1, word
    text = "Question: Which of these animals has gills: a cow, a salmon?\nAnswer: 17"
    ids = toy_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert toy_tokenizer.decode(ids) == text


def test_rows_pack_whole_documents_from_position_zero(toy_tokenizer):
    from roma_eval.toy.corpus import documents

    ids, mask, labels = next(packed_batches(TINY, toy_tokenizer))
    assert ids.shape == (4, 128)
    assert torch.equal(labels == IGNORE, mask == 0)
    first_row = toy_tokenizer.decode(ids[0][mask[0].bool()].tolist(), skip_special_tokens=False)
    docs = first_row.split(toy_tokenizer.eos_token)
    assert docs[-1] == ""  # every document ends with EOS, none is cut
    expected = [d for d, _ in zip(documents(TINY.train.seed), range(len(docs) - 1))]
    assert docs[:-1] == expected


def test_learning_rate_warms_up_stays_then_decays_to_a_tenth():
    config = preset("default")
    train = config.train
    assert learning_rate(config, 0) == pytest.approx(train.lr / train.warmup_steps)
    assert learning_rate(config, train.warmup_steps) == pytest.approx(train.lr)
    assert learning_rate(config, train.steps - train.decay_steps) == pytest.approx(train.lr)
    assert learning_rate(config, train.steps - train.decay_steps // 2) < train.lr
    assert learning_rate(config, train.steps) == pytest.approx(train.lr / 10)
    # A longer run of the same recipe takes the same steps until its own decay starts.
    longer = replace(config, train=replace(train, steps=2 * train.steps))
    assert all(learning_rate(config, s) == learning_rate(longer, s) for s in range(train.steps - train.decay_steps))


def test_the_default_model_is_shipped_small_with_its_recipe():
    from transformers import AutoModelForCausalLM

    config = preset("default")
    directory = cache.shipped_dir(config)
    assert directory is not None, "the default toy model is not shipped in roma_eval/toy/weights/"
    assert cache.model_dir(config) == directory and cache.is_built(config)
    assert (directory / "model.safetensors").stat().st_size <= 25 * 2**20
    record = cache.read_record(directory)
    assert record["config"] == config.to_dict() and record["key"] == config.key()
    assert record["training"]["tokens_seen"] == config.train.steps * config.train.batch_size * config.train.seq_len
    assert len(record["training"]["prefix_sha256"]) == 64
    model = AutoModelForCausalLM.from_pretrained(directory)
    assert model.config.model_type == config.model.arch and model.config.num_hidden_layers == config.model.layers


@pytest.mark.slow
def test_a_short_rebuild_reproduces_the_shipped_run_on_any_cpu():
    """`roma-eval toy build --rebuild` retrains the shipped model; its first steps must be the shipped run's: bit for
    bit on the recording machine, within float rounding on another (torch promises no more across CPUs)."""
    from roma_eval.toy.pretrain import PREFIX_RTOL, PREFIX_STEPS, prefix_agrees, summary_deviation, weights_summary

    config = preset("default")
    record = cache.read_record(cache.shipped_dir(config))["training"]
    model, _, log = pretrain(config, progress=False, stop_after=PREFIX_STEPS)
    assert log["tokens_seen"] == PREFIX_STEPS * config.train.batch_size * config.train.seq_len
    assert log["prefix_summary"] == weights_summary(model)
    agrees, how = prefix_agrees(log, record)
    assert agrees, how
    # The tolerance separates rounding from a change of recipe: one step more is far outside it.
    one_more, _, _ = pretrain(config, progress=False, stop_after=PREFIX_STEPS + 1)
    assert summary_deviation(weights_summary(one_more), record["prefix_summary"]) > 100 * PREFIX_RTOL


def test_the_prefix_is_compared_bit_for_bit_only_on_the_recording_machine():
    from roma_eval.toy.pretrain import PREFIX_RTOL, machine_fingerprint, prefix_agrees

    summary = {"w": [1.0, 2.0, 4], "b": [0.5, 1.0, 1]}
    here = {"prefix_sha256": "a" * 64, "prefix_machine": machine_fingerprint(), "prefix_summary": summary}
    rounded = {"w": [1.0 + 1e-9, 2.0, 4], "b": [0.5, 1.0 + 1e-9, 1]}
    elsewhere = dict(here, prefix_sha256="b" * 64, prefix_summary=rounded,
                     prefix_machine=dict(here["prefix_machine"], cpu_capability="another instruction set"))
    assert prefix_agrees(here, here)[0]
    assert not prefix_agrees(dict(here, prefix_sha256="b" * 64), here)[0]  # same machine: the digest decides
    assert prefix_agrees(elsewhere, here)[0]  # other machine: rounding passes ...
    moved = {"w": [1.0, 2.0 * (1 + 10 * PREFIX_RTOL), 4], "b": [0.5, 1.0, 1]}
    assert not prefix_agrees(dict(elsewhere, prefix_summary=moved), here)[0]  # ... a real change does not
    assert not prefix_agrees(dict(elsewhere, prefix_summary={"w": [1.0, 2.0, 4]}), here)[0]
    unrecorded = dict(here, prefix_machine=None)  # the shipped record does not name its machine
    assert prefix_agrees(dict(here, prefix_sha256="b" * 64), unrecorded)[0]


def state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.slow
def test_same_seed_gives_bit_identical_weights_and_another_seed_does_not():
    first, _, log = pretrain(TINY, progress=False)
    second, _, _ = pretrain(TINY, progress=False)
    other, _, _ = pretrain(TINY.with_seed(1), progress=False)
    a, b, c = state(first), state(second), state(other)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    assert log["tokens_seen"] == 4 * 4 * 128
    assert torch.get_num_threads() >= 1 and not torch.are_deterministic_algorithms_enabled()


@pytest.mark.slow
def test_cache_builds_once_and_is_keyed_by_the_whole_config(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path))
    directory = cache.ensure_model(TINY, progress=False)
    assert directory.parent == tmp_path / "toy" and (directory / "model.safetensors").is_file()
    assert cache.read_record(directory)["config"] == TINY.to_dict()

    def no_training(*args, **kwargs):
        raise AssertionError("a cached model was pretrained again")

    monkeypatch.setattr("roma_eval.toy.pretrain.pretrain", no_training)
    assert cache.ensure_model(TINY) == directory
    for changed in (TINY.with_seed(5), replace(TINY, train=replace(TINY.train, lr=1e-3)),
                    replace(TINY, generator_version="other")):
        assert cache.model_dir(changed) != directory


@pytest.mark.slow
def test_interrupted_build_leaves_no_half_model(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path))

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("transformers.PreTrainedTokenizerFast.save_pretrained", interrupted)
    with pytest.raises(KeyboardInterrupt):
        cache.ensure_model(TINY, progress=False)
    assert not cache.is_built(TINY)
    assert list(tmp_path.rglob("*")) == []  # no half model, no partial directory, and no directory it made either


@pytest.mark.slow
def test_cached_model_loads_with_plain_transformers(tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path))
    directory = cache.ensure_model(TINY, progress=False)
    trained, _, _ = pretrain(TINY, progress=False)
    loaded = AutoModelForCausalLM.from_pretrained(directory)
    assert loaded.config.model_type == "olmoe" and loaded.config.num_experts == 8
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in trained.state_dict().items())
    assert len(AutoTokenizer.from_pretrained(directory)) == loaded.config.vocab_size <= TINY.model.vocab_size


@pytest.mark.slow
def test_interrupted_pretraining_resumes_to_the_same_weights(tmp_path, monkeypatch):
    from roma_eval.toy import pretrain as module

    straight, _, _ = pretrain(TINY, progress=False)
    monkeypatch.setattr(module, "SAVE_EVERY", 2)
    schedule = module.learning_rate

    def interrupted_at_step_3(config, step):
        if step == 3:
            raise KeyboardInterrupt
        return schedule(config, step)

    monkeypatch.setattr(module, "learning_rate", interrupted_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        pretrain(TINY, progress=False, resume_dir=tmp_path / "partial")
    from roma_eval.storage import read_progress

    assert read_progress(tmp_path / "partial")["step"] == 2
    monkeypatch.setattr(module, "learning_rate", schedule)
    resumed, _, log = pretrain(TINY, progress=False, resume_dir=tmp_path / "partial")
    a, b = state(straight), state(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a) and len(log["loss_every_20_steps"]) == 1
