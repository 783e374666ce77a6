"""Retrieved demonstrations: for each evaluation document, the k nearest successful training samples.

  pool       RoMA's success set S (Eq. 2): training-mixture samples the base model answers right, judged by lm-eval's
             acc on its own prompts (``scoring.score_samples``, tested equal to lm-eval per sample);
  neighbours RoMA's: the same embedder (``embedding``) on the same text (``Sample.text``: the question as posed,
             label-free), the same exact kNN (``neighbours.find_neighbours``);
  format     each example is its training document as lm-eval shows a solved example of its *own* task
             (``ConfigurableTask.fewshot_context``: the task's few-shot ``doc_to_text``, target delimiter and answer;
             a multiple-input document with its gold option filled in), so ``demonstration`` calls lm-eval's own
             ``build_qa_turn``.  The evaluation task then joins the examples with its few-shot delimiter and puts its
             description first, as for any few-shot prompt (``lm_eval.py``).

Nothing here imports lm-eval: tasks come in as lm-eval Task objects.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from roma_eval.errors import RomaEvalError
from roma_eval.methods.icl.config import IclConfig

logger = logging.getLogger(__name__)
FILE_NAME = "icl_demonstrations.json"
FORMAT_VERSION = 1


def doc_key(doc) -> str:
    """An evaluation document's identity as the few-shot sampler sees it (the document itself, not its index)."""
    return json.dumps(dict(doc), sort_keys=True, ensure_ascii=False, default=str)


def demonstration(task, doc) -> dict:
    """``doc`` of ``task`` as lm-eval writes a solved few-shot example of that task: {"question": the question
    and the target delimiter, "answer": the gold answer}.  The lines are lm-eval's ``fewshot_context``'s."""
    cfg = task.fewshot_cfg
    question = task.doc_to_text(doc, cfg.doc_to_text)
    choices = task.doc_to_choice(doc, cfg.doc_to_choice) if cfg.doc_to_choice else None
    answer = task.doc_to_target(doc, cfg.doc_to_target)
    if isinstance(answer, list):  # several right choices (ReCoRD): the example shows the first
        answer = answer[0]
    gen_prefix = task.resolve_field(doc, cfg.gen_prefix)
    if task.multiple_input:  # the question with the gold option filled in; the answer is the shared continuation
        question, choices = choices[question], None
    turn = task.build_qa_turn(q=question, c=choices, a=answer, gen_prefix=gen_prefix, tgt_delim=cfg.target_delimiter,
                              few_delim="")
    if len(turn) != 2:
        raise RomaEvalError(f"task {task.config.task}: a training document without an answer cannot be an example")
    return {"question": turn[0].to_text(), "answer": turn[1].content}


@dataclass
class Demonstrations:
    """The pool (successful training samples as examples) and, per evaluation task and document, the chosen ones."""

    config: dict
    pool: list[dict]  # {"task", "doc_id", "question", "answer"}
    chosen: dict[str, dict[int, list[list]]]  # eval task -> doc_id -> [[pool index, squared distance]] in prompt order
    keys: dict[str, dict[str, int]] = field(default_factory=dict, repr=False)  # eval task -> doc_key -> doc_id
    summary: dict = field(default_factory=dict)

    def examples(self, task: str, doc) -> list[dict]:
        """The examples of an evaluation document, in prompt order."""
        doc_id = self.keys.get(task, {}).get(doc_key(doc))
        if doc_id is None:
            raise RomaEvalError(f"task {task}: lm-eval asked for examples of a document the demonstrations were not "
                                "built for; build them with the same tasks and --limit")
        return [self.pool[i] for i, _ in self.chosen[task][doc_id]]

    def to_json(self) -> dict:
        return {"format_version": FORMAT_VERSION, "config": self.config, "summary": self.summary, "pool": self.pool,
                "chosen": {task: {str(d): v for d, v in docs.items()} for task, docs in self.chosen.items()}}

    def save(self, directory) -> Path:
        from roma_eval.storage import write_json

        return write_json(Path(directory) / FILE_NAME, self.to_json())


