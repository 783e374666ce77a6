"""`pip install --target DIR` + PYTHONPATH=DIR: site directories are the only ones whose .pth files Python reads, so
the registration shim (roma_eval_lm_eval.pth) is inert there and plain `lm_eval --model roma` fails; the fallbacks
`python -m roma_eval.lm_eval_cli` and `roma-eval eval` register the models themselves.

The install is real (pip, from this checkout, no dependencies; its build backend comes from the configured package
index, so the test is skipped where there is none).  The interpreter runs with -S (no site directories) and finds the
other packages through PYTHONPATH too, so neither the environment's own roma-eval nor its .pth files take part."""

import os
import site
import subprocess
import sys
from pathlib import Path

import pytest
from lm_eval_helpers import FIXTURE_TASKS

from roma_eval.tiny import save_tiny_model

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    directory = tmp_path_factory.mktemp("target") / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(directory),
                           str(REPO)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"pip could not build roma-eval here (no build backend offline?): {proc.stderr[-300:]}")
    assert (directory / "roma_eval_lm_eval.pth").is_file() and (directory / "roma_eval" / "lm_eval_cli.py").is_file()
    return directory


def run(target: Path, *args):
    paths = [str(target), *site.getsitepackages()]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-S", *args], capture_output=True, text=True, env=env, cwd=target.parent)


def test_lm_eval_cli_registers_roma_where_the_shim_is_not_read(target, tokenizer, tmp_path):
    model = save_tiny_model("olmoe", tmp_path / "model", seed=3, tokenizer=tokenizer)
    lm_eval_args = ["--model", "roma", "--model_args", f"pretrained={model}", "--include_path", str(FIXTURE_TASKS),
                    "--tasks", "tiny_animals", "--limit", "2", "--device", "cpu"]
    where = run(target, "-c", "import roma_eval; print(roma_eval.__file__)")
    assert where.stdout.strip().startswith(str(target)), where.stderr[-500:]
    plain = run(target, "-m", "lm_eval", *lm_eval_args)
    assert plain.returncode != 0 and "no model for this name found" in plain.stderr  # the problem
    fallback = run(target, "-m", "roma_eval.lm_eval_cli", *lm_eval_args)
    assert fallback.returncode == 0 and "tiny_animals" in fallback.stdout, fallback.stderr[-2000:]
    verb = run(target, "-m", "roma_eval.cli", "eval", *lm_eval_args)
    assert verb.returncode == 0 and "tiny_animals" in verb.stdout, verb.stderr[-2000:]
