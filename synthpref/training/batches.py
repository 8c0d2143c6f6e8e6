"""Token batches for training: a prompt rendered by the chat template, a response trained on.

The response is encoded on its own and appended to the rendered prompt (plus EOS), rather than rendering
prompt + response together and hoping the template's prefix is stable: some templates rewrite earlier
turns when an assistant turn follows. Prompt and padding positions get the label IGNORE, so losses count
only response tokens.
"""
from __future__ import annotations

from dataclasses import dataclass

import random

import torch

from synthpref.models.loading import chat_prompt_ids, pad_id
from synthpref.training.losses import IGNORE


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]


class TooLong(ValueError):
    """A row whose prompt plus response does not fit max_len (quarantined by the caller, with this text)."""


def encode(tokenizer, prompt: list[dict], response: str, max_len: int,
           response_ids: list[int] | None = None) -> Encoded:
    """input_ids = prompt ids + response ids + EOS; labels = IGNORE over the prompt, the ids elsewhere.
    `response_ids`, the exact ids a sampler produced, are used as they are instead of re-encoding the
    text (an EOS only where the engine produced one: a completion cut at max_tokens never gets one).
    A prompt too long for max_len is cut from the left (the latest turns matter most) as long as at least
    half of max_len stays prompt-free for the response; otherwise TooLong names the sizes."""
    prompt_ids = chat_prompt_ids(tokenizer, prompt)
    if response_ids is not None:
        response_ids = list(response_ids)
    else:
        response_ids = tokenizer.encode(response, add_special_tokens=False)
        if tokenizer.eos_token_id is not None:
            response_ids = response_ids + [tokenizer.eos_token_id]
    room = max_len - len(response_ids)
    if room < max(1, max_len // 2) and len(prompt_ids) > room:
        raise TooLong(f"too_long: {len(prompt_ids)} prompt + {len(response_ids)} response tokens > max_len {max_len}")
    prompt_ids = prompt_ids[-room:] if len(prompt_ids) > room else prompt_ids
    return Encoded(prompt_ids + response_ids, [IGNORE] * len(prompt_ids) + response_ids)


def collate(rows: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded tensors input_ids, attention_mask, labels of one batch, padded only to its longest row."""
    ids, mask = pad_rows([r.input_ids for r in rows], pad_id)
    labels = torch.full(ids.shape, IGNORE, dtype=torch.long)
    for i, r in enumerate(rows):
        labels[i, :len(r.labels)] = torch.tensor(r.labels)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def length_sorted_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (little padding), batches in order of length."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def encode_scored(tokenizer, prompt: list[dict], response: str, max_len: int) -> list[int]:
    """Ids of the whole conversation as a reward model reads it (`conversation_ids`), cut from the left
    when longer than max_len as long as the response itself fits; otherwise TooLong."""
    from synthpref.models.loading import conversation_ids
    ids = conversation_ids(tokenizer, [*prompt, {"role": "assistant", "content": response}])
    if len(ids) > max_len:
        response_len = len(tokenizer.encode(response, add_special_tokens=False))
        if response_len >= max_len:
            raise TooLong(f"too_long: the response alone is {response_len} tokens >= max_len {max_len}")
        ids = ids[-max_len:]
    return ids


def pad_rows(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), right-padded to the longest row."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r)
        mask[i, :len(r)] = 1
    return ids, mask


def collate_pairs(chosen: list[list[int]], rejected: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """A Bradley-Terry batch: chosen_input_ids/attention_mask and rejected_input_ids/attention_mask."""
    c_ids, c_mask = pad_rows(chosen, pad_id)
    r_ids, r_mask = pad_rows(rejected, pad_id)
    return {"chosen_input_ids": c_ids, "chosen_attention_mask": c_mask,
            "rejected_input_ids": r_ids, "rejected_attention_mask": r_mask}


def shuffled(batches: list[list[int]], seed: int) -> list[list[int]]:
    """The length-sorted batches in a seeded random order (similar lengths within a batch, SGD across)."""
    import random
    order = list(batches)
    random.Random(seed).shuffle(order)
    return order


def mini_batches(rows: list[int], size: int, seed: int) -> list[list[int]]:
    """The rows in a seeded order, cut into ceil(n / size) mini-batches of equal size (within one), so no
    optimizer step is taken on a stray remainder of a few rows."""
    order = list(rows)
    random.Random(seed).shuffle(order)
    count = -(-len(order) // max(1, size))
    return [order[k * len(order) // count:(k + 1) * len(order) // count] for k in range(count)]


def select_rows(tensors: dict[str, torch.Tensor], rows: list[int]) -> dict[str, torch.Tensor]:
    """The given rows of every tensor of a batch, in that order."""
    index = torch.tensor(rows, dtype=torch.long)
    return {k: v.index_select(0, index) for k, v in tensors.items()}


def sft_batches(tokenizer, rows: list[dict], max_len: int, batch_size: int, seed: int,
                quarantined: list[dict], ids_of: dict[str, list[int] | None] | None = None) -> list[dict]:
    """Tokenised, length-sorted batches of SFT table rows (data/schema.SFT: prompt, completion, sample_id) in a
    seeded order; rows too long are quarantined.
    `ids_of` maps a sample id to the token ids its sampler produced: those are trained on as they are."""
    encoded = []
    for row in rows:
        try:
            encoded.append(encode(tokenizer, row["prompt"], row["completion"][0]["content"], max_len,
                                  (ids_of or {}).get(row["sample_id"])))
        except TooLong as exc:
            quarantined.append({"sample_id": row["sample_id"], "reason": "too_long", "detail": str(exc)})
    order = shuffled(length_sorted_batches([len(e.input_ids) for e in encoded], batch_size), seed)
    return [collate([encoded[i] for i in index], pad_id(tokenizer)) for index in order]
