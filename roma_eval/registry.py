"""Every method roma-eval runs, in one place: the rows of the paper's Table 1 and what each one is made of.

A method is a row of the results table.  Its record says how the row is labelled and ordered, which `roma-eval`
verb and settings class produce it, what it writes (and under which file names), which lm-eval model evaluates
what it wrote, whether it trains parameters, and whether its `reproduce` stage can share work across processes.
`cli`, `reproduce`, the pipeline, the demo, the report, `results` and the lm-eval registration hook read it;
nothing else names the methods.  Importing this module imports nothing heavy (the lm-eval registration hook
reads it at every interpreter start).

Adding a method is described in docs/architecture.md ("Adding a method").
"""

from __future__ import annotations

from dataclasses import dataclass

ROUTER_CHECKPOINT = "router_checkpoint"  # router_model.safetensors + router_config.json (checkpoint.py)
PEFT_ADAPTER = "peft_adapter"  # a peft adapter directory + training_config.json (methods/peft_tuning)
REFERENCE_SET = "reference_set"  # C3PO's reference set (methods/c3po/reference.py)
ORACLE_ROUTING = "oracle_routing"  # the oracle's per-sample routing beside its lm-eval outputs


@dataclass(frozen=True)
class Artefact:
    """What a method writes for lm-eval to read: the model_args key that names it, the file every such directory
    holds (written last: its presence means complete; how a copy is recognised), and its directory's name in a
    `reproduce` stage."""

    model_arg: str
    marker: str
    directory: str


# The artefacts lm-eval reads through model_args (the oracle's routing stays beside its own results).
ARTEFACTS: dict[str, Artefact] = {
    ROUTER_CHECKPOINT: Artefact("router_checkpoint", "router_config.json", "router_checkpoint"),
    PEFT_ADAPTER: Artefact("peft", "adapter_config.json", "adapter"),
    REFERENCE_SET: Artefact("reference", "reference.json", "reference"),
}


@dataclass(frozen=True)
class Method:
    name: str  # the row's key: in --methods, experiment.json, artefacts' "method" field and the report
    label: str  # the row's name in tables
    verb: str | None  # the `roma-eval` verb that produces it (None: plain lm-eval on the base model)
    config: str | None  # "module:Class" of its settings dataclass (the verb's flags), imported only when needed
    artefact: str | None  # what it writes for lm-eval to read (one of the kinds above), None for nothing
    lm_eval_model: str | None  # the lm-eval --model that evaluates it (None: an evaluator adapter of ours)
    trains: bool  # whether it trains parameters (its cost-table row counts them)
    one_process: bool = False  # its reproduce stage runs on the main process only
    default: bool = False  # in `reproduce`'s default --methods
    settings_flag: bool = False  # `reproduce --<name>_args` passes settings to its verb
    reads_training_set: bool = True  # it reads the training mixture (trains on it, or draws references from it)
    fixed: tuple[tuple[str, object], ...] = ()  # settings that make its config this row (Router Tuning: no regulariser)

    @property
    def fixed_settings(self) -> dict:
        return dict(self.fixed)


