"""C3PO's three ways to re-mix a test sample's pathway from its neighbours (arXiv 2504.07964, Sec. 3).

The label of a test sample x is unknown, so C3PO optimises a surrogate built from its neighbours
x_i in the reference set (samples the base model answers correctly), with kernel weights K_i
(Gaussian in embedding distance, normalised to sum to 1) and pathways ω_i.  L(ω) = Σ K_i ℓ(f(x_i, ω), y_i)
/ Σ K_i is the neighbours' kernel-weighted loss with the test sample's pathway plugged in:
  mode finding       ω ← α ω + (1-α) ω̄ with ω̄ = Σ_{i∈N(ω)} K(ω_i, ω) ω_i / Σ_{i∈N(ω)} K(ω_i, ω), the
                     kernel-weighted mean of the reference pathways around the *current* pathway, in
                     pathway space, repeated (a relaxed mean-shift towards the densest region of
                     successful pathways), α as below;
  kernel regression  ω̂ = Σ K_i ω_i / Σ K_i, then ω ← α ω + (1-α) ω̂, α on a grid minimising L;
  NGD                gradient descent on L(ω) (10 steps, cosine learning rate 1e-2 -> 1e-5), by default
                     with Adam, as the same group's released NGD (R2-T2's ``evaluate.py``).
All functions act on a batch of test samples, each with its own pathway: ``omega0`` (G, layers,
experts) is the base pathway, ``loss_fn(omega) -> (G,)`` the neighbours' kernel-weighted loss L.

Choices the paper leaves open (docs/c3po.md): only the *core* experts move (the top-n of the base
pathway per layer; all by default), the others keep their base scores; a softmax pathway stays a
distribution — NGD projects each step back onto the simplex (Euclidean projection, the core
experts keeping their base mass) and sigmoid pathways (DeepSeek-V3) are clipped to [0, 1]; ω is the routing
probabilities themselves (not logits), the paper's pathway, so Adam moves each by about the learning rate.
Mode finding, where the paper gives only the update:
  N(ω)        the k reference pathways nearest to the current ω (Euclidean, critical layers concatenated
              as RoMA's r_i), re-found at every iteration, among all references but the test prompt's
              near-duplicates: the paper's neighbourhood is one of ω in pathway space, not of x
              (``mode_neighbours="embedding"`` uses the test prompt's k embedding neighbours instead);
  K(ω_i, ω)   Gaussian, exp(-||ω_i - ω||² / 2h²), with h per test sample the median distance from its base
              pathway to N(ω0), kept for every iteration (one density estimate to climb; pathway
              distances scale with layers and experts, so no fixed h fits every model; ``bandwidth``);
  α           searched exactly as for kernel regression (``alpha_search``: same grid, same loss L over the
              test prompt's embedding neighbours, the only labelled surrogate the paper defines for x);
  iterations  at most ``mode_steps`` (3: 33 loss evaluations without gradients, against NGD's 10 forward
              + backward), fewer once no test sample moves (α = 1, or ω̄ = ω, everywhere).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from roma_eval.routing.scores import project_scores

if TYPE_CHECKING:
    from roma_eval.methods.c3po.config import C3POConfig

LossFn = Callable[[torch.Tensor], torch.Tensor]


def core_index(omega0: torch.Tensor, n: int) -> torch.Tensor:
    """(G, layers, n) indices of each layer's n largest base scores; n = 0 means every expert."""
    n_experts = omega0.shape[-1]
    return omega0.topk(n if 0 < n < n_experts else n_experts, dim=-1).indices


def restrict(target: torch.Tensor, omega0: torch.Tensor, core: torch.Tensor, kind: str) -> torch.Tensor:
    """``target`` on the core experts, ``omega0`` elsewhere; a softmax pathway's core keeps its base mass,
    so the result is again a distribution (convex combinations with ``omega0`` stay one)."""
    values = target.gather(-1, core)
    if kind == "softmax":
        mass = omega0.gather(-1, core).sum(-1, keepdim=True)
        values = values * mass / values.sum(-1, keepdim=True).clamp(min=torch.finfo(values.dtype).tiny)
    return omega0.scatter(-1, core, values)


def alpha_search(omega: torch.Tensor, target: torch.Tensor, loss_fn: LossFn, alpha: float | None = None,
                 alpha_step: float = 0.1):
    """ω' = α ω + (1-α) target per test sample, α fixed (no loss evaluated) or the α of the grid 1, 1-step,
    ..., 0 that minimises L (the paper's grid search for kernel regression; mode finding uses the same);
    the first minimum wins, so ties keep ``omega``.  Returns (ω', α (G,), losses (grid, G) or None)."""
    if alpha is not None:
        alphas, losses = torch.full(omega.shape[:1], float(alpha), dtype=omega.dtype, device=omega.device), None
    else:
        n = round(1 / alpha_step)
        grid = [1 - i / n for i in range(n + 1)]
        with torch.no_grad():
            losses = torch.stack([loss_fn(a * omega + (1 - a) * target) for a in grid])
        alphas = torch.tensor(grid, dtype=omega.dtype, device=omega.device)[losses.argmin(dim=0)]
    a = alphas.view(-1, 1, 1)
    return a * omega + (1 - a) * target, alphas, losses


