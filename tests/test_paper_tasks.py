"""tasks/roma_paper (the 8 benchmarks, zero-shot) and tasks/roma_paper_train (the 49k mixture), on the
offline hub: lm-eval's own YAMLs and prompts, the paper's counts, and no evaluation question in the mixture."""

import contextlib
import io
import re
import subprocess
import sys
import types
from pathlib import Path

import offline_hub
import pytest

from roma_eval.commands.tasks import mixture as mixture_spec
from roma_eval.harness import task_manager
from roma_eval.resources import tasks_dir
from roma_eval.results import DEFAULT_METRICS, PAPER_COLUMNS
from roma_eval.samples import load_samples, samples_from_task

# lm-eval's own task YAMLs: its task index (~8 s) and the offline hub rows, once per module.
pytestmark = pytest.mark.slow

# arXiv 2511.07419: the training mixture's sources and their sizes.
PAPER_MIXTURE = {"BIG-Bench": 10000, "SuperGLUE": 10000, "CommonsenseQA": 8000, "SocialIQA": 8000,
                 "OpenBookQA": 3000, "SciQ": 3000, "MultiRC": 4000, "KnowRef": 3000}
# lm-eval task (or MMLU subject prefix) -> the column holding its question, read here independently of
# the mixture's own decontamination (tasks/roma_paper_train/utils.py).
EVAL_QUESTION = {"mmlu_": "question", "hellaswag": "ctx", "arc_challenge": "question", "arc_easy": "question",
                 "piqa": "goal", "winogrande": "sentence", "boolq": "question", "gsm8k": "question"}
# offline_hub.COLLISIONS source -> a (dataset, config) whose synthetic training rows carry its collisions
COLLIDING_DATASET = {"commonsense_qa": ("tau/commonsense_qa", None), "superglue_rte": ("aps/super_glue", "rte"),
                     "sciq": ("allenai/sciq", None), "openbookqa": ("allenai/openbookqa", "main"),
                     "social_iqa": ("lighteval/siqa", None), "knowref": ("coref-data/knowref_60k_raw", None),
                     "multirc": ("aps/super_glue", "multirc"), "bigbench": ("hails/bigbench", "strategyqa_zero_shot")}
TRAIN_TASKS = {task for _, tasks in mixture_spec(tasks_dir()) for task, _, _ in tasks}


@pytest.fixture(scope="module", autouse=True)
def hub():
    with offline_hub.installed():
        yield


