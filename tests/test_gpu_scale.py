"""bench/gpu_scale.py --tiny: the GPU check's own code path, on the CPU, on both model families it builds."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_scale_tiny_runs_every_step_on_both_shapes(tmp_path):
    out = tmp_path / "gpu_scale.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_scale.py"), "--tiny", "--shapes", "olmoe,qwen3",
                           "--json", str(out)], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(out.read_text())
    assert summary["device"] == "cpu" and "texts_per_s" in summary["embedder"]
    for shape in ("olmoe", "qwen3"):
        steps = summary["shapes"][shape]
        assert not [name for name, step in steps.items() if "error" in step], steps
        for name in ("roma_cached", "roma_group_by_length", "roma_no_layer_cache"):
            assert steps[name]["samples_per_s_mean"] > 0 and steps[name]["step_s_median"] > 0
        assert steps["eval_ratios"]["roma_over_hf"] > 0 and steps["eval_ratios"]["c3po_over_hf"] > 0
        assert all(steps[f"oracle_{kind}"]["s_per_document"] > 0 for kind in ("multiple_choice", "generation"))
