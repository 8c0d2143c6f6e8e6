"""The RL work of one trainer rank on its share of a rollout batch (TrainerActor's rl_* methods call these).

A rollout batch: `input_ids`/`attention_mask` [B, P + R] (prompts left-padded to P, responses right-
padded to R after them), `response_mask` [B, R], and per response token the tensors an update needs
(`old_logp`, `ref_logp`, `advantages`, `returns`, `old_values`). Sources: PPO (Schulman et al. 2017);
its RLHF form with a value head per token and a KL-penalised reward (Ziegler et al. 2019; Ouyang et al.
2022); KL as a loss term instead (GRPO, Shao et al. 2024).
"""
from __future__ import annotations

import torch

from synthpref.training.forward import rollout_logits, rollout_positions, rollout_token_logprobs
from synthpref.training.kl import kl_per_token
from synthpref.training.policy_losses import (aggregate, clipped_surrogate, clipped_value_loss, entropy_from_logits,
                                              truncated_is_weights)


def in_chunks(forward, t: dict, rows: int, rows_per_rank: int | None = None) -> list[torch.Tensor]:
    """Per-row results of `forward`, without gradients, run over `rows` rows at a time (bounded memory: a forward pass over a
    whole rollout batch would hold its [B, R, vocab] logits at once), on the CPU, in order.

    Every rank makes the same number of forward calls, ceil(rows_per_rank / rows), rows_per_rank being the
    largest share of any rank: under ZeRO-3 each forward gathers parameters from all ranks, so a rank with
    one call fewer would leave the others waiting. A rank whose rows ran out repeats its first row and
    drops the result."""
    rows = max(1, rows)
    n = t["response_mask"].shape[0]
    calls = -(-max(n, rows_per_rank or 0) // rows)
    out: list[torch.Tensor] = []
    with torch.no_grad():                    # forward only
        for k in range(calls):
            start = k * rows
            index = slice(start, start + rows) if start < n else slice(0, 1)
            result = forward({key: (v[index] if v.dim() else v) for key, v in t.items()})
            if start < n:
                out.extend(result.cpu().unbind(0))
    return out


def token_logprobs(model, t: dict, temperature: float) -> torch.Tensor:
    """[B, R] log-probs of the response tokens."""
    logits = rollout_logits(model, t["input_ids"], t["attention_mask"], t["response_mask"].shape[1])
    return rollout_token_logprobs(logits, t["input_ids"], temperature) * t["response_mask"]


def token_values(model, t: dict) -> torch.Tensor:
    """[B, R] the critic's value of each response token's state: the score head applied to the hidden
    state that predicts the token (a sequence-classification model's head, read at every position)."""
    base = getattr(model, model.base_model_prefix)
    positions = rollout_positions(t["attention_mask"])
    hidden = base(input_ids=t["input_ids"], attention_mask=t["attention_mask"], position_ids=positions).last_hidden_state
    r = t["response_mask"].shape[1]
    return model.score(hidden[:, -(r + 1):-1]).squeeze(-1).float()


def policy_loss(model, t: dict, settings: dict) -> tuple[torch.Tensor, dict]:
    """The clipped surrogate on this share (+ KL to the reference as a loss term, - entropy bonus)."""
    mask = t["response_mask"]
    logits = rollout_logits(model, t["input_ids"], t["attention_mask"], mask.shape[1])
    logp = rollout_token_logprobs(logits, t["input_ids"], settings["temperature"])
    old = logp.detach() if settings.get("old_is_current") else t["old_logp"]
    weights = None
    if settings.get("tis_cap"):
        weights = truncated_is_weights(old, t["engine_logp"], mask, settings["tis_cap"])
    loss, stats = clipped_surrogate(logp, old, t["advantages"], mask, settings["clip_eps"],
                                    settings.get("dual_clip"), settings["loss_agg"], weights)
    if settings.get("old_is_current") and "engine_logp" in t:     # the engine-vs-trainer gap, from this pass
        gap = (old - t["engine_logp"]).abs() * mask * t["engine_logp_ok"].unsqueeze(-1)
        stats["engine_trainer_logprob_gap_max"] = float(gap.max())
        stats["engine_trainer_logprob_gap_mean"] = float(gap.sum() / mask.sum().clamp(min=1))
    if "ref_logp" in t:           # k1 KL to the reference, nats per sequence, of the policy before this step
        stats["kl_k1_seq"] = float(((old - t["ref_logp"]) * mask).sum(-1).mean())
    stats["pg_loss"] = float(loss.detach())
    if settings.get("kl_in_loss"):
        kl = aggregate(kl_per_token(logp, t["ref_logp"], settings["kl_estimator"], mask), mask, settings["loss_agg"])
        loss = loss + settings["kl_coef"] * kl
        stats["kl_loss"] = float(kl.detach())
    if settings.get("entropy_coef"):
        entropy = aggregate(entropy_from_logits(logits), mask, "token-mean")
        loss = loss - settings["entropy_coef"] * entropy
    else:                                    # reported only: no graph through the full-vocabulary softmax
        with torch.no_grad():
            entropy = aggregate(entropy_from_logits(logits.detach()), mask, "token-mean")
    stats["entropy"] = float(entropy.detach())
    return loss * t.get("weight", 1.0), stats


def value_loss(model, t: dict, settings: dict) -> tuple[torch.Tensor, dict]:
    mask = t["response_mask"]
    values = token_values(model, t)
    loss, stats = clipped_value_loss(values, t["old_values"], t["returns"], mask, settings.get("value_clip"),
                                     settings["loss_agg"])
    stats["value_loss"] = float(loss.detach())
    return loss * t.get("weight", 1.0), stats
