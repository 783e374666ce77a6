"""Every stage in several processes (two CPU processes, gloo): the work is shared, the main process writes once, and
the results are those of one process.  (RoMA training: tests/methods/roma/test_roma.py::test_two_processes_...)

The processes are started by torchrun, which `accelerate launch --multi_gpu` runs on GPUs: `accelerate launch --cpu
--num_processes 2` starts a single process unless mpirun is configured.  ACCELERATE_USE_CPU=1 makes lm-eval's own
Accelerator form the CPU group (roma-eval's code does so without it: devices.process_state)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lm_eval_helpers import FIXTURE_TASKS, per_sample

import roma_eval
from roma_eval.tiny import save_tiny_model

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
REPO = str(Path(roma_eval.__file__).resolve().parents[1])
STRONG = dict(seed=5, initializer_range=0.2)


def env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        p for p in (REPO, os.environ.get("PYTHONPATH")) if p), "ROMA_EVAL_EMBEDDING_CACHE": "off",
        "ACCELERATE_USE_CPU": "1"}


def launcher(processes: int) -> list[str]:
    """The command that starts ``processes`` processes of ``python -m ...`` on this machine."""
    if processes == 1:
        return [sys.executable]
    return [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", str(processes)]


def launch(processes: int, module: str, *args, **extra_env) -> subprocess.CompletedProcess:
    command = [*launcher(processes), "-m", module]
    proc = subprocess.run([*command, *map(str, args)], capture_output=True, text=True, env={**env(), **extra_env})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def world(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("multiprocess")
    model = save_tiny_model("olmoe", root / "base", tokenizer=tokenizer, **STRONG)
    return root, model


@pytest.fixture(scope="module")
def references(world):
    """The C3PO reference built by one process and by two (chunks of 5 samples, shared round-robin)."""
    root, model = world
    out = {}
    for n in (1, 2):
        out[n] = root / f"ref{n}"
        launch(n, "roma_eval.cli", "c3po", "build-reference", "--pretrained", model, "--tasks", "c3po_fish_train",
               "--include_path", FIXTURE_TASKS, "--output_path", out[n], "--chunk-size", "5", "--no_progress")
    return out


def test_build_reference_in_two_processes_writes_the_one_process_file(references):
    from safetensors.torch import load_file

    one, two = (load_file(references[n] / "reference.safetensors") for n in (1, 2))
    assert one.keys() == two.keys() and all(torch.equal(one[k], two[k]) for k in one)
    meta = [json.loads((references[n] / "reference.json").read_text()) for n in (1, 2)]
    assert meta[0]["samples"] == meta[1]["samples"] and meta[0]["n_references"] > 5
    assert not (references[2].parent / "ref2.partial").exists()


def lm_eval_samples(processes: int, model: str, model_args: str, output: Path, tasks=("tiny_animals", "tiny_sums"),
                    batch_size: int = 4):
    import re

    proc = launch(processes, "lm_eval", "--model", model, "--model_args", model_args, "--include_path",
                  FIXTURE_TASKS, "--tasks", ",".join(tasks), "--device", "cpu", "--batch_size", batch_size,
                  "--output_path", output, "--log_samples", LMEVAL_LOG_LEVEL="DEBUG")
    assert len(list(output.rglob("results_*.json"))) == 1  # written once, by the main process
    # lm-eval's own account of the sharing: per process and task, the requests it ran
    found = re.findall(r"Task: tiny_animals; number of requests on this rank: (\d+)", proc.stderr + proc.stdout)
    shares = [int(n) for n in found]
    assert len(shares) == processes and (processes == 1 or max(shares) < 2 * min(shares) + 8), shares
    return {task: per_sample([json.loads(line) for f in output.rglob(f"samples_{task}_*.jsonl")
                              for line in f.read_text().splitlines()]) for task in tasks}


def test_lm_eval_c3po_in_two_processes_equals_one(world, references):
    root, model = world
    # Plain gradient descent: two processes group the documents differently, and Adam turns that float rounding into
    # steps of ~lr on the last layer's scores, whose gradient is zero but for rounding here (docs/c3po.md).
    args = f"pretrained={model},reference={references[1]},c3po_group=4,c3po_optimizer=sgd"
    one = lm_eval_samples(1, "c3po", args, root / "c3po1")
    two = lm_eval_samples(2, "c3po", args, root / "c3po2")
    for task in one:
        assert one[task].keys() == two[task].keys()
        for doc in one[task]:
            (r1, m1), (r2, m2) = one[task][doc], two[task][doc]
            assert m1 == m2, (task, doc)
            assert [x[0] for x in r1] == pytest.approx([x[0] for x in r2], abs=1e-4)


def test_lm_eval_roma_in_two_processes_equals_one(world, tokenizer):
    from roma_eval.methods.roma import RomaConfig, train_roma
    from roma_eval.model_loading import load_model
    from roma_eval.samples import load_samples

    root, model_dir = world
    model, tok = load_model(str(model_dir), dtype="float32", device="cpu")
    samples = load_samples(["tiny_parity"], split="train", include_path=[FIXTURE_TASKS])
    train_roma(model, tok, samples, root / "routers", RomaConfig(layers="last:2", epochs=1, batch_size=8, k=2,
                                                                 lr=5e-2), base_model=str(model_dir), progress=False)
    args = f"pretrained={model_dir},router_checkpoint={root / 'routers'}"
    # one request per forward: no padding, so the split between processes cannot move a score in its last bits
    # (with strong routers a last-bit change can flip a top-k choice)
    one = lm_eval_samples(1, "roma", args, root / "roma1", batch_size=1)
    two = lm_eval_samples(2, "roma", args, root / "roma2", batch_size=1)
    assert one == two


def test_oracle_in_two_processes_equals_one(world):
    root, model = world
    results = {}
    for n in (1, 2):
        out = root / f"oracle{n}"
        launch(n, "roma_eval.cli", "oracle", "--pretrained", model, "--tasks", "tiny_animals,tiny_sums",
               "--include_path", FIXTURE_TASKS, "--limit", "12", "--layers", "last:2", "--output_path", out,
               "--no_progress")
        [results_file] = list(out.rglob("results_*.json"))
        data = json.loads(results_file.read_text())
        samples = {task: {line["doc_id"]: line for f in out.rglob(f"samples_{task}_*.jsonl")
                          for line in map(json.loads, f.read_text().splitlines())} for task in ("tiny_animals",
                                                                                             "tiny_sums")}
        progress = sorted(p.name for p in out.rglob("oracle_progress/*.jsonl"))
        results[n] = data, samples, progress
    (one, samples_one, _), (two, samples_two, progress_two) = results[1], results[2]
    for a, b in ((one["results"], two["results"]), (one["oracle"]["base"], two["oracle"]["base"])):
        # lm-eval's stderr sums the per-sample values in the order the processes gathered them: equal up to rounding
        assert a == {task: {m: pytest.approx(v) if "_stderr," in m else v for m, v in metrics.items()}
                     for task, metrics in b.items()}
    assert one["oracle"]["convergence"].keys() == two["oracle"]["convergence"].keys()
    for task, docs in samples_one.items():
        assert docs.keys() == samples_two[task].keys()
        for doc, line in docs.items():
            assert line["oracle"]["steps"] == samples_two[task][doc]["oracle"]["steps"], (task, doc)
    assert any(".rank1." in name for name in progress_two)  # the second process did its share


def test_reproduce_in_two_processes_equals_one(world):
    """`torchrun -m roma_eval.cli reproduce`: every stage shares its work; the manifest, each stage's lm-eval files
    and the report are written once, and every row's per-sample results are the one-process run's."""
    root, model = world
    rows = {}
    for n in (1, 2):
        out = root / f"reproduce{n}"
        proc = launch(n, "roma_eval.cli", "reproduce", "--pretrained", model, "--eval_tasks", "tiny_animals,tiny_sums",
                      "--train_tasks", "tiny_parity", "--include_path", FIXTURE_TASKS, "--limit", "8",
                      "--methods", "base,roma,oracle,c3po", "--roma_args", "layers=last:2,epochs=1,batch_size=8,k=2",
                      "--oracle_args", "layers=last:2,max_steps=3", "--c3po_args", "c3po_steps=2,c3po_group=4",
                      "--batch_size", "1", "--output_path", out, "--no_progress")
        assert proc.stdout.count("== roma") == 1 and (out / "report" / "report.md").is_file()
        manifest = json.loads((out / "experiment.json").read_text())
        assert list(manifest["stages"]) == ["base", "roma", "oracle", "c3po", "routing", "report"]
        # the routing analysis runs on the main process, once per row with one routing
        assert {p.parent.parent.name for p in out.rglob("routing_analysis.json")} == {"base", "roma"}
        rows[n] = {}
        for stage in ("base", "roma", "oracle", "c3po"):
            assert len(list((out / stage).rglob("results_*.json"))) == 1, stage  # written once
            rows[n][stage] = {task: per_sample([json.loads(line) for f in (out / stage).rglob(f"samples_{task}_*.jsonl")
                                                for line in f.read_text().splitlines()])
                              for task in ("tiny_animals", "tiny_sums")}
    for stage in rows[1]:
        for task in rows[1][stage]:
            one, two = rows[1][stage][task], rows[2][stage][task]
            assert one.keys() == two.keys() and len(one) == 8, (stage, task)
            assert {d: m for d, (_, m) in one.items()} == {d: m for d, (_, m) in two.items()}, (stage, task)


def test_reproduce_refuses_one_process_stages_under_accelerate_launch(world):
    root, model = world
    command = [*launcher(2), "-m", "roma_eval.cli", "reproduce", "--pretrained", str(model), "--methods", "base,icl",
               "--output_path", str(root / "refused")]
    proc = subprocess.run(command, capture_output=True, text=True, env=env())
    assert proc.returncode != 0 and "icl run in one process" in proc.stderr  # each process exits 2; torchrun 1
    assert not (root / "refused").exists()