def _training_docs(task, limit):
    if not task.has_training_docs():
        raise RomaEvalError(f"task {task.config.task} has no training split; ICL draws its examples from training "
                            "tasks")
    return list(enumerate(task.training_docs()))[:limit]


def build_demonstrations(model, tokenizer, train_tasks: Mapping, eval_tasks: Mapping, config: IclConfig | None = None,
                         *, limit: int | None = None, embedder=None, progress: bool = True) -> Demonstrations:
    """Score the training tasks' documents with the base ``model`` (the success set is the pool), embed pool and
    evaluation documents, and choose each evaluation document's ``config.k`` nearest examples.  ``train_tasks`` /
    ``eval_tasks``: name -> lm-eval Task (leaf tasks); ``limit``: evaluation documents per task, as lm-eval's."""
    from roma_eval.embedding import embed, load_embedder
    from roma_eval.neighbours import NeighbourSearch, find_neighbours
    from roma_eval.samples import samples_from_task
    from roma_eval.scoring import model_max_length, score_samples

    config = config or IclConfig()
    pool, samples = [], []
    for name in sorted(train_tasks):
        task = train_tasks[name]
        if task.OUTPUT_TYPE != "multiple_choice":
            raise RomaEvalError(f"training task {name} is not multiple choice; the ICL pool is RoMA's success set of "
                                "labelled multiple-choice training samples")
        task_samples = samples_from_task(task, "train", config.train_limit)
        docs = _training_docs(task, config.train_limit)
        for sample, (doc_id, doc) in zip(task_samples, docs, strict=True):
            assert sample.doc_id == doc_id
            pool.append({"task": name, "doc_id": doc_id, **demonstration(task, doc)})
        samples.extend(task_samples)
    if not samples:
        raise RomaEvalError("the training tasks have no documents; give --train_tasks with a training split")
    scored = score_samples(model, tokenizer, samples, batch_size=config.batch_size,
                           max_length=config.max_length or model_max_length(model))
    success = np.array([r.acc == 1.0 for r in scored])
    if success.sum() < config.k:
        raise RomaEvalError(f"the base model answers {int(success.sum())} training samples right, fewer than k="
                            f"{config.k}; lower --k or give more training data")
    pool = [item for item, right in zip(pool, success) if right]
    texts = [s.text for s, right in zip(samples, success) if right]

    eval_samples, keys = {}, {}
    for name in sorted(eval_tasks):
        task = eval_tasks[name]
        eval_samples[name] = samples_from_task(task, "eval", limit)
        keys[name] = {doc_key(doc): doc_id for doc_id, doc in list(task.doc_iterator())[:limit]}
    embedder = embedder or load_embedder(config.embedder)
    reference = embed(texts, embedder)
    queries = [s for name in sorted(eval_samples) for s in eval_samples[name]]
    hood = find_neighbours(embed([s.text for s in queries], embedder), reference, NeighbourSearch(k=config.k))
    chosen: dict[str, dict[int, list[list]]] = {}
    for sample, index, d2 in zip(queries, hood.index, hood.distance2):
        nearest_first = [[int(i), round(float(d), 6)] for i, d in zip(index, d2)]  # faiss: ascending distance
        chosen.setdefault(sample.task, {})[sample.doc_id] = (nearest_first[::-1] if config.order == "nearest_last"
                                                             else nearest_first)
    summary = {"training_samples": len(samples), "pool_size": len(pool),
               "base_train_accuracy": float(success.mean()), "evaluation_documents": len(queries),
               "mean_distance": float(np.sqrt(hood.distance2).mean()) if len(queries) else None}
    logger.info("ICL pool: %d of %d training samples answered right; %d evaluation documents", len(pool),
                len(samples), len(queries))
    return Demonstrations(config.to_dict(), pool, chosen, keys, summary)
