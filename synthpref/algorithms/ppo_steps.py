"""The steps of one RL step as plain functions (the driver is ppo.py): rollout tensors from the sampled
token ids, reward shaping, KL-shaped token rewards and advantages, mini-batches."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from synthpref.models.loading import chat_prompt_ids, pad_id
from synthpref.training.advantages import (gae, group_normalise, last_token_rewards, rloo, sequence_to_tokens,
                                           whiten)
from synthpref.training.kl import kl_per_token


@dataclass
class Rollouts:
    """Samples turned into one batch: prompts left-padded to one width, responses right-padded after them."""
    samples: list[dict]
    tensors: dict[str, torch.Tensor]

    @property
    def mask(self) -> torch.Tensor:
        return self.tensors["response_mask"]


def build_rollouts(tokenizer, conversations: dict[str, list[dict]], samples: list[dict], max_len: int,
                   dropped: dict[str, str], need_engine_logprobs: bool = False) -> Rollouts | None:
    """The exact ids each sampler produced after its rendered prompt; samples that cannot be trained on
    (no tokens, prompt + response over max_len) go to `dropped` with the reason."""
    kept, prompts, responses = [], [], []
    for s in samples:
        ids = list(s.get("token_ids") or [])
        prompt = chat_prompt_ids(tokenizer, conversations[s["prompt_id"]])
        if not ids:
            dropped[s["sample_id"]] = "empty_response: the sampler produced no tokens"
            continue
        if need_engine_logprobs and len(s.get("token_logprobs") or []) != len(ids):
            dropped[s["sample_id"]] = "no_engine_logprobs: the sampler returned no log-prob for its tokens"
            continue
        if len(prompt) + len(ids) > max_len:
            dropped[s["sample_id"]] = f"too_long: {len(prompt)} prompt + {len(ids)} response tokens > train.max_len {max_len}"
            continue
        kept.append(s)
        prompts.append(prompt)
        responses.append(ids)
    if not kept:
        return None
    width_p, width_r, pad = max(map(len, prompts)), max(map(len, responses)), pad_id(tokenizer)
    n = len(kept)
    input_ids = torch.full((n, width_p + width_r), pad, dtype=torch.long)
    attention = torch.zeros((n, width_p + width_r), dtype=torch.long)
    response_mask = torch.zeros((n, width_r), dtype=torch.float32)
    engine_logp = torch.zeros((n, width_r), dtype=torch.float32)
    engine_ok = torch.zeros(n, dtype=torch.float32)               # 1 where the engine returned its log-probs
    for i, (p, r, s) in enumerate(zip(prompts, responses, kept)):   # (engine log-probs: 0 where absent)
        input_ids[i, width_p - len(p):width_p] = torch.tensor(p)
        input_ids[i, width_p:width_p + len(r)] = torch.tensor(r)
        attention[i, width_p - len(p):width_p + len(r)] = 1
        response_mask[i, :len(r)] = 1
        if s.get("token_logprobs") and len(s["token_logprobs"]) == len(r):
            engine_logp[i, :len(r)] = torch.tensor(s["token_logprobs"], dtype=torch.float32)
            engine_ok[i] = 1.0
    return Rollouts(kept, {"input_ids": input_ids, "attention_mask": attention, "response_mask": response_mask,
                           "engine_logp": engine_logp, "engine_logp_ok": engine_ok})


@dataclass
class RunningStats:
    """Running mean and variance of every reward seen (Chan et al.'s parallel update), for normalisation."""
    count: float = 0.0
    mean: float = 0.0
    m2: float = 0.0

    def update(self, values: list[float]) -> None:
        if not values:
            return
        n = len(values)
        mean = sum(values) / n
        m2 = sum((v - mean) ** 2 for v in values)
        delta, total = mean - self.mean, self.count + n
        self.mean += delta * n / total
        self.m2 += m2 + delta ** 2 * self.count * n / total
        self.count = total

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / self.count) if self.count > 1 else 1.0


