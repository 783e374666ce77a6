"""Run lm-eval for tests, through its Python API or its plain CLI, and read per-sample results."""

import json
import subprocess
import sys
from pathlib import Path

FIXTURE_TASKS = Path(__file__).parent / "fixtures" / "tasks"
LM_EVAL = str(Path(sys.executable).parent / "lm_eval")


def _value(x):
    # The JSONL logger writes numbers and booleans as strings; the API returns them as such.
    if isinstance(x, bool) or x in ("True", "False"):
        return x in (True, "True")
    try:
        return float(x)
    except (TypeError, ValueError):
        return x


def per_sample(samples: list[dict]) -> dict[int, tuple]:
    """doc_id -> (the model's filtered responses, with numbers as floats; the per-sample metrics)."""
    out = {}
    for s in samples:
        resps = [[_value(v) for v in r] if isinstance(r, (list, tuple)) else r for r in s["filtered_resps"]]
        metrics = {m: s[m] for m in s["metrics"]}
        out[s["doc_id"]] = (resps, metrics)
    return out


def evaluate_api(model: str, model_args: str, tasks: list[str], include_path=FIXTURE_TASKS, limit=None,
                 batch_size=4) -> dict:
    """Per-sample results of lm-eval's simple_evaluate (through roma_eval.harness, as roma-eval evaluates);
    ``include_path=None``: lm-eval's own tasks and roma-eval's."""
    from roma_eval.harness import evaluate, task_manager

    manager = task_manager(() if include_path is None else (include_path,), tasks)
    evaluation = evaluate(model, None, tasks, model_args=model_args, task_manager=manager, device="cpu",
                          batch_size=batch_size, limit=limit)
    return {task: per_sample(evaluation.samples[task]) for task in tasks}


def evaluate_cli(model: str, model_args: str, tasks: list[str], output: Path, include_path=FIXTURE_TASKS,
                 check=True) -> subprocess.CompletedProcess | dict:
    proc = subprocess.run([LM_EVAL, "--model", model, "--model_args", model_args, "--include_path", str(include_path),
                           "--tasks", ",".join(tasks), "--device", "cpu", "--batch_size", "4",
                           "--output_path", str(output), "--log_samples"], capture_output=True, text=True)
    if not check:
        return proc
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {task: per_sample([json.loads(line) for f in output.rglob(f"samples_{task}_*.jsonl")
                              for line in f.read_text().splitlines()]) for task in tasks}


def evaluate_to(output, model: str, model_args: str, tasks: list[str], include_path=None, **options) -> dict:
    """What `lm_eval --model M --model_args A --tasks T --output_path OUT --log_samples` writes (``include_path=None``:
    lm-eval's own tasks); ``options``: simple_evaluate's (limit, gen_kwargs, ...).  Returns the results."""
    from roma_eval.harness import evaluate, task_manager

    manager = task_manager(() if include_path is None else (include_path,), tasks)
    evaluation = evaluate(model, output, tasks, model_args=model_args, task_manager=manager, device="cpu",
                          **{"batch_size": 8, **options})
    evaluation.save()
    return evaluation.results
