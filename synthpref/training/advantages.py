"""Advantage estimators for policy-gradient RL on language models, as pure functions of tensors.

Per-token tensors are [B, T] over response tokens (right-padded, `mask` 1 on real tokens); per-sequence
rewards are [B]. Sources: GAE (Schulman et al. 2016, "High-Dimensional Continuous Control Using
Generalized Advantage Estimation"); RLOO (Kool et al. 2019, "Buy 4 REINFORCE Samples, Get a Baseline for
Free!"; Ahmadian et al. 2024, "Back to Basics"); group normalisation (Shao et al. 2024, DeepSeekMath's
GRPO; Liu et al. 2025, "Dr. GRPO", drops the division by the std).
"""
from __future__ import annotations

import torch


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimates and returns (A + V), both [B, T].

    delta_t = r_t + gamma V_{t+1} - V_t and A_t = delta_t + gamma lam A_{t+1}, over real tokens only: a
    masked position passes the next real token's value and advantage through unchanged, so values and
    rewards there never reach a real token's estimate. Past the last real token V = 0."""
    rewards, values, mask = rewards.float(), values.float(), mask.float()
    next_value = torch.zeros_like(rewards[:, 0])
    running = torch.zeros_like(rewards[:, 0])
    out = torch.zeros_like(rewards)
    for t in reversed(range(rewards.shape[1])):
        m = mask[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        step = delta + gamma * lam * running
        running = m * step + (1 - m) * running
        next_value = m * values[:, t] + (1 - m) * next_value
        out[:, t] = running
    out = out * mask
    return out, (out + values) * mask


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / std over the real tokens of the whole batch (the mean is kept when not `shift_mean`);
    masked positions come out 0."""
    mask = mask.float()
    n = mask.sum().clamp(min=1)
    mean = (x * mask).sum() / n
    var = (((x - mean) * mask) ** 2).sum() / n
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask


def _groups(rewards: torch.Tensor, group_ids: list) -> dict:
    index: dict = {}
    for i, g in enumerate(group_ids):
        index.setdefault(g, []).append(i)
    return index


def rloo(rewards: torch.Tensor, group_ids: list) -> torch.Tensor:
    """Leave-one-out baseline: each reward minus the mean of the other members of its group
    (r_i - (sum - r_i) / (n - 1)). A group of one has no baseline: its advantage is 0."""
    out = torch.zeros_like(rewards, dtype=torch.float32)
    for members in _groups(rewards, group_ids).values():
        r = rewards[members].float()
        n = len(members)
        if n >= 2:
            out[members] = r - (r.sum() - r) / (n - 1)
    return out


def group_normalise(rewards: torch.Tensor, group_ids: list, divide_by_std: bool = True,
                    eps: float = 1e-6) -> torch.Tensor:
    """GRPO's advantage: (r - group mean) / (group std + eps), the unbiased std; without `divide_by_std`
    it is r - mean (Dr. GRPO). A group whose rewards are all equal gives exactly 0, and a group of one 0."""
    out = torch.zeros_like(rewards, dtype=torch.float32)
    for members in _groups(rewards, group_ids).values():
        r = rewards[members].float()
        if len(members) < 2:
            continue
        centred = r - r.mean()
        if divide_by_std:
            std = r.std(unbiased=True)
            centred = torch.where(std > 0, centred / (std + eps), torch.zeros_like(centred))
        out[members] = centred
    return out


def sequence_to_tokens(per_sequence: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A per-sequence advantage broadcast to every real token of its response (critic-free estimators)."""
    return per_sequence.float().unsqueeze(-1) * mask.float()


def last_token_rewards(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B, T] token rewards with each sequence's score on its last real token (0 elsewhere)."""
    out = torch.zeros(mask.shape, dtype=torch.float32)
    lengths = mask.long().sum(-1)
    rows = torch.nonzero(lengths > 0).squeeze(-1)
    out[rows, lengths[rows] - 1] = scores.float()[rows]
    return out


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var(returns - values) / Var(returns) over real tokens: 1 is a perfect critic, <= 0 a useless one."""
    m = mask.bool()
    if m.sum() < 2:
        return float("nan")
    r, v = returns[m].float(), values[m].float()
    var = r.var(unbiased=False)
    return float("nan") if var == 0 else float(1 - (r - v).var(unbiased=False) / var)
