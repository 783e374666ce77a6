"""Shared fixtures: tiny random models of every supported architecture, built in-process.

``arch_model`` runs a test on the fast test set's families; ``family_model`` on those always and on every
other supported family (ALL_FAMILIES: the transformers ones and DeepSeekMoE's remote code) under the
``slow`` marker (``pytest -m "not slow"`` leaves them out, ``pytest -m slow`` runs only them).
"""

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# Remote code (the DeepSeekMoE fixture) is copied into a modules cache: keep it out of the shared HF_HOME.
os.environ.setdefault("HF_MODULES_CACHE", tempfile.mkdtemp(prefix="roma_hf_modules_"))

import pytest
import torch
from family_helpers import build_family_model, family_params

from roma_eval.tiny import FAST_ARCHITECTURES, train_tokenizer


class _Models(dict):
    """Family -> its tiny model (seed 1), built the first time a test asks for it."""

    def __init__(self, tokenizer):
        super().__init__()
        self.tokenizer = tokenizer

    def __missing__(self, arch):
        self[arch] = build_family_model(arch, self.tokenizer, seed=1)
        return self[arch]


@pytest.fixture
def real_tasks():
    """lm-eval's own task YAMLs (mmlu, arc, winogrande, gsm8k, ...) on synthetic rows with the hub datasets'
    columns (tests/offline_hub): nothing is downloaded."""
    import offline_hub

    with offline_hub.installed():
        yield offline_hub


@pytest.fixture(scope="session")
def tokenizer():
    return train_tokenizer()


@pytest.fixture(scope="session")
def tiny_models(tokenizer):
    return _Models(tokenizer)


@pytest.fixture(params=FAST_ARCHITECTURES)
def arch_model(request, tiny_models):
    """(family, tiny model) of the fast test set's families (roma_eval.tiny.FAST_ARCHITECTURES)."""
    return request.param, tiny_models[request.param]


@pytest.fixture(params=family_params())
def family_model(request, tiny_models):
    """(family, tiny model) of every supported family: the fast test set's always, the others under `slow`."""
    return request.param, tiny_models[request.param]


@pytest.fixture(scope="session")
def padded_batch(tokenizer):
    """Two prompts of different lengths, right- and left-padded."""
    texts = ["Question: which animal is a mammal?", "2+2="]
    batches = {}
    for side in ("right", "left"):
        tokenizer.padding_side = side
        batches[side] = tokenizer(texts, return_tensors="pt", padding=True)
    tokenizer.padding_side = "right"
    singles = [tokenizer(t, return_tensors="pt") for t in texts]
    return batches, singles


@pytest.fixture(autouse=True)
def _zero_grads(request):
    """The session's shared tiny models start every test without gradients (built only for tests that use them)."""
    yield
    if "tiny_models" in request.fixturenames:
        for model in request.getfixturevalue("tiny_models").values():
            model.zero_grad(set_to_none=True)
    torch.set_grad_enabled(True)
