"""A preference pair as one row with its prompt once: [prompt | chosen | rejected].

Chosen and rejected share the prompt, so scoring them as two rows computes the prompt twice. Here the
rejected tokens take the positions right after the prompt (as in their own row) and attend to the prompt
and to themselves, never to the chosen tokens, through a 4D attention mask; each response's first token is
predicted from the prompt's last position. The log-probabilities are the two-row ones (the same attention
inputs at the same positions), while a pair costs P + C + R tokens instead of 2P + C + R: with multi-turn
prompts (hh-rlhf) most of a DPO step's work is the prompt. Pairs whose two rows were cut to different
prompts (left truncation by max_len) cannot share one: `pack` returns None and the caller scores two rows.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from synthpref.training.losses import IGNORE


def _parts(ids: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> tuple[list[int], list[int]]:
    """(prompt ids, response ids) of one right-padded row."""
    n = int(mask.sum())
    row, lab = ids[:n].tolist(), labels[:n].tolist()
    start = next((i for i, x in enumerate(lab) if x != IGNORE), n)
    return row[:start], row[start:]


def pack(t: dict, pad_id: int) -> dict | None:
    """The packed batch of chosen_*/rejected_* tensors (input_ids, attention_mask, labels), or None when a
    pair's prompts differ or a response is empty. Returns input_ids and position_ids [B, W], the allowed
    attention as a bool [B, W, W] (True = may attend), and for each side the predicting positions, target
    ids and their mask [B, K]."""
    rows = []
    for i in range(t["chosen_input_ids"].shape[0]):
        pc, c = _parts(t["chosen_input_ids"][i], t["chosen_labels"][i], t["chosen_attention_mask"][i])
        pr, r = _parts(t["rejected_input_ids"][i], t["rejected_labels"][i], t["rejected_attention_mask"][i])
        if pc != pr or not pc or not c or not r:
            return None
        rows.append((pc, c, r))
    width = max(len(p) + len(c) + len(r) for p, c, r in rows)
    kc, kr = max(len(c) for _, c, _ in rows), max(len(r) for _, _, r in rows)
    b = len(rows)
    ids = torch.full((b, width), pad_id, dtype=torch.long)
    pos = torch.zeros((b, width), dtype=torch.long)
    allowed = torch.zeros((b, width, width), dtype=torch.bool)
    out = {side: {"at": torch.zeros((b, k), dtype=torch.long), "target": torch.zeros((b, k), dtype=torch.long),
                  "mask": torch.zeros((b, k), dtype=torch.bool)} for side, k in (("chosen", kc), ("rejected", kr))}
    causal = torch.ones((width, width), dtype=torch.bool).tril()
    for i, (p, c, r) in enumerate(rows):
        n_p, n_c, n_r = len(p), len(c), len(r)
        total = n_p + n_c + n_r
        ids[i, :total] = torch.tensor(p + c + r)
        pos[i, :total] = torch.cat([torch.arange(n_p + n_c), torch.arange(n_p, n_p + n_r)])
        allowed[i, :total, :total] = causal[:total, :total]
        allowed[i, n_p + n_c:total, n_p:n_p + n_c] = False          # rejected never sees chosen
        allowed[i, torch.arange(total, width), torch.arange(total, width)] = True   # padding sees itself
        for side, start, resp in (("chosen", n_p, c), ("rejected", n_p + n_c, r)):
            k = len(resp)
            at = torch.arange(start - 1, start - 1 + k)
            at[0] = n_p - 1                                             # the first token follows the prompt
            out[side]["at"][i, :k], out[side]["target"][i, :k] = at, torch.tensor(resp)
            out[side]["mask"][i, :k] = True
    return {"input_ids": ids, "position_ids": pos, "allowed": allowed, **out}


def packed_logprobs(model, packed: dict, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor,
                                                                     torch.Tensor, torch.Tensor]:
    """(chosen token log-probs, their mask, rejected token log-probs, their mask), each [B, K], from one
    forward pass of the packed rows; only the positions that predict a response token get logits."""
    first = int(min(packed["chosen"]["at"][:, 0].min(), packed["rejected"]["at"][:, 0].min()))
    width = packed["input_ids"].shape[1]
    allowed = packed["allowed"]
    mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)
    inputs = {"input_ids": packed["input_ids"], "position_ids": packed["position_ids"], "attention_mask": mask.unsqueeze(1)}
    try:
        logits = model(**inputs, logits_to_keep=width - first).logits
    except TypeError:                    # a model without logits_to_keep: full logits, then the tail
        logits = model(**inputs).logits[:, first:]
    logp = F.log_softmax(logits.float(), dim=-1)                        # [B, width - first, V]
    rows = torch.arange(logp.shape[0], device=logp.device).unsqueeze(-1)
    out = []
    for side in ("chosen", "rejected"):
        s = packed[side]
        token = logp[rows, (s["at"] - first).clamp(min=0), s["target"]]    # [B, K]
        out += [token * s["mask"], s["mask"]]
    return tuple(out)


def supports_packing(model) -> bool:
    """Whether the model takes a 4D additive attention mask as the whole of its masking: eager and SDPA
    attention (flash attention takes none), and no sliding-window layers (a 4D mask replaces their window)."""
    config = getattr(getattr(model, "module", model), "config", None)
    sliding = getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True)
    sliding = sliding or "sliding_attention" in (getattr(config, "layer_types", None) or [])
    return getattr(config, "_attn_implementation", "sdpa") in ("sdpa", "eager") and not sliding
