"""PPO's losses as pure functions of per-token tensors [B, T] and a mask of real response tokens.

The clipped surrogate objective and the clipped value loss (Schulman et al. 2017, "Proximal Policy
Optimization Algorithms"); dual clip for negative advantages (Ye et al. 2020, "Mastering Complex Control
in MOBA Games with Deep Reinforcement Learning"); the aggregation modes veRL and TRL users know; the
entropy bonus; truncated importance sampling for the gap between the sampling engine and the trainer
(Yao et al. 2025, "Your Efficient RL Framework Secretly Brings You Off-Policy RL Training").
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

AGGREGATIONS = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")


def aggregate(loss: torch.Tensor, mask: torch.Tensor, mode: str = "token-mean") -> torch.Tensor:
    """One number from per-token losses: token-mean (every real token of the batch weighs the same),
    seq-mean-token-mean (each sequence's mean, then the mean over sequences), seq-mean-token-sum (each
    sequence's sum, then the mean over sequences)."""
    mask = mask.float()
    if mode == "token-mean":
        return (loss * mask).sum() / mask.sum().clamp(min=1)
    per_seq = (loss * mask).sum(-1)
    if mode == "seq-mean-token-mean":
        per_seq = per_seq / mask.sum(-1).clamp(min=1)
    elif mode != "seq-mean-token-sum":
        raise ValueError(f"loss aggregation {mode!r}: expected one of {AGGREGATIONS}")
    rows = (mask.sum(-1) > 0).float()
    return (per_seq * rows).sum() / rows.sum().clamp(min=1)


def clipped_surrogate(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                      clip_eps: float = 0.2, dual_clip: float | None = None, mode: str = "token-mean",
                      is_weights: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """-min(ratio A, clip(ratio, 1 - eps, 1 + eps) A), ratio = exp(logp - old_logp); with `dual_clip`
    c > 1 a negative advantage's loss is also capped at -c A. `is_weights` (detached, per token)
    multiply the loss (truncated importance sampling). Returns (loss, stats: clip fraction, the mean
    and largest ratio, approx KL(old || new) = mean of (ratio - 1) - log ratio, k3)."""
    log_ratio = (logp - old_logp) * mask
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps)
    loss = torch.maximum(unclipped, clipped)
    if dual_clip is not None:
        if dual_clip <= 1:
            raise ValueError(f"dual_clip must be > 1, got {dual_clip}")
        loss = torch.where(advantages < 0, torch.minimum(loss, -advantages * dual_clip), loss)
    if is_weights is not None:
        loss = loss * is_weights
    m = mask.bool()
    with torch.no_grad():
        n = m.sum().clamp(min=1)
        stats = {"clip_fraction": float(((clipped > unclipped) & m).sum() / n),
                 "ratio_mean": float((ratio * m).sum() / n),
                 "ratio_max_dev": float(((ratio - 1).abs() * m).max()) if m.any() else 0.0,
                 "approx_kl": float((((ratio - 1) - log_ratio) * m).sum() / n)}
    return aggregate(loss, mask, mode), stats


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
                       clip: float | None = 0.2, mode: str = "token-mean") -> tuple[torch.Tensor, dict]:
    """0.5 max((V - R)^2, (clip(V, V_old - c, V_old + c) - R)^2); without `clip`, 0.5 (V - R)^2.
    Returns (loss, stats: the fraction of tokens where the clipped term was the larger)."""
    unclipped = (values - returns) ** 2
    if clip is None:
        loss, frac = unclipped, 0.0
    else:
        v_clip = old_values + torch.clamp(values - old_values, -clip, clip)
        clipped = (v_clip - returns) ** 2
        loss = torch.maximum(unclipped, clipped)
        m = mask.bool()
        frac = float(((clipped > unclipped) & m).sum() / m.sum().clamp(min=1))
    return 0.5 * aggregate(loss, mask, mode), {"value_clip_fraction": frac}


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of each position's next-token distribution, [B, T] from logits [B, T, V]."""
    logp = F.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def truncated_is_weights(trainer_logp: torch.Tensor, engine_logp: torch.Tensor, mask: torch.Tensor,
                         cap: float = 2.0) -> torch.Tensor:
    """min(pi_trainer / pi_engine, cap) per token, detached: the samples came from the engine's
    distribution (e.g. bf16 vLLM), the gradient is of the trainer's (e.g. fp32)."""
    with torch.no_grad():
        return torch.clamp(torch.exp(trainer_logp - engine_logp), max=cap) * mask