# Report order: the paper's Table 1, top to bottom.
METHODS: tuple[Method, ...] = (
    Method("base", "Base", None, None, None, "hf", trains=False, default=True, reads_training_set=False),
    Method("oracle", "Oracle", "oracle", "roma_eval.methods.oracle.config:OracleConfig", ORACLE_ROUTING, None,
           trains=False, default=True, settings_flag=True, reads_training_set=False),
    Method("icl", "ICL", "icl", "roma_eval.methods.icl.config:IclConfig", None, None, trains=False, one_process=True),
    Method("c3po", "C3PO", "c3po", "roma_eval.methods.c3po.config:C3POConfig", REFERENCE_SET, "c3po", trains=False,
           default=True),
    Method("router_tuning", "Router Tuning", "train", "roma_eval.methods.roma.config:RomaConfig", ROUTER_CHECKPOINT,
           "roma", trains=True, default=True, settings_flag=True, fixed=(("regulariser", "none"),)),
    Method("oracle_tuning", "Oracle Tuning", "oracle-tuning",
           "roma_eval.methods.oracle_tuning.config:OracleTuningConfig", ROUTER_CHECKPOINT, "roma", trains=True,
           settings_flag=True),
    Method("prefix_tuning", "Prefix Tuning", "prefix-tuning", "roma_eval.methods.peft_tuning.config:PeftTuningConfig",
           PEFT_ADAPTER, "hf-peft", trains=True, one_process=True, fixed=(("method", "prefix_tuning"),)),
    Method("prompt_tuning", "Prompt Tuning", "prompt-tuning", "roma_eval.methods.peft_tuning.config:PeftTuningConfig",
           PEFT_ADAPTER, "hf-peft", trains=True, one_process=True, fixed=(("method", "prompt_tuning"),)),
    Method("dense_bp", "Dense BP", "dense-bp", "roma_eval.methods.dense_bp.config:DenseBPConfig", ROUTER_CHECKPOINT,
           "roma", trains=True, settings_flag=True),
    Method("roma", "RoMA", "train", "roma_eval.methods.roma.config:RomaConfig", ROUTER_CHECKPOINT, "roma",
           trains=True, default=True, settings_flag=True),
)
BY_NAME: dict[str, Method] = {m.name: m for m in METHODS}
NAMES: tuple[str, ...] = tuple(BY_NAME)
# The order `reproduce` and the demo run them in: the default rows first (the rows roma-eval ran first), base
# before everything that compares with it.
RUN_ORDER: tuple[str, ...] = ("base", "router_tuning", "roma", "oracle", "c3po", "icl", "oracle_tuning",
                              "prefix_tuning", "prompt_tuning", "dense_bp")
DEFAULT: tuple[str, ...] = tuple(name for name in RUN_ORDER if BY_NAME[name].default)

# The lm-eval models roma-eval adds (registered by the hook in _registration/ and pyproject's entry points).
LM_EVAL_MODELS: dict[str, str] = {
    "roma": "roma_eval.methods.roma.lm_eval:RomaLM",
    "c3po": "roma_eval.methods.c3po.lm_eval:C3POLM",
    "hf-peft": "roma_eval.methods.peft_tuning.lm_eval:PeftLM",
}
# lm-eval's own models that evaluate a base model's weights as they are.
PLAIN_LM_EVAL_MODELS = frozenset({"hf", "hf-auto", "huggingface", "vllm", "sglang"})


# Why a method's evaluation has no single routing to analyse (`roma-eval analyze`, the report's routing section), by
# what the method writes; the base model's routers and every router checkpoint's have one (``ROUTED``).
NO_SINGLE_ROUTING: dict[str | None, str] = {
    ORACLE_ROUTING: "it changes the routing of every sample by gradient descent with the gold label",
    REFERENCE_SET: "it re-mixes the routing of every test sample",
    PEFT_ADAPTER: "its adapter puts virtual tokens before every prompt",
    None: "it changes the prompts, not the routers",
}
ROUTED: tuple[str, ...] = tuple(m.name for m in METHODS if m.artefact == ROUTER_CHECKPOINT
                                or (m.artefact is None and m.lm_eval_model in PLAIN_LM_EVAL_MODELS))


def method(name: str) -> Method:
    """The record of ``name``; a KeyError names the known methods."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r}: one of {', '.join(NAMES)}") from None


# Rows the report may show beside the methods: C3PO's three step rules, when a run names one (methods/c3po).
VARIANT_LABELS: dict[str, str] = {"mode_finding": "Mode Finding", "kernel_regression": "Kernel Regression",
                                  "ngd": "NGD"}


def label(name: str) -> str:
    """The row label of a method or C3PO variant, or the name itself for a row roma-eval does not know."""
    return BY_NAME[name].label if name in BY_NAME else VARIANT_LABELS.get(name, name)


def no_single_routing(name: str) -> str | None:
    """Why runs of a method or C3PO variant have no single routing to analyse (``NO_SINGLE_ROUTING``); None when
    they have one, or for a row roma-eval does not know."""
    name = "c3po" if name in VARIANT_LABELS else name
    return None if name not in BY_NAME or name in ROUTED else NO_SINGLE_ROUTING[BY_NAME[name].artefact]


def config_class(name: str):
    """The settings dataclass of a method (imported on demand: it may import torch)."""
    import importlib

    module, _, cls = method(name).config.partition(":")
    return getattr(importlib.import_module(module), cls)
