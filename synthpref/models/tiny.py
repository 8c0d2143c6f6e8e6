"""Build a tiny Llama-architecture model and tokenizer with a chat template, offline and deterministic.

For tests and the demo: a byte-level BPE tokenizer trained on an embedded corpus, random weights from
a seed. head_dim stays >= 32 (vLLM's CPU attention rejects 16).
"""
from __future__ import annotations

import json
from pathlib import Path

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]

_CORPUS = """
The quick brown fox jumps over the lazy dog. A helpful assistant answers the question clearly,
honestly and without harm. Which response is better? Response A or Response B. Answer with A or B.
Explain how plants make food from sunlight. Photosynthesis turns light, water and carbon dioxide
into sugar and oxygen. Write a short poem about the sea. Waves fold over the grey stones at dawn.
Give three tips for staying healthy: sleep well, eat vegetables, walk every day. Yes. No. Tie.
How do I bake bread? Mix flour, water, yeast and salt, knead, let it rise, then bake it hot.
What is the capital of France? Paris is the capital of France. Translate hello into Spanish: hola.
Summarise the story in one sentence. The judge must not favour the longer answer for its length.
Rate the response from 1 to 10. Rating: [[7]]. Verdict: [[A]]. Verdict: [[B]]. Verdict: [[TIE]].
0 1 2 3 4 5 6 7 8 9 10 numbers, letters, words: the model writes text one token at a time.
"""


def train_tokenizer(vocab_size: int):
    """A byte-level BPE tokenizer trained on the embedded corpus (deterministic)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    lines = [line for line in _CORPUS.strip().splitlines()] * 4
    tok.train_from_iterator(lines, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="<|end|>",
                                   unk_token="<unk>", pad_token="<pad>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(out_dir: str | Path, seed: int = 0, hidden_size: int = 128, num_layers: int = 2,
                     num_heads: int = 2, vocab_size: int = 1024, max_position_embeddings: int = 2048,
                     intermediate_size: int | None = None, reward: bool = False) -> Path:
    """Write a tiny LlamaForCausalLM (or, with `reward`, a one-logit LlamaForSequenceClassification
    reward model) + tokenizer to `out_dir` and return the path."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

    if hidden_size // num_heads < 32:
        raise ValueError(f"head_dim {hidden_size // num_heads} < 32: vLLM's CPU attention needs >= 32")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=num_layers,
        num_attention_heads=num_heads, num_key_value_heads=num_heads,
        intermediate_size=intermediate_size or 2 * hidden_size,
        max_position_embeddings=max_position_embeddings, tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, torch_dtype="float32", num_labels=1,
    )
    torch.manual_seed(seed)
    if reward:
        model = LlamaForSequenceClassification(config)
    else:
        model = LlamaForCausalLM(config)
        model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / "synthpref_tiny.json").write_text(json.dumps({"seed": seed, "hidden_size": hidden_size,
                                                         "num_layers": num_layers, "num_heads": num_heads,
                                                         "reward": reward}))
    return out


def ensure_tiny_model(out_dir: str | Path, seed: int = 0, **kwargs) -> Path:
    """Build the tiny model unless a complete one is already at `out_dir`."""
    out = Path(out_dir)
    if (out / "synthpref_tiny.json").exists() and (out / "config.json").exists():
        return out
    return build_tiny_model(out, seed=seed, **kwargs)
