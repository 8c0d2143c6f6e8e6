"""Model and tokenizer loading: a Hugging Face name or a local path, one code path for both.

Prompts are rendered with the tokenizer's own chat template, so a model is prompted the way it was
trained; the sampler engines and the driver's length checks use this same rendering.
"""
from __future__ import annotations

from functools import lru_cache


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


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 matrix instructions (AVX512-BF16 or AMX), where STACK.md measured
    bf16 2.3x faster than fp32; elsewhere bf16 on CPU is emulated and slower."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def resolve_dtype(setting: str, on_gpu: bool) -> str:
    """`auto` picks bf16 where the hardware runs it natively, else fp32 on CPU and the model's own on GPU."""
    if setting != "auto":
        return setting
    if on_gpu:
        import torch
        return "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "auto"
    return "bfloat16" if cpu_supports_bf16() else "float32"
