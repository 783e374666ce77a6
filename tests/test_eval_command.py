"""`roma-eval eval` is `lm_eval run` with roma-eval's tasks/ on the include path, and the user's beside it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from lm_eval_helpers import FIXTURE_TASKS

from roma_eval.tiny import save_tiny_model

pytestmark = pytest.mark.slow  # runs lm-eval's CLI or a whole toy pipeline

ROMA_EVAL = str(Path(sys.executable).parent / "roma-eval")


def test_eval_runs_our_tasks_and_the_users_together(tmp_path, tokenizer):
    model_dir = save_tiny_model("olmoe", tmp_path / "model", seed=3, tokenizer=tokenizer)
    proc = subprocess.run([ROMA_EVAL, "eval", "--model", "hf", "--model_args", f"pretrained={model_dir}",
                           "--tasks", "toy_boolq,tiny_animals", "--include_path", str(FIXTURE_TASKS), "--limit", "2",
                           "--device", "cpu", "--output_path", str(tmp_path / "out")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(next((tmp_path / "out").rglob("results_*.json")).read_text())
    assert set(results["results"]) == {"toy_boolq", "tiny_animals"}


def test_eval_passes_lm_evals_exit_status_and_refuses_a_missing_include_path(tmp_path):
    bad = subprocess.run([ROMA_EVAL, "eval", "--model", "hf", "--tasks", "toy_boolq", "--include_path",
                          str(tmp_path / "nowhere")], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("roma-eval eval: error: "
                                                                                  "--include_path")
    unknown = subprocess.run([ROMA_EVAL, "eval", "--model", "hf", "--tasks", "no_such_task_at_all"],
                             capture_output=True, text=True)
    assert unknown.returncode != 0
