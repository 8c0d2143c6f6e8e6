import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from synthpref.data.readers import PromptRow, Quarantined, parse_transcript, read_prompts

GOOD = [
    {"prompt": "What is 2+2?"},
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]},
    {"prompt": "Pick one", "completions": ["red", "blue", "green"]},
]


def corpus_with_every_reason(path):
    lines = [json.dumps(r).encode() for r in GOOD]
    lines += [
        b'{"prompt": "unterminated',                                   # malformed_json
        b'{"prompt": "caf\xe9"}',                                       # bad_utf8 (latin-1 byte)
        json.dumps({"prompt": 42}).encode(),                           # wrong_type
        json.dumps({"messages": [{"role": "user"}]}).encode(),         # wrong_type
        json.dumps({"text": "no prompt field"}).encode(),              # missing_prompt
        json.dumps({"prompt": "   "}).encode(),                        # empty_prompt
        json.dumps({"prompt": "x", "completions": ["only one"]}).encode(),  # too_few_completions
        json.dumps({"prompt": "x", "completions": "not a list"}).encode(),  # wrong_type
        json.dumps(GOOD[0]).encode(),                                   # duplicate
        b"[1, 2, 3]",                                                   # wrong_type (not an object)
    ]
    path.write_bytes(b"\n".join(lines) + b"\n\n")
    return path


def test_every_quarantine_reason(tmp_path):
    items = list(read_prompts(str(corpus_with_every_reason(tmp_path / "p.jsonl"))))
    rows = [i for i in items if isinstance(i, PromptRow)]
    bad = [i for i in items if isinstance(i, Quarantined)]
    assert len(rows) == 3 and len(bad) == 10
    assert [q.reason for q in bad] == ["malformed_json", "bad_utf8", "wrong_type", "wrong_type", "missing_prompt",
                                       "empty_prompt", "too_few_completions", "wrong_type", "duplicate", "wrong_type"]
    assert bad[0].source == "p.jsonl:4"
    assert "p.jsonl:1" in bad[8].detail
    assert rows[1].messages[0] == {"role": "system", "content": "Be brief."}
    assert rows[2].completions == ["red", "blue", "green"]
    assert rows[0].messages == [{"role": "user", "content": "What is 2+2?"}]


def test_prompt_ids_are_content_hashes(tmp_path):
    a = tmp_path / "a.jsonl"
    b = tmp_path / "b.jsonl"
    a.write_text(json.dumps({"prompt": "same"}) + "\n")
    b.write_text(json.dumps({"messages": [{"role": "user", "content": "same"}]}) + "\n")
    assert next(read_prompts(str(a))).prompt_id == next(read_prompts(str(b))).prompt_id


HH = {"chosen": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: help me\n\nAssistant: Sure, here is how.",
      "rejected": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: help me\n\nAssistant: No."}


def test_hh_rlhf_dialogues(tmp_path):
    path = tmp_path / "hh.jsonl"
    mismatch = dict(HH, rejected=HH["rejected"].replace("help me", "go away"))
    path.write_text(json.dumps(HH) + "\n" + json.dumps(mismatch) + "\n")
    row, bad = list(read_prompts(str(path)))
    assert row.messages == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                            {"role": "user", "content": "help me"}]
    assert row.completions == ["Sure, here is how.", "No."]
    assert row.meta["human_choice"] == 0
    assert bad.reason == "transcript_mismatch"
    assert parse_transcript("no markers") == []


def test_parquet_and_hf_dataset(tmp_path):
    import datasets

    records = [{"prompt": "a", "completions": ["x", "y"]}, {"prompt": "", "completions": ["x", "y"]}]
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "p.parquet")
    items = list(read_prompts(str(tmp_path / "p.parquet")))
    assert isinstance(items[0], PromptRow) and items[1].reason == "empty_prompt"
    datasets.Dataset.from_list(records).save_to_disk(str(tmp_path / "hf"))
    items = list(read_prompts(str(tmp_path / "hf"), fmt="hf"))
    assert isinstance(items[0], PromptRow) and items[1].reason == "empty_prompt"


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="data.path"):
        list(read_prompts(str(tmp_path / "nope.jsonl")))


def test_real_hh_rlhf_pairs_parse(hh_rlhf_path):
    items = list(read_prompts(str(hh_rlhf_path)))
    rows = [i for i in items if isinstance(i, PromptRow)]
    assert len(items) == 1200
    assert len(rows) >= 1100          # a few real rows differ in their dialogue prefix or repeat
    assert all(len(r.completions) == 2 and r.messages[-1]["role"] == "user" for r in rows)


def user(text):
    return {"role": "user", "content": text}


def bot(text):
    return {"role": "assistant", "content": text}


def test_trl_preference_shapes(tmp_path):
    records = [
        {"prompt": "2+2?", "chosen": "4", "rejected": "5"},                                   # explicit, standard
        {"prompt": [user("2+2?")], "chosen": [bot("4")], "rejected": [bot("3")], "id": 7},    # explicit, conversational
        {"chosen": [user("hi"), bot("hey"), user("2+3?"), bot("5")],                           # implicit prompt
         "rejected": [user("hi"), bot("hey"), user("2+3?"), bot("6")]},
        {"chosen": [user("a"), bot("x")], "rejected": [user("b"), bot("y")]},                  # different prompts
        {"prompt": "q", "chosen": [user("q"), bot("x")], "rejected": [user("other"), bot("y")]},
        {"prompt": "q", "chosen": [user("q")], "rejected": "y"},                               # no assistant reply
        {"chosen": "plain string", "rejected": "no prompt anywhere"},
    ]
    path = tmp_path / "trl.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    items = list(read_prompts(str(path)))
    explicit, conversational, implicit = items[:3]
    assert explicit.messages == [user("2+2?")] and explicit.completions == ["4", "5"]
    assert explicit.meta["human_choice"] == 0
    assert conversational.completions == ["4", "3"] and conversational.meta["id"] == 7
    assert implicit.messages == [user("hi"), bot("hey"), user("2+3?")] and implicit.completions == ["5", "6"]
    assert [q.reason for q in items[3:]] == ["transcript_mismatch", "transcript_mismatch", "wrong_type", "missing_prompt"]


def test_lone_surrogates_and_byte_order_marks(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"prompt": "first line after a BOM"}\n{"prompt": "bad \\ud800 text"}\n{"prompt": "ok"}\n')
    first, bad, ok = list(read_prompts(str(path)))
    assert isinstance(first, PromptRow) and first.messages[0]["content"] == "first line after a BOM"
    assert bad.reason == "bad_utf8" and isinstance(ok, PromptRow)
