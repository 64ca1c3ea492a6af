"""Muon for a network's weight matrices, AdamW for the rest, as one ``torch.optim.Optimizer``.

Muon (Jordan et al. 2024) replaces each weight matrix's momentum by its nearest semi-orthogonal matrix before the
step: every direction of the update gets the same size, so rare directions learn as fast as common ones. A conv
kernel counts as the matrix (out channels × in channels·kh·kw). Biases, norm gains, and matrices with a side
below ``min_dim`` (the U-Net's one-channel output conv) take AdamW steps. The split is by shape alone, so an
embedding table with both sides ≥ ``min_dim`` (the U-Net's class embedding) is stepped by Muon too, where Muon's
authors give embeddings to AdamW; the CPU recipe's measurements (docs/benchmarks.md) use this split.

    B_t = μ B_{t−1} + (1 − μ) G_t,    U_t = G_t + μ (B_t − G_t)  (Nesterov; U_t = B_t without)
    O_t = NS₅(U_t),                   W_t = (1 − η λ) W_{t−1} − η · 0.2 √max(m, n) · O_t

NS₅ is five Newton–Schulz iterations X ← a X + (b A + c A²) X, A = X Xᵀ, from X₀ = U / ‖U‖_F, with Jordan's
(a, b, c) = (3.4445, −4.7750, 2.0315): singular values land near 1 (about 0.7–1.2), not exactly. The factor
0.2 √max(m, n) gives the Muon step AdamW's typical update RMS (Liu et al. 2025, "Muon is scalable for LLM
training"), so one learning rate ``lr`` and one LR schedule serve both kinds of parameter.

    --model.init_args.optimizer networks.MuonAdamW    (the CPU recipes' AdamW settings carry over)
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Optional

import torch
from torch import Tensor

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def newton_schulz(g: Tensor, steps: int = 5, eps: float = 1e-7) -> Tensor:
    """The approximately semi-orthogonal factor of the 2-D matrix ``g`` (its polar factor U Vᵀ, up to the
    quintic's band): ``steps`` Newton–Schulz iterations on the wide orientation of ``g / ‖g‖_F``."""
    if g.ndim != 2:
        raise ValueError(f"newton_schulz takes a 2-D matrix, got shape {tuple(g.shape)}.")
    a, b, c = NS_COEFFICIENTS
    x = g / (g.norm() + eps)
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T
    for _ in range(steps):
        s = x @ x.T
        x = a * x + (b * s + c * s @ s) @ x
    return x.T if tall else x


def is_muon_matrix(p: Tensor, min_dim: int) -> bool:
    """A weight matrix or kernel whose (out, fan-in) sides are both at least ``min_dim``."""
    return p.ndim >= 2 and min(p.shape[0], p[0].numel()) >= min_dim


class MuonAdamW(torch.optim.Optimizer):
    """Args:
        params: the network's parameters (``module.parameters()``); the optimizer splits them into a Muon group
            (matrices, see ``min_dim``) and an AdamW group itself, so it takes plain tensors, not groups.
        lr: η for both groups (the Muon step is scaled to AdamW's RMS, module docstring).
        betas, eps: AdamW's (β₁, β₂) and ε, for the non-matrix parameters.
        weight_decay: λ, decoupled, for both groups.
        momentum: μ of the Muon momentum buffer.
        nesterov: step along G + μ (B − G) instead of B.
        ns_steps: Newton–Schulz iterations.
        min_dim: a tensor goes to Muon when it has ≥ 2 dims and both out-channels and fan-in are ≥ this.
    """

    def __init__(self, params: Iterable[Tensor], lr: float = 2e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, momentum: float = 0.95, nesterov: bool = True,
                 ns_steps: int = 5, min_dim: int = 8) -> None:
        params = list(params)
        if any(isinstance(p, dict) for p in params):
            raise ValueError("MuonAdamW splits the parameters into its Muon and AdamW groups itself: pass "
                             "module.parameters(), not parameter groups.")
        if lr < 0 or weight_decay < 0 or eps < 0:
            raise ValueError(f"lr, weight_decay and eps must be >= 0, got {lr}, {weight_decay}, {eps}.")
        if not 0 <= momentum < 1 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"momentum and betas must lie in [0, 1), got {momentum} and {tuple(betas)}.")
        if ns_steps < 1 or min_dim < 1:
            raise ValueError(f"ns_steps and min_dim must be >= 1, got {ns_steps} and {min_dim}.")
        groups = [{"params": [p for p in params if is_muon_matrix(p, min_dim)], "use_muon": True},
                  {"params": [p for p in params if not is_muon_matrix(p, min_dim)], "use_muon": False}]
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay, "momentum": momentum,
                    "nesterov": nesterov, "ns_steps": ns_steps}
        super().__init__([g for g in groups if g["params"]], defaults)

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], float]] = None) -> Optional[float]:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    (self._muon_step if group["use_muon"] else self._adamw_step)(p, group)
        return loss

    def _muon_step(self, p: Tensor, group: dict) -> None:
        g, state, mu = p.grad, self.state[p], group["momentum"]
        if not state:
            state["momentum_buffer"] = torch.zeros_like(g)
        buf = state["momentum_buffer"]
        buf.lerp_(g, 1 - mu)
        u = g.lerp(buf, mu) if group["nesterov"] else buf
        m = u.reshape(u.shape[0], -1)
        o = newton_schulz(m, group["ns_steps"]) * (0.2 * math.sqrt(max(m.shape)))
        p.mul_(1 - group["lr"] * group["weight_decay"])
        p.add_(o.view_as(p), alpha=-group["lr"])

    def _adamw_step(self, p: Tensor, group: dict) -> None:
        """torch.optim.AdamW's update (Loshchilov & Hutter 2019, Algorithm 2), bias-corrected."""
        g, state = p.grad, self.state[p]
        if not state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(g)
            state["exp_avg_sq"] = torch.zeros_like(g)
        state["step"] += 1
        b1, b2 = group["betas"]
        state["exp_avg"].lerp_(g, 1 - b1)
        state["exp_avg_sq"].mul_(b2).addcmul_(g, g, value=1 - b2)
        denom = (state["exp_avg_sq"] / (1 - b2 ** state["step"])).sqrt_().add_(group["eps"])
        p.mul_(1 - group["lr"] * group["weight_decay"])
        p.addcdiv_(state["exp_avg"], denom, value=-group["lr"] / (1 - b1 ** state["step"]))
