"""C3PO's reference set: training samples the base model answers correctly, with their pathways.

A reference is a directory, like a router checkpoint, holding two files:
  - ``reference.safetensors``: per reference sample its prompt embedding, its pathway ω (routing
    scores at the last context token, at the critical layers), gold choice and token ids; and,
    unless built with ``prefixes=False``, its frozen prefix (``frozen.py``): the keys/values of
    layers first..last for the context but its last token, the hidden state entering the first
    critical layer at the last context token, and the hidden states entering the layer after it
    at the tail tokens.  A multiple-input sample (winogrande) has one prompt per choice: its
    prompts, their prefixes and routings are stored each, and its pathway is the mean of those
    routings (``ChoiceBatch.per_sample``, RoMA's r_i).  Ragged data is concatenated along its first
    axis, with a lengths array beside it (``n_contexts``: prompts per sample).
  - ``reference.json``: base model, router fingerprint, layers, embedder, build settings,
    versions, and each reference sample's task, doc_id and label-free prompt.
The reference set is the success set of RoMA (Eq. 2): acc as lm-eval scores it (``scoring``).
C3PO embeds the last block of the label-free prompt (``embedded_text``): the question itself,
without the few-shot examples and task description lm-eval puts before it, and without any answer
option filled in; references and test prompts alike.
A build runs in chunks saved under ``DIR.partial/``, so an interrupted build resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from roma_eval import __version__
from roma_eval.checkpoint import ensure_new_output
from roma_eval.devices import input_dtype
from roma_eval.errors import RomaEvalError
from roma_eval.methods.c3po.config import ReferenceBuild
from roma_eval.methods.c3po.frozen import Frozen, Problem, freeze
from roma_eval.routing import num_experts, resolve_layers, router_fingerprint, spec_for
from roma_eval.samples import Sample, label_free_prompt
from roma_eval.scoring import encode_pair, model_max_length, score_samples
from roma_eval.storage import require_finite, require_free_space, staged_directory, write_atomic

logger = logging.getLogger(__name__)
TENSORS_NAME = "reference.safetensors"
METADATA_NAME = "reference.json"
FORMAT_VERSION = 2  # 2: one prompt per choice for multiple-input samples (1 scored winogrande wrongly)


def problem_of(tokenizer, sample: Sample, max_length: int) -> Problem:
    """A multiple-choice sample tokenised as lm-eval tokenises its requests (one prompt per choice
    for a multiple-input sample)."""
    pairs = [encode_pair(tokenizer, context, c) for context, c in zip(sample.contexts, sample.continuations)]
    return Problem.make([context for context, _ in pairs], [cont for _, cont in pairs], max_length,
                        gold=int(sample.gold))


@dataclass
class Reference:
    directory: Path
    metadata: dict
    embeddings: np.ndarray  # (N, dim), L2-normalised
    routing: torch.Tensor  # (N, n_layers, n_experts) each sample's pathway
    problems: list[Problem]
    prompt_routing: torch.Tensor | None = None  # (prompts, n_layers, n_experts), the problems' prompts in order;
    # None: one prompt per problem, whose routing is the pathway

    def __post_init__(self):
        self._prompt_ends = np.cumsum([len(p.contexts) for p in self.problems])

    def __len__(self) -> int:
        return len(self.problems)

    @property
    def layers(self) -> list[int]:
        return list(self.metadata["layers"])

    @property
    def has_prefixes(self) -> bool:
        return bool(self.metadata["prefixes"])

    def prompts_of(self, i: int) -> tuple[int, int]:
        """Reference sample ``i``'s prompts: their span in the arrays stored per prompt."""
        return _span(self._prompt_ends, i)

    def stored_frozen(self, indices: Sequence[int], device, dtype, kv_devices: Sequence | None = None) -> list[Frozen]:
        """The frozen prefixes of reference samples ``indices``, read from the file (memory-mapped): gathered on the
        host and copied to the device once per stored tensor (not once per sample and layer), the keys and values
        of each cached layer to ``kv_devices`` (default: ``device``; a model split across devices keeps each
        layer's cache on that layer's device)."""
        from safetensors import safe_open

        n_layers = self.metadata["num_hidden_layers"] - self.layers[0]
        kv_devices = list(kv_devices) if kv_devices is not None else [device] * n_layers
        with safe_open(str(self.directory / TENSORS_NAME), framework="pt") as f:
            ends = {name: np.cumsum(f.get_tensor(name).numpy()) for name in ("prefix_lens", "choice_lens", "n_choices")}
            spans = []  # per sample, per prompt: its prefix rows (a, b), a == b without a prefix
            tails, token0 = [], []
            for i in indices:
                prompts = self.prompts_of(i)
                spans.append([_span(ends["prefix_lens"], q) for q in range(*prompts)])
                first, last = _span(ends["n_choices"], i)
                rows = [f.get_slice("tail_hidden")[slice(*_span(ends["choice_lens"], r))] for r in range(first, last)]
                width = max(len(t) for t in rows)
                tails.append(torch.stack([torch.nn.functional.pad(t, (0, 0, 0, width - len(t))) for t in rows]))
                token0.append(f.get_slice("token0")[slice(*prompts)])
            kept = [(a, b) for per_sample in spans for a, b in per_sample if a != b]
            layers_kv = []
            for layer in range(n_layers):
                parts = []
                for part in ("keys", "values"):
                    host = torch.cat([f.get_slice(f"prefix.{layer}.{part}")[a:b] for a, b in kept]) if kept else None
                    if host is not None:  # read only now (memory-mapped): checked as it is read
                        require_finite({f"prefix.{layer}.{part}": host}, self.directory / TENSORS_NAME,
                                       "rebuild it with `roma-eval c3po build-reference`")
                    moved = host.to(kv_devices[layer], dtype) if host is not None else None
                    parts.append(list(moved.split([b - a for a, b in kept])) if moved is not None else [])
                layers_kv.append(parts)
        hidden = _split_back(tails, device, dtype)
        first_tokens = _split_back(token0, device, dtype)
        out, n = [], 0
        for k, i in enumerate(indices):
            kv = []
            for a, b in spans[k]:
                if a == b:
                    kv.append(None)
                    continue
                kv.append([(keys[n].transpose(0, 1), values[n].transpose(0, 1)) for keys, values in layers_kv])
                n += 1
            routing = (self.routing[i:i + 1] if self.prompt_routing is None
                       else self.prompt_routing[slice(*self.prompts_of(i))])
            out.append(Frozen(self.problems[i], kv, first_tokens[k], hidden[k], routing.to(device)))
        return out


