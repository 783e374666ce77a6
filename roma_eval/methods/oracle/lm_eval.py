"""The oracle as an lm-eval model: ``OracleLM`` answers lm-eval's requests at each document's oracle routing.

lm-eval builds every request (prompts, few-shot examples, one request per choice, multiple-input prompts),
and computes every metric, filter, group aggregate, sample line and file from the answers.  ``OracleLM``
only answers: it groups the requests by document, answers a document from its run's ``OracleStore`` when the
store holds it, and otherwise asks its ``OracleSolver`` (solver.py) about it, batch by batch, storing each
batch as it finishes.  It returns

  - ``loglikelihood``: the (log-likelihood, is_greedy) pair of every choice at the reported iterate (one
    iterate per document, so lm-eval's acc and acc_norm come from one consistent set of scores);
  - ``generate_until``: the text a real greedy generation produced at the reported routing.

``base_pass()`` is its twin over the same store answering with every document's iterate-0 answers (the base
model's, kept from the same descent), so lm-eval's own aggregation gives the base scores of the very same run.
"""

from __future__ import annotations

import copy
import time
from collections import defaultdict

from lm_eval.models.huggingface import HFLM

from roma_eval.devices import input_device, process_state
from roma_eval.errors import RomaEvalError
from roma_eval.methods.oracle.config import OracleConfig
from roma_eval.methods.oracle.generation import LMSettings
from roma_eval.methods.oracle.solver import OracleSolver
from roma_eval.methods.oracle.tasks import request_key


def lm_settings(lm: HFLM) -> LMSettings:
    """What the solver needs of lm-eval's ``hf`` model ``lm``: its encoding, its generation settings and its own
    greedy ``generate_until`` (unsteered unless a routing override is active around the call)."""
    def generate(requests) -> list[str]:
        return HFLM.generate_until(lm, requests, disable_tqdm=True)

    return LMSettings(generate=generate, encode=lm.tok_batch_encode, max_length=lm.max_length,
                      add_bos_token=lm.add_bos_token, max_gen_toks=lm.max_gen_toks,
                      eos=lm.tok_decode(lm.eot_token_id, skip_special_tokens=False))


class OracleLM(HFLM):
    """``model`` at each document's oracle routing, for lm-eval; the documents' outcomes live in ``store``."""

    def __init__(self, model, tokenizer, tasks: dict, config: OracleConfig, layers: list[int], store,
                 progress: bool = True):
        # lm-eval's own greedy generations (the base answers, the judged ones): one at a time on a CPU;
        # on an accelerator as many as descend together.
        config = config.for_device(input_device(model))
        generation_batch = 1 if input_device(model).type == "cpu" else config.batch_size
        super().__init__(pretrained=model, tokenizer=tokenizer, batch_size=generation_batch)
        dist = process_state()
        if dist.num_processes > 1:
            # Under `accelerate launch` lm-eval hands each process its share of the documents and gathers the
            # answers on the main process (HFLM does this itself only for a model it loads, on several GPUs).
            from accelerate import Accelerator

            self.accelerator = Accelerator()
            self._rank, self._world_size = dist.process_index, dist.num_processes
        self.oracle_tasks = tasks  # leaf task name -> lm-eval Task (the gold labels, the filters)
        self.solver = OracleSolver(model, tokenizer, config, layers, lm_settings(self))
        self.store = store
        self.progress = progress
        self._answer = "answers"  # the record's answers lm-eval gets: the reported iterate's

    def base_pass(self) -> OracleLM:
        """This model's twin over the same store, answering with every document's iterate-0 answers (the base
        model's, stored by this model's pass) and never solving one."""
        twin = copy.copy(self)
        twin._answer = "base"
        return twin

    def _documents(self, requests) -> dict[tuple[str, int], list[tuple[int, object]]]:
        """(task, doc_id) -> [(position in ``requests``, request)], each document's requests by ``idx``."""
        by_doc = defaultdict(list)
        for position, request in enumerate(requests):
            by_doc[(request.task_name, request.doc_id)].append((position, request))
        for items in by_doc.values():
            items.sort(key=lambda item: item[1].idx)
        return by_doc

    def _solve(self, requests, kind: str) -> dict[tuple[str, int], dict]:
        """Every document of ``requests`` solved: from the store, or computed (and stored) batch by batch."""
        from tqdm.auto import tqdm

        tasks = self.oracle_tasks
        pending, records = defaultdict(list), {}
        for (task_name, doc_id), items in self._documents(requests).items():
            if task_name not in tasks:
                raise RomaEvalError(f"lm-eval asked about task {task_name}, which this oracle run was not given")
            unique = list({id(r): r for _, r in items}.values())  # generation repeats: one request, K times
            stored = self.store.documents(task_name).get(doc_id)
            if stored is not None and stored.get("key") == request_key(unique):
                records[(task_name, doc_id)] = stored
            else:
                pending[task_name].append(unique)
        if pending and self._answer == "base":
            raise RomaEvalError("the base pass found documents the oracle has not solved; rerun `roma-eval oracle`")
        total = sum(map(len, pending.values()))
        bar = tqdm(total=total, desc=f"oracle ({kind})", unit="doc", disable=not self.progress or not total)
        solve = self.solver.choices if kind == "multiple choice" else self.solver.generations
        for task_name, documents in pending.items():
            bar.set_postfix_str(task_name)
            for chunk in self.solver.batches(tasks[task_name], documents):
                started = time.perf_counter()
                solved = solve(tasks[task_name], chunk)
                seconds = (time.perf_counter() - started) / len(chunk)
                for instances, record in zip(chunk, solved):
                    record.update(doc_id=instances[0].doc_id, key=request_key(instances))
                    record["oracle"]["seconds"] = seconds
                self.store.append(task_name, solved)
                records.update({(task_name, r["doc_id"]): r for r in solved})
                bar.update(len(chunk))
        bar.close()
        return records

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        records = self._solve(requests, "multiple choice")
        out = [None] * len(requests)
        for (task_name, doc_id), items in self._documents(requests).items():
            pairs = records[(task_name, doc_id)][self._answer]
            for position, request in items:
                score, greedy = pairs[request.idx]
                out[position] = (float(score), bool(greedy))
        return out

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        records = self._solve(requests, "generation")
        return [records[(r.task_name, r.doc_id)][self._answer] for r in requests]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        raise RomaEvalError("the oracle handles multiple_choice and generate_until tasks, not perplexity tasks")
