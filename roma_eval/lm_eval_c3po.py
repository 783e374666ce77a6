"""lm-eval model ``c3po``: a Hugging Face MoE whose routing C3PO re-mixes for each test prompt.

model_args: every ``hf`` argument, plus ``reference=`` (a directory written by
``roma-eval c3po build-reference`` for this base model) and the ``C3POConfig`` fields:
``method=ngd|kernel|mode``, ``k=``, ``steps=``, ``lr=``, ``lr_min=``, ``core_experts=``, ``alpha=``,
``alpha_step=``, ``bandwidth=``, ``sigma=``, ``dedup=``, ``all_generated_tokens=``, ``group=``.

Multiple choice: lm-eval sends one request per choice, tokenised by its own ``_encode_pair``; the
requests are grouped by context, each context is optimised once, and all its choices are scored
under that pathway.  Generation: the pathway replaces the routing at the last prompt token
(``all_generated_tokens=True``: at every generated token too).  Rolling log-likelihood (perplexity)
has no prompt to re-route and is refused.
"""

from __future__ import annotations

import torch
from lm_eval.models.huggingface import HFLM

from roma_eval.c3po import C3PO, C3POConfig, Problem, load_reference, steer_generation
from roma_eval.errors import RomaEvalError


class C3POLM(HFLM):
    def __init__(self, reference: str | None = None, **kwargs) -> None:
        if not reference:
            raise RomaEvalError("the c3po model needs reference=DIR, a reference set built with "
                                "`roma-eval c3po build-reference` for the same base model")
        config = C3POConfig.from_model_args(kwargs)
        loaded = load_reference(reference)  # read and validated before loading a possibly large model
        super().__init__(**kwargs)
        self.c3po = C3PO(self.model, loaded, config)
        self._pathways: dict[str, torch.Tensor] = {}
        self._batch_contexts: list[str] = []

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs=None):
        groups: dict[str, tuple[list[int], dict[tuple[int, ...], None]]] = {}
        for (context, _), context_enc, continuation_enc in requests:
            groups.setdefault(context, (context_enc, {}))[1].setdefault(tuple(continuation_enc))
        contexts = list(groups)
        problems = [Problem.make(enc, list(conts), self.max_length) for enc, conts in groups.values()]
        _, scored = self.c3po.run(problems, contexts, progress=not disable_tqdm)
        answers = {(context, cont): pair for context, pairs in zip(contexts, scored)
                   for cont, pair in zip(groups[context][1], pairs)}
        results = []
        for request_str, _, continuation_enc in requests:
            ll, greedy = answers[(request_str[0], tuple(continuation_enc))]
            results.append((ll, bool(greedy)))
            self.cache_hook.add_partial("loglikelihood", request_str, results[-1])
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        raise RomaEvalError("the c3po model re-routes a prompt's last token, which perplexity (loglikelihood_rolling) "
                            "tasks do not have; evaluate those with --model hf")

    def generate_until(self, requests, disable_tqdm: bool = False):
        contexts = list(dict.fromkeys(request.args[0] for request in requests))
        problems = [Problem.make(self.tok_encode(c) or [self.prefix_token_id], [()], self.max_length) for c in contexts]
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