@pytest.fixture(scope="module")
def lm_eval_tasks():
    """lm-eval's full task index with tasks/ on the include path (the ~12 s index, built once here)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=[str(tasks_dir())])


@pytest.fixture(scope="module")
def paper(lm_eval_tasks):
    return lm_eval_tasks.load(["roma_paper"])


@pytest.fixture(scope="module")
def train_tasks():
    return task_manager(task_names=["roma_paper_train"]).load(["roma_paper_train"])


def norm(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def eval_questions(paper) -> set[str]:
    out = set()
    for name, task in paper["tasks"].items():
        column = next(col for prefix, col in EVAL_QUESTION.items() if name.startswith(prefix))
        out |= {norm(doc[column]) for doc in task.eval_docs}
    return out


def text_fields(doc: dict) -> set[str]:
    # KnowRef marks its pronoun [he] where WinoGrande has the blank _
    return {norm(v.replace("[he]", "_")) for v in doc.values() if isinstance(v, str)}


def repeats_a_question(doc: dict, questions: set[str]) -> bool:
    """Brute force: a text field contains an evaluation question of 8 words or more, or is one of 4 or more (the
    synthetic questions are all shorter than 13 words, the n-gram of the mixture's decontamination)."""
    return any(field == q or (len(q.split()) >= 8 and f" {q} " in f" {field} ")
               for field in text_fields(doc) for q in questions if len(q.split()) >= 4)


# ---- roma_paper -------------------------------------------------------------------------------------------

def test_roma_paper_is_the_papers_columns_all_zero_shot(paper):
    assert paper["group_map"]["roma_paper"] == list(PAPER_COLUMNS)
    leaves = paper["tasks"]
    assert len([t for t in leaves if t.startswith("mmlu_")]) == 57 and len(leaves) == 57 + 7
    assert {name: task.config.num_fewshot for name, task in leaves.items()} == dict.fromkeys(leaves, 0)


def test_roma_paper_prompts_are_lm_eval_zero_shot_prompts(paper, lm_eval_tasks):
    """Every leaf, grouped, builds exactly lm-eval's own fewshot_context(doc, 0) and its requests; gsm8k on
    its own would be 5-shot, so the group's pin is what makes it zero-shot."""
    own = lm_eval_tasks.load(list(paper["tasks"]))["tasks"]
    assert own["gsm8k"].config.num_fewshot == 5
    for name, task in paper["tasks"].items():
        for doc_id, doc in task.doc_iterator(limit=2):
            ctx = task.fewshot_context(doc, task.config.num_fewshot)
            assert ctx == own[name].fewshot_context(doc, 0), name
            ours = task.construct_requests(doc=doc, ctx=ctx, metadata=(name, doc_id, 1))
            theirs = own[name].construct_requests(doc=doc, ctx=own[name].fewshot_context(doc, 0),
                                                  metadata=(name, doc_id, 1))
            ours, theirs = (r if isinstance(r, list) else [r] for r in (ours, theirs))
            assert [r.args for r in ours] == [r.args for r in theirs], name
        assert samples_from_task(task, limit=2)  # and roma-eval's Samples build from them
    gsm8k_doc = next(own["gsm8k"].doc_iterator(limit=1))[1]
    assert own["gsm8k"].fewshot_context(gsm8k_doc, 0) == "Question: " + gsm8k_doc["question"] + "\nAnswer:"
    assert paper["tasks"]["gsm8k"].fewshot_context(gsm8k_doc, 0) != own["gsm8k"].fewshot_context(gsm8k_doc, 5)


def test_roma_paper_through_lm_eval_cli_fills_every_report_column(tmp_path, tokenizer):
    """Plain `lm_eval --include_path tasks --tasks roma_paper --num_fewshot 5`: every leaf still runs 0-shot,
    and `roma-eval report`'s reader finds each column's default metric (DEFAULT_METRICS) in the results."""
    from roma_eval.results import load_runs
    from roma_eval.tiny import save_tiny_model

    model = save_tiny_model("qwen3_moe", tmp_path / "m", seed=2, tokenizer=tokenizer)
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "lm_eval"), "--model", "hf", "--model_args", f"pretrained={model}",
         "--include_path", str(tasks_dir()), "--tasks", "roma_paper", "--num_fewshot", "5", "--limit", "1",
         "--gen_kwargs", "max_gen_toks=8", "--device", "cpu", "--batch_size", "8", "--output_path",
         str(tmp_path / "out")], capture_output=True, text=True, env=offline_hub.subprocess_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = load_runs([str(tmp_path / "out")])
    shots = run.data["n-shot"]  # leaves and groups
    assert set(shots.values()) == {0} and set(PAPER_COLUMNS) - {"mmlu"} | {"mmlu_anatomy",
                                                                           "mmlu_virology"} <= set(shots)
    columns = {b.name: b for b in run.benchmarks if b.suite == "paper"}
    assert set(columns) == set(PAPER_COLUMNS)
    for column, bench in columns.items():
        assert DEFAULT_METRICS[column][0] in run.metrics(bench), column


# ---- roma_paper_train -------------------------------------------------------------------------------------

def test_roma_eval_tasks_lists_both_groups_with_the_papers_counts():
    from roma_eval.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["tasks"]) == 0
    text = out.getvalue()
    assert text.startswith("roma_paper:") and "\nroma_paper_train: 49,000 training documents" in text
    for column in PAPER_COLUMNS:
        assert f"\n  {column} " in text
    assert {source: sum(size for _, size, _ in tasks) for source, tasks in mixture_spec(tasks_dir())} == PAPER_MIXTURE
    assert len(TRAIN_TASKS) == 22


