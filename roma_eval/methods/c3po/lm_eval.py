"""lm-eval model ``c3po``: a Hugging Face MoE whose routing C3PO re-mixes for each test prompt.

model_args: every ``hf`` argument, plus ``reference=`` (a directory written by
``roma-eval c3po build-reference`` for this base model) and the ``C3POConfig`` fields prefixed with
``c3po_`` (they share HFLM's namespace and the results' ``config.model_args``): ``c3po_method=ngd|kernel|mode``,
``c3po_k=``, ``c3po_steps=``, ``c3po_optimizer=adam|sgd``, ``c3po_lr=``, ``c3po_lr_min=``,
``c3po_core_experts=``, ``c3po_alpha=``, ``c3po_alpha_step=``, ``c3po_mode_neighbours=pathway|embedding``,
``c3po_mode_steps=``, ``c3po_bandwidth=``, ``c3po_sigma=``, ``c3po_dedup=``, ``c3po_all_generated_tokens=``,
``c3po_group=``.

Multiple choice: lm-eval sends one request per choice, tokenised by its own ``_encode_pair``.  The
requests of one document form one problem: one pathway is optimised for it and every choice is
scored under it.  A document whose choices share a context is keyed by that context (so identical
prompts of different documents are optimised once); a multiple-input document
(winogrande: each option fills the blank of its own prompt, one continuation for all) is one
problem whose choices are scored after their own prompts, the pathway moving each prompt's routing
(``c3po/frozen.py``).  Documents are told apart by lm-eval's own ``Instance.task_name`` and
``doc_id``, not by a shared continuation: two documents can share one (winogrande's twin sentences
often differ only before the blank), and a shared continuation says nothing about an ordinary task.
Requests without a document (``_loglikelihood_tokens`` called directly) are grouped by context.
The embedded text is the label-free prompt (``samples.label_free_prompt``): the context, or
the question with a blank for a multiple-input document, as for the reference samples.
Generation: the pathway replaces the routing at the last prompt token (``all_generated_tokens=True``:
at every generated token too).  Rolling log-likelihood (perplexity) has no prompt to re-route and is
refused.
"""

from __future__ import annotations

import torch
from lm_eval.models.huggingface import HFLM

from roma_eval.devices import data_parallel
from roma_eval.errors import RomaEvalError, report_in_one_line
from roma_eval.harness import parse_model_args
from roma_eval.methods.c3po import (
    C3PO,
    C3POConfig,
    Problem,
    load_reference,
    steer_generation,
)
from roma_eval.methods.c3po.config import PREFIX
from roma_eval.model_args import base_model_args, refuse_unknown_keys
from roma_eval.samples import label_free_prompt

report_in_one_line()


def own_model_args() -> list[str]:
    """The c3po model's own model_args: reference= and C3POConfig's fields prefixed with c3po_."""
    from dataclasses import fields

    return ["reference", *(f"{PREFIX}{f.name}" for f in fields(C3POConfig))]


def check_model_args(text: str, flag: str) -> None:
    """Extra ``--model c3po`` model_args given as "k=v,k=v" (``flag``), checked as ``C3POLM`` checks them."""
    try:
        values = parse_model_args(text)
        refuse_unknown_keys(values, "c3po", own_model_args(), (PREFIX,), base_model_args(HFLM))
        C3POConfig.from_model_args(values)
    except RomaEvalError as exc:
        raise RomaEvalError(f"{flag} {text!r}: {exc}") from None


def _document(request):
    """lm-eval's (task, doc_id) of a request, or None when it carries none."""
    task, doc_id = getattr(request, "task_name", None), getattr(request, "doc_id", None)
    return None if task is None or doc_id is None else ("document", task, doc_id)


