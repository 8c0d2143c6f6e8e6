"""Prompt readers: JSONL, Parquet, Hugging Face datasets; ready pairs in hh-rlhf or TRL shape.

Every reader yields `PromptRow`s for usable rows and `Quarantined` records for the rest, with a reason
from `REASONS`. One bad row never stops a read.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Union

from synthpref.data.schema import content_id
from synthpref.errors import MissingInput

REASONS = {
    "malformed_json": "the line is not valid JSON",
    "bad_utf8": "the line is not valid UTF-8",
    "wrong_type": "a field has the wrong type",
    "missing_prompt": "neither `prompt` nor `messages` is present",
    "empty_prompt": "the prompt has no text",
    "too_few_completions": "`completions` has fewer than two responses",
    "prompt_too_long": "the prompt does not fit the engine's context with room to answer",
    "duplicate": "the same prompt (and completions) appeared earlier in the input",
    "transcript_mismatch": "chosen and rejected do not share the same conversation before the reply",
}
ROLES = {"system", "user", "assistant"}


@dataclass
class PromptRow:
    prompt_id: str
    messages: list[dict]
    source: str
    meta: dict = field(default_factory=dict)
    completions: list[str] | None = None     # ready responses: sampling is skipped for this row


@dataclass
class Quarantined:
    source: str
    reason: str
    detail: str
    raw: str = ""

    def to_json(self) -> dict:
        return {"source": self.source, "reason": self.reason, "detail": self.detail,
                "raw": self.raw[:2000]}


Item = Union[PromptRow, Quarantined]


def row_from_record(record: object, source: str) -> Item:
    """Validate one decoded record ({prompt | messages, completions?, ...}) into a PromptRow."""
    raw = _preview(record)
    if not isinstance(record, dict):
        return Quarantined(source, "wrong_type", f"expected a JSON object, got {type(record).__name__}", raw)
    if isinstance(record.get("prompt"), list) and record.get("messages") is None:
        record = {**{k: v for k, v in record.items() if k != "prompt"}, "messages": record["prompt"]}
    if "messages" in record and record["messages"] is not None:
        messages = record["messages"]
        problem = _check_messages(messages)
        if problem:
            return Quarantined(source, "wrong_type", f"messages: {problem}", raw)
        messages = [{"role": m["role"], "content": m["content"]} for m in messages]
    elif "prompt" in record and record["prompt"] is not None:
        if not isinstance(record["prompt"], str):
            return Quarantined(source, "wrong_type", f"prompt: expected a string, got {type(record['prompt']).__name__}", raw)
        messages = [{"role": "user", "content": record["prompt"]}]
    else:
        return Quarantined(source, "missing_prompt", REASONS["missing_prompt"], raw)
    if not any(m["content"].strip() for m in messages if m["role"] != "system"):
        return Quarantined(source, "empty_prompt", REASONS["empty_prompt"], raw)
    completions = record.get("completions")
    if completions is not None:
        if not isinstance(completions, list) or not all(isinstance(c, str) for c in completions):
            return Quarantined(source, "wrong_type", "completions: expected a list of strings", raw)
        if len(completions) < 2:
            return Quarantined(source, "too_few_completions", f"{len(completions)} completion(s) given", raw)
    meta = {k: v for k, v in record.items() if k not in ("prompt", "messages", "completions")}
    try:
        prompt_id = content_id(messages, completions)
    except UnicodeEncodeError as exc:        # e.g. a lone surrogate from a "\ud800" JSON escape
        return Quarantined(source, "bad_utf8", f"text cannot be encoded as UTF-8: {exc}", raw)
    return PromptRow(prompt_id, messages, source, meta, completions)


def _check_messages(messages: object) -> str:
    if not isinstance(messages, list) or not messages:
        return "expected a non-empty list of {role, content}"
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            return f"item {i} is not a {{role: str, content: str}} mapping"
        if m["role"] not in ROLES:
            return f"item {i} has unknown role {m['role']!r}"
    if messages[-1]["role"] == "assistant":
        return "the last message is from the assistant; nothing to answer"
    return ""


def _preview(record: object) -> str:
    try:
        return json.dumps(record, ensure_ascii=True, default=str)[:2000]
    except (TypeError, ValueError):
        return repr(record)[:2000]


def read_jsonl(path: Path) -> Iterator[Item]:
    with open(path, "rb") as fh:
        for lineno, line in enumerate(fh, 1):
            source = f"{path.name}:{lineno}"
            if not line.strip():
                continue
            try:
                text = line.decode("utf-8-sig" if lineno == 1 else "utf-8")   # tolerate a byte-order mark
            except UnicodeDecodeError as exc:
                yield Quarantined(source, "bad_utf8", str(exc), line[:2000].decode("utf-8", "replace"))
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as exc:
                yield Quarantined(source, "malformed_json", str(exc), text)
                continue
            yield from _route(record, source)


def read_parquet(path: Path) -> Iterator[Item]:
    import pyarrow.parquet as pq
    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    for file in files:
        for i, record in enumerate(pq.read_table(file).to_pylist()):
            yield from _route(record, f"{file.name}:{i}")


def read_hf(path: str, split: str) -> Iterator[Item]:
    import datasets
    saved = Path(path)
    if saved.is_dir() and any((saved / name).exists() for name in ("dataset_dict.json", "state.json")):
        ds = datasets.load_from_disk(path)
        if isinstance(ds, datasets.DatasetDict):
            ds = ds[split]
    else:
        try:
            ds = datasets.load_dataset(path, split=split)
        except FileNotFoundError as exc:     # neither a local dataset nor one on the hub by that name
            raise MissingInput(f"data.path: {path} is neither a file or folder here nor a dataset on the hub "
                               f"({type(exc).__name__}: {exc})") from exc
    for i, record in enumerate(ds):
        yield from _route(record, f"{Path(path).name}[{split}]:{i}")


def _route(record: object, source: str) -> Iterator[Item]:
    """Records with `chosen`/`rejected` are ready pairs (hh-rlhf or TRL preference format)."""
    if isinstance(record, dict) and "chosen" in record and "rejected" in record and "completions" not in record:
        yield pair_record_row(record, source)
    else:
        yield row_from_record(record, source)


def parse_transcript(text: str) -> list[dict]:
    """An hh-rlhf transcript ("\\n\\nHuman: ...\\n\\nAssistant: ...") as a list of messages."""
    messages: list[dict] = []
    for chunk in text.split("\n\nHuman: ")[1:] if text.startswith("\n\nHuman: ") else []:
        human, *assistant_turns = chunk.split("\n\nAssistant: ")
        messages.append({"role": "user", "content": human})
        messages.extend({"role": "assistant", "content": a} for a in assistant_turns)
    return messages


def _split_reply(value: object, name: str) -> tuple[list[dict] | None, str | None, str | None]:
    """A chosen/rejected value -> (conversation before the reply, or None for a plain string; the reply; an error)."""
    if isinstance(value, str):
        return None, value, None
    bad = f"{name}: expected a string or a message list ending with an assistant turn"
    if not isinstance(value, list) or not value:
        return None, None, bad
    if any(not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str)
           for m in value) or value[-1]["role"] != "assistant":
        return None, None, bad
    return [{"role": m["role"], "content": m["content"]} for m in value[:-1]], value[-1]["content"], None


def pair_record_row(record: dict, source: str) -> Item:
    """A ready pair: completions = [chosen, rejected], `meta.human_choice` = 0 (the first was preferred).

    Accepted shapes: hh-rlhf transcripts ("\\n\\nHuman: ... \\n\\nAssistant: ..."); TRL's explicit
    prompt (`prompt` string or messages, `chosen`/`rejected` strings or assistant messages); TRL's
    implicit prompt (`chosen`/`rejected` full conversations sharing every turn but the last)."""
    raw = _preview(record)
    meta = {k: v for k, v in record.items() if k not in ("prompt", "messages", "chosen", "rejected")}
    meta["human_choice"] = 0
    has_prompt = record.get("prompt") is not None or record.get("messages") is not None
    chosen, rejected = record["chosen"], record["rejected"]
    if not has_prompt and isinstance(chosen, str) and isinstance(rejected, str):
        chosen, rejected = parse_transcript(chosen), parse_transcript(rejected)
        if not chosen or not rejected:
            return Quarantined(source, "missing_prompt", "chosen/rejected strings without a prompt must be "
                                                         "hh-rlhf transcripts", raw)
    (ctx_c, reply_c, err_c), (ctx_r, reply_r, err_r) = _split_reply(chosen, "chosen"), _split_reply(rejected, "rejected")
    if err_c or err_r:
        return Quarantined(source, "wrong_type", err_c or err_r, raw)
    if has_prompt:
        prompt = {k: record[k] for k in ("prompt", "messages") if record.get(k) is not None}
        row = row_from_record({**prompt, "completions": [reply_c, reply_r], **meta}, source)
        if isinstance(row, PromptRow) and any(ctx and ctx != row.messages for ctx in (ctx_c, ctx_r)):
            return Quarantined(source, "transcript_mismatch", "chosen/rejected conversation differs from the prompt", raw)
        return row
    if ctx_c != ctx_r:
        return Quarantined(source, "transcript_mismatch", REASONS["transcript_mismatch"], raw)
    if not ctx_c:
        return Quarantined(source, "missing_prompt", "chosen/rejected have no conversation before the reply", raw)
    return row_from_record({"messages": ctx_c, "completions": [reply_c, reply_r], **meta}, source)


def detect_format(path: str) -> str:
    p = Path(path)
    if p.suffix in (".jsonl", ".json"):
        return "jsonl"
    if p.suffix == ".parquet" or (p.is_dir() and any(p.glob("*.parquet"))):
        return "parquet"
    return "hf"


def read_prompts(path: str, fmt: str = "auto", split: str = "train", prompts_only: bool = False) -> Iterator[Item]:
    """Every row of a prompt source, usable or quarantined, in input order; duplicates quarantined.
    `prompts_only`: ready completions (chosen/rejected, completions) are set aside, so every prompt is
    sampled; rows that then repeat a conversation are duplicates."""
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt in ("jsonl", "hh-rlhf"):
        if not Path(path).exists():
            raise MissingInput(f"data.path: {path} does not exist")
        items = read_jsonl(Path(path))
    elif fmt == "parquet":
        if not Path(path).exists():
            raise MissingInput(f"data.path: {path} does not exist")
        items = read_parquet(Path(path))
    else:
        items = read_hf(path, split)
    seen: dict[str, str] = {}
    for item in items:
        if isinstance(item, PromptRow) and prompts_only and item.completions is not None:
            item = PromptRow(content_id(item.messages, None), item.messages, item.source, item.meta, None)
        if isinstance(item, PromptRow):
            if item.prompt_id in seen:
                yield Quarantined(item.source, "duplicate", f"same content as {seen[item.prompt_id]}",
                                  _preview({"messages": item.messages, "completions": item.completions}))
                continue
            seen[item.prompt_id] = item.source
        yield item
