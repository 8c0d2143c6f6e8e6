"""A resumable shard store: atomic Parquet writes and a manifest.

A shard is written table by table to a temp file that is renamed into place, and only then recorded in
`manifest.json` (itself replaced atomically). Which config the shards belong to is the job runtime's
concern (runtime/rerun.py: `run.json`). A shard counts as done when the manifest names it and
every file it lists exists with the recorded row count, so a rerun skips it; a deleted or truncated
file makes the shard run again. Rows therefore land exactly once.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from synthpref.data.schema import content_id


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publish(tmp: str, path: Path) -> None:
    """Give the temp file ordinary permissions (mkstemp makes it 0600), then rename it into place."""
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        _publish(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_table(path: Path, table: pa.Table) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        _publish(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@dataclass
class Shard:
    """A deterministic slice of the input rows: the unit of work and of resume."""
    index: int
    shard_id: str
    rows: list


def plan_shards(rows: list, shard_size: int) -> list[Shard]:
    """Consecutive slices of `shard_size` rows; a shard's id hashes its index and its rows' prompt ids."""
    shards = []
    for index, start in enumerate(range(0, len(rows), shard_size)):
        chunk = rows[start:start + shard_size]
        shards.append(Shard(index, content_id(index, [r.prompt_id for r in chunk]), chunk))
    return shards


class ShardStore:
    MANIFEST = "manifest.json"

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.manifest = self._load_manifest()
        self._remove_unrecorded()

    def _load_manifest(self) -> dict:
        path = self.root / self.MANIFEST
        if not path.exists():
            return {"shards": {}}
        return json.loads(path.read_text())

    def _remove_unrecorded(self) -> None:
        """Shard files no manifest entry lists (a crash between rename and manifest) are removed, so
        that `table/*.parquet` holds exactly the recorded shards."""
        recorded = {rel for entry in self.manifest["shards"].values() for rel in entry["files"]}
        for path in self.root.glob("*/shard-*.parquet"):
            if str(path.relative_to(self.root)) not in recorded:
                path.unlink()
        for tmp in self.root.glob("*/.shard-*.tmp"):
            tmp.unlink()

    def shard_path(self, table: str, index: int) -> Path:
        return self.root / table / f"shard-{index:05d}.parquet"

    def is_done(self, shard_id: str) -> bool:
        entry = self.manifest["shards"].get(shard_id)
        if entry is None:
            return False
        for rel, rows in entry["files"].items():
            path = self.root / rel
            try:
                if pq.ParquetFile(path).metadata.num_rows != rows:
                    return False
            except (OSError, pa.ArrowInvalid):
                return False
        return True

    def write_shard(self, shard_id: str, index: int, tables: dict[str, pa.Table], stats: dict) -> None:
        """Write every table of one shard, then record it; a crash before the record redoes the shard."""
        files = {}
        for name, table in tables.items():
            path = self.shard_path(name, index)
            atomic_write_table(path, table)
            files[str(path.relative_to(self.root))] = table.num_rows
        self.manifest["shards"][shard_id] = {"index": index, "files": files, "stats": stats}
        self._save_manifest()

    def forget_other_shards(self, live_ids: set[str]) -> None:
        """Drop shards the current plan no longer contains (the input changed): their manifest entries
        first, then their files, so no reader of `table/*.parquet` sees rows of another input."""
        stale = {sid: self.manifest["shards"].pop(sid) for sid in set(self.manifest["shards"]) - live_ids}
        if not stale:
            return
        self._save_manifest()
        live_files = {rel for entry in self.manifest["shards"].values() for rel in entry["files"]}
        for entry in stale.values():
            for rel in set(entry["files"]) - live_files:
                (self.root / rel).unlink(missing_ok=True)

    def stats(self, shard_id: str) -> dict:
        return self.manifest["shards"][shard_id]["stats"]

    def _save_manifest(self) -> None:
        blob = json.dumps(self.manifest, indent=1, sort_keys=True).encode()
        atomic_write_bytes(self.root / self.MANIFEST, blob)

    def read_table(self, name: str) -> pa.Table:
        """All shards of one table, in shard order."""
        entries = sorted(self.manifest["shards"].values(), key=lambda e: e["index"])
        paths = [self.root / rel for e in entries for rel in e["files"] if rel.startswith(f"{name}/")]
        tables = [pq.read_table(p) for p in paths]
        return pa.concat_tables(tables) if tables else None
