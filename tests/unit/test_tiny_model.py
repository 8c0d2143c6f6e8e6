import hashlib

from synthpref.models.loading import chat_prompt_ids, load_tokenizer
from synthpref.models.tiny import build_tiny_model


def digest(path):
    return hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()


def test_tiny_model_is_deterministic_and_has_a_chat_template(tmp_path):
    a = build_tiny_model(tmp_path / "a", seed=5, hidden_size=64, num_heads=2, num_layers=1)
    b = build_tiny_model(tmp_path / "b", seed=5, hidden_size=64, num_heads=2, num_layers=1)
    c = build_tiny_model(tmp_path / "c", seed=6, hidden_size=64, num_heads=2, num_layers=1)
    assert digest(a) == digest(b) != digest(c)
    assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()
    tok = load_tokenizer(str(a))
    ids = chat_prompt_ids(tok, [{"role": "user", "content": "Which is better, A or B?"}])
    text = tok.decode(ids)
    assert text.startswith("<s><|user|>\nWhich is better, A or B?<|end|>") and text.endswith("<|assistant|>\n")
    assert len(tok.encode("A", add_special_tokens=False)) == 1


def test_head_dim_below_32_is_refused(tmp_path):
    import pytest
    with pytest.raises(ValueError, match="head_dim 16"):
        build_tiny_model(tmp_path / "x", hidden_size=64, num_heads=4)


def test_templates_without_a_system_role_get_it_merged_into_the_first_user_turn(tmp_path):
    from transformers import AutoTokenizer

    path = build_tiny_model(tmp_path / "m", seed=1, hidden_size=64, num_heads=2, num_layers=1)
    tok = AutoTokenizer.from_pretrained(str(path))
    tok.chat_template = ("{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
                         "{% endif %}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n"
                         "{% endfor %}<|assistant|>\n")
    ids = chat_prompt_ids(tok, [{"role": "system", "content": "Be fair."}, {"role": "user", "content": "A or B?"}])
    assert tok.decode(ids).startswith("<|user|>\nBe fair.\n\nA or B?<|end|>\n<|assistant|>")
