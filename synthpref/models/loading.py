"""Model and tokenizer loading: a Hugging Face name or a local path, one code path for both.

Prompts are rendered with the tokenizer's own chat template, so a model is prompted the way it was
trained; the sampler engines and the driver's length checks use this same rendering.
"""
from __future__ import annotations

import os
from functools import lru_cache


def for_workers(name_or_path: str) -> str:
    """A model or folder given as a local path, made absolute for the actors that open it (they run in
    other folders: a submitted job's actors in Ray's copy of the working dir); a hub name as it is."""
    return os.path.abspath(name_or_path) if name_or_path and os.path.exists(name_or_path) else name_or_path


def tokenizer_or_error(model: str, key: str):
    """The model's tokenizer, or a ConfigError naming the key (exit 2) when it cannot be loaded."""
    from synthpref.config import ConfigError
    try:
        return load_tokenizer(model)
    except Exception as exc:  # OSError for a missing path or hub name, ValueError for no chat template
        raise ConfigError(f"{key}: cannot load a tokenizer from {model!r}: {exc}") from exc


@lru_cache(maxsize=8)
def load_tokenizer(name_or_path: str):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(name_or_path)
    if not getattr(tok, "chat_template", None):
        raise ValueError(f"{name_or_path}: the tokenizer has no chat template; use an instruction-tuned model "
                         f"or one built with `synthpref tiny-model`")
    return tok


def chat_prompt_ids(tokenizer, messages: list[dict]) -> list[int]:
    """Token ids of `messages` rendered by the chat template, ready for the assistant's turn.

    Some templates (e.g. Gemma's) reject a system turn; then the system text is put at the top of the
    first user turn instead, the usual workaround, rather than failing every judge prompt."""
    try:
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    except Exception:
        if not messages or messages[0]["role"] != "system" or len(messages) < 2 or messages[1]["role"] != "user":
            raise
        merged = {"role": "user", "content": messages[0]["content"] + "\n\n" + messages[1]["content"]}
        text = tokenizer.apply_chat_template([merged, *messages[2:]], add_generation_prompt=True, tokenize=False)
    return tokenizer.encode(text, add_special_tokens=False)


def conversation_ids(tokenizer, messages: list[dict]) -> list[int]:
    """Token ids of a whole conversation ending in the assistant's response, as a reward model reads it:
    the reward-model judge scores and `synthpref train-rm` trains on this same rendering."""
    ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=False)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def pad_id(tokenizer) -> int:
    """The id batches are padded with: the tokenizer's pad token, else its end-of-sequence token."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