def _split_back(tensors: list[torch.Tensor], device, dtype) -> list[torch.Tensor]:
    """``tensors`` (host) moved to ``device`` in one copy (flattened, concatenated), returned as views of it."""
    if not tensors:
        return []
    flat = torch.cat([t.reshape(-1) for t in tensors]).to(device, dtype)
    return [part.view(t.shape) for part, t in zip(flat.split([t.numel() for t in tensors]), tensors)]


def _span(ends: np.ndarray, i: int) -> tuple[int, int]:
    return (int(ends[i - 1]) if i else 0), int(ends[i])


def _split(flat: torch.Tensor, lengths: torch.Tensor) -> list[tuple[int, ...]]:
    return [tuple(x) for x in torch.split(flat, lengths.tolist())] if len(lengths) else []


def load_reference(directory) -> Reference:
    """Read a reference directory; the frozen prefixes stay on disk until ``stored_frozen`` reads them."""
    from safetensors import SafetensorError, safe_open

    directory = Path(directory).expanduser()
    meta_path, tensors_path = directory / METADATA_NAME, directory / TENSORS_NAME
    if not meta_path.is_file() or not tensors_path.is_file():
        raise RomaEvalError(f"reference {directory} has no {METADATA_NAME} and {TENSORS_NAME}; "
                            "build one with `roma-eval c3po build-reference`")
    try:
        metadata = json.loads(meta_path.read_text())
        n = int(metadata["n_references"])
        if metadata.get("format_version") != FORMAT_VERSION:
            raise RomaEvalError(f"reference {directory} has format {metadata.get('format_version')}, not "
                                f"{FORMAT_VERSION} (one prompt per choice for multiple-input tasks such as "
                                "winogrande); "
                                "rebuild it with `roma-eval c3po build-reference`")
        with safe_open(str(tensors_path), framework="pt") as f:
            small = {name: f.get_tensor(name) for name in (
                "embeddings", "routing", "context_routing", "gold", "context_ids", "context_lens", "n_contexts",
                "choice_ids", "choice_lens", "n_choices")} if n else {}
    except (ValueError, KeyError, TypeError, SafetensorError, OSError) as exc:
        raise RomaEvalError(f"reference {directory} is unreadable ({exc}); rebuild it with "
                            "`roma-eval c3po build-reference`") from None
    require_finite(small, tensors_path, "rebuild it with `roma-eval c3po build-reference`")
    if n == 0:
        raise RomaEvalError(f"reference {directory} is empty: the base model answered no training sample correctly; "
                            "rebuild it on more or easier training tasks")
    contexts = _split(small["context_ids"], small["context_lens"])
    choices = _split(small["choice_ids"], small["choice_lens"])
    prompt_starts = np.concatenate([[0], np.cumsum(small["n_contexts"].numpy())])
    starts = np.concatenate([[0], np.cumsum(small["n_choices"].numpy())])
    problems = [Problem(tuple(contexts[prompt_starts[i]:prompt_starts[i + 1]]), tuple(choices[starts[i]:starts[i + 1]]),
                        int(small["gold"][i])) for i in range(n)]
    return Reference(directory, metadata, small["embeddings"].numpy(), small["routing"].float(), problems,
                     small["context_routing"].float())


