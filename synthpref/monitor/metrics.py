"""Metrics as JSON lines (one object per event, with a wall-clock timestamp), TensorBoard scalars, and
progress bars."""
from __future__ import annotations

import json
import numbers
import time
from pathlib import Path


class MetricsLog:
    """`log(record)` appends one JSON line. With `tensorboard_dir`, `scalars(phase, step, values)` also
    writes each number as the TensorBoard scalar `phase/name` at `step` (and logs the record)."""

    def __init__(self, path: str | Path, tensorboard_dir: str | Path | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.writer = None
        if tensorboard_dir is not None:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(log_dir=str(tensorboard_dir))

    def log(self, record: dict) -> None:
        line = json.dumps({"time": round(time.time(), 3), **record}, default=str)
        with open(self.path, "a") as fh:
            fh.write(line + "\n")
        from synthpref.monitor import ray_metrics          # the same numbers, live, for Prometheus / Grafana
        ray_metrics.export(str(record.get("event", "record")), {k: v for k, v in record.items() if k != "event"},
                           pool=str(record.get("pool", "")))

    def rewind(self, after_step: int, events: tuple[str, ...]) -> int:
        """Remove the records of `events` whose step is past `after_step` (a resumed run does those steps
        again, and each step is recorded once); returns how many were removed."""
        if not self.path.exists():
            return 0
        kept, removed = [], 0
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:           # a line cut short by a kill mid-write
                removed += 1
                continue
            if record.get("event") in events and isinstance(record.get("step"), int) and record["step"] > after_step:
                removed += 1
                continue
            kept.append(line)
        if removed:
            from synthpref.data.shards import atomic_write_bytes
            atomic_write_bytes(self.path, "".join(k + "\n" for k in kept).encode())
        return removed

    def scalars(self, phase: str, step: int, values: dict) -> None:
        self.log({"event": phase, "step": step, **values})
        if self.writer is None:
            return
        for name, value in values.items():
            if isinstance(value, numbers.Real) and not isinstance(value, bool):
                self.writer.add_scalar(f"{phase}/{name}", float(value), step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def progress(total: int | None, desc: str, unit: str, enabled: bool = True, position: int = 0):
    """A tqdm bar on stderr (total None: a live count and rate); disabled when asked (tests, CI logs)."""
    from tqdm import tqdm
    from synthpref.monitor.console import err
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, file=err(), dynamic_ncols=True,
                position=position)
