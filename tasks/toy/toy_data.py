"""Data of the toy tasks for lm-eval's ``custom_dataset``: generated in memory by ``roma_eval.toy``.

lm-eval calls ``load(**task_metadata, **dataset_kwargs)``; the YAML's ``dataset_kwargs`` names the
task, and the rest (lm-eval passes the model arguments too) does not change the data.
"""

from roma_eval.toy.suite import build_dataset


def load(toy_task: str, **_metadata):
    return build_dataset(toy_task)
