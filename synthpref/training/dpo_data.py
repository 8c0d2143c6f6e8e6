"""DPO's data path, shared by `synthpref dpo` and `synthpref self-reward`: pairs encoded for a causal LM,
length-sorted batches, the reference pass (once per pair, before training) and held-out evaluation.

A pair's reference log-probabilities are sums over its response tokens (IPO's per-token means are the
sums over the token counts, taken when a batch is built), so one reference pass serves either loss.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from synthpref.data.schema import content_id
from synthpref.training.batches import Encoded, TooLong, collate, encode, length_sorted_batches, shuffled
from synthpref.training.losses import IGNORE


@dataclass
class DPOPair:
    key: str                   # content hash of the prompt and both responses: the reference cache's key
    prompt_key: str            # the conversation's hash: the unit of the held-out split
    chosen: Encoded
    rejected: Encoded
    weight: float = 1.0        # the pair's share of the loss (label confidence, when weighting is on)
    source: str = ""
    ref: tuple[float, float] | None = None     # reference log p(chosen), log p(rejected): sums

    @property
    def tokens(self) -> tuple[int, int]:
        """Response tokens of chosen and rejected (what the sums run over)."""
        return (sum(x != IGNORE for x in self.chosen.labels), sum(x != IGNORE for x in self.rejected.labels))

    @property
    def length(self) -> int:
        return max(len(self.chosen.input_ids), len(self.rejected.input_ids))


def encode_pair(tokenizer, messages: list[dict], chosen: str, rejected: str, max_len: int, weight: float = 1.0,
                source: str = "", chosen_ids: list[int] | None = None, rejected_ids: list[int] | None = None) -> DPOPair:
    """Both responses after the chat-rendered prompt (the sampler's own token ids when given). A pair whose
    responses are the same tokens cannot teach a preference: ValueError; one too long: TooLong."""
    c = encode(tokenizer, messages, chosen, max_len, chosen_ids)
    r = encode(tokenizer, messages, rejected, max_len, rejected_ids)
    if c.input_ids == r.input_ids:
        raise ValueError("identical: chosen and rejected are the same tokens")
    return DPOPair(content_id(messages, chosen, rejected), content_id(messages), c, r, weight, source)


def encode_rows(tokenizer, rows: list, max_len: int, quarantined: list[dict], weight_of=None) -> list[DPOPair]:
    """PromptRows with completions [chosen, rejected] as pairs; rows too long, with identical responses or
    whose weight is not a number >= 0 (`weight_of(row)`, default 1) are quarantined with their reason."""
    out = []
    for row in rows:
        weight = weight_of(row) if weight_of else 1.0
        if not (isinstance(weight, (int, float)) and math.isfinite(weight) and weight >= 0):
            quarantined.append({"source": row.source, "reason": "bad_confidence",
                                "detail": f"confidence {row.meta.get('confidence')!r} is not a number >= 0 "
                                          f"(dpo.confidence_weighting)"})
            continue
        try:
            out.append(encode_pair(tokenizer, row.messages, *row.completions, max_len, weight, row.source))
        except TooLong as exc:
            quarantined.append({"source": row.source, "reason": "too_long", "detail": str(exc)})
        except ValueError as exc:
            quarantined.append({"source": row.source, "reason": "identical", "detail": str(exc)})
    return out


def batches(pairs: list[DPOPair], batch_size: int, seed: int) -> list[list[int]]:
    """Indices of pairs of similar length together (little padding), batches in a seeded order."""
    return shuffled(length_sorted_batches([p.length for p in pairs], batch_size), seed)


def pair_tensors(pairs: list[DPOPair], index: list[int], pad_id: int, loss: str = "sigmoid",
                 weighted: bool = False) -> dict[str, torch.Tensor]:
    """chosen_*/rejected_* tensors of the indexed pairs, with ref_chosen/ref_rejected when the reference
    pass has run (per-token means for IPO) and pair_weight when weighting is on."""
    rows = [pairs[i] for i in index]
    out = {}
    for side, k in (("chosen", 0), ("rejected", 1)):
        out.update({f"{side}_{name}": t for name, t in collate([(p.chosen, p.rejected)[k] for p in rows], pad_id).items()})
    if all(p.ref is not None for p in rows):
        for side, k in (("chosen", 0), ("rejected", 1)):
            out[f"ref_{side}"] = torch.tensor([p.ref[k] / (p.tokens[k] if loss == "ipo" else 1) for p in rows],
                                              dtype=torch.float32)
    if weighted:
        out["pair_weight"] = torch.tensor([p.weight for p in rows], dtype=torch.float32)
    return out


def pair_logprobs(group, pairs: list[DPOPair], batch_size: int, pad_id: int, on_done=None,
                  shared_prompt: bool = True) -> list[tuple[float, float]]:
    """log p(chosen), log p(rejected) (sums) of every pair under `group`'s model, in the pairs' order."""
    out: list = [None] * len(pairs)
    for index in length_sorted_batches([p.length for p in pairs], batch_size):
        batch = pair_tensors(pairs, index, pad_id)
        for i, lp in zip(index, group.forward("forward_pair_logprobs", batch, shared_prompt)):
            out[i] = (float(lp[0]), float(lp[1]))
        if on_done:
            on_done(len(index))
    return out


def fill_reference(group, pairs: list[DPOPair], batch_size: int, pad_id: int, cache: dict | None = None,
                   on_done=None, shared_prompt: bool = True) -> dict[str, tuple[float, float]]:
    """Set each pair's reference log-probs: from `cache` (key -> (chosen, rejected)) where it has them, the
    rest by one forward pass of the frozen `group`. Returns the cache with the new ones added."""
    cache = dict(cache or {})
    todo = [p for p in pairs if p.key not in cache]
    if todo:
        cache.update({p.key: lp for p, lp in zip(todo, pair_logprobs(group, todo, batch_size, pad_id, on_done,
                                                                       shared_prompt))})
    for p in pairs:
        p.ref = tuple(cache[p.key])
    return cache


def implicit_margins(policy_lp: list[tuple[float, float]], pairs: list[DPOPair], beta: float,
                     loss: str = "sigmoid") -> list[float]:
    """beta * ((log pi/ref)(chosen) - (log pi/ref)(rejected)) per pair: the implicit reward margin (per-token
    means for IPO)."""
    out = []
    for (pc, pr), p in zip(policy_lp, pairs):
        nc, nr = p.tokens if loss == "ipo" else (1, 1)
        out.append(beta * ((pc - p.ref[0]) / nc - (pr - p.ref[1]) / nr))
    return out


def preference_accuracy(group, pairs: list[DPOPair], batch_size: int, pad_id: int, beta: float,
                        loss: str = "sigmoid", shared_prompt: bool = True) -> dict:
    """Held-out preference accuracy (share of pairs whose implicit reward margin is > 0, ties half) and the
    mean margin, with the reference log-probs already filled in."""
    if not pairs:
        return {"pairs": 0, "accuracy": None, "margin": None}
    margins = implicit_margins(pair_logprobs(group, pairs, batch_size, pad_id, None, shared_prompt), pairs, beta, loss)
    wins = sum(1.0 if m > 0 else 0.5 if m == 0 else 0.0 for m in margins)
    return {"pairs": len(pairs), "accuracy": wins / len(pairs), "margin": sum(margins) / len(margins)}
