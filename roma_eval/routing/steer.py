"""Override routing at chosen token positions and layers, per sample, as a context manager.

The oracle (per-sample routing descent) and C3PO (test-time re-mixing) change routing only through
this module.  Inside ``steer_routing`` every chosen router computes its usual logits; at the chosen
positions they are replaced according to ``mode`` and the top-k selection and weights are
recomputed exactly as that architecture does (``arch.ArchSpec.select``).  Other positions keep the
router's own outputs untouched, so an all-zero offset gives bit-identical model outputs.

Modes (``override`` has one vector per sample, position and layer):
  - ``"offset"``: logits + override (the oracle's default variables: unconstrained, start at 0);
  - ``"logits"``: the override replaces the logits;
  - ``"scores"``: the override replaces the routing scores (probabilities over experts for softmax
    routers, per-expert sigmoid scores for sigmoid routers) — C3PO's pathway ω lives here.  A family
    whose top-k chooses on the logits (gpt-oss, Granite, PhiMoE, Llama 4) or whose router returns only
    logits (DBRX) is given the logits these scores imply, anchored at the router's own:
    logits + (to_logits(ω) - to_logits(own scores)); so ω = own scores is the router's own routing
    bit for bit, and any ω is reproduced up to float rounding.
Positions index the tokens of each forward's input; a forward that does not contain them (a
cached decoding step) is left alone, so with a KV cache the override acts on the prompt token only.
A negative position is not steered (its override is ignored): rows of different lengths in one tensor.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from roma_eval.errors import RomaEvalError
from roma_eval.routing.arch import gradient_path, num_experts, resolve_layers, routers, selectors, spec_for
from roma_eval.routing.positions import token_rows

MODES = ("offset", "logits", "scores")


def _in_router_order(new_weights, new_index, old_index):
    """``new_*`` in the order the router listed its own experts, for rows that chose the same set.  Top-k with
    ``sorted=False`` (DeepSeek) lists a set in an order that depends on the kernel and the row count; the MoE
    sums its experts in that order, so the same set in another order changes the output in the last bits."""
    same = new_index.unsqueeze(-1) == old_index.unsqueeze(-2)  # (rows, k new, k old)
    keep = same.any(dim=1).all(dim=-1, keepdim=True)  # every expert the router chose is chosen again
    source = same.long().argmax(dim=1)  # for each old slot, the new slot holding the same expert
    return (torch.where(keep, new_weights.gather(-1, source), new_weights),
            torch.where(keep, old_index, new_index))


def _new_routing(spec, mode, logits, rows, override_rows):
    """(logits, scores) of every token of a router call, the steered ``rows`` changed as ``mode`` says.

    Computed over the whole call, in the logits' dtype, as the router computes them: an elementwise kernel
    may round differently on a tensor of another shape, and an unchanged routing must stay bit for bit."""
    if mode == "offset":
        new_logits = logits.index_put((rows,), (logits[rows].float() + override_rows).to(logits.dtype))
        return new_logits, spec.scores(new_logits)
    if mode == "logits":
        new_logits = logits.index_put((rows,), override_rows.to(logits.dtype))
        return new_logits, spec.scores(new_logits)
    scores = spec.scores(logits)
    own_logits, own_scores = logits[rows].detach(), scores[rows].detach()
    implied = own_logits.float() + (spec.scores_to_logits(override_rows.float())
                                    - spec.scores_to_logits(own_scores.float()))
    return (logits.index_put((rows,), implied.to(logits.dtype)),
            scores.index_put((rows,), override_rows.to(scores.dtype)))


@contextmanager
def steer_routing(model, override: torch.Tensor, positions: torch.Tensor, layers=None, mode: str = "offset"):
    """Steer routing at ``positions`` (batch, n_positions) with ``override``
    (batch, n_positions, n_layers, n_experts); differentiable with respect to ``override``."""
    if mode not in MODES:
        raise RomaEvalError(f"steering mode {mode!r} is unknown; use one of {', '.join(MODES)}")
    spec = spec_for(model)
    gates = routers(model)
    chooses = selectors(model)
    layers = resolve_layers(model, layers)
    batch, n_positions = positions.shape
    expected = (batch, n_positions, len(layers), num_experts(model))
    if tuple(override.shape) != expected:
        raise RomaEvalError(f"routing override has shape {tuple(override.shape)}; expected {expected} "
                            "(batch, positions, layers, experts)")
    handles = []
    # Negative positions pad rows with fewer steered tokens; only the others are steered.
    steered = (positions >= 0).reshape(-1) if (positions < 0).any() else None

    def make_hook(slot, selector):
        def hook(module, args, output):
            logits = spec.output.logits(module, args, output)
            seq_len, remainder = divmod(logits.shape[0], batch)
            if remainder:
                raise RomaEvalError(f"a forward of {logits.shape[0]} tokens does not split into the "
                                    f"{batch} sequences the routing override was made for")
            if positions.max() >= seq_len:  # a cached decoding step: the steered tokens are not in it
                return None
            rows = token_rows(positions.clamp(min=0).to(logits.device), seq_len)
            override_rows = override[:, :, slot].reshape(len(rows), -1).to(logits.device)
            if steered is not None:
                keep = steered.to(logits.device)
                rows, override_rows = rows[keep], override_rows[keep]
            new_logits, new_scores = _new_routing(spec, mode, logits, rows, override_rows)
            new_weights = new_index = None
            if spec.output.selects:  # on every token, as the router did; the steered rows are kept
                new_weights, new_index = spec.select(selector, new_logits, new_scores, args)
                new_weights, new_index = new_weights[rows], new_index[rows]
                old_index = spec.output.index(output)
                if old_index is not None:
                    new_weights, new_index = _in_router_order(new_weights, new_index, old_index[rows])
            return spec.output.rebuild(module, args, output, rows, new_logits[rows], new_weights, new_index)

        return hook

    try:
        for slot, i in enumerate(layers):
            handles.append(gates[i].register_forward_hook(make_hook(slot, chooses[i]), prepend=True))
        with gradient_path(model):
            yield
    finally:
        for handle in handles:
            handle.remove()
