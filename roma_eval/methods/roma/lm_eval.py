"""lm-eval models provided by roma-eval.

``roma``: Hugging Face causal LM (lm-eval's ``hf``) whose routers come from a RoMA router
checkpoint.  It accepts every ``hf`` model_arg plus ``router_checkpoint=`` (a directory or hub
repo id), ``router_checkpoint_revision=`` and ``force_router_checkpoint=`` (apply even if the
base model's routers differ from the ones the checkpoint was tuned on).  Without a checkpoint it is
exactly ``hf``.  Inference does no extra work: only router weights change.
"""

from __future__ import annotations

from lm_eval.models.huggingface import HFLM

from roma_eval.checkpoint import apply_router_checkpoint, load_router_checkpoint
from roma_eval.devices import data_parallel
from roma_eval.errors import report_in_one_line
from roma_eval.model_args import base_model_args, refuse_unknown_keys

report_in_one_line()


OWN_MODEL_ARGS = ("router_checkpoint", "router_checkpoint_revision", "force_router_checkpoint")


class RomaLM(HFLM):
    def __init__(self, router_checkpoint: str | None = None, router_checkpoint_revision: str | None = None,
                 force_router_checkpoint: bool = False, **kwargs) -> None:
        # A misspelt key of ours would reach transformers' from_pretrained: refused first (roma_eval/model_args.py).
        refuse_unknown_keys(kwargs, "roma", OWN_MODEL_ARGS, ("router_checkpoint", "force_router"),
                            base_model_args(HFLM))
        # Read (and validate) the checkpoint before loading a possibly large base model.
        checkpoint = load_router_checkpoint(router_checkpoint,
                                            router_checkpoint_revision) if router_checkpoint else None
        super().__init__(**kwargs)
        data_parallel(self)  # `accelerate launch -m lm_eval ...`: each process its share, on CPUs too
        if checkpoint is not None:
            apply_router_checkpoint(self.model, checkpoint, force=bool(force_router_checkpoint))
        self.router_checkpoint = router_checkpoint