def mode_finding(omega0, pool, allowed, core, kind, loss_fn: LossFn, config: C3POConfig):
    """Mode finding (module docstring): ``pool`` (P, layers, experts) are reference pathways, ``allowed``
    (G, P) the ones each test sample may use (at least ``config.k``); N(ω) = the k allowed pathways nearest to the
    current ω; at most ``config.mode_steps`` iterations, h = ``config.bandwidth`` (None: the median distance to
    N(ω0)), α = ``config.alpha`` (None: searched on the grid of step ``config.alpha_step``).
    Returns (ω, α (iterations, G), losses (iterations, grid, G) or None)."""
    k, bandwidth, alpha = config.k, config.bandwidth, config.alpha
    points = pool.flatten(1)
    omega, h2, alphas, history = omega0, None, [], []
    for _ in range(config.mode_steps):
        # Exact pairwise distances (the matrix-product shortcut loses digits when ω is near a reference).
        d2 = torch.cdist(omega.flatten(1), points, compute_mode="donot_use_mm_for_euclid_dist").square()
        near_d2, near = d2.masked_fill(~allowed, torch.inf).topk(k, dim=1, largest=False)
        if h2 is None:  # h from N(ω0), fixed from then on
            h = (near_d2.sqrt().quantile(0.5, dim=1, keepdim=True) if bandwidth is None
                 else torch.tensor(bandwidth, dtype=omega.dtype, device=omega.device))
            h2 = h.clamp(min=1e-12) ** 2
        kernel = torch.softmax(-near_d2 / (2 * h2), dim=1)  # K(ω_i, ω) / Σ K, normalised in log space: no underflow
        omega_bar = restrict((kernel.unsqueeze(-1) * points[near]).sum(1).view_as(omega0), omega0, core, kind)
        new, a, losses = alpha_search(omega, omega_bar, loss_fn, alpha, config.alpha_step)
        alphas.append(a)
        history.append(losses)
        moved = (new - omega).abs().max()
        omega = new
        if moved < 1e-7:  # ω̄ depends on ω only, so an unmoved ω stays put
            break
    return omega, torch.stack(alphas), None if alpha is not None else torch.stack(history)


def kernel_regression(omega0, neighbour_omega, weight, core, kind, loss_fn: LossFn,
                      alpha: float | None = None, alpha_step: float = 0.1):
    """ω = α ω0 + (1-α) ω̂ with ω̂ the kernel average of the neighbours' pathways ``neighbour_omega``
    (G, k, layers, experts) under their weights ``weight`` (G, k); α from ``alpha_search``.
    Returns (ω, α (G,), losses (grid, G) or None)."""
    omega_hat = restrict((weight[..., None, None] * neighbour_omega).sum(1), omega0, core, kind)
    return alpha_search(omega0, omega_hat, loss_fn, alpha, alpha_step)


def ngd_optimizer(theta: torch.Tensor, optimizer: str, steps: int, lr: float, lr_min: float):
    """NGD's optimiser over ``theta`` and its cosine schedule from ``lr`` (first step) towards ``lr_min``.

    adam: torch.optim.Adam (default betas and eps) with CosineAnnealingLR(T_max = steps, eta_min = lr_min), as
    the same group's released NGD (R2-T2, ``evaluate.py``): the first step moves every score whose gradient is
    not zero by lr (Adam's m̂/(√v̂ + ε) is ±1 then, up to ε), and later ones by about lr, whatever the gradient's scale;
    the last step's lr is lr_min + (lr - lr_min)(1 + cos(π (steps-1)/steps))/2 (2.5e-4 at the paper's
    settings), lr_min being reached after it.
    sgd: plain gradient descent θ ← θ - lr_t ∇L, the schedule reaching lr_min at the last step
    (T_max = steps - 1): this project's NGD before Adam, kept to reproduce its results."""
    if optimizer == "adam":
        opt, t_max = torch.optim.Adam([theta], lr=lr), steps
    else:
        opt, t_max = torch.optim.SGD([theta], lr=lr), max(steps - 1, 1)
    return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=t_max, eta_min=lr_min)


def ngd(omega0, core, kind, loss_fn: LossFn, steps: int = 10, lr: float = 1e-2, lr_min: float = 1e-5,
        optimizer: str = "adam"):
    """Neighbourhood gradient descent on the core experts' scores, each step projected back onto their
    domain (``project_scores``: the simplex of the core's base mass, or [0, 1]).  Adam's moments are per
    score, so test prompts optimised together move exactly as alone.  Returns (ω, losses (steps, G)):
    losses[t] is L at the t-th iterate (the base pathway first), measured by that step's forward."""
    theta = omega0.gather(-1, core).detach().clone().requires_grad_(True)
    mass = theta.detach().sum(-1, keepdim=True)
    opt, schedule = ngd_optimizer(theta, optimizer, steps, lr, lr_min)
    history = []
    for _ in range(steps):
        with torch.enable_grad():
            losses = loss_fn(omega0.scatter(-1, core, theta))
            # Only θ's gradient: backward() would also fill the model's parameters' .grad.
            (theta.grad,) = torch.autograd.grad(losses.sum(), theta)
        history.append(losses.detach())
        opt.step()
        schedule.step()
        with torch.no_grad():
            theta.copy_(project_scores(theta, kind, mass))
    return omega0.scatter(-1, core, theta.detach()), torch.stack(history)
