"""Metrics as JSON lines (one object per event, with a wall-clock timestamp) and progress bars."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path


class MetricsLog:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def log(self, record: dict) -> None:
        line = json.dumps({"time": round(time.time(), 3), **record}, default=str)
        with open(self.path, "a") as fh:
            fh.write(line + "\n")


def progress(total: int | None, desc: str, unit: str, enabled: bool = True, position: int = 0):
    """A tqdm bar on stderr (total None: a live count and rate); disabled when asked (tests, CI logs)."""
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, file=sys.stderr, dynamic_ncols=True,
                position=position)
