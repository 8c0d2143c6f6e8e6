"""Log-probabilities of the trained tokens only, without the full [batch, length, vocab] logits.

A causal LM's logits at position t predict token t + 1; only positions that predict a counted token
(label != IGNORE: the responses) are needed. Passing those positions as `logits_to_keep` makes the model
apply its output head (and any logit scaling or soft-capping it has) to them alone, which saves most of
the head's compute and memory when prompts are long or the vocabulary is large (150k for Qwen).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from synthpref.training.losses import IGNORE


def predicting_positions(labels: torch.Tensor) -> torch.Tensor:
    """Positions t (any row) whose logits predict a counted token t + 1."""
    return (labels[:, 1:] != IGNORE).any(0).nonzero().squeeze(-1)


def response_token_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                            labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log p of each counted token, mask), both [B, K] over the K predicting positions."""
    positions = predicting_positions(labels)
    try:
        logits = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=positions).logits
    except TypeError:                    # a model without logits_to_keep: full logits, then select
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, positions]
    targets = labels[:, positions + 1]
    mask = targets != IGNORE
    logps = torch.gather(F.log_softmax(logits.float(), dim=-1), 2, targets.masked_fill(~mask, 0).unsqueeze(-1))
    return logps.squeeze(-1) * mask, mask


def rollout_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids of left-padded rows: each row's first real token is position 0."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def rollout_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_len: int) -> torch.Tensor:
    """Logits [B, R, V] predicting the R response tokens of rollout rows: prompts left-padded to one width,
    responses right-padded after them, so response token i sits at column width - R + i in every row."""
    positions = rollout_positions(attention_mask)
    try:
        logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions,
                       logits_to_keep=response_len + 1).logits
    except TypeError:                    # a model without logits_to_keep
        logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions).logits
        logits = logits[:, -(response_len + 1):]
    return logits[:, :-1]


def rollout_token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log p of each response token [B, R] under logits / temperature (the distribution sampled from)."""
    response = input_ids[:, -logits.shape[1]:]
    logp = F.log_softmax(logits.float() / temperature, dim=-1)
    return torch.gather(logp, 2, response.unsqueeze(-1)).squeeze(-1)