def shape_rewards(raw: list[float], samples: list[dict], shaping, running: RunningStats) -> list[float]:
    """The mitigations for RL on synthetic rewards, in order: per-token normalisation and a length penalty;
    the no-EOS penalty replacing the reward of a completion cut at max_tokens; running mean/std
    normalisation (the stats include this batch); clipping."""
    out = []
    for r, s in zip(raw, samples):
        n = max(1, s["n_tokens"])
        if shaping.length_normalise:
            r = r / n
        r = r - shaping.length_penalty * n
        if shaping.no_eos_penalty is not None and s["finish_reason"] == "length":
            r = shaping.no_eos_penalty          # as it is: neither divided by the length nor penalised for it
        out.append(r)
    if shaping.normalise:
        running.update(out)
        out = [(r - running.mean) / (running.std + 1e-8) for r in out]
    if shaping.clip is not None:
        out = [min(max(r, -shaping.clip), shaping.clip) for r in out]
    return out


@dataclass
class Advantages:
    advantages: torch.Tensor
    returns: torch.Tensor | None
    token_rewards: torch.Tensor | None
    keep: list[int]                                  # rows of the rollouts in the update
    dropped_groups: int = 0                          # groups left with fewer than two members
    stats: dict = field(default_factory=dict)


def compute_advantages(cfg, rollouts: Rollouts, scores: list[float], kl_tokens: torch.Tensor, beta: float,
                       values: torch.Tensor | None) -> Advantages:
    """Token rewards (the score on the last token; -beta KL on every token when KL goes in the reward),
    then GAE with the critic's values, or a group baseline over each prompt's remaining completions."""
    mask = rollouts.mask
    score_t = torch.tensor(scores, dtype=torch.float32)
    kl_in_reward = cfg.kl.placement == "reward" and beta > 0
    if cfg.estimator == "gae":
        rewards = last_token_rewards(score_t, mask)
        if kl_in_reward:
            rewards = rewards - beta * kl_tokens * mask
        adv, ret = gae(rewards, values, mask, cfg.gamma, cfg.lam)
        if cfg.whiten_advantages:
            adv = whiten(adv, mask)
        return Advantages(adv, ret, rewards, list(range(len(scores))))
    seq = score_t - beta * (kl_tokens * mask).sum(-1) if kl_in_reward else score_t
    groups = [s["prompt_id"] for s in rollouts.samples]
    size: dict = {}
    for g in groups:
        size[g] = size.get(g, 0) + 1
    keep = [i for i, g in enumerate(groups) if size[g] >= 2]
    dropped = len({g for g in groups if size[g] < 2})
    if cfg.estimator == "rloo":
        per_seq = rloo(seq, groups)
    else:
        per_seq = group_normalise(seq, groups, divide_by_std=cfg.estimator == "grpo")
    return Advantages(sequence_to_tokens(per_seq, mask), None, None, keep, dropped)


def old_from_update(cfg, rollouts: int, kl_coef: float) -> bool:
    """Whether a step's old log-probs can be the update's own (detached): with one optimizer step per RL
    step (one epoch, one mini-batch) the policy has not moved when it is taken, so a separate pass would
    compute the same numbers. Not when they are needed before the update: KL in the reward, truncated
    importance sampling (its weights compare them with the engine's), or the engine's chosen instead."""
    single = cfg.ppo_epochs == 1 and cfg.mini_batch >= rollouts
    kl_in_reward = cfg.kl.placement == "reward" and kl_coef > 0
    return single and cfg.old_logprobs == "trainer" and not kl_in_reward and not cfg.tis_cap


def kl_tokens(policy_logp: torch.Tensor, ref_logp: torch.Tensor | None, estimator: str, mask: torch.Tensor) -> torch.Tensor:
    if ref_logp is None or policy_logp is None:
        return torch.zeros_like(mask)
    return kl_per_token(policy_logp, ref_logp, estimator, mask)
