"""Quiet by default: what the libraries print that a roma-eval user cannot act on stays off unless ``-v``.

Everything here is set through the libraries' own switches before they are imported (environment variables and
logging filters), so nothing heavy is imported at start-up and a user's own settings win (``setdefault``):

* transformers' warnings and "Loading weights" bars: ``TRANSFORMERS_VERBOSITY`` and huggingface_hub's
  ``HF_HUB_DISABLE_PROGRESS_BARS`` (transformers' bars follow it);
* the datasets library's bars: ``HF_DATASETS_DISABLE_PROGRESS_BARS``;
* lm-eval's unlabelled per-task bar while it builds requests (``Task.build_all_requests``): it passes tqdm no
  ``disable``, so tqdm's own ``TQDM_DISABLE`` default hides it, while every bar that sets ``disable`` itself —
  ours, labelled by method, and lm-eval's "Running loglikelihood requests" — is unaffected;
* two lm-eval warnings about the already-loaded model our verbs pass to lm-eval's ``HFLM`` on purpose (one process
  evaluates the model it trained or loaded), and its note on ``--metadata`` for tasks built by Python functions.
"""

from __future__ import annotations

import logging
import os

QUIET_ENVIRONMENT = {"TRANSFORMERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                     "HF_DATASETS_DISABLE_PROGRESS_BARS": "1", "TQDM_DISABLE": "1"}
EXPECTED_LM_EVAL_MESSAGES = ("`pretrained` model kwarg is not of type `str`",
                             "Passed an already-initialized model through `pretrained`",
                             "Custom kwargs can be passed")


def _unexpected(record: logging.LogRecord) -> bool:
    return not any(text in record.getMessage() for text in EXPECTED_LM_EVAL_MESSAGES)


def quiet_libraries() -> None:
    for name, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    for name in ("lm_eval.models.huggingface", "lm_eval.api.task"):
        logger = logging.getLogger(name)
        if _unexpected not in logger.filters:
            logger.addFilter(_unexpected)