# What is embedded, for references and test prompts alike: the last block of the label-free prompt.
# lm-eval joins a task description, the few-shot examples and the question with its default
# fewshot_delimiter "\n\n"; the last block is the question.  Neighbours are found by what is asked:
# embedding the whole prompt would let the demonstrations, shared by every test prompt of a task,
# swamp the question (and cost the embedding model ten times the tokens on 10-shot prompts).  A
# question whose own text holds a blank line is embedded from its last paragraph on.
# The prompt of an ordinary task holds no answer.  A multiple-input task's prompts each fill in an
# option (winogrande: "... because the trophy" / "... because the suitcase", then " is too big.");
# its label-free prompt is the question with a blank: their shared part up to a word boundary, "_",
# and the shared continuation ("... because the _ is too big."), as samples.py's Sample.text.
EMBEDDED_TEXT = "last block of the label-free prompt"


def sample_prompt(sample: Sample) -> str:
    """A sample's label-free prompt (``samples.label_free_prompt``)."""
    return label_free_prompt(sample.contexts or (sample.context,),
                             sample.continuations[0] if sample.continuations else "")


def query_text(prompt: str) -> str:
    """What the embedder reads of a label-free prompt: its last block."""
    return prompt.rsplit("\n\n", 1)[-1]


def check_reference(reference: Reference, model) -> None:
    """Refuse a reference built for another base model: its pathways and prefixes mean nothing here."""
    meta = reference.metadata
    if router_fingerprint(model) != meta.get("router_fingerprint"):
        raise RomaEvalError(f"reference {reference.directory} was built for base model {meta.get('base_model')}, "
                            "whose routers differ from this model's; rebuild it with "
                            "`roma-eval c3po build-reference --pretrained <this model>`")
    resolve_layers(model, reference.layers)  # the same MoE layers exist here
    if meta.get("embedded_text") != EMBEDDED_TEXT:
        raise RomaEvalError(f"reference {reference.directory} embeds {meta.get('embedded_text')!r}, not the "
                            f"{EMBEDDED_TEXT} as this roma-eval does; rebuild it with `roma-eval c3po build-reference`")


# ---------------------------------------------------------------- building


def _settings(model, samples, build: ReferenceBuild) -> dict:
    """What a partial build was started with: a resumed build must have the same (``build`` resolved)."""
    ids = hashlib.sha256("\n".join(f"{s.task}:{s.doc_id}" for s in samples).encode()).hexdigest()
    return {"format_version": FORMAT_VERSION, "router_fingerprint": router_fingerprint(model), "samples_sha256": ids,
            "layers": build.layers,
            "max_length": build.max_length, "prefixes": build.prefixes, "embedder": build.embedder,
            "embedded_text": EMBEDDED_TEXT, "dtype": str(input_dtype(model))}


