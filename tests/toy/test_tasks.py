"""The toy YAMLs load through lm-eval's own TaskManager, from any directory and from a wheel's layout."""

import shutil

import pytest

from roma_eval.resources import tasks_dir
from roma_eval.toy import suite


def load(include_path, names):
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(include_path), include_defaults=False)
    return manager.load(names)["tasks"]


@pytest.fixture(scope="module")
def suite_tasks():
    return load(tasks_dir(), [suite.EVAL_GROUP, suite.TRAIN_GROUP])


def test_groups_hold_the_eight_benchmarks_and_the_mixture(suite_tasks):
    assert set(suite_tasks) == set(suite.EVAL_TASKS) | set(suite.TRAIN_TASKS)
    assert len(suite.EVAL_TASKS) == 8 and len(suite.TRAIN_TASKS) == 8


def test_lm_eval_sees_the_generated_docs(suite_tasks):
    for name, task in suite_tasks.items():
        docs = [doc for _, doc in task.doc_iterator()]
        expected = suite.task_splits(name)["test"]
        assert [d["id"] for d in docs] == [d["id"] for d in expected], name
        first = expected[0]
        if name == "toy_gsm8k":
            assert task.OUTPUT_TYPE == "generate_until"
            assert task.doc_to_text(docs[0]) == f"Question: {first['question']}\nAnswer:"
            assert task.doc_to_target(docs[0]) == first["answer"]
        elif name == "toy_winogrande":  # lm-eval's winogrande form: one context per option, a shared continuation
            assert task.OUTPUT_TYPE == "multiple_choice" and task.multiple_input
            before, after = first["prompt"].split("_")
            assert task.doc_to_text(docs[0]) == first["label"]
            assert task.doc_to_choice(docs[0]) == [before + option for option in first["choices"]]
            assert task.doc_to_target(docs[0]) == after.strip()
        else:
            assert task.OUTPUT_TYPE == "multiple_choice"
            assert task.doc_to_text(docs[0]) == first["prompt"]
            assert task.doc_to_choice(docs[0]) == first["choices"]
            assert task.doc_to_target(docs[0]) == first["label"]


def test_the_mixture_has_labelled_training_docs(suite_tasks):
    for name in suite.TRAIN_TASKS:
        task = suite_tasks[name]
        assert task.has_training_docs()
        assert [d["id"] for d in task.training_docs()] == [d["id"] for d in suite.task_splits(name)["train"]]


def test_loads_from_another_directory_and_from_a_wheel_layout(tmp_path, monkeypatch):
    # An installed wheel holds the YAMLs at roma_eval/tasks (pyproject force-include); lm-eval
    # resolves relative paths against the working directory, which must not matter here.
    copy = tmp_path / "site-packages" / "roma_eval" / "tasks"
    shutil.copytree(tasks_dir(), copy)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    tasks = load(copy, ["toy_arc_easy", "toy_train_tools"])
    assert len(list(tasks["toy_arc_easy"].doc_iterator())) == len(suite.task_splits("toy_arc_easy")["test"])
    assert len(tasks["toy_train_tools"].training_docs()) == len(suite.task_splits("toy_train_tools")["train"])


def test_roma_reads_the_mixture_through_samples():
    from roma_eval.samples import load_samples

    samples = load_samples([suite.TRAIN_GROUP], split="train")
    assert len(samples) == len(suite.mixture_training_docs())
    by_task = {s.task for s in samples}
    assert by_task == set(suite.TRAIN_TASKS)
    sample = next(s for s in samples if s.task == "toy_train_geography")
    doc = suite.task_splits("toy_train_geography")["train"][sample.doc_id]
    assert sample.context == doc["prompt"] and sample.gold == doc["label"]
    assert sample.continuations == tuple(" " + c for c in doc["choices"])
