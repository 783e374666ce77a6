"""``--model hf-peft``: lm-eval's ``hf`` model with a peft adapter loaded onto the model exactly as it was trained.

lm-eval 0.4.13's ``HFLM`` accepts ``peft=ADAPTER`` and loads it with peft's own ``PeftModel.from_pretrained``; it
scores prefix- and prompt-tuning adapters right (its ``_loglikelihood_tokens`` discards the logits of a prompt-tuned
model's virtual tokens; ``tests/test_peft_tuning.py`` checks both against our in-process scoring).  One thing makes
``hf,peft=`` wrong for the paper's models: **before loading the adapter it resizes the token embeddings and the LM
head to ``len(tokenizer)``** whenever that differs from ``config.vocab_size`` (``HFLM._create_model``; meant for
LoRAs that add tokens).  Models that pad their vocabulary -- OLMoE-1B-7B (vocab_size 50304), DeepSeekMoE-16B
(102400) and Qwen3-30B-A3B (151936) all have more rows than their tokenizers have tokens -- lose those rows: the
softmax then normalises over fewer tokens, every log-likelihood moves a little, and the adapter is no longer
evaluated on the model it was trained on (nor comparable with the base row, which ``hf`` evaluates unresized).

``PeftLM`` is ``HFLM`` loading the adapter the same way without the resize.  Everything else -- requests,
batching, truncation, the virtual-token handling, generation, metrics -- is lm-eval's.
"""

from __future__ import annotations

from lm_eval.models.huggingface import HFLM

from roma_eval.errors import report_in_one_line

report_in_one_line()


class PeftLM(HFLM):
    def _create_model(self, pretrained, *args, peft: str | None = None, **kwargs) -> None:
        super()._create_model(pretrained, *args, peft=None, **kwargs)
        if peft:
            from peft import PeftModel

            self._model = PeftModel.from_pretrained(self._model, peft, revision=kwargs.get("revision") or "main")