def test_lm_eval_lists_both_groups():
    proc = subprocess.run([str(Path(sys.executable).parent / "lm_eval"), "ls", "groups", "--include_path",
                           str(tasks_dir())], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    listed = set(re.findall(r"^\|(\S+)\s*\|", proc.stdout, re.M))
    assert {"roma_paper", "roma_paper_train", "roma_paper_train_bigbench", "roma_paper_train_superglue"} <= listed


def water_fill(total: int, sizes: dict[str, int]) -> dict[str, int]:
    """Equal shares, capped at each task's size, the remainder shared equally among the rest."""
    quotas, left = {}, dict(sizes)
    while left:
        share = (total - sum(quotas.values())) // len(left)
        small = {t: n for t, n in left.items() if n <= share}
        if not small:
            extra = total - sum(quotas.values()) - share * len(left)
            return quotas | {t: share + (i < extra) for i, t in enumerate(sorted(left))}
        quotas |= small
        left = {t: n for t, n in left.items() if t not in small}
    return quotas


def test_quotas_split_bigbench_and_superglue_evenly():
    sources = dict(mixture_spec(tasks_dir()))
    for source in ("BIG-Bench", "SuperGLUE"):
        sizes = {task: train for task, _, train in sources[source]}
        assert {task: size for task, size, _ in sources[source]} == water_fill(PAPER_MIXTURE[source], sizes)
    assert all(size <= train for tasks in sources.values() for _, size, train in tasks)
    assert "roma_train_boolq" not in {t for tasks in sources.values() for t, _, _ in tasks}


def test_mixture_counts_are_the_papers_and_seeded():
    """With enough synthetic rows, every source samples exactly its quota: 49,000 documents in all, the same
    ones on every load, a sample rather than the first rows, none of them an evaluation question."""
    sources = {"hails/bigbench", "aps/super_glue", "tau/commonsense_qa", "lighteval/siqa", "allenai/openbookqa",
               "allenai/sciq", "coref-data/knowref_60k_raw"}
    with offline_hub.more_rows(sources, train=8400):
        manager = task_manager(task_names=["roma_paper_train"])
        first = manager.load(["roma_paper_train"])["tasks"]
        counts: dict[str, int] = {}
        for task in first.values():
            docs = task.training_docs()
            meta = task.config.metadata
            assert len(docs) == meta["sample_size"], task.config.task
            counts[meta["source"]] = counts.get(meta["source"], 0) + len(docs)
        assert counts == PAPER_MIXTURE and sum(counts.values()) == 49000
        again = manager.load(["roma_train_sciq"])["tasks"]["roma_train_sciq"]
        picked = list(first["roma_train_sciq"].training_docs()["question"])
        assert list(again.training_docs()["question"]) == picked
        raw = [row["question"] for row in offline_hub.rows("allenai/sciq", None, "train", 8400)]
        assert picked != raw[:3000] and set(picked) <= set(raw)


def test_mixture_loads_through_load_samples_with_labels():
    """roma_eval.samples.load_samples(["roma_paper_train"], split="train") is the mixture; lm-eval evaluates
    the same documents (test_split is the training split: the base model's right answers are RoMA's S)."""
    train = load_samples(["roma_paper_train"], split="train")
    assert {s.task for s in train} == TRAIN_TASKS
    assert all(0 <= s.gold < len(s.choices) for s in train)
    evaluated = load_samples(["roma_paper_train"], split="eval")
    assert [(s.task, s.context, s.continuations) for s in evaluated] == \
        [(s.task, s.context, s.continuations) for s in train]


def test_no_evaluation_question_is_in_the_mixture(paper, train_tasks):
    """The synthetic training rows copy evaluation questions, BIG-Bench's inside its formatted inputs with words
    around them (so this test can fail); the mixture keeps none, and no source reads BoolQ, an evaluation benchmark
    inside SuperGLUE."""
    questions = eval_questions(paper)
    colliding = {source for source, (path, name) in COLLIDING_DATASET.items()
                 if any(repeats_a_question(row, questions) for row in offline_hub.rows(path, name, "train"))}
    assert colliding == set(offline_hub.COLLISIONS)
    assert not any(text_fields(row) & questions for row in offline_hub.rows(*COLLIDING_DATASET["bigbench"], "train"))
    for name, task in train_tasks["tasks"].items():
        assert (task.config.dataset_path, task.config.dataset_name) != ("aps/super_glue", "boolq")
        for doc in task.training_docs():
            assert not repeats_a_question(doc, questions), (name, doc)
    assert len(train_tasks["tasks"]["roma_train_sciq"].training_docs()) == offline_hub.ROWS_PER_SPLIT - 1


def mixture_utils():
    """tasks/roma_paper_train/utils.py, as lm-eval's YAML loader imports it."""
    from lm_eval.tasks._yaml_loader import _load_module_with_cache

    return _load_module_with_cache(tasks_dir() / "roma_paper_train" / "utils.py")


def test_decontamination_finds_near_copies_inside_formatted_inputs():
    """A 13-gram shared with a long question, a whole 8-12-word question inside a BIG-Bench-style formatted input,
    and a field that is a short question are found; 12 shared words, a short question inside longer text and an
    unrelated question are not."""
    import datasets

    utils = mixture_utils()
    long_q = ("A baker sells 12 loaves every morning and 9 every evening; how many loaves does she sell in a "
              "week if the shop opens every day?")  # 26 words
    mid_q, short_q = "Which planet in the solar system has the most moons?", "Is the river deep?"
    questions = utils.EvalQuestions([long_q, mid_q, short_q, "Too short?"])
    words = utils.normalise(long_q).split()
    rows = {
        "13 words of the long one, reworded around them": "Q: Think: " + " ".join(words[5:18]) + " and then?\nA:",
        "the middle one, formatted, choices after it": f"Q: {mid_q}\n  choice: Saturn\n  choice: Mars\nA:",
        "the short one, as the whole field": "is the RIVER deep",
        "12 words of the long one": "Q: " + " ".join(words[5:17]) + " or not at all?\nA:",
        "the short one inside a sentence": "Q: Is the river deep? Yes, and cold.\nA:",
        "another question": "Q: How many moons does Jupiter have?\nA:",
        "the middle one, a word changed": "Which planet in the solar system has the fewest moons?",
    }
    dataset = datasets.Dataset.from_dict({"inputs": list(rows.values()), "idx": list(range(len(rows)))})
    assert [list(rows)[i] for i in utils.contaminated(dataset, questions)] == list(rows)[:3]
    assert (utils.NGRAM, utils.WHOLE_WORDS, utils.MIN_WORDS) == (13, 8, 4)


def test_roma_eval_tasks_counts_the_documents_each_source_leaves_out():
    """`roma-eval tasks --decontamination`: per source and task, the training documents left out of the whole
    (base-filtered) training split -- here the synthetic rows that copy an evaluation question, which every
    ``COLLIDE_EVERY``-th row of the colliding datasets does (every BIG-Bench task's, only RTE of SuperGLUE's)."""
    from roma_eval.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["tasks", "--decontamination"]) == 0
    copies = len(range(3, offline_hub.ROWS_PER_SPLIT, offline_hub.COLLIDE_EVERY))  # rows 3, 53, ...
    sources = dict(mixture_spec(tasks_dir()))
    expected = {source: copies * (len(tasks) if source == "BIG-Bench" else 1) for source, tasks in sources.items()}
    lines = out.getvalue().split("\nroma_paper_train:")[1].splitlines()
    left_out = {}
    for line in lines:
        if match := re.match(r"  (\S.*?)\s+[\d,]+   left out: ([\d,]+) of ([\d,]+)$", line):
            left_out[match[1]] = (int(match[2].replace(",", "")), int(match[3].replace(",", "")))
    assert {source: left_out[source][0] for source in sources} == expected
    assert {source: left_out[source][1] for source in sources} == {
        source: offline_hub.ROWS_PER_SPLIT * len(tasks) for source, tasks in sources.items()}
    rows = offline_hub.ROWS_PER_SPLIT
    assert re.search(rf"\n    roma_train_rte\s+[\d,]+  of [\d,]+   left out: {copies} of {rows}\n", out.getvalue())


