"""Shared fixtures: tiny random models of every supported architecture, built in-process."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest
import torch

from roma_eval.tiny import ARCHITECTURES, build_tiny_model, train_tokenizer


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
    return {arch: build_tiny_model(arch, tokenizer, seed=1) for arch in ARCHITECTURES}


@pytest.fixture(params=ARCHITECTURES)
def arch_model(request, tiny_models):
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


def gate_param_grads(model):
    from roma_eval.routing import routers

    return {i: gate.weight.grad for i, gate in routers(model).items()}


@pytest.fixture(autouse=True)
def _zero_grads(request):
    """The session's shared tiny models start every test without gradients (built only for tests that use them)."""
    yield
    if "tiny_models" in request.fixturenames:
        for model in request.getfixturevalue("tiny_models").values():
            model.zero_grad(set_to_none=True)
    torch.set_grad_enabled(True)
