"""What the router-training verbs print (commands/router_training.py): the training tasks' held-out accuracy before
and after training, checked against lm-eval's own per-sample acc of the base model and of the printed `lm_eval
--model roma` command's checkpoint; which documents count as held out (roma_eval/heldout.py); and the learning-rate
note in `--help`."""

import re
import shlex

import pytest
from lm_eval_helpers import FIXTURE_TASKS, evaluate_api, evaluate_cli

from roma_eval.cli import main
from roma_eval.heldout import heldout_set
from roma_eval.samples import load_samples
from roma_eval.tiny import save_tiny_model

# Weights ten times transformers' default scale and a large router step: training flips held-out answers.
TRAIN = ["--tasks", "tiny_parity", "--include_path", str(FIXTURE_TASKS), "--layers", "last:2", "--lr", "0.5",
         "--epochs", "3", "--batch-size", "8", "--k", "2", "--regulariser", "none", "--no_progress"]


def mean_acc(per_sample: dict) -> float:
    return sum(metrics["acc"] for _, metrics in per_sample.values()) / len(per_sample)


@pytest.mark.slow
def test_train_prints_heldout_accuracy_before_and_after_and_the_lm_eval_command(tmp_path, tokenizer, capsys):
    model = save_tiny_model("olmoe", tmp_path / "model", seed=11, tokenizer=tokenizer, initializer_range=0.3)
    capsys.readouterr()
    assert main(["train", "--pretrained", str(model), "--output_path", str(tmp_path / "routers"), *TRAIN]) == 0
    printed = capsys.readouterr().out
    found = re.search(r"accuracy before -> after training: ([\d.]+)% -> ([\d.]+)% \(([+-][\d.]+) points, lr 0.5; "
                      r"16 held-out documents of tiny_parity\)", printed)
    assert found, printed
    before, after = float(found[1]), float(found[2])
    # The independent reference: lm-eval's own acc on tiny_parity's test split, base (`hf`) and tuned (the printed
    # command's model and model_args, run as plain `lm_eval`: it loads the checkpoint).
    command = shlex.split(printed.split("evaluate it with:\n")[1].splitlines()[0])
    assert command[:3] == ["lm_eval", "--model", "roma"] and command[5:] == ["--tasks", "roma_paper",
                                                                            "--include_path", command[-1]]
    model_args = command[4]
    assert model_args == f"pretrained={model},router_checkpoint={(tmp_path / 'routers').resolve()}"
    base = evaluate_api("hf", f"pretrained={model}", ["tiny_parity"])["tiny_parity"]
    tuned = evaluate_cli("roma", model_args, ["tiny_parity"], tmp_path / "lm_eval")["tiny_parity"]
    assert before == pytest.approx(100 * mean_acc(base), abs=0.05)
    assert after == pytest.approx(100 * mean_acc(tuned), abs=0.05)
    assert before != after  # training moved held-out answers: the two figures are not the same model twice


def test_no_heldout_eval_skips_it(tmp_path, tokenizer, capsys):
    model = save_tiny_model("olmoe", tmp_path / "model", seed=11, tokenizer=tokenizer)
    capsys.readouterr()
    assert main(["train", "--pretrained", str(model), "--output_path", str(tmp_path / "routers"), *TRAIN,
                 "--epochs", "1", "--no_heldout_eval"]) == 0
    printed = capsys.readouterr().out
    assert "accuracy" not in printed and "lm_eval --model roma" in printed


@pytest.fixture
def mixture_like(tmp_path):
    """A task whose evaluation split is its training split (test_split: train), as in tasks/roma_paper_train."""
    (tmp_path / "mixture_docs.py").write_text(
        "import datasets\n\n\ndef rows(**kwargs):\n    return datasets.DatasetDict({'train': datasets.Dataset."
        "from_list([{'question': f'Is {n} even or odd?', 'choices': ['even', 'odd'], 'label': n % 2} "
        "for n in range(6)])})\n")
    (tmp_path / "mixture_like.yaml").write_text(
        "task: mixture_like\ncustom_dataset: !function mixture_docs.rows\noutput_type: multiple_choice\n"
        "training_split: train\ntest_split: train\ndoc_to_text: '{{question}}'\ndoc_to_choice: '{{choices}}'\n"
        "doc_to_target: label\nmetric_list:\n  - metric: acc\n")
    return [str(FIXTURE_TASKS), str(tmp_path)]


def test_heldout_documents_are_the_evaluation_splits_that_are_not_training_splits(mixture_like):
    held = heldout_set(["tiny_parity", "mixture_like"], mixture_like, limit=5)
    assert (held.split, held.tasks, held.without) == ("held-out", ["tiny_parity"], ["mixture_like"])
    test_docs = load_samples(["tiny_parity"], split="eval", include_path=mixture_like, limit=5)
    assert held.samples == test_docs and not set(s.context for s in held.samples) & set(
        s.context for s in load_samples(["tiny_parity"], split="train", include_path=mixture_like))
    assert "mixture_like left out" in held.describe()
    # No task with a held-out split: the training documents, said so.
    alone = heldout_set(["mixture_like"], mixture_like)
    assert alone.split == "train" and alone.samples == load_samples(["mixture_like"], split="train",
                                                                     include_path=mixture_like)
    assert "no held-out split" in alone.describe() and "not generalisation" in alone.describe()


@pytest.mark.parametrize("verb", ["train", "dense-bp", "oracle-tuning"])
def test_help_says_the_default_lr_is_the_papers_models_and_small_models_need_more(verb, capsys):
    with pytest.raises(SystemExit):
        main([verb, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--lr 7e-05 is RoMA's released trainer's" in text and "models of the paper's size (1-30B" in text
    assert "toy MoE's routers train at 1e-2" in text and "--no_heldout_eval" in text
