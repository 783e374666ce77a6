"""LR and λ schedules (training/schedule.py) against plain formulas written here, on the function and on the per-step
training logs of real tiny runs; their flags and attributions in `--help`."""

import contextlib
import io
import json
import math

import pytest
from lm_eval_helpers import FIXTURE_TASKS

from roma_eval.methods.roma.config import RomaConfig
from roma_eval.samples import load_samples
from roma_eval.tiny import build_tiny_model
from roma_eval.training.schedule import StepSchedule


def brute_warmup(steps, ratio, total):
    """The documented rule: a share of the run (at least one step when positive), else the steps, at most half."""
    if ratio is not None:
        return max(1, round(ratio * total)) if ratio > 0 else 0
    return min(steps, total // 2)


def brute_lr(name, step, warmup, total):
    """Step ``step`` (0-based): (step + 1) / warmup during the warm-up, then constant / linear / cosine to 0."""
    if step < warmup:
        return (step + 1) / warmup
    if name == "constant":
        return 1.0
    done = (step - warmup) / (total - warmup)
    return 1 - done if name == "linear" else (1 + math.cos(math.pi * done)) / 2


def brute_lam(step, warmup):
    return min(1.0, (step + 1) / warmup) if warmup else 1.0


@pytest.mark.parametrize("name", ["constant", "linear", "cosine"])
def test_schedule_function_is_the_formula(name):
    for total in range(1, 41):
        for steps, ratio in [(0, None), (1, None), (3, None), (2000, None), (0, 0.0), (0, 0.1), (0, 0.25), (0, 1.0)]:
            config = RomaConfig(lr_schedule=name, warmup_steps=steps, warmup_ratio=ratio, lam_warmup_steps=steps,
                                lam_warmup_ratio=ratio)
            schedule = StepSchedule.of(config, total)
            warmup = brute_warmup(steps, ratio, total)
            assert (schedule.warmup, schedule.lam_warmup) == (warmup, warmup)
            for step in range(total):
                assert schedule.lr(step) == pytest.approx(brute_lr(name, step, warmup, total), abs=1e-12)
                assert schedule.lam(step) == pytest.approx(brute_lam(step, warmup), abs=1e-12)


def test_defaults_are_the_released_warmups_capped_at_half_the_run():
    """The released trainer: 2,000 warm-up steps, then a constant LR; ours: at most half the run's steps."""
    for total, warmup in [(4594, 2000), (4001, 2000), (3999, 1999), (459, 229), (8, 4), (1, 0)]:
        schedule = StepSchedule.of(RomaConfig(), total)
        assert (schedule.name, schedule.warmup, schedule.lam_warmup) == ("constant", warmup, warmup)
    released = StepSchedule.of(RomaConfig(), 4594)
    assert released.lr(999) == 0.5 and all(released.lr(s) == 1.0 for s in range(1999, 4594))
    # The 49k mixture's run: our former 10% warm-up + linear decay gave ~36% less summed learning rate.
    former = StepSchedule.of(RomaConfig(lr_schedule="linear", warmup_ratio=0.1), 4594)
    assert 1 - sum(map(former.lr, range(4594))) / sum(map(released.lr, range(4594))) == pytest.approx(0.36, abs=0.01)


def test_router_and_peft_baselines_take_the_schedule_fields():
    from roma_eval.methods.dense_bp import DenseBPConfig
    from roma_eval.methods.oracle_tuning import OracleTuningConfig
    from roma_eval.methods.peft_tuning import PeftTuningConfig

    schedule = dict(lr_schedule="cosine", warmup_steps=7, warmup_ratio=None)
    oracle = OracleTuningConfig(oracle_routing="x", lam_warmup_steps=5, lam_warmup_ratio=0.3, **schedule)
    roma = RomaConfig.sharing(oracle)
    assert (roma.lr_schedule, roma.warmup_steps, roma.lam_warmup_steps, roma.lam_warmup_ratio) == ("cosine", 7, 5, 0.3)
    assert RomaConfig.sharing(DenseBPConfig(lr_schedule="linear")).lr_schedule == "linear"
    peft = StepSchedule.of(PeftTuningConfig(**schedule), 20)
    assert [peft.lr(s) for s in range(20)] == pytest.approx([brute_lr("cosine", s, 7, 20) for s in range(20)])


@pytest.mark.parametrize("field, value, match", [
    ("lr_schedule", "step", "lr_schedule='step' is unknown"), ("warmup_steps", -1, "warmup_steps=-1"),
    ("lam_warmup_ratio", 1.5, r"lam_warmup_ratio=1.5 must be in \[0, 1\]"),
])
def test_bad_schedules_are_one_clear_error(field, value, match):
    from roma_eval.errors import RomaEvalError
    from roma_eval.methods.peft_tuning import PeftTuningConfig

    with pytest.raises(RomaEvalError, match=match):
        RomaConfig(**{field: value})
    if not field.startswith("lam"):
        with pytest.raises(RomaEvalError, match=match):
            PeftTuningConfig(**{field: value})


@pytest.fixture(scope="module")
def train_samples():
    return load_samples(["tiny_parity"], split="train", include_path=[FIXTURE_TASKS])


# Three epochs of 4 steps (32 samples, batch 8): 12 steps.  The constant run keeps the default warm-ups (2,000 steps,
# capped at 6), the others set steps or shares; the cosine run also uses the released kernel.
RUNS = {"constant": dict(), "linear": dict(warmup_steps=3, lam_warmup_steps=5),
        "cosine": dict(warmup_ratio=0.25, lam_warmup_ratio=0.5, kernel="released")}


@pytest.mark.parametrize("name", list(RUNS))
def test_training_log_follows_the_schedule(name, tokenizer, train_samples, tmp_path):
    """The learning rate and λ each step of a real run logs are the formulas' (lr · factor, λ · ramp)."""
    from roma_eval.checkpoint import load_router_checkpoint
    from roma_eval.embedding import load_embedder
    from roma_eval.methods.roma.train import train_roma

    config = RomaConfig(layers="last:2", epochs=3, batch_size=8, lr=5e-2, k=2, lr_schedule=name, log_every=5,
                        **RUNS[name])
    train_roma(build_tiny_model("olmoe", tokenizer, seed=11), tokenizer, train_samples, tmp_path / "out", config,
               base_model="tiny", embedder=load_embedder(), progress=False)
    log = [json.loads(line) for line in (tmp_path / "out" / "training_log.jsonl").read_text().splitlines()]
    total = 12
    warmup = brute_warmup(config.warmup_steps, config.warmup_ratio, total)
    lam_warmup = brute_warmup(config.lam_warmup_steps, config.lam_warmup_ratio, total)
    assert (warmup, lam_warmup) == {"constant": (6, 6), "linear": (3, 5), "cosine": (3, 6)}[name]
    assert [entry["step"] for entry in log] == list(range(total))
    for entry in log:
        assert entry["lr"] == pytest.approx(5e-2 * brute_lr(name, entry["step"], warmup, total), rel=1e-12)
        assert entry["lambda"] == pytest.approx(0.8 * brute_lam(entry["step"], lam_warmup), rel=1e-12)
    training_config = load_router_checkpoint(tmp_path / "out").metadata["training_config"]
    assert training_config["lr_schedule"] == name and training_config["kernel"] == RUNS[name].get("kernel", "eq5")
    assert training_config["summary"]["schedule"] == {"lr_schedule": name, "steps": total, "warmup_steps": warmup,
                                                      "lam_warmup_steps": lam_warmup}


def test_peft_training_log_follows_the_schedule(tokenizer, train_samples, tmp_path):
    from roma_eval.methods.peft_tuning import PeftTuningConfig, train_peft_tuning

    config = PeftTuningConfig(method="prompt_tuning", num_virtual_tokens=2, epochs=2, batch_size=8,
                              lr_schedule="linear", warmup_steps=100)  # capped at 4 of the 8 steps
    run = train_peft_tuning(build_tiny_model("olmoe", tokenizer, seed=11), tokenizer, train_samples, tmp_path / "a",
                            config, base_model="tiny", progress=False)
    assert [e["lr"] for e in run.log] == pytest.approx([3e-2 * brute_lr("linear", s, 4, 8) for s in range(8)])


def help_text(verb: str) -> str:
    from roma_eval.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as stop:
        main([verb, "--help"])
    assert stop.value.code == 0
    return " ".join(out.getvalue().split())  # argparse wraps lines


def test_train_help_shows_the_schedule_and_kernel_flags_with_their_origin():
    text = help_text("train")
    assert "--lr_schedule {constant,linear,cosine}" in text and "--kernel {eq5,released}" in text
    assert "constant (the released code's; the paper states no schedule)" in text
    for flag in ("--warmup_steps", "--lam_warmup_steps"):
        flag_help = text.split(f"{flag} {flag[2:].upper()}, ")[1][:260]
        assert "(the released code's 2,000), at most 50% of the run's steps (ours" in flag_help
        assert "(default: 2000)" in flag_help
    assert "in place of --warmup_steps and its cap (ours)" in text
    assert "eq5: the paper's Eq. 5" in text and "released: the released code's exp(-(1 - cos)² / (2σ²))" in text
    assert "0.4: the released code's number for its own kernel" in text
    assert "linear warm-up over 10%" not in text  # the former schedule, once credited to the released code
    for verb in ("oracle-tuning", "dense-bp", "prompt-tuning"):
        assert "--lr_schedule {constant,linear,cosine}" in help_text(verb)
    assert "--lam_warmup_steps" in help_text("oracle-tuning")