def test_mixture_prompts_are_lm_eval_s(train_tasks, lm_eval_tasks):
    """Each source with an lm-eval task builds lm-eval's own zero-shot prompt, choices and gold on the same
    document; MultiRC's choices come in the order its label means (lm-eval's gold is the other one)."""
    own_name = {"roma_train_cb": "cb", "roma_train_copa": "copa", "roma_train_wsc": "wsc",
                "roma_train_rte": "sglue_rte",
                "roma_train_wic": "wic", "roma_train_multirc": "multirc", "roma_train_commonsense_qa": "commonsense_qa",
                "roma_train_social_iqa": "social_iqa", "roma_train_openbookqa": "openbookqa", "roma_train_sciq": "sciq"}
    own_name |= {t: f"bigbench_{t.removeprefix('roma_train_bigbench_')}_multiple_choice"
                 for t in TRAIN_TASKS if t.startswith("roma_train_bigbench_")}
    own = lm_eval_tasks.load(list(own_name.values()))["tasks"]
    for name, theirs_name in own_name.items():
        ours, theirs = train_tasks["tasks"][name], own[theirs_name]
        assert ours.config.num_fewshot == 0 and ours.config.metadata["lm_eval_task"]
        for doc in list(ours.training_docs())[:3]:
            assert ours.fewshot_context(doc, 0) == theirs.fewshot_context(doc, 0), name
            if name == "roma_train_multirc":
                assert ours.doc_to_choice(doc) == theirs.doc_to_choice(doc)[::-1]
                gold = ours.doc_to_choice(doc)[ours.doc_to_target(doc)]
                assert gold.endswith("yes" if doc["label"] == 1 else "no")  # label 1: the answer is correct
                assert theirs.doc_to_choice(doc)[theirs.doc_to_target(doc)] != gold
            else:
                assert ours.doc_to_choice(doc) == theirs.doc_to_choice(doc), name
                assert ours.doc_to_target(doc) == theirs.doc_to_target(doc), name