class C3POLM(HFLM):
    def __init__(self, reference: str | None = None, **kwargs) -> None:
        # A misspelt key of ours would reach transformers' from_pretrained: refused first (roma_eval/model_args.py).
        refuse_unknown_keys(kwargs, "c3po", own_model_args(), (PREFIX,), base_model_args(HFLM))
        if not reference:
            raise RomaEvalError("the c3po model needs reference=DIR, a reference set built with "
                                "`roma-eval c3po build-reference` for the same base model")
        config = C3POConfig.from_model_args(kwargs)
        loaded = load_reference(reference)  # read and validated before loading a possibly large model
        super().__init__(**kwargs)
        data_parallel(self)  # `accelerate launch -m lm_eval ...`: each process its share, on CPUs too
        self.c3po = C3PO(self.model, loaded, config)
        self._pathways: dict[str, torch.Tensor] = {}
        self._batch_contexts: list[str] = []
        self._documents: list | None = None

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        # HFLM.loglikelihood tokenises the requests and hands _loglikelihood_tokens their strings and
        # token ids only, in order: remember each one's document for the grouping there.
        self._documents = [_document(request) for request in requests]
        try:
            return super().loglikelihood(requests, disable_tqdm=disable_tqdm)
        finally:
            self._documents = None

    def _problem_keys(self, requests) -> list:
        """Per request, its problem: its context if its document's requests share one, else its document."""
        documents = self._documents if self._documents is not None and len(self._documents) == len(requests) \
            else [None] * len(requests)
        members: dict = {}
        for n, (((context, _), _, _), document) in enumerate(zip(requests, documents)):
            members.setdefault(document or ("prompt", context), []).append(n)
        keys = [None] * len(requests)
        for document, indices in members.items():
            contexts = {requests[n][0][0] for n in indices}
            key = ("prompt", contexts.pop()) if len(contexts) == 1 else document
            for n in indices:
                keys[n] = key
        return keys

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs=None):
        keys = self._problem_keys(requests)
        # problem -> its (context, continuation ids) pairs, in request order -> (context ids, continuation string)
        groups: dict = {}
        for key, ((context, continuation), context_enc, continuation_enc) in zip(keys, requests):
            groups.setdefault(key, {}).setdefault((context, tuple(continuation_enc)), (context_enc, continuation))
        problems, prompts = [], []
        for choices in groups.values():
            problems.append(Problem.make([enc for enc, _ in choices.values()], [cont for _, cont in choices],
                                         self.max_length))
            prompts.append(label_free_prompt([context for context, _ in choices], next(iter(choices.values()))[1]))
        _, scored = self.c3po.run(problems, prompts, progress=not disable_tqdm)
        answers = {(key, choice): pair for (key, choices), pairs in zip(groups.items(), scored)
                   for choice, pair in zip(choices, pairs)}
        results = []
        for key, (request_str, _, continuation_enc) in zip(keys, requests):
            ll, greedy = answers[key, (request_str[0], tuple(continuation_enc))]
            results.append((ll, bool(greedy)))
            self.cache_hook.add_partial("loglikelihood", request_str, results[-1])
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        raise RomaEvalError("the c3po model re-routes a prompt's last token, which perplexity (loglikelihood_rolling) "
                            "tasks do not have; evaluate those with --model hf")

    def generate_until(self, requests, disable_tqdm: bool = False):
        contexts = list(dict.fromkeys(request.args[0] for request in requests))
        problems = [Problem.make([self.tok_encode(c) or [self.prefix_token_id]], [()],
                                 self.max_length) for c in contexts]
        omegas, _ = self.c3po.run(problems, contexts, score=False, progress=not disable_tqdm)
        self._pathways = dict(zip(contexts, omegas))
        try:
            return super().generate_until(requests, disable_tqdm=disable_tqdm)
        finally:
            self._pathways = {}

    # HFLM.generate_until encodes each batch's contexts with tok_batch_encode, then calls
    # _model_generate on them: remember the strings, so each row gets its own pathway.
    def tok_batch_encode(self, strings, *args, **kwargs):
        self._batch_contexts = list(strings)
        return super().tok_batch_encode(strings, *args, **kwargs)

    def _model_generate(self, context, max_length, stop, **generation_kwargs):
        omega = torch.stack([self._pathways[s] for s in self._batch_contexts]).to(context.device)
        with steer_generation(self.model, omega, self.c3po.layers, self.c3po.config.all_generated_tokens):
            return super()._model_generate(context, max_length, stop, **generation_kwargs)
