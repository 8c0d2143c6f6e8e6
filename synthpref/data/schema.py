"""The four tables every stage exchanges (see DESIGN.md): prompts, samples, judgments, preferences.

Each is an Arrow schema; `to_table` builds a table from row dicts and fails loudly on a row that does
not fit, so a wrong type never reaches a Parquet shard.
"""
from __future__ import annotations

import hashlib
import json

import pyarrow as pa

# Raised whenever a table gains or loses a column; it is part of every job fingerprint, so an output folder
# never mixes shards of two schemas (which `datasets.load_dataset("parquet", ...)` cannot read together).
# 2: samples gained `dtype`. 3: judgments gained `principle`.
SCHEMA_VERSION = 3

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
MESSAGES = pa.list_(MESSAGE)

PROMPTS = pa.schema([
    ("prompt_id", pa.string()),          # content hash of the messages
    ("messages", MESSAGES),
    ("source", pa.string()),
    ("meta", pa.string()),               # JSON text: the reader's extra fields
])

SAMPLES = pa.schema([
    ("prompt_id", pa.string()),
    ("sample_id", pa.string()),
    ("policy", pa.string()),             # model (+ iteration), or "given" for ready completions
    ("text", pa.string()),
    ("n_tokens", pa.int64()),
    ("logprob", pa.float64()),           # cumulative logprob of the sample, when sampled
    ("finish_reason", pa.string()),
    ("seed", pa.int64()),
    ("dtype", pa.string()),              # the dtype of the engine that sampled it (null for ready completions)
    ("token_ids", pa.list_(pa.int32())),         # the exact ids the engine produced (null for ready completions)
    ("token_logprobs", pa.list_(pa.float32())),  # the engine's log-prob of each of them
])

JUDGMENTS = pa.schema([
    ("pair_id", pa.string()),            # pointwise mode: the sample_id that was scored
    ("judge_id", pa.string()),
    ("template_hash", pa.string()),
    ("order", pa.string()),              # ab | ba | point
    ("verdict", pa.string()),            # A | B | TIE | FAILED (pointwise: SCORE | FAILED)
    ("p_first", pa.float64()),           # P(first shown is better), from logprobs
    ("score", pa.float64()),             # pointwise score
    ("raw", pa.string()),
    ("rationale", pa.string()),
    ("error", pa.string()),
    ("latency_s", pa.float64()),
    ("prompt_tokens", pa.int64()),
    ("completion_tokens", pa.int64()),
    ("attempts", pa.int64()),            # tries this verdict took (remote judges retry; null for local ones)
    ("choice_probs", pa.string()),       # logprob verdicts: JSON {label: probability renormalised over the labels}
    ("weight_version", pa.int64()),      # local engines: the weight version that judged (0 = as built; self-rewarding)
    ("principle", pa.string()),          # constitutional judging: the id of the principle the pair was compared under
])

PREFERENCES = pa.schema([
    ("prompt_id", pa.string()),
    ("pair_id", pa.string()),
    ("prompt", MESSAGES),
    ("chosen", MESSAGES),
    ("rejected", MESSAGES),
    ("score_chosen", pa.float64()),
    ("score_rejected", pa.float64()),
    ("confidence", pa.float64()),
    ("n_votes", pa.int64()),
    ("agreement", pa.float64()),
    ("position_consistent", pa.bool_()),
    ("length_delta", pa.int64()),        # len(chosen) - len(rejected), in characters
    ("provenance", pa.string()),         # JSON text: judges, template hashes, seeds, models
])

SFT = pa.schema([                        # prompt/completion in TRL's conversational format
    ("prompt_id", pa.string()),
    ("sample_id", pa.string()),
    ("prompt", MESSAGES),
    ("completion", MESSAGES),
    ("score", pa.float64()),
    ("iteration", pa.int64()),
    ("policy", pa.string()),             # model @ weight version that sampled it
])

CRITIQUES = pa.schema([                  # cai: every critique -> revision round of the SL phase
    ("prompt_id", pa.string()),
    ("round", pa.int64()),               # 1..rounds
    ("principle", pa.string()),          # the id of the principle drawn for this prompt and round
    ("answer_before", pa.string()),      # the latest answer the round critiqued
    ("critique", pa.string()),
    ("revision", pa.string()),
    ("kept", pa.bool_()),                # the revision replaced the answer
    ("reason", pa.string()),             # why not (empty_revision, critique_failed: ..., revision_failed: ...)
    ("revision_id", pa.string()),
])

REWARDS = pa.schema([                    # ppo: what became of each completion of a step
    ("prompt_id", pa.string()),
    ("sample_id", pa.string()),
    ("reward", pa.float64()),            # the judges' weighted reward (null: a judge FAILED, or not judged)
    ("shaped_reward", pa.float64()),     # after the no-EOS penalty, length terms, normalisation and clipping
    ("trained", pa.bool_()),             # in this step's update
    ("dropped_reason", pa.string()),     # why not (null when trained)
])

TABLES = {"prompts": PROMPTS, "samples": SAMPLES, "judgments": JUDGMENTS, "preferences": PREFERENCES}


def to_table(rows: list[dict], schema: pa.Schema) -> pa.Table:
    """Rows (dicts keyed by the schema's field names) to a table; extra or missing keys are errors."""
    names = schema.names
    for i, row in enumerate(rows):
        extra = set(row) - set(names)
        missing = set(names) - set(row)
        if extra or missing:
            raise ValueError(f"row {i}: extra fields {sorted(extra)}, missing fields {sorted(missing)}")
    columns = {name: [row[name] for row in rows] for name in names}
    return pa.Table.from_pydict(columns, schema=schema)


def content_id(*parts: object, length: int = 16) -> str:
    """A stable hash of JSON-serialisable parts: prompt ids, pair ids, shard ids."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:length]
