"""Preference and fine-tuning losses as small pure functions of tensors.

Log-probabilities follow the causal-LM convention: the logits at position t predict the token at t + 1,
and positions whose label is `IGNORE` (-100: prompt and padding) do not count.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log p(label) of a causal LM and the mask of counted tokens, both [B, T-1].
    logits: [B, T, V]; labels: [B, T] with IGNORE where a token is not trained on."""
    logits, labels = logits[:, :-1].float(), labels[:, 1:]
    mask = labels != IGNORE
    safe = labels.masked_fill(~mask, 0)
    logps = torch.gather(F.log_softmax(logits, dim=-1), 2, safe.unsqueeze(-1)).squeeze(-1)
    return logps * mask, mask


def sequence_logprob(logits: torch.Tensor, labels: torch.Tensor, average: bool = False) -> torch.Tensor:
    """log p(response | prompt) per sequence, [B]: the sum over counted tokens, or their mean."""
    logps, mask = token_logprobs(logits, labels)
    total = logps.sum(-1)
    return total / mask.sum(-1).clamp(min=1) if average else total


def sft_loss(token_logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Token cross-entropy averaged over all counted tokens of the batch (supervised fine-tuning, as in
    InstructGPT's SFT stage, Ouyang et al. 2022), from per-token log-probs and their mask (as
    `token_logprobs` or forward.response_token_logprobs give them)."""
    return -(token_logps * mask).sum() / mask.sum().clamp(min=1)


def bradley_terry_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor, margin: torch.Tensor | float | None = None,
                       center_coef: float = 0.0, target: torch.Tensor | None = None) -> torch.Tensor:
    """Reward-model loss -log sigmoid(r_chosen - r_rejected - margin), averaged (Bradley & Terry 1952;
    reward models as in Ouyang et al. 2022; the margin as in Llama 2, Touvron et al. 2023). `target` [B]
    gives soft labels, P(chosen preferred) p: -(p log sigmoid(d) + (1 - p) log sigmoid(-d)), constitutional
    AI's preference model trained on a feedback model's normalised probabilities (Bai et al. 2022). `center_coef`
    adds center_coef * mean((r_chosen + r_rejected)^2), which keeps rewards centred on zero (Eisenstein
    et al. 2023, "Helping or Herding?")."""
    diff = r_chosen.float() - r_rejected.float()
    if margin is not None:
        diff = diff - margin
    if target is not None:              # soft labels: cross-entropy against P(chosen preferred)
        p = target.to(diff.dtype)
        loss = -(p * F.logsigmoid(diff) + (1 - p) * F.logsigmoid(-diff)).mean()
    else:
        loss = -F.logsigmoid(diff).mean()
    if center_coef:
        loss = loss + center_coef * ((r_chosen.float() + r_rejected.float()) ** 2).mean()
    return loss


def _log_ratio_margin(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor,
                      ref_chosen: torch.Tensor, ref_rejected: torch.Tensor) -> torch.Tensor:
    """(log pi/ref)(chosen) - (log pi/ref)(rejected), per pair."""
    return (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)


def weighted_mean(values: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """mean(w_i * x_i) over the batch (not renormalised: a pair of confidence 0.6 counts 0.6 of a sure one)."""
    return values.mean() if weights is None else (values * weights.to(values.dtype)).mean()


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float = 0.1, label_smoothing: float = 0.0,
             weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Direct Preference Optimization (Rafailov et al. 2023): -log sigmoid(beta * h), h the log-ratio
    margin of chosen over rejected. Inputs are sequence log-probabilities [B]. `label_smoothing` eps is
    conservative DPO (Mitchell 2023, "A note on DPO with noisy preferences"): the label is flipped with
    probability eps, -(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h). `weights` [B] scale each
    pair's loss (e.g. the jury's confidence). Returns (loss, implicit reward of chosen, of rejected),
    the rewards being beta * log(pi / ref), detached."""
    h = _log_ratio_margin(policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    per_pair = -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    return (weighted_mean(per_pair, weights), (beta * (policy_chosen - ref_chosen)).detach(),
            (beta * (policy_rejected - ref_rejected)).detach())


def ipo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float = 0.1, weights: torch.Tensor | None = None) -> torch.Tensor:
    """IPO (Azar et al. 2023, "A General Theoretical Paradigm to Understand Learning from Human
    Preferences"): (h - 1 / (2 beta))^2, averaged; the paper's h uses per-token average log-probabilities
    (`sequence_logprob(..., average=True)`)."""
    h = _log_ratio_margin(policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    return weighted_mean((h - 1.0 / (2.0 * beta)) ** 2, weights)