def squad_metrics_v4() -> types.ModuleType:
    """transformers 4's ``transformers.data.metrics.squad_metrics`` (the functions lm-eval's record util.py calls),
    as that release wrote them: the reference for lm-eval's em, which transformers 5 no longer ships."""
    import collections
    import string

    def normalize_answer(s):
        def remove_articles(text):
            return re.sub(re.compile(r"\b(a|an|the)\b", re.UNICODE), " ", text)

        def remove_punc(text):
            return "".join(ch for ch in text if ch not in set(string.punctuation))

        return " ".join(remove_articles(remove_punc(s.lower())).split())

    def get_tokens(s):
        return normalize_answer(s).split() if s else []

    def compute_exact(a_gold, a_pred):
        return int(normalize_answer(a_gold) == normalize_answer(a_pred))

    def compute_f1(a_gold, a_pred):
        gold_toks, pred_toks = get_tokens(a_gold), get_tokens(a_pred)
        num_same = sum((collections.Counter(gold_toks) & collections.Counter(pred_toks)).values())
        if len(gold_toks) == 0 or len(pred_toks) == 0:
            return int(gold_toks == pred_toks)
        if num_same == 0:
            return 0
        precision, recall = num_same / len(pred_toks), num_same / len(gold_toks)
        return (2 * precision * recall) / (precision + recall)

    module = types.ModuleType("transformers.data.metrics.squad_metrics")
    module.normalize_answer, module.compute_exact, module.compute_f1 = normalize_answer, compute_exact, compute_f1
    return module


@pytest.fixture
def record_util(monkeypatch):
    """lm-eval's super_glue/record/util.py, loaded with transformers 4's squad_metrics in place."""
    from lm_eval.tasks._yaml_loader import _load_module_with_cache

    squad = squad_metrics_v4()
    metrics = types.ModuleType("transformers.data.metrics")
    metrics.squad_metrics = squad
    monkeypatch.setitem(sys.modules, "transformers.data.metrics", metrics)
    monkeypatch.setitem(sys.modules, "transformers.data.metrics.squad_metrics", squad)
    return _load_module_with_cache(Path(__import__("lm_eval.tasks", fromlist=["x"]).__file__).parent
                                   / "super_glue" / "record" / "util.py")


