"""C3PO at test time: neighbours, one of C3PO's three step rules, then the test prompt under its new pathway.

For a group of test prompts (``C3POConfig.group``, each with its own pathway):
  1. ``freeze`` the prompts: one base pass gives their pathways ω0 and frozen prefixes;
  2. neighbours: embedding kNN (k = 3) among the reference set, Gaussian kernel weights, references
     whose prompt is a near-duplicate of the test prompt (cosine > 0.95, our guard) dropped;
  3. the step rule re-mixes ω (``remix.py``); each scores the neighbours with the test prompt's ω at
     their last context token (mode finding and kernel regression to search α, NGD to descend),
     running only the critical layers against their stored frozen prefixes (``frozen.py``);
  4. the test prompt's continuations are scored under ω, again from the critical layers only.
A multiple-input prompt (winogrande: one prompt per choice) is one problem with one pathway, its
base pathway the mean over its prompts; ω moves each prompt's own routing (``frozen.py``).
Generation uses the pathway at the last prompt token (``steer_generation``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from contextlib import ExitStack, contextmanager

import numpy as np
import torch

from roma_eval.devices import input_device, input_dtype, layer_device
from roma_eval.errors import RomaEvalError
from roma_eval.methods.c3po.config import C3POConfig
from roma_eval.methods.c3po.frozen import Frozen, Problem, TailBatch, freeze
from roma_eval.methods.c3po.reference import (
    Reference,
    check_reference,
    problem_of,
    query_text,
    sample_prompt,
)
from roma_eval.methods.c3po.remix import (
    core_index,
    kernel_regression,
    mode_finding,
    ngd,
)
from roma_eval.neighbours import NeighbourSearch, find_neighbours, gaussian_weights
from roma_eval.routing import spec_for, steer_routing
from roma_eval.routing.arch import decoder_layers
from roma_eval.samples import Sample
from roma_eval.scoring import SampleResult, model_max_length, task_loss

MEMO_SIZE = 4096  # frozen references kept in memory (they are shared between test prompts)
CPU_GROUP, ACCELERATOR_GROUP = 8, 64  # default test prompts per group (C3POConfig.group unset)


class C3PO:
    """Test-time expert re-mixing (arXiv 2504.07964) of ``model`` from a reference set built for it."""

    def __init__(self, model, reference: Reference, config: C3POConfig | None = None, embedder=None):
        self.config = config or C3POConfig()
        check_reference(reference, model)
        if self.config.k > len(reference):
            raise RomaEvalError(f"k={self.config.k} neighbours requested but the reference set {reference.directory} "
                                f"has only {len(reference)}; lower k to at most {len(reference)} or rebuild the "
                                "reference on more training data")
        self.model, self.reference = model, reference
        self.layers = reference.layers
        self.kind = spec_for(model).score_kind
        self._embedder = embedder
        self._memo: OrderedDict[int, Frozen] = OrderedDict()

    @property
    def device(self):
        """Where inputs go: the input embedding's device (a model split across devices moves the rest)."""
        return input_device(self.model)

    @property
    def group(self) -> int:
        """Test prompts optimised together: ``config.group``, or by default 8 on a CPU and ``ACCELERATOR_GROUP``
        on an accelerator, where a steered pass costs about the same for 8 prompts as for 64."""
        if self.config.group is not None:
            return self.config.group
        return ACCELERATOR_GROUP if self.device.type != "cpu" else CPU_GROUP

    @property
    def embedder(self):
        if self._embedder is None:
            from roma_eval.embedding import load_embedder

            self._embedder = load_embedder(self.reference.metadata.get("embedder"))
        return self._embedder

    # ------------------------------------------------------------ neighbours

    def embed(self, prompts: Sequence[str]) -> np.ndarray:
        """Label-free test prompts (``samples.label_free_prompt``) embedded as the reference prompts were
        (their last block, ``query_text``)."""
        from roma_eval.embedding import embed

        return embed([query_text(p) for p in prompts], self.embedder)

    def near_duplicates(self, queries: np.ndarray) -> np.ndarray:
        """(G, N) whether each reference's prompt is a near-duplicate of each embedded test prompt."""
        # Unit-norm embeddings: the dot product is the cosine.
        return queries @ self.reference.embeddings.T > self.config.dedup

    def neighbours(self, queries: np.ndarray) -> tuple[np.ndarray, torch.Tensor]:
        """(index (G, k) into the reference set, kernel weights (G, k) summing to 1) per embedded test prompt."""
        k, n = self.config.k, len(self.reference)
        duplicate = self.near_duplicates(queries)
        width = min(n, k + 8)
        while True:
            search = NeighbourSearch(k=width, sigma=self.config.sigma)
            hood = find_neighbours(queries, self.reference.embeddings, search)
            keep = (hood.index >= 0) & ~np.take_along_axis(duplicate, hood.index.clip(min=0), axis=1)
            if keep.sum(axis=1).min() >= k or width == n:
                break
            width = min(n, 2 * width)
        short = np.flatnonzero(keep.sum(axis=1) < k)
        if len(short):
            raise RomaEvalError(f"k={k} neighbours are needed but only {int(keep[short[0]].sum())} reference samples "
                                "remain "
                                f"for a test prompt once near-duplicates (cosine > "
                                f"{self.config.dedup}) are dropped; lower k, raise dedup or rebuild the reference on "
                                "more training data")
        order = np.argsort(~keep, axis=1, kind="stable")[:, :k]  # the k nearest kept, in distance order
        index = np.take_along_axis(hood.index, order, axis=1)
        distance2 = np.take_along_axis(hood.distance2, order, axis=1)
        weight = gaussian_weights(distance2, np.ones_like(index, dtype=bool), self.config.sigma)
        return index, torch.from_numpy(weight).to(self.device)

    def reference_frozen(self, indices: Sequence[int]) -> list[Frozen]:
        """Frozen prefixes of reference samples: read from the reference file, or (a reference built
        without them) computed with the model; either way once per process, then kept in memory."""
        missing = sorted({int(i) for i in indices} - set(self._memo))
        if missing:
            if self.reference.has_prefixes:
                layers = range(self.layers[0], len(decoder_layers(self.model)))
                found = self.reference.stored_frozen(missing, self.device, input_dtype(self.model),
                                                     [layer_device(self.model, i) for i in layers])
            else:
                found = freeze(self.model, [self.reference.problems[i] for i in missing], self.layers)
            for i, frozen in zip(missing, found):
                self._memo[i] = frozen
        for i in indices:
            self._memo.move_to_end(int(i))
        while len(self._memo) > max(MEMO_SIZE, len(indices)):
            self._memo.popitem(last=False)
        return [self._memo[int(i)] for i in indices]

    # ------------------------------------------------------------ the methods

    def neighbour_loss(self, index: np.ndarray, weight: torch.Tensor):
        """L(ω) = Σ_i K_i ℓ(f(x_i, ω), y_i) per test prompt: each row of ω plugged into its own
        neighbours' forward passes (critical layers only), ℓ the cross-entropy of the gold choice."""
        g, k = index.shape
        gold = torch.tensor([self.reference.problems[i].gold for i in index.reshape(-1)], device=self.device)
        batch = []  # built at the first call (a fixed α never calls)

        def loss(omega: torch.Tensor) -> torch.Tensor:
            if not batch:
                batch.append(TailBatch(self.reference_frozen(index.reshape(-1).tolist()), self.device))
            scores, _ = batch[0].forward(self.model, self.layers, omega.repeat_interleave(k, dim=0))
            return (weight * task_loss(scores, gold, reduction="none").view(g, k)).sum(dim=1)

        return loss

    def optimise(self, frozen: Sequence[Frozen], queries: np.ndarray) -> tuple[torch.Tensor, dict]:
        """The re-mixed pathways (G, n_layers, n_experts) of frozen test prompts with embeddings
        ``queries``, and what the method saw."""
        cfg = self.config
        omega0 = torch.stack([f.routing for f in frozen]).to(self.device)
        index, weight = self.neighbours(queries)
        core = core_index(omega0, cfg.core_experts)
        info = {"neighbours": index, "weights": weight.cpu()}
        loss = self.neighbour_loss(index, weight)
        if cfg.method == "mode":
            if cfg.mode_neighbours == "pathway":
                allowed = ~self.near_duplicates(queries)
            else:
                allowed = np.zeros((len(index), len(self.reference)), dtype=bool)
                np.put_along_axis(allowed, index, True, axis=1)
            omega, info["alpha"], info["losses"] = mode_finding(
                omega0, self.reference.routing.to(self.device), torch.from_numpy(allowed).to(self.device), core,
                self.kind, loss, cfg)
            return omega, info
        if cfg.method == "kernel":
            neighbour_omega = self.reference.routing[index].to(self.device)
            omega, info["alpha"], info["losses"] = kernel_regression(omega0, neighbour_omega, weight, core, self.kind,
                                                                     loss, cfg.alpha, cfg.alpha_step)
            return omega, info
        omega, info["losses"] = ngd(omega0, core, self.kind, loss, cfg.steps, cfg.lr, cfg.lr_min, cfg.optimizer)
        return omega, info

    # ------------------------------------------------------------ test prompts

    def run(self, problems: Sequence[Problem], prompts: Sequence[str], score: bool = True, progress: bool = True):
        """For each test problem and its label-free prompt (``samples.label_free_prompt``): its pathway ω
        and, if ``score``, its choices' (log-likelihood, greedy) under ω.  Problems are optimised
        ``group`` at a time, longest prompt first (less padding; each has its own pathway, so the grouping
        changes nothing but float rounding); the results come back to the host once, at the end."""
        from tqdm.auto import tqdm

        queries = self.embed(prompts)
        order = sorted(range(len(problems)), key=lambda i: -max(map(len, problems[i].contexts)))
        omegas, scored = [None] * len(problems), []
        size = self.group
        for start in tqdm(range(0, len(problems), size), desc=f"C3PO ({self.config.method})", disable=not progress):
            members = order[start:start + size]
            chunk = [problems[i] for i in members]
            frozen = freeze(self.model, chunk, self.layers)
            omega, _ = self.optimise(frozen, queries[members])
            for i, w in zip(members, omega.detach()):
                omegas[i] = w
            if score:
                with torch.no_grad():
                    scores, greedy = TailBatch(frozen, self.device).forward(self.model, self.layers, omega)
                scored.append((members, scores, greedy))
        answers = [None] * len(problems)
        for members, scores, greedy in scored:  # the first copy waits for the device, the others do not
            scores, greedy = scores.cpu().tolist(), greedy.cpu().tolist()
            for row, i in enumerate(members):
                n = len(problems[i].continuations)
                answers[i] = list(zip(scores[row][:n], greedy[row][:n]))
        return omegas, answers if score else []

    def score_samples(self, tokenizer, samples: Sequence[Sample], progress: bool = True) -> list[SampleResult]:
        """Multiple-choice samples scored under C3PO, with per-sample acc and acc_norm as lm-eval computes them."""
        max_length = model_max_length(self.model)
        problems = [problem_of(tokenizer, s, max_length) for s in samples]
        _, scored = self.run(problems, [sample_prompt(s) for s in samples], progress=progress)
        results = []
        for sample, pairs in zip(samples, scored):
            scores = torch.tensor([ll for ll, _ in pairs])
            norm = scores / torch.tensor([float(len(c)) for c in sample.choices])
            results.append(SampleResult(sample.task, sample.doc_id, tuple(scores.tolist()),
                                        float(int(scores.argmax()) == sample.gold),
                                        float(int(norm.argmax()) == sample.gold)))
        return results


@contextmanager
def steer_generation(model, omega: torch.Tensor, layers: list[int], every_token: bool = False):
    """Generate with pathway ``omega`` (rows, n_layers, n_experts) at the last prompt token of each
    (left-padded) row: the first forward is the prompt, later ones are decoding steps, which are
    steered too only if ``every_token`` (the public C3PO code did that; generation collapsed)."""
    calls = 0
    stack = ExitStack()

    def before(module, args, kwargs):
        nonlocal calls
        inputs = kwargs.get("input_ids")
        if inputs is None:
            inputs = kwargs.get("inputs_embeds") if args == () else args[0]
        if calls == 0 or every_token:
            positions = torch.full((omega.shape[0], 1), inputs.shape[1] - 1, device=inputs.device)
            stack.enter_context(steer_routing(model, omega.unsqueeze(1), positions, layers=layers, mode="scores"))
        calls += 1

    def after(module, args, kwargs, output):
        stack.close()

    handles = [model.register_forward_pre_hook(before, with_kwargs=True),
               model.register_forward_hook(after, with_kwargs=True)]
    try:
        yield
    finally:
        stack.close()
        for handle in handles:
            handle.remove()
