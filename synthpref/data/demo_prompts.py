"""The demo's own prompt set (written for synthpref; no download)."""
from __future__ import annotations

import json
from pathlib import Path

_TOPICS = ["the sea", "bread", "photosynthesis", "a city at night", "the moon", "friendship", "rain",
           "a small robot", "mountains", "coffee", "an old library", "the first day of school"]
_TASKS = ["Write a short poem about {}.", "Explain {} to a ten-year-old.", "Give three facts about {}.",
          "Describe {} in one sentence."]


def demo_prompts(n: int = 24) -> list[dict]:
    """n prompt rows in the JSONL shape synthpref reads: {"prompt": ...}."""
    rows = []
    for i in range(n):
        task = _TASKS[i % len(_TASKS)]
        topic = _TOPICS[(i // len(_TASKS) + i) % len(_TOPICS)]
        rows.append({"prompt": task.format(topic), "id": f"demo-{i:03d}"})
    return rows


def write_demo_prompts(path: str | Path, n: int = 24) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in demo_prompts(n)))
    return path
