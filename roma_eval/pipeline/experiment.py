"""One base model, one evaluation suite, one training mixture, one output directory: what every stage shares.

The directory is claimed by a manifest (``experiment.json``) holding what its outputs depend on; a run
with other settings is refused unless ``overwrite``, so no stage reuses outputs made for another model.
The manifest also records, per stage, when it finished, its wall time and the plain commands (`lm_eval`,
`roma-eval ...`) that compute the same outputs one by one, and, for `reproduce`, the training budget each trained
row used and where each value came from (``training_budget``, pipeline/budget.py).  A stage whose outputs are
complete is not recomputed: a second invocation does no work and an interrupted one resumes at the stage it was in
(RoMA training and the oracle also resume inside a stage).  A stage that did no work keeps the wall time
and finishing time of the run that computed it, marked ``"skipped": true`` (the cost figures survive reruns).

Under ``accelerate launch`` (or ``torchrun``) every process runs every stage: training, the oracle, C3PO's
reference and lm-eval each share the work across the processes and the main process writes the outputs, the
manifest and the report once.
"""

from __future__ import annotations

import logging
import shlex
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from roma_eval.errors import RomaEvalError
from roma_eval.methods.dense_bp.config import DenseBPConfig
from roma_eval.methods.oracle.config import OracleConfig
from roma_eval.methods.roma.config import RomaConfig
from roma_eval.storage import write_json

logger = logging.getLogger(__name__)
# lm-eval's model for the rows a plain model evaluates (the base model, router checkpoints once exported): its
# `hf` (transformers) or `vllm`.  The other rows always run on transformers (pipeline/stages.py says why).
BACKENDS = ("hf", "vllm")


def _router_tuning() -> RomaConfig:
    return RomaConfig(regulariser="none")  # the paper's Router Tuning row: RoMA without the manifold term