def test_record_prompts_are_lm_eval_s(train_tasks, record_util):
    """Our ReCoRD task's prompts and choices are lm-eval's own; its gold entities start with lm-eval's target."""
    task = train_tasks["tasks"]["roma_train_record"]
    raw = offline_hub.rows("aps/super_glue", "record", "train")
    ours = list(task.training_docs())
    theirs = list(record_util.process_docs(__import__("datasets").Dataset.from_list(raw)))
    assert [d["entities"] for d in ours] == [d["entities"] for d in theirs]
    for doc in ours:
        assert task.doc_to_text(doc) == record_util.doc_to_text(doc)
        assert task.doc_to_choice(doc) == record_util.doc_to_choice(doc)
        if record_util.doc_to_target(doc) in task.doc_to_choice(doc):  # lm-eval's target: the first answer
            assert task.doc_to_choice(doc)[task.doc_to_target(doc)[0]] == record_util.doc_to_target(doc)
    assert all(s.gold >= 0 for s in samples_from_task(task, split="train"))


def test_record_counts_every_gold_entity_as_lm_eval_s_em(tmp_path, tokenizer, record_util):
    """ReCoRD rows with several answers (one of them unlike any entity but for SQuAD's normalisation): per document,
    lm-eval's own record em (its process_results on lm-eval's own scores), lm-eval's acc of roma_train_record and
    roma-eval's acc (scoring.score_samples: the successful set's test) agree; and some document is right by a gold
    entity other than the first answer's, which the first-answer scoring counted wrong."""
    from lm_eval_helpers import evaluate_api
    from transformers import AutoModelForCausalLM

    from roma_eval.scoring import score_samples
    from roma_eval.tiny import save_tiny_model

    model_dir = save_tiny_model("olmoe", tmp_path / "m", seed=3, tokenizer=tokenizer)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    with offline_hub.more_rows({"aps/super_glue"}, train=48):
        task = task_manager(task_names=["roma_train_record"]).load(["roma_train_record"])["tasks"]["roma_train_record"]
        docs = list(task.training_docs())
        samples = samples_from_task(task, split="train")
        theirs = evaluate_api("hf", f"pretrained={model_dir}", ["roma_train_record"], include_path=tasks_dir(),
                              batch_size=16)["roma_train_record"]
    ours = score_samples(model, tokenizer, samples, batch_size=16)
    assert len(docs) == len(samples) == len(ours) == len(theirs) == 48
    by_other_gold = 0
    for doc, sample, result in zip(docs, samples, ours):
        resps, metrics = theirs[sample.doc_id]
        em = record_util.process_results(doc, [tuple(r) for r in resps])["em"]
        assert result.acc == metrics["acc"] == em, (doc, resps)
        predicted = max(range(len(resps)), key=lambda i: resps[i][0])
        by_other_gold += em == 1 and predicted != sample.gold
        assert set(sample.right_choices) == {i for i, e in enumerate(doc["entities"])
                                             if any(record_util.squad_metrics.compute_exact(a, e)
                                                    for a in doc["answers"])}
    assert by_other_gold > 0
    assert any(len(s.right_choices) > 1 for s in samples)


def test_knowref_is_a_winogrande_style_task(train_tasks):
    """KnowRef-60K rows become one prompt per candidate, the candidate in the pronoun's place (possessive for
    "his" and for a possessive "her"), the rest of the sentence shared, as lm-eval scores WinoGrande."""
    task = train_tasks["tasks"]["roma_train_knowref"]
    docs = list(task.training_docs())
    samples = samples_from_task(task, split="train")
    assert task.multiple_input == 2 and len(samples) == len(docs) > 0
    for sample, row in zip(samples, docs):
        before, pronoun, after = re.match(r"(.*) \[(\w+)\] (\S+)", row["swapped_sentence"]).groups()
        suffix = "'s" if pronoun == "his" or (pronoun == "her" and after != "to") else ""
        assert sample.choice_contexts == tuple(f"{before.replace(' ,', ',')} {row[c]}{suffix}"
                                               for c in ("candidate0", "candidate1"))
        assert sample.gold == int(row["correct_candidate"][-1])
        rest = sample.continuations[0]
        assert rest.endswith(".") and " ." not in rest and " n't" not in rest


def test_load_samples_of_roma_paper():
    assert {s.task for s in load_samples(["roma_paper"], limit=1)} >= {"gsm8k", "mmlu_anatomy"}