def _open_partial(partial: Path, settings: dict) -> None:
    manifest = partial / "manifest.json"
    if partial.is_dir() and manifest.is_file() and json.loads(manifest.read_text()) == settings:
        return  # resume
    if partial.exists():
        logger.warning("discarding %s: it was started with other settings", partial)
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    manifest.write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")


def _chunk_arrays(model, tokenizer, samples: Sequence[Sample], build: ReferenceBuild,
                  embedder) -> tuple[dict, list[dict]]:
    """One chunk's arrays and records (``build`` resolved; ``embedder``: the loaded embedding model)."""
    from roma_eval.embedding import embed

    batch_size, max_length = build.batch_size, build.max_length
    results = score_samples(model, tokenizer, samples, batch_size=batch_size, max_length=max_length)
    good = [s for s, r in zip(samples, results) if r.acc == 1.0]
    if not good:
        return {}, []
    problems = [problem_of(tokenizer, s, max_length) for s in good]
    frozen = [f for start in range(0, len(problems), batch_size)
              for f in freeze(model, problems[start:start + batch_size], build.layers)]
    prompts = [sample_prompt(s) for s in good]
    arrays = {
        "embeddings": torch.from_numpy(embed([query_text(p) for p in prompts], embedder)),
        "routing": torch.stack([f.routing for f in frozen]).cpu(),
        "context_routing": torch.cat([f.prompt_routing for f in frozen]).cpu(),
        "gold": torch.tensor([p.gold for p in problems]),
        "context_ids": torch.tensor([t for p in problems for c in p.contexts for t in c]),
        "context_lens": torch.tensor([len(c) for p in problems for c in p.contexts]),
        "n_contexts": torch.tensor([len(p.contexts) for p in problems]),
        "choice_ids": torch.tensor([t for p in problems for c in p.continuations for t in c]),
        "choice_lens": torch.tensor([len(c) for p in problems for c in p.continuations]),
        "n_choices": torch.tensor([len(p.continuations) for p in problems]),
    }
    if build.prefixes:
        arrays["prefix_lens"] = torch.tensor([len(c) - 1 for p in problems for c in p.contexts])
        arrays["token0"] = torch.cat([f.token0 for f in frozen]).cpu()
        arrays["tail_hidden"] = torch.cat([f.tail_hidden[j, : max(1, len(c))] for f in frozen
                                           for j, c in enumerate(f.problem.continuations)]).cpu()
        with_kv = [kv for f in frozen for kv in f.kv if kv is not None]
        for layer in range(len(with_kv[0]) if with_kv else 0):
            for part, slot in (("keys", 0), ("values", 1)):
                arrays[f"prefix.{layer}.{part}"] = torch.cat([kv[layer][slot].transpose(0, 1) for kv in with_kv]).cpu()
    records = [{"task": s.task, "doc_id": s.doc_id, "prompt": p} for s, p in zip(good, prompts)]
    return arrays, records


def _save_chunk(path: Path, arrays: dict, records: list[dict], n_scored: int) -> None:
    from safetensors.torch import save

    write_atomic(path, save({k: v.contiguous() for k, v in arrays.items()},
                            metadata={"records": json.dumps(records), "n_scored": str(n_scored)}))