@dataclass
class Experiment:
    pretrained: str  # hub id or local directory of the base MoE
    output: Path
    eval_tasks: tuple[str, ...]  # lm-eval tasks or groups, e.g. ("roma_paper",)
    train_tasks: tuple[str, ...]  # the training mixture, e.g. ("roma_paper_train",)
    include_path: tuple[str, ...] = ()
    limit: int | None = None  # documents per evaluation task
    train_limit: int | None = None  # documents per training task
    revision: str | None = None
    dtype: str = "auto"
    device: str | None = None
    trust_remote_code: bool = False
    batch_size: int = 8  # lm-eval's --batch_size
    seed: int = 0  # training order, sampling, random neighbours; lm-eval keeps its own default seeds
    roma: RomaConfig = field(default_factory=RomaConfig)
    router_tuning: RomaConfig = field(default_factory=_router_tuning)
    oracle: OracleConfig = field(default_factory=OracleConfig)
    # Oracle Tuning's settings but its targets (oracle_routing: the stage's own oracle run of the mixture)
    oracle_tuning: dict = field(default_factory=dict)
    dense_bp: DenseBPConfig = field(default_factory=DenseBPConfig)
    peft: dict = field(default_factory=dict)  # Prefix / Prompt Tuning's settings but the method (the budget's)
    # Every trained row's budget and where each value came from (pipeline/budget.py): kept in the manifest
    training_budget: dict = field(default_factory=dict)
    c3po_args: str = ""  # extra model_args of `--model c3po`, e.g. "c3po_k=3,c3po_steps=10"
    # lm-eval's --apply_chat_template / --fewshot_as_multiturn for every evaluation (the paper does not say; off)
    apply_chat_template: bool | str = False
    fewshot_as_multiturn: bool = False
    backend: str = "hf"  # one of BACKENDS
    vllm_args: str = ""  # extra model_args of `--model vllm`, e.g. "tensor_parallel_size=8,gpu_memory_utilization=0.9"
    model_identity: str | None = None  # what the model is, if not its path (the demo's toy model: its recipe key)
    overwrite: bool = False
    progress: bool = True
    manifest_name: str = "experiment.json"
    results: dict[str, dict] = field(default_factory=dict)  # stage -> lm-eval's results
    _samples: list | None = field(default=None, repr=False)
    _work: int = field(default=0, init=False, repr=False)  # parts of stages computed in this run (``timed``)

    # ------------------------------------------------------------ the directory

    def identity(self) -> dict:
        """What the outputs depend on: stages are reused only by a run that agrees on all of it."""
        return {"model": self.model_identity or self.pretrained, "revision": self.revision, "dtype": self.dtype,
                "eval_tasks": list(self.eval_tasks), "train_tasks": list(self.train_tasks),
                "include_path": [str(p) for p in self.include_path], "limit": self.limit,
                "train_limit": self.train_limit, "seed": self.seed, "roma": asdict(self.roma),
                "router_tuning": asdict(self.router_tuning), "oracle_tuning": self.oracle_tuning,
                "dense_bp": asdict(self.dense_bp), "peft": self.peft, "oracle": self.oracle.settings(),
                "c3po_args": self.c3po_args, "apply_chat_template": self.apply_chat_template,
                "fewshot_as_multiturn": self.fewshot_as_multiturn,
                **({"backend": self.backend, "vllm_args": self.vllm_args} if self.backend != "hf" else {})}

    @property
    def dist(self):
        """accelerate's state of this process (one process, or one of ``accelerate launch``)."""
        from roma_eval.devices import process_state

        return process_state()

    @property
    def manifest_path(self) -> Path:
        return self.output / self.manifest_name

    def check_output(self) -> bool:
        """Refuse, writing nothing, a directory holding another run's outputs; True when it holds this run's."""
        import json

        if self.output.exists() and not self.output.is_dir():
            raise RomaEvalError(f"--output_path {self.output} is a file, not a directory; pass a directory path")
        manifest = self.manifest_path
        if manifest.is_file() and not self.overwrite:
            found = json.loads(manifest.read_text()).get("identity")
            if found != self.identity():
                changed = sorted(k for k in {**(found or {}), **self.identity()}
                                 if (found or {}).get(k) != self.identity().get(k))
                raise RomaEvalError(f"{self.output} holds a run with other settings ({', '.join(changed)} differ); "
                                    "pass --output_path DIR for a new directory, or --overwrite to recompute it")
            return True
        if not manifest.is_file() and self.output.is_dir() and any(self.output.iterdir()) and not self.overwrite:
            raise RomaEvalError(f"{self.output} exists and holds no {self.manifest_name}; pass --output_path DIR for "
                                "a new directory")
        return False

    def claim_output(self) -> None:
        """Claim the directory (``roma_eval.claims``: a second run into it is refused until this one ends) and
        record this run's identity in the manifest (``check_output`` first)."""
        from roma_eval.claims import claim_output

        claim = claim_output(self.output)
        if self.check_output():
            return
        if claim is not None:  # the manifest alone is no output: a run that fails before any stage leaves nothing
            claim.disposable.add(self.manifest_name)
        manifest = self.manifest_path
        try:
            self.output.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RomaEvalError(f"cannot create --output_path {self.output} ({exc.strerror}); pass a writable "
                                "directory") from None
        self.dist.wait_for_everyone()  # every process has judged the directory before the main process claims it
        if self.dist.is_main_process:
            write_json(manifest, {"identity": self.identity(), "stages": {}, "versions": _versions(),
                                  **self._budget_entry()})
        self.dist.wait_for_everyone()

    def note_work(self) -> None:
        """A stage computed something (lm-eval, training, the oracle, a reference set, the report) in this run."""
        self._work += 1

    def record(self, stage: str, seconds: float, commands: list[str], skipped: bool = False) -> None:
        """A stage finished: its wall time and the plain commands that compute the same outputs.  A ``skipped``
        stage (its outputs were all there) keeps the time the manifest recorded when it was computed."""
        import json

        if not self.dist.is_main_process:
            return
        manifest = json.loads(self.manifest_path.read_text())
        earlier = manifest["stages"].get(stage)
        if skipped and earlier is not None:
            manifest["stages"][stage] = {**earlier, "commands": commands, "skipped": True}
        else:
            manifest["stages"][stage] = {"seconds": round(seconds, 1), "skipped": skipped,
                                         "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "commands": commands}
        manifest["versions"] = _versions()
        manifest.update(self._budget_entry())
        write_json(self.manifest_path, manifest)
        for command in commands:
            logger.info("  %s", command)

    def _budget_entry(self) -> dict:
        """The manifest's ``training_budget`` (which values each trained row used, and from where), when recorded."""
        return {"training_budget": self.training_budget} if self.training_budget else {}

    def stage_dir(self, stage: str) -> Path:
        return self.output / stage

    # ------------------------------------------------------------ the model and the data

    def load_model(self):
        """The base model (eval mode) and its tokenizer, fresh (training changes routers in place)."""
        from roma_eval.model_loading import load_model

        return load_model(self.pretrained, self.revision, self.dtype, self.device,
                          trust_remote_code=self.trust_remote_code)

    def model_skeleton(self):
        """The base model's modules on the meta device, without its weights: what the methods' checks read before
        any stage runs, in seconds whatever the model's size.  A model that does not load fails as in
        ``load_model``, in one line."""
        from roma_eval.model_loading import model_skeleton

        return model_skeleton(self.pretrained, self.revision, self.trust_remote_code)

    def training_samples(self):
        """The training mixture's train split as lm-eval presents it (RoMA's data, C3PO's references)."""
        from roma_eval.samples import load_samples

        if self._samples is None:
            self._samples = load_samples(list(self.train_tasks), split="train", include_path=self.include_path,
                                         limit=self.train_limit)
        return self._samples

    def model_args(self, **extra) -> str:
        """lm-eval model_args of the base model, plus ``extra`` (router_checkpoint=..., reference=...)."""
        args = {"pretrained": self.pretrained, "revision": self.revision,
                "dtype": None if self.dtype == "auto" else self.dtype,
                "trust_remote_code": self.trust_remote_code or None, **extra}
        return ",".join(f"{k}={v}" for k, v in args.items() if v is not None)

    def vllm_model_args(self, exported: Path | None = None) -> str:
        """lm-eval `vllm` model_args of the base model, or of a directory `roma-eval export` wrote (``exported``):
        the dtype and remote-code flags, tensor_parallel_size (1 unless ``vllm_args`` sets it) and ``vllm_args``."""
        args = self.model_args() if exported is None else self.model_args(pretrained=exported, revision=None)
        parallel = "" if "tensor_parallel_size=" in self.vllm_args else "tensor_parallel_size=1"
        return ",".join(part for part in (args, parallel, self.vllm_args) if part)

    def lm_eval_batch_size(self, model: str) -> int | str:
        """lm-eval's --batch_size for ``model``: the experiment's, or "auto" for vLLM (it schedules the requests)."""
        return "auto" if model == "vllm" else self.batch_size

    # ------------------------------------------------------------ lm-eval

    def chat_template_args(self) -> dict:
        """The chat-template keywords every lm-eval evaluation of the experiment gets (simple_evaluate's names)."""
        return {"apply_chat_template": self.apply_chat_template, "fewshot_as_multiturn": self.fewshot_as_multiturn}

    def chat_template_flags(self) -> list[str]:
        """The same as command-line flags (lm_eval's, and the roma-eval verbs' that evaluate)."""
        from roma_eval.harness import chat_template_flags

        return chat_template_flags(self.apply_chat_template, self.fewshot_as_multiturn)

    def lm_eval_command(self, stage: str, model: str, model_args: str) -> str:
        from roma_eval.resources import tasks_dir

        parts = ["lm_eval", "--model", model, "--model_args", model_args, "--tasks", ",".join(self.eval_tasks),
                 "--include_path", str(tasks_dir()), "--batch_size", str(self.lm_eval_batch_size(model)),
                 "--output_path", str(self.stage_dir(stage)), "--log_samples"]
        parts += ["--limit", str(self.limit)] if self.limit is not None else []
        parts += ["--device", self.device] if self.device else []
        parts += self.chat_template_flags()
        return shlex.join(parts)

    def evaluate(self, stage: str, model: str, model_args: str) -> dict:
        """lm-eval's results for ``model`` on the evaluation suite, written under ``stage_dir(stage)`` exactly as
        ``lm_eval --output_path DIR --log_samples`` writes them (reused when already there).  Under accelerate
        launch lm-eval shares the requests and gathers the results on the main process, which writes them (the
        other processes return None)."""
        out_dir = self.stage_dir(stage)
        if not self.overwrite and (found := _find_results(out_dir, model_args, self.limit)) is not None:
            logger.info(f"{stage}: reusing the lm-eval results in {out_dir} (--overwrite recomputes them)")
            self.results[stage] = found
            return found
        self.note_work()
        import torch

        from roma_eval.harness import evaluate, task_manager

        # HFLM's own default device is "cuda", which fails on a CPU-only machine; vLLM places itself.
        device = None if model == "vllm" else self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        evaluation = evaluate(model, out_dir, self.eval_tasks, model_args=model_args, device=device,
                              batch_size=self.lm_eval_batch_size(model), limit=self.limit,
                              task_manager=task_manager(self.include_path, task_names=list(self.eval_tasks)),
                              **self.chat_template_args())
        results = None
        if self.dist.is_main_process:
            evaluation.save()
            results = evaluation.results
        self.dist.wait_for_everyone()
        self.results[stage] = results
        return results


def _find_results(directory: Path, model_args: str, limit: int | None) -> dict | None:
    """The newest lm-eval results JSON under ``directory`` for these model arguments and limit (an artefact path
    recorded elsewhere counts when it resolves, from the results file, to this one: a copied tree is reused)."""
    import json

    from roma_eval.results import same_model_args

    newest = None
    for path in sorted(directory.rglob("results_*.json")):
        data = json.loads(path.read_text())
        config = data.get("config", {})
        if config.get("limit") == limit and same_model_args(config.get("model_args"), model_args, path):
            newest = data
    return newest


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("roma-eval", "lm_eval", "torch", "transformers", "accelerate", "sentence-transformers"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = None
    return found


def timed(experiment: Experiment, stage: str, run) -> None:
    """Run a stage function ``run() -> commands`` and record it (as skipped when it computed nothing)."""
    started, work = time.perf_counter(), experiment._work
    commands = run()
    experiment.record(stage, time.perf_counter() - started, commands, skipped=experiment._work == work)
