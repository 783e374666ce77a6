"""C3PO's three ways to re-mix a test sample's pathway from its neighbours (arXiv 2504.07964; FACTS.md).

The label of a test sample x is unknown, so C3PO optimises a surrogate built from its neighbours
x_i in the reference set (samples the base model answers correctly), with kernel weights K_i
(Gaussian in embedding distance, normalised to sum to 1) and pathways ω_i:
  mode finding       ω moves by mean-shift to the densest region of the neighbours' pathways;
  kernel regression  ω̂ = Σ K_i ω_i / Σ K_i, then ω ← α ω + (1-α) ω̂, α on a grid minimising L;
  NGD                gradient descent on L(ω) = Σ K_i ℓ(f(x_i, ω), y_i) / Σ K_i: the test sample's
                     pathway is plugged into each neighbour's forward pass and scored on the
                     neighbour's label (10 steps, cosine learning rate 1e-2 -> 1e-5).
All functions act on a batch of test samples, each with its own pathway: ``omega0`` (G, layers,
experts) is the base pathway, ``loss_fn(omega) -> (G,)`` the neighbours' kernel-weighted loss.

Choices the paper leaves open (docs/c3po.md): only the *core* experts move (the top-n of the base
pathway per layer; all by default), the others keep their base scores; a softmax pathway stays a
distribution — NGD projects each step back onto the simplex (Euclidean projection, the core
experts keeping their base mass) and sigmoid pathways (DeepSeek-V3) are clipped to [0, 1].
"""

from __future__ import annotations

import math
from typing import Callable

import torch

LossFn = Callable[[torch.Tensor], torch.Tensor]


def core_index(omega0: torch.Tensor, n: int) -> torch.Tensor:
    """(G, layers, n) indices of each layer's n largest base scores; n = 0 means every expert."""
    n_experts = omega0.shape[-1]
    return omega0.topk(n if 0 < n < n_experts else n_experts, dim=-1).indices


def _project(values: torch.Tensor, mass: torch.Tensor, kind: str) -> torch.Tensor:
    """Euclidean projection onto {v >= 0, Σ v = mass} (softmax) or onto [0, 1] (sigmoid), per row."""
    if kind == "sigmoid":
        return values.clamp(0.0, 1.0)
    ordered = values.sort(dim=-1, descending=True).values
    excess = ordered.cumsum(dim=-1) - mass
    rank = torch.arange(1, values.shape[-1] + 1, device=values.device, dtype=values.dtype)
    support = (ordered - excess / rank > 0).sum(dim=-1, keepdim=True)  # at least 1 since mass > 0
    shift = excess.gather(-1, support - 1) / support
    return (values - shift).clamp(min=0.0)


def restrict(target: torch.Tensor, omega0: torch.Tensor, core: torch.Tensor, kind: str) -> torch.Tensor:
    """``target`` on the core experts, ``omega0`` elsewhere; a softmax pathway's core keeps its base mass,
    so the result is again a distribution (convex combinations with ``omega0`` stay one)."""
    values = target.gather(-1, core)
    if kind == "softmax":
        mass = omega0.gather(-1, core).sum(-1, keepdim=True)
        values = values * mass / values.sum(-1, keepdim=True).clamp(min=torch.finfo(values.dtype).tiny)
    return omega0.scatter(-1, core, values)


def mode_finding(omega0, neighbour_omega, weight, core, kind, steps: int, bandwidth: float | None = None):
    """Mean-shift from the base pathway over the neighbours' pathways ``neighbour_omega`` (G, k, layers,
    experts), each point weighted by its kernel weight ``weight`` (G, k) times a Gaussian of its
    distance to the current estimate (layers concatenated, as RoMA's r_i)."""
    points = neighbour_omega.flatten(2)
    x = omega0.flatten(1)
    if bandwidth is None:
        bandwidth = torch.cdist(x.unsqueeze(1), points).squeeze(1).median(dim=1, keepdim=True).values
    h2 = torch.as_tensor(bandwidth, dtype=x.dtype, device=x.device).clamp(min=1e-12) ** 2
    log_weight = weight.log()
    for _ in range(steps):
        d2 = ((points - x.unsqueeze(1)) ** 2).sum(-1)
        w = torch.softmax(log_weight - d2 / (2 * h2), dim=1)  # normalised in log space: no underflow
        new_x = (w.unsqueeze(-1) * points).sum(1)
        converged = (new_x - x).norm(dim=1).max() < 1e-7
        x = new_x
        if converged:
            break
    return restrict(x.view_as(omega0), omega0, core, kind)


def kernel_regression(omega0, neighbour_omega, weight, core, kind, loss_fn: LossFn,
                      alpha: float | None = None, alpha_step: float = 0.1):
    """ω = α ω0 + (1-α) ω̂ with ω̂ the kernel average; α per sample from the grid 1, 1-step, ..., 0
    (first minimum wins, so ties keep the base routing), or fixed (no loss evaluated).
    Returns (ω, α (G,), losses (grid, G) or None)."""
    omega_hat = restrict((weight[..., None, None] * neighbour_omega).sum(1), omega0, core, kind)
    if alpha is not None:
        alphas, losses = torch.full(omega0.shape[:1], float(alpha), dtype=omega0.dtype, device=omega0.device), None
    else:
        n = round(1 / alpha_step)
        grid = [1 - i / n for i in range(n + 1)]
        with torch.no_grad():
            losses = torch.stack([loss_fn(a * omega0 + (1 - a) * omega_hat) for a in grid])
        alphas = torch.tensor(grid, dtype=omega0.dtype, device=omega0.device)[losses.argmin(dim=0)]
    a = alphas.view(-1, 1, 1)
    return a * omega0 + (1 - a) * omega_hat, alphas, losses


def cosine_lr(step: int, steps: int, lr: float, lr_min: float) -> float:
    """lr at step 0, lr_min at the last step, cosine in between."""
    if steps == 1:
        return lr
    return lr_min + (lr - lr_min) * (1 + math.cos(math.pi * step / (steps - 1))) / 2


def ngd(omega0, core, kind, loss_fn: LossFn, steps: int = 10, lr: float = 1e-2, lr_min: float = 1e-5):
    """Neighbourhood gradient descent on the core experts' scores.  Returns (ω, losses (steps, G)):
    losses[t] is L at the t-th iterate (the base pathway first), measured by that step's forward."""
    theta = omega0.gather(-1, core).detach()
    mass = theta.sum(-1, keepdim=True)
    history = []
    for step in range(steps):
        with torch.enable_grad():
            theta.requires_grad_(True)
            losses = loss_fn(omega0.scatter(-1, core, theta))
            (grad,) = torch.autograd.grad(losses.sum(), theta)
        history.append(losses.detach())
        theta = _project(theta.detach() - cosine_lr(step, steps, lr, lr_min) * grad, mass, kind)
    return omega0.scatter(-1, core, theta), torch.stack(history)
