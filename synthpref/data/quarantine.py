"""quarantine.jsonl: every row a job could not use, with its reason (nothing is dropped silently)."""
from __future__ import annotations

import json
from pathlib import Path

from synthpref.data.readers import Quarantined
from synthpref.data.shards import atomic_write_bytes


def sampling_failures(errors: list[dict]) -> list[dict]:
    """Completions the engines could not produce, as quarantine records."""
    return [{"source": e.get("source", ""), "reason": "sampling_failed", "prompt_id": e["prompt_id"],
             "detail": f"completion {e['index']}: {e['error']}", "raw": ""} for e in errors]


def write_quarantine(path: Path, records: list[Quarantined | dict]) -> None:
    """One JSON line per record, written atomically (an empty file when there is none)."""
    lines = [json.dumps(r.to_json() if isinstance(r, Quarantined) else r, ensure_ascii=False) for r in records]
    atomic_write_bytes(Path(path), ("\n".join(lines) + ("\n" if lines else "")).encode())


def by_reason(records: list[Quarantined | dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in records:
        reason = r.reason if isinstance(r, Quarantined) else r["reason"]
        counts[reason] = counts.get(reason, 0) + 1
    return counts
