"""Training batches: the prompt is never trained on, padding is ignored, over-long rows are named."""
import pytest
import torch

from synthpref.training.batches import TooLong, collate, encode, length_sorted_batches
from synthpref.training.losses import IGNORE, sft_loss, token_logprobs


class CharTokenizer:
    """A fake tokenizer for pure logic: one id per character, a trivial chat template."""
    eos_token_id = 1

    def apply_chat_template(self, messages, add_generation_prompt, tokenize):
        return "".join(f"<{m['role'][0]}>{m['content']}" for m in messages) + ("<a>" if add_generation_prompt else "")

    def encode(self, text, add_special_tokens=False):
        return [ord(c) for c in text]


def test_prompt_tokens_are_ignored_and_eos_is_trained():
    enc = encode(CharTokenizer(), [{"role": "user", "content": "hi"}], "yo", max_len=32)
    prompt = [ord(c) for c in "<u>hi<a>"]
    assert enc.input_ids == prompt + [ord("y"), ord("o"), 1]
    assert enc.labels == [IGNORE] * len(prompt) + [ord("y"), ord("o"), 1]


def test_sampled_ids_are_trained_as_they_are():
    """A sampler's ids are not re-tokenised from the text, and a completion cut at max_tokens gets no EOS."""
    prompt = [ord(c) for c in "<u>hi<a>"]
    cut = encode(CharTokenizer(), [{"role": "user", "content": "hi"}], "yo", max_len=32, response_ids=[500, 501])
    assert cut.input_ids == prompt + [500, 501] and cut.labels == [IGNORE] * len(prompt) + [500, 501]
    stopped = encode(CharTokenizer(), [{"role": "user", "content": "hi"}], "yo", 32, response_ids=[500, 1])
    assert stopped.input_ids[-2:] == [500, 1]


def test_a_long_prompt_is_cut_from_the_left_and_an_impossible_row_is_named():
    enc = encode(CharTokenizer(), [{"role": "user", "content": "abcdefghij"}], "z", max_len=10)
    assert len(enc.input_ids) == 10 and enc.input_ids[-2:] == [ord("z"), 1]
    assert enc.input_ids[:8] == [ord(c) for c in "<u>abcdefghij<a>"][-8:]      # the latest prompt tokens kept
    with pytest.raises(TooLong, match="too_long: 8 prompt \\+ 9 response tokens > max_len 10"):
        encode(CharTokenizer(), [{"role": "user", "content": "hi"}], "x" * 8, max_len=10)


def test_collate_pads_right_and_padding_does_not_change_the_loss():
    tok = CharTokenizer()
    short = encode(tok, [{"role": "user", "content": "a"}], "b", max_len=64)
    long = encode(tok, [{"role": "user", "content": "a much longer prompt"}], "and answer", max_len=64)
    batch = collate([short, long], pad_id=0)
    assert batch["input_ids"].shape == (2, len(long.input_ids))
    assert batch["attention_mask"][0].sum().item() == len(short.input_ids)
    assert (batch["labels"][0, len(short.input_ids):] == IGNORE).all()
    vocab = 200
    torch.manual_seed(0)
    logits = torch.randn(1, batch["input_ids"].shape[1], vocab)
    alone = collate([short], pad_id=0)
    assert sft_loss(*token_logprobs(logits[:, :len(short.input_ids)], alone["labels"])).item() == pytest.approx(
        sft_loss(*token_logprobs(logits, batch["labels"][:1])).item())


def test_length_sorted_batches_cover_every_row_once():
    batches = length_sorted_batches([5, 1, 9, 3, 7], batch_size=2)
    assert batches == [[1, 3], [0, 4], [2]]
