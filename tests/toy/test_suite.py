"""The generated toy tasks: deterministic, disjoint from the training data, and semantically clustered."""

import itertools
import random
import re

import pytest

from roma_eval.errors import RomaEvalError
from roma_eval.toy import suite
from roma_eval.toy.benchmarks import BENCHMARKS, benchmark_docs, gsm8k_docs
from roma_eval.toy.corpus import documents
from roma_eval.toy.families import family_templates
from roma_eval.toy.templates import make_docs


def eval_docs():
    return [d for t in suite.EVAL_TASKS for d in suite.task_splits(t)["test"]]


def prompt_of(doc):
    return doc["prompt"] if "prompt" in doc else f"Question: {doc['question']}\nAnswer:"


def test_generation_is_deterministic_and_independent_of_call_order():
    # Rebuilt from scratch (no cache), in another order, with Python's global RNG disturbed.
    random.seed(123)
    again = {f"toy_{n}": benchmark_docs(n, suite.SEED) for n in reversed(BENCHMARKS)}
    for task, docs in again.items():
        assert docs == list(suite.task_splits(task)["test"]), task
    assert gsm8k_docs(suite.SEED) == list(suite.task_splits("toy_gsm8k")["test"])
    family = "toy_train_zoology"
    rebuilt = make_docs(family, family_templates("zoology"), suite.SEED, limit=suite.FAMILY_SIZE)
    splits = suite.task_splits(family)
    assert rebuilt == list(splits["test"]) + list(splits["train"])


def test_multiple_choice_docs_are_well_formed():
    for task in suite.ALL_TASKS:
        for split, docs in suite.task_splits(task).items():
            assert len(docs) >= 10, (task, split)
            prompts = [prompt_of(d) for d in docs]
            assert len(set(prompts)) == len(prompts), f"{task} {split} repeats a prompt"
            for doc in docs:
                if "choices" in doc:
                    assert 0 <= doc["label"] < len(doc["choices"]) and len(set(doc["choices"])) == len(doc["choices"])
                else:
                    assert doc["answer"].isdigit() and 0 <= int(doc["answer"]) <= 10


def test_gsm8k_answers_are_the_arithmetic_of_the_question():
    sign = {"buys": 1, "finds": 1, "gives": -1, "loses": -1}
    for doc in suite.task_splits("toy_gsm8k")["test"]:
        start = int(re.match(r"\w+ has (\d+) ", doc["question"]).group(1))
        changes = re.findall(r"(buys|finds|gives|loses) (\d+)", doc["question"])
        assert len(changes) == 2
        assert str(start + sum(sign[verb] * int(n) for verb, n in changes)) == doc["answer"], doc["question"]


def test_sizes_let_a_three_point_difference_be_significant_and_the_mixture_is_large():
    for task in suite.EVAL_TASKS:
        assert len(suite.task_splits(task)["test"]) >= 400, task
    assert len(suite.mixture_training_docs()) >= 5000
    for task in suite.TRAIN_TASKS:
        assert len(suite.task_splits(task)["train"]) >= 600, task


def test_train_and_test_splits_of_the_mixture_are_disjoint():
    for task in suite.TRAIN_TASKS:
        splits = suite.task_splits(task)
        assert not {d["prompt"] for d in splits["train"]} & {d["prompt"] for d in splits["test"]}, task
        assert len(splits["test"]) == round(suite.TEST_FRACTION * (len(splits["train"]) + len(splits["test"])))


def test_no_evaluation_prompt_is_in_the_training_mixture_or_the_pretraining_text():
    mixture = [d for t in suite.TRAIN_TASKS for split in ("train", "test") for d in suite.task_splits(t)[split]]
    seen_lines = {line for d in mixture for line in d["prompt"].split("\n")}
    seen_lines |= {line for doc in itertools.islice(documents(seed=0), 30_000) for line in doc.split("\n")}
    for doc in eval_docs():
        for line in prompt_of(doc).split("\n"):
            if line not in ("", "Answer:"):
                assert line not in seen_lines, f"evaluation text {line!r} is in the training data"
    # ... while the skills overlap: every evaluation skill family is trained on.
    trained = {d["skill"].split("/")[0] for d in mixture}
    tested = {d["skill"].split("/")[0] for d in eval_docs()} - {"arithmetic"}
    assert tested <= trained


def test_no_winogrande_sentence_is_in_the_pretraining_text():
    """The WinoGrande analogue scores whole sentences (an option in the blank, then the rest): the text has its
    frames and names, never those sentences (``phrases.coreference_pair``)."""
    text = "\n".join(itertools.islice(documents(seed=0), 30_000))
    docs = suite.task_splits("toy_winogrande")["test"]
    for doc in docs:
        for context in doc["contexts"]:
            assert f"{context} {doc['continuation']}" not in text, context
    assert all(re.search(rf"because \w+ {re.escape(doc['continuation'])}", text) for doc in docs)


@pytest.mark.slow
def test_the_pretraining_text_holds_no_question_of_the_mixture():
    """As in the paper, the router post-training mixture is new data for the base model: none of its questions
    or passages is in the pretraining text (its Question/Answer layout is, as lm-eval's is on the web)."""
    text = "\n".join(itertools.islice(documents(seed=0), 30_000))
    for task in suite.TRAIN_TASKS:
        for split in ("train", "test"):
            for doc in suite.task_splits(task)[split]:
                for line in doc["prompt"].split("\n"):
                    question = line.removeprefix("Question: ")
                    if question not in ("", "Answer:"):
                        assert question not in text, f"{task} text {question!r} is in the pretraining text"


def test_the_training_mixture_has_no_arithmetic_but_the_pretraining_text_does():
    digits = [d for t in suite.TRAIN_TASKS for d in suite.task_splits(t)["train"]
              if any(ch.isdigit() for ch in d["prompt"] + "".join(d["choices"]))]
    assert digits == []
    assert any(" plus " in doc for doc in itertools.islice(documents(seed=0), 2000))


def test_pretraining_text_is_deterministic_for_a_seed():
    first = list(itertools.islice(documents(seed=3), 500))
    assert first == list(itertools.islice(documents(seed=3), 500))
    assert first != list(itertools.islice(documents(seed=4), 500))


def test_unknown_task_is_a_user_error():
    with pytest.raises(RomaEvalError, match="toy_mmlu"):
        suite.task_splits("toy_nonsense")


def test_embedding_neighbours_share_a_skill():
    """MiniLM places each evaluation sample near samples of the same skill far more often than chance."""
    import numpy as np

    from roma_eval.embedding import embed

    docs = eval_docs()
    vectors = embed([prompt_of(d) for d in docs])
    assert vectors.dtype == np.float32 and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    skills = np.array([d["skill"] for d in docs])
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)
    nearest = np.argsort(-similarity, axis=1)[:, :3]
    same = (skills[nearest] == skills[:, None]).mean()
    _, counts = np.unique(skills, return_counts=True)
    by_chance = ((counts / len(docs)) ** 2).sum()
    assert same > 0.6 and same > 4 * by_chance, (same, by_chance)
