"""``--model hf-peft``: lm-eval's ``hf`` model with a peft adapter loaded onto the model exactly as it was trained.

lm-eval 0.4.13's ``HFLM`` accepts ``peft=ADAPTER`` and loads it with peft's own ``PeftModel.from_pretrained``; it
scores prefix- and prompt-tuning adapters right (its ``_loglikelihood_tokens`` discards the logits of a prompt-tuned
model's virtual tokens; ``tests/methods/peft_tuning/test_peft_tuning.py`` checks both against our in-process
scoring).  Two things make ``hf,peft=`` wrong for the Prefix / Prompt Tuning rows of the paper's models:

1. **The vocabulary is resized.**  Before loading the adapter, ``HFLM._create_model`` resizes the token embeddings
   and the LM head to ``len(tokenizer)`` whenever that differs from ``config.vocab_size`` (meant for LoRAs that add
   tokens).  Models that pad their vocabulary -- OLMoE-1B-7B (vocab_size 50304), DeepSeekMoE-16B (102400) and
   Qwen3-30B-A3B (151936) all have more rows than their tokenizers have tokens -- lose those rows: the softmax
   normalises over fewer tokens, every log-likelihood moves a little, and the adapter is no longer evaluated on the
   model it was trained on (nor comparable with the Base row, which ``hf`` evaluates unresized).
2. **Batched generation with prompt tuning depends on the batch.**  ``generate_until`` left-pads a batch; peft's
   prompt-tuned model drops ``position_ids`` (it warns "Position ids are not supported for parameter efficient
   tuning"), so a padded row's tokens sit further from the virtual tokens than the same prompt alone: its scores
   move (0.08 in logits on a tiny model) and a GSM8K answer can change with its batch-mates.  (Prefix tuning
   offsets the position ids itself and is unaffected; log-likelihoods are unaffected: lm-eval right-pads them.)

``PeftLM`` is ``HFLM`` loading the adapter the same way without the resize, and, for adapters that prepend virtual
tokens, generating each row of a batch without its padding (the output keeps ``HFLM``'s layout: the padded context,
then the new tokens).  Everything else -- requests, batching, truncation, the virtual-token handling,
stop sequences, metrics -- is lm-eval's.
"""

from __future__ import annotations

import torch
from lm_eval.models.huggingface import HFLM

from roma_eval.errors import report_in_one_line
from roma_eval.methods.peft_tuning.train import virtual_tokens
from roma_eval.storage import require_finite

report_in_one_line()


class PeftLM(HFLM):
    def _create_model(self, pretrained, *args, peft: str | None = None, **kwargs) -> None:
        super()._create_model(pretrained, *args, peft=None, **kwargs)
        if peft:
            from peft import PeftModel, get_peft_model_state_dict

            self._model = PeftModel.from_pretrained(self._model, peft, revision=kwargs.get("revision") or "main")
            require_finite(get_peft_model_state_dict(self._model), f"peft adapter {peft}",
                           "its training diverged: train it again with a lower --lr")

    def _model_generate(self, context, max_length: int, stop: list[str], **generation_kwargs):
        mask = generation_kwargs.pop("attention_mask", None)
        if context.shape[0] == 1 or mask is None or not virtual_tokens(self.model):
            return super()._model_generate(context, max_length, stop, attention_mask=mask, **generation_kwargs)
        rows = []
        for row, keep in zip(context, mask.bool()):
            ids = row[keep].unsqueeze(0)
            out = super()._model_generate(ids, max_length - (row.shape[0] - ids.shape[1]), stop,
                                          attention_mask=torch.ones_like(ids), **dict(generation_kwargs))
            rows.append(torch.cat([row[~keep], out[0]]))  # the padding back in front, as lm-eval left-pads
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        return torch.stack([torch.nn.functional.pad(r, (0, width - len(r)), value=pad) for r in rows])