def build_reference(model, tokenizer, samples: Sequence[Sample], out_dir, build: ReferenceBuild, *,
                    overwrite: bool = False, progress: bool = True) -> Path:
    """Score the training ``samples`` with the base model, keep the ones it answers correctly and
    write their pathways (and frozen prefixes) to ``out_dir`` as ``build`` says; resumable, written atomically.
    Under ``accelerate launch`` the processes share the chunks and the main process writes the reference: the same
    file as one process writes (each chunk is computed alone)."""
    from tqdm.auto import tqdm

    from roma_eval.devices import process_state
    from roma_eval.embedding import load_embedder

    out_dir = Path(out_dir)
    ensure_new_output(out_dir, overwrite)
    other = sorted({s.task for s in samples if s.output_type != "multiple_choice"})
    if other:
        raise RomaEvalError(f"task(s) {', '.join(other)} are not multiple choice; C3PO's reference set needs labelled "
                            "multiple-choice training tasks (their gold choice is the neighbours' label)")
    if not samples:
        raise RomaEvalError("no training samples were given; pass training tasks with a train split")
    build = replace(build, layers=resolve_layers(model, build.layers),
                    max_length=build.max_length or model_max_length(model))
    partial = out_dir.parent / f"{out_dir.name}.partial"
    dist = process_state()  # one process, or one of `accelerate launch`: each builds every num_processes-th chunk
    if dist.is_main_process:
        _open_partial(partial, _settings(model, samples, build))
    dist.wait_for_everyone()
    encoder = load_embedder(build.embedder)
    starts = range(0, len(samples), build.chunk_size)
    mine = [n for n in range(len(starts)) if n % dist.num_processes == dist.process_index]
    for n in tqdm(mine, desc="C3PO reference (chunks)", disable=not progress or not dist.is_main_process):
        path = partial / f"chunk_{n:05d}.safetensors"
        if not path.exists():
            chunk = samples[starts[n]:starts[n] + build.chunk_size]
            arrays, records = _chunk_arrays(model, tokenizer, chunk, build, encoder)
            _save_chunk(path, arrays, records, len(chunk))
            if n == mine[0] and dist.is_main_process:  # the chunks, then the reference assembled from them
                require_free_space(out_dir.parent, path.stat().st_size * (2 * len(starts) - n - 1),
                                   f"the C3PO reference ({len(starts)} chunks like {path.name})")
    dist.wait_for_everyone()  # every chunk is on disk
    if dist.is_main_process:
        _assemble(partial, len(starts), out_dir, model, tokenizer, samples, build)
    dist.wait_for_everyone()
    if not (out_dir / METADATA_NAME).is_file():  # the main process failed: its error says why
        raise RomaEvalError(f"the reference {out_dir} was not written; see the main process's error")
    return out_dir


def _assemble(partial: Path, n_chunks: int, out_dir: Path, model, tokenizer, samples, build: ReferenceBuild) -> None:
    """The chunks, in order, as one reference directory (written atomically); the partial directory goes."""
    from safetensors import safe_open

    parts, records = {}, []
    for n in range(n_chunks):
        with safe_open(str(partial / f"chunk_{n:05d}.safetensors"), framework="pt") as f:
            records += json.loads(f.metadata()["records"])
            for name in f.keys():
                parts.setdefault(name, []).append(f.get_tensor(name))
    if not records:
        raise RomaEvalError(f"the base model answers none of the {len(samples)} training samples correctly, so the "
                            "reference set would be empty; use more or easier training tasks")
    arrays = {name: torch.cat(tensors) for name, tensors in parts.items()}
    _write_directory(out_dir, arrays, _metadata(model, tokenizer, samples, records, build))
    shutil.rmtree(partial)


def _metadata(model, tokenizer, samples, records, build: ReferenceBuild) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    import transformers

    try:
        lm_eval_version = version("lm_eval")  # the installed lm-eval, read without importing it
    except PackageNotFoundError:
        lm_eval_version = "unknown"

    return {
        "format_version": FORMAT_VERSION, "base_model": str(build.base_model), "revision": build.revision,
        "model_type": spec_for(model).model_type, "router_fingerprint": router_fingerprint(model),
        "num_hidden_layers": model.config.num_hidden_layers, "layers": build.layers,
        "num_experts": num_experts(model), "score_kind": spec_for(model).score_kind,
        "embedder": build.embedder, "embedded_text": EMBEDDED_TEXT, "prefixes": build.prefixes,
        "prefix_dtype": str(input_dtype(model)), "max_length": build.max_length,
        "tokenizer": getattr(tokenizer, "name_or_path", None),
        "n_training_samples": len(samples), "n_references": len(records),
        "tasks": sorted({s.task for s in samples}),
        "build": {"batch_size": build.batch_size, "success": "acc (argmax of summed continuation log-probabilities)"},
        "versions": {"roma_eval": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
                     "lm_eval": lm_eval_version},
        "samples": records,
    }


def _write_directory(out_dir: Path, arrays: dict, metadata: dict) -> None:
    from safetensors.torch import save_file

    needed = sum(v.numel() * v.element_size() for v in arrays.values())
    with staged_directory(out_dir, needed) as staging:  # the caller refused an existing one unless overwrite
        save_file({k: v.contiguous() for k, v in arrays.items()}, str(staging / TENSORS_NAME),
                  metadata={"format": "pt"})
        (staging / METADATA_NAME).write_text(json.dumps(metadata, indent=2) + "\n")
