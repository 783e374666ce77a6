"""ICL: retrieved examples in lm-eval's own few-shot format.  The reference is lm-eval's ``fewshot_context`` of the
evaluation task with the chosen training documents as its few-shot documents (lm-eval's ``FirstNSampler``)."""

import pytest
import torch

from roma_eval.methods.icl import IclConfig, build_demonstrations, install_demonstrations
from roma_eval.samples import samples_from_task
from roma_eval.tiny import build_tiny_model

# The tests on lm-eval's own tasks are slow (its task index, ~12 s, once per module); the verb's runs on fixture tasks.


@pytest.fixture(scope="module")
def manager():
    import offline_hub
    from lm_eval.tasks import TaskManager

    with offline_hub.more_rows(train=48):  # a pool of a few right answers even for a random tiny model
        yield TaskManager()


@pytest.fixture(scope="module")
def embedder():
    from roma_eval.embedding import load_embedder

    return load_embedder()


@pytest.fixture(scope="module")
def model(tokenizer):
    return build_tiny_model("olmoe", tokenizer, seed=5)


def task(manager, name):
    return manager.load([name])["tasks"][name]


def reference_prompt(manager, eval_name, train_name, doc, chosen_ids, pool, k):
    """lm-eval's own few-shot prompt of ``doc`` whose few-shot documents are the chosen training documents."""
    from lm_eval.api.samplers import FirstNSampler

    train_docs = list(task(manager, train_name).training_docs())
    few_shot = [train_docs[pool[i]["doc_id"]] for i, _ in chosen_ids]
    assert all(pool[i]["task"] == train_name for i, _ in chosen_ids)
    reference = task(manager, eval_name)
    reference.sampler = FirstNSampler(few_shot)
    return reference.fewshot_context(doc, k)


@pytest.mark.slow
@pytest.mark.parametrize("eval_name, train_name", [("arc_challenge", "arc_easy"), ("winogrande", "winogrande")])
def test_icl_prompt_is_lm_evals_own_few_shot_prompt(manager, model, tokenizer, embedder, eval_name, train_name):
    k = 2
    evaluated, train = task(manager, eval_name), task(manager, train_name)
    demos = build_demonstrations(model, tokenizer, {train_name: train}, {eval_name: evaluated},
                                 IclConfig(k=k, batch_size=8), limit=4, embedder=embedder)
    zero_shot = {s.doc_id: s for s in samples_from_task(evaluated, "eval", 4)}
    install_demonstrations(evaluated, demos, k)
    evaluated.build_all_requests(limit=4, rank=0, world_size=1)  # lm-eval's own request building
    requests = {}
    for instance in evaluated.instances:
        requests.setdefault(instance.doc_id, []).append(instance.args[0])
    assert len(requests) == 4
    for doc_id, doc in list(evaluated.doc_iterator())[:4]:
        chosen = demos.chosen[eval_name][doc_id]
        expected = reference_prompt(manager, eval_name, train_name, doc, chosen, demos.pool, k)
        expected = expected if isinstance(expected, list) else [expected] * len(requests[doc_id])
        assert requests[doc_id] == expected
        assert evaluated.config.num_fewshot == k
        # the chosen examples are the k nearest successful training samples, the nearest last
        distances = [d for _, d in chosen]
        assert len(chosen) == k and distances == sorted(distances, reverse=True)
        assert all(p.endswith(c) for p, c in zip(requests[doc_id], zero_shot[doc_id].contexts))


@pytest.mark.slow
def test_pool_is_the_success_set_and_neighbours_are_roma_s(manager, model, tokenizer, embedder):
    """Brute force: score every training sample, keep the right ones, rank them by embedding distance."""
    from roma_eval.embedding import embed
    from roma_eval.scoring import score_samples

    train, evaluated = task(manager, "arc_easy"), task(manager, "arc_challenge")
    demos = build_demonstrations(model, tokenizer, {"arc_easy": train}, {"arc_challenge": evaluated},
                                 IclConfig(k=3, order="nearest_first", batch_size=8), limit=3, embedder=embedder)
    samples = samples_from_task(train, "train")
    right = [s for s, r in zip(samples, score_samples(model, tokenizer, samples, max_length=512)) if r.acc == 1.0]
    assert [(p["task"], p["doc_id"]) for p in demos.pool] == [(s.task, s.doc_id) for s in right]
    pool = torch.tensor(embed([s.text for s in right], embedder))
    for query in samples_from_task(evaluated, "eval", 3):
        d2 = ((pool - torch.tensor(embed([query.text], embedder))) ** 2).sum(1)
        assert [i for i, _ in demos.chosen["arc_challenge"][query.doc_id]] == d2.argsort()[:3].tolist()


@pytest.mark.slow
def test_a_description_stays_first_and_other_tasks_examples_keep_their_own_format(manager, model, tokenizer,
                                                                                    embedder):
    """MMLU (a description, another format than the examples'): description, examples as their own task writes
    them, each followed by MMLU's few-shot delimiter, then MMLU's own zero-shot question."""
    evaluated = task(manager, "mmlu_anatomy")
    demos = build_demonstrations(model, tokenizer, {"arc_easy": task(manager, "arc_easy")},
                                 {"mmlu_anatomy": evaluated}, IclConfig(k=2, batch_size=8), limit=2, embedder=embedder)
    docs = list(evaluated.doc_iterator())[:2]
    zero_shot = [evaluated.fewshot_context(doc, 0) for _, doc in docs]
    install_demonstrations(evaluated, demos, 2)
    description = evaluated.config.description
    for (doc_id, doc), plain in zip(docs, zero_shot):
        examples = "".join(demos.pool[i]["question"] + demos.pool[i]["answer"] + evaluated.config.fewshot_delimiter
                           for i, _ in demos.chosen["mmlu_anatomy"][doc_id])
        assert plain.startswith(description)
        assert evaluated.fewshot_context(doc, 2) == description + examples + plain[len(description):]


def test_the_icl_verb_ends_with_lm_evals_results_table(tmp_path, tokenizer, capsys):
    """`roma-eval icl` prints lm-eval's own table of the results it wrote, as `lm_eval` does after a run."""
    import json

    from lm_eval.utils import make_table
    from lm_eval_helpers import FIXTURE_TASKS

    from roma_eval.cli import main
    from roma_eval.tiny import save_tiny_model

    model = save_tiny_model("olmoe", tmp_path / "model", seed=5, tokenizer=tokenizer)
    capsys.readouterr()
    assert main(["icl", "--pretrained", str(model), "--tasks", "tiny_animals", "--train_tasks", "tiny_animals_train",
                 "--include_path", str(FIXTURE_TASKS), "--limit", "4", "--k", "1",
                 "--output_path", str(tmp_path / "icl"), "--no_progress"]) == 0
    (results_file,) = (tmp_path / "icl").glob("*/results_*.json")
    results = json.loads(results_file.read_text())
    assert results["results"]["tiny_animals"]["acc,none"] is not None
    assert make_table(results) in capsys.readouterr().out
