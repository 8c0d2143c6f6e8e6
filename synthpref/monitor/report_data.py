"""What the HTML report reads from a run folder: the job that made it, its metrics.jsonl rows, its
report.json / summary.json, its tables, and the sub-runs it holds (a `cai` run's sl/, labels/, rm/, ppo/)."""
from __future__ import annotations

import json
import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path

# Fields of a metrics row that index it rather than measure anything: never plotted as a metric.
INDEX_FIELDS = frozenset({"time", "step", "event", "epoch", "iteration", "round", "shard"})


@dataclass
class RunFolder:
    path: Path
    name: str                      # "" for the folder the report is for, else the sub-run's folder name
    kind: str                      # the job (label, ppo, ...), or "run" when nothing says which
    run_json: dict
    report: dict                   # report.json, or a label run's summary.json
    rows: list[dict]               # metrics.jsonl
    subruns: list["RunFolder"] = field(default_factory=list)

    @property
    def times(self) -> list[float]:
        return [r["time"] for r in self.rows if is_number(r.get("time"))]


def is_number(value) -> bool:
    """A real number that is a measurement (bools are not)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def read_metrics(path: Path) -> list[dict]:
    """metrics.jsonl's records in file order; a line cut short by a kill mid-write is skipped."""
    rows = []
    if not path.exists():
        return rows
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            rows.append(record)
    return rows


def detect_kind(path: Path, run_json: dict, report: dict) -> str:
    """The job that wrote the folder: run.json names it; eval-judge and cai keep none (eval-judge's report
    has a jury and baselines, cai's a constitution and phases); a label summary has counts and judges."""
    if run_json.get("job"):
        return str(run_json["job"])
    if "constitution" in report and "phases" in report:
        return "cai"
    if "jury" in report and "baselines" in report:
        return "eval-judge"
    if "counts" in report and "judges" in report:
        return "label"
    return "run"


def read_run(path: str | Path, name: str = "") -> RunFolder:
    path = Path(path)
    run_json = read_json(path / "run.json")
    report = read_json(path / "report.json") or read_json(path / "summary.json")
    run = RunFolder(path, name, detect_kind(path, run_json, report), run_json, report,
                    read_metrics(path / "metrics.jsonl"))
    run.subruns = [read_run(p, p.name) for p in subrun_dirs(path)]
    return run


def subrun_dirs(path: Path) -> list[Path]:
    """Folders right under `path` that are runs themselves (they have metrics.jsonl or run.json), in the
    order they started (their first metrics record), then by name."""
    found = [p for p in sorted(path.iterdir())
             if p.is_dir() and ((p / "metrics.jsonl").exists() or (p / "run.json").exists())]

    def started(p: Path) -> float:
        rows = read_metrics(p / "metrics.jsonl")[:1]
        return rows[0]["time"] if rows and is_number(rows[0].get("time")) else math.inf
    return sorted(found, key=started)


@dataclass
class Series:
    """One numeric field of one event: x = the rows' step, y = the field, one point per row carrying it."""
    event: str
    field: str
    steps: list
    values: list

    @property
    def metric(self) -> str:
        return f"{self.event}/{self.field}"


def stepped_series(rows: list[dict]) -> dict[str, Series]:
    """Every numeric field of every event whose rows carry a step, keyed `event/field`, in the order the
    fields first appear. A row counts for a field when it has a step and a number in that field."""
    series: dict[str, Series] = {}
    for row in rows:
        step = row.get("step")
        if not is_number(step):
            continue
        event = str(row.get("event", "record"))
        for key, value in row.items():
            if key in INDEX_FIELDS or not is_number(value):
                continue
            s = series.setdefault(f"{event}/{key}", Series(event, key, [], []))
            s.steps.append(step)
            s.values.append(value if math.isfinite(value) else None)
    for s in series.values():                    # a resumed run appends in step order already; be sure
        order = sorted(range(len(s.steps)), key=lambda i: s.steps[i])
        s.steps, s.values = [s.steps[i] for i in order], [s.values[i] for i in order]
    return series


def events_with(rows: list[dict], key: str) -> list[dict]:
    """Records that carry `key` (e.g. the messages of over_optimisation or collapse_guard events)."""
    return [r for r in rows if r.get(key) not in (None, "")]


def read_column(folder: Path, column: str) -> list:
    """One column of every Parquet shard in `folder` (an empty list when there is none)."""
    import pyarrow.parquet as pq
    values: list = []
    for shard in sorted(folder.glob("*.parquet")) if folder.is_dir() else []:
        if column in pq.read_schema(shard).names:
            values.extend(pq.read_table(shard, columns=[column]).column(column).to_pylist())
    return values


def read_rows(folder: Path, columns: list[str], max_shards: int) -> list[dict]:
    """Rows of the first `max_shards` Parquet shards in `folder`, with the `columns` each shard has."""
    import pyarrow.parquet as pq
    rows: list[dict] = []
    for shard in sorted(folder.glob("*.parquet"))[:max_shards] if folder.is_dir() else []:
        table = pq.read_table(shard, columns=[c for c in columns if c in pq.read_schema(shard).names])
        rows.extend(table.to_pylist())
    return rows


def read_quarantine(path: Path) -> list[dict]:
    return read_metrics(path)


def flatten(node, prefix: str = "") -> dict:
    """Scalar leaves of nested dicts as {dotted.key: value}; lists are left out."""
    out: dict = {}
    if isinstance(node, dict):
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    if isinstance(node, list):
        return out
    return {prefix.rstrip("."): node}
