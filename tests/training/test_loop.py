"""The loop bookkeeping every training method shares (roma_eval/training/loop.py): which samples train, the resume
point and whose saves it continues, the log written from the device and its non-finite checks."""

import math
import random
from types import SimpleNamespace

import pytest
import torch

from roma_eval.errors import RomaEvalError
from roma_eval.samples import Sample
from roma_eval.training.budget import TrainingBudget
from roma_eval.training.loop import ResumePoint, TrainingLoop, training_samples


def sample(task: str, doc_id: int, output_type: str = "multiple_choice") -> Sample:
    return Sample(task, doc_id, "Q?", output_type, "Q?", continuations=(" a", " b"), choices=("a", "b"), gold=0)


def test_training_samples_draw_the_fraction_with_the_seed_in_document_order():
    samples = [sample(task, i) for task in ("b", "a") for i in range(10)]
    drawn = training_samples(samples, TrainingBudget(train_fraction=0.25, seed=3), "RoMA")
    expected = sorted(random.Random(3).sample(samples, 5), key=lambda s: (s.task, s.doc_id))
    assert drawn == expected and drawn != training_samples(samples, TrainingBudget(train_fraction=0.25, seed=4), "x")
    assert training_samples(samples, TrainingBudget(), "RoMA") == samples  # all of them, in the given order
    with pytest.raises(RomaEvalError, match="Prompt Tuning trains on multiple-choice tasks .* drop the generation"):
        training_samples([*samples, sample("gsm8k", 0, "generate_until")], TrainingBudget(), "Prompt Tuning")


def test_a_resume_point_continues_its_own_run_only(tmp_path):
    weight = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    optimizer = torch.optim.AdamW([weight], lr=0.1)
    weight.grad = torch.tensor([0.5, -0.5])
    optimizer.step()
    ResumePoint(tmp_path / "out.partial", {"lr": 0.1}).save({"w": weight}, optimizer, {"epoch": 0})

    fresh = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    weights, progress = ResumePoint(tmp_path / "out.partial", {"lr": 0.1}).load(fresh)
    assert torch.equal(weights["w"], weight.detach()) and progress["epoch"] == 0
    assert torch.equal(fresh.state_dict()["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"])
    with pytest.raises(RomaEvalError, match="out.partial holds an interrupted run with a different configuration"):
        ResumePoint(tmp_path / "out.partial", {"lr": 0.2}).load(fresh)
    assert ResumePoint(tmp_path / "out.partial", {"lr": 0.2}, refuse_others=False).load(fresh) is None
    assert ResumePoint(tmp_path / "nothing.partial", {"lr": 0.1}).load(fresh) is None


def run_steps(config, values: list[tuple], tmp_path) -> TrainingLoop:
    """Steps whose (task, regulariser, λ, broken) are ``values``, through a loop of one epoch."""
    loop = TrainingLoop(config, len(values) * config.batch_size, tmp_path / "out", {}, "router", "test", False)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    for _ in loop.epochs():
        for n, (task, reg, lam, broken) in enumerate(values):
            loop.begin_step()
            loop.set_lr(optimizer)
            loop.end_step(torch.tensor(task), torch.tensor(broken), None if reg is None else torch.tensor(reg), lam,
                          flush=n == len(values) - 1)
    return loop


def test_the_log_is_eq_9_per_step_and_a_non_finite_value_stops_at_its_step(tmp_path):
    config = SimpleNamespace(**TrainingBudget(epochs=1, batch_size=2, warmup_steps=0).to_dict(), lr=0.1, lam=0.8,
                             log_every=2)
    loop = run_steps(config, [(1.0, 0.5, 0.4, 0), (2.0, 0.25, 0.8, 0), (3.0, 0.0, 0.8, 0)], tmp_path)
    assert [e["loss"] for e in loop.log] == [1.0 + 0.4 * 0.5, 2.0 + 0.8 * 0.25, 3.0]
    assert [(e["step"], e["epoch"], e["lr"], e["lambda"]) for e in loop.log] == [(0, 0, 0.1, 0.4), (1, 0, 0.1, 0.8),
                                                                                 (2, 0, 0.1, 0.8)]
    adapter = run_steps(config, [(1.5, None, None, 0)], tmp_path)  # no regulariser: the task loss, no λ
    assert [{k: v for k, v in e.items() if k != "seconds"} for e in adapter.log] == [
        {"step": 0, "epoch": 0, "loss": 1.5, "task": 1.5, "lr": 0.1}]
    with pytest.raises(RomaEvalError, match=r"the loss became nan at step 1; lower --lr \(now 0.1\) or --lam \(now "
                                            r"0.8\); the last finished epoch is kept for resuming"):
        run_steps(config, [(1.0, 0.5, 0.8, 0), (math.nan, 0.5, 0.8, 0)], tmp_path)
    with pytest.raises(RomaEvalError, match=r"the router update of step 0 made 3 router values NaN or inf; lower --lr "
                                            r"\(now 0.1\); nothing of this epoch was saved"):
        run_steps(config, [(1.0, 0.5, 0.8, 3)], tmp_path)
    assert not (tmp_path / "out.partial").exists()  # the loop above never reached the end of its epoch
