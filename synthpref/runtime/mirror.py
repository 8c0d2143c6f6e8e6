"""`output_dir` as a URI: the job works in a local staging folder that is mirrored to the URI, as Ray
Train keeps a run under its `storage_path`.

- At the start the staging folder is made what the URI holds (what differs is downloaded, what the URI
  lacks is removed), so a resubmitted job resumes from the URI on any node.
- While the job runs, a thread copies new and changed files every `SYNTHPREF_SYNC_INTERVAL_S` seconds
  (10), and once more at the end, failed or not. A pass copies files in the order they appeared (their
  ctime), each as it was when the pass looked: the jobs write a file's data before the record that names
  it (a checkpoint before run.json, shards before their manifest), so whatever a kill cuts short, the URI
  never holds a record ahead of its data. Files removed locally are removed from the URI only after a
  pass that copied everything, so an old checkpoint goes only once the record that replaces it is there.
- Trainer ranks on other nodes write checkpoints on their own disks: their node copies them to the URI
  and the driver fetches them (`TrainerGroup`, through `RunPath`).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from synthpref.monitor.console import say
from synthpref.runtime.storage import (download_tree, is_uri, join_key, local_files, open_uri, read_remote,
                                       remote_files, staging_dir, upload_tree, write_remote)

log = logging.getLogger(__name__)
RECENT_NS = 50_000_000          # files changed this recently wait for the next pass (the clock behind ctime is coarse)
MAX_FILES_PER_PASS = 256        # open at once; the rest (the newest) go in the next pass
_active: "Mirror | None" = None


class Mirror:
    def __init__(self, uri: str, interval_s: float | None = None):
        self.uri = uri.rstrip("/")
        self.fs, self.root = open_uri(self.uri)
        self.local = staging_dir(self.uri)
        self.interval_s = interval_s or float(os.environ.get("SYNTHPREF_SYNC_INTERVAL_S") or 10)
        self.token = uuid.uuid4().hex
        self.record: dict[str, list[int]] = {}     # rel -> [size, mtime_ns, inode, remote size, remote mtime_ns]
        self._record_file = self.local.with_name(self.local.name + ".mirror.json")
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_copied = 0

    # -- start: the staging folder becomes the URI's copy ----------------------------------------------
    def pull(self) -> int:
        """Download what the staging folder lacks or holds otherwise; remove what the URI lacks (files, then
        the folders left empty). Returns the number of files downloaded."""
        self.local.mkdir(parents=True, exist_ok=True)
        self.local.with_name(self.local.name + ".owner").write_text(self.token)
        saved = json.loads(self._record_file.read_text()) if self._record_file.exists() else {}
        remote, here = remote_files(self.fs, self.root), local_files(self.local)
        copied = 0
        for rel, (size, mtime) in sorted(remote.items()):
            st, entry = here.get(rel), saved.get(rel)
            if st is None or not _same(entry, st, size, mtime):
                read_remote(self.fs, join_key(self.root, rel), self.local / rel)
                st = os.stat(self.local / rel)
                copied += 1
            self.record[rel] = _entry(st, size, mtime)
        for rel in set(here) - set(remote):
            os.unlink(self.local / rel)
        for folder, _, _ in sorted(os.walk(self.local), key=lambda item: -item[0].count(os.sep)):
            if folder != str(self.local) and not os.listdir(folder):
                os.rmdir(folder)
        self._save_record()
        return copied

    # -- while running ---------------------------------------------------------------------------------
    def push(self, recent_ns: int | None = None) -> bool:
        """One pass; True when it copied everything and nothing changed while it ran (only then are files
        removed locally removed from the URI). Files changed within `recent_ns` wait for the next pass."""
        with self._lock:
            self.last_copied = 0
            missed: list = []
            cutoff = time.time_ns() - (RECENT_NS if recent_ns is None else recent_ns)
            files = local_files(self.local, missed)
            complete = not missed
            todo = []
            for rel, st in files.items():
                if self.record.get(rel, [None] * 3)[:3] == _identity(st):
                    continue
                if st.st_ctime_ns >= cutoff:
                    complete = complete and _unnamed(rel)        # a log being written holds nothing back
                    continue
                # in the order they appeared; on a tie (a coarse clock) the deeper first: records sit above
                # the data they name (run.json over checkpoints/, manifest.json over the shards' folders)
                todo.append((st.st_ctime_ns, -rel.count("/"), rel))
            todo.sort()
            if len(todo) > MAX_FILES_PER_PASS:
                todo, complete = todo[:MAX_FILES_PER_PASS], False
            opened = []
            try:
                for _, _, rel in todo:
                    try:
                        source = open(self.local / rel, "rb")
                    except FileNotFoundError:
                        complete = False
                        continue
                    st = os.fstat(source.fileno())
                    if _identity(st) != _identity(files[rel]):      # replaced since the listing: next pass
                        source.close()
                        complete = complete and _unnamed(rel)
                        continue
                    opened.append((rel, source, st))
                for rel, source, st in opened:
                    dest = join_key(self.root, rel)
                    write_remote(self.fs, dest, source, st.st_size)
                    info = self.fs.get_file_info(dest)
                    self.record[rel] = _entry(st, info.size, info.mtime_ns or 0)
                    self.last_copied += 1
            finally:
                for _, source, _ in opened:
                    source.close()
            if complete and _stable(files, local_files(self.local, missed)) and not missed:
                for rel in [rel for rel in self.record if rel not in files]:
                    try:
                        self.fs.delete_file(join_key(self.root, rel))
                    except FileNotFoundError:
                        pass
                    del self.record[rel]
            else:
                complete = False
            self._save_record()
            return complete

    def fetch(self, path: str | os.PathLike, names: set[str]) -> int:
        """Download `names` (relative to `path`, inside the staging folder), which other nodes just copied to
        the URI, replacing what the staging folder held there; files this node wrote are left alone."""
        rel = self.relative(path)
        with self._lock:
            copied = download_tree(self.fs, join_key(self.root, rel), self.local / rel, names)
            for name, (size, mtime) in copied.items():
                self.record[join_key(rel, name)] = _entry(os.stat(self.local / rel / name), size, mtime)
            self._save_record()
        return len(copied)

    def start(self) -> None:
        def loop():
            while not self._stop.wait(self.interval_s):
                try:
                    self.push()
                except Exception as exc:       # a store that is briefly away: the next pass tries again
                    log.warning("copying outputs to %s failed (will retry): %s", self.uri, exc)
        self._thread = threading.Thread(target=loop, name="output-mirror", daemon=True)
        self._thread.start()

    def close(self, idle_passes: int = 20) -> None:
        """Stop the thread and copy what is left (the job's workers are gone: files no longer change). A
        store error is raised; files still changing after `idle_passes` passes that copied nothing are
        copied as they are, with a warning."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        idle = passes = failures = 0
        while idle < idle_passes and passes < 10 * idle_passes:      # a file rewritten on and on: give up too
            try:
                if self.push():
                    return
            except Exception as exc:              # a store briefly away: a few more tries, then the error
                failures += 1
                if failures > 3:
                    raise
                log.warning("copying outputs to %s failed (try %d): %s", self.uri, failures, exc)
                time.sleep(2 ** failures)
                continue
            idle, passes = (0 if self.last_copied else idle + 1), passes + 1
            time.sleep(RECENT_NS / 1e9)
        if not self.push(recent_ns=0):
            say(f"warning: files under {self.local} kept changing; {self.uri} holds them as of the last pass")

    # -- paths -----------------------------------------------------------------------------------------
    def relative(self, path: str | os.PathLike) -> str:
        rel = os.path.relpath(os.path.abspath(path), os.path.abspath(self.local))
        if rel == ".." or rel.startswith("../"):
            raise ValueError(f"{path} is not inside {self.local}")
        return "" if rel == "." else rel.replace(os.sep, "/")

    def run_path(self, path: str | os.PathLike) -> "RunPath | None":
        try:
            rel = self.relative(path)
        except ValueError:
            return None
        return RunPath(self.uri, rel, self.token)

    def _save_record(self) -> None:
        tmp = self._record_file.with_name(f".{self._record_file.name}.tmp")
        tmp.write_text(json.dumps(self.record))
        os.replace(tmp, self._record_file)


def _identity(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def _entry(st: os.stat_result, remote_size: int, remote_mtime_ns: int) -> list[int]:
    return [*_identity(st), remote_size, remote_mtime_ns // 1_000_000_000]


def _same(entry: list | None, st: os.stat_result, remote_size: int, remote_mtime_ns: int) -> bool:
    """The local file is the one recorded and the remote one is what it was copied to or from (remote
    times compared to the second: listings and single look-ups of some stores differ below it)."""
    return bool(remote_mtime_ns) and entry == _entry(st, remote_size, remote_mtime_ns)  # no time: copy again


def _stable(before: dict, after: dict) -> bool:
    """Nothing changed between two listings, apart from the files no record names (metrics, logs,
    TensorBoard's), which a running job appends to all the time."""
    def kept(files):
        return {rel: _identity(st) for rel, st in files.items() if not _unnamed(rel)}
    return kept(before) == kept(after)


def _unnamed(rel: str) -> bool:
    """A file no record names (any job's, nested ones' too): metrics, logs, TensorBoard's."""
    parts = rel.split("/")
    return parts[-1] == "metrics.jsonl" or "logs" in parts[:-1] or "tensorboard" in parts[:-1]


def active() -> Mirror | None:
    """The mirror of the job running in this process, if its output_dir is a URI."""
    return _active


@contextmanager
def staged_output(cfg):
    """Run the job whose config is `cfg` in a staging folder mirrored to its URI `output_dir` (a plain path
    runs as it is). `cfg.output_dir` names the staging folder while the block runs."""
    global _active
    uri = str(cfg.output_dir)
    if not is_uri(uri):
        yield None
        return
    if _active is not None:
        raise RuntimeError(f"a job with output_dir {_active.uri} is already running in this process")
    mirror = Mirror(uri)
    copied = mirror.pull()
    say(f"output_dir {uri}: working in {mirror.local} ({copied} files brought from it), copied back every "
        f"{mirror.interval_s:g} s and at the end")
    cfg.output_dir, _active = str(mirror.local), mirror
    mirror.start()
    try:
        yield mirror
    except BaseException:
        try:
            mirror.close()
        except Exception as exc:               # the job's own error is the one to see
            log.warning("copying outputs to %s failed: %s", uri, exc)
        raise
    else:
        mirror.close()
        say(f"outputs copied to {uri} (the paths above are its local copy)")
    finally:
        cfg.output_dir, _active = uri, None


# -- on the nodes of trainer ranks ---------------------------------------------------------------------
@dataclass(frozen=True)
class RunPath:
    """A folder of a mirrored run as a worker on any node finds it: inside the driver's staging folder where
    this node sees it (the same disk, or shared storage mounted anywhere), else in a scratch folder of this
    node for this run (`<staging folder>.rank-<token>`), emptied once its files went to the URI."""
    uri: str
    rel: str
    token: str

    def here(self) -> tuple[Path, bool]:
        """(the folder on this node, whether it is the driver's)."""
        own = staging_dir(self.uri)
        owner = own.with_name(own.name + ".owner")
        if owner.exists() and owner.read_text() == self.token:
            return own / self.rel, True
        return own.with_name(f"{own.name}.rank-{self.token}") / self.rel, False

    def remote(self):
        fs, root = open_uri(self.uri)
        return fs, join_key(root, self.rel)


def local_path(path: "str | RunPath") -> str:
    """A worker's path for `path` (a plain path, or a RunPath resolved on this node)."""
    if isinstance(path, RunPath):
        folder, _ = path.here()
        folder.mkdir(parents=True, exist_ok=True)
        return str(folder)
    return path


def upload_from_node(path: RunPath) -> list[str]:
    """Copy what this node wrote under `path` to the URI and drop the node's copy (the driver fetches it);
    nothing where this node sees the driver's folder. Returns the files copied, relative to `path`."""
    folder, shared = path.here()
    if shared or not folder.exists():
        return []
    fs, remote = path.remote()
    copied = upload_tree(folder, fs, remote)
    shutil.rmtree(folder, ignore_errors=True)
    return copied


def download_to_node(path: RunPath) -> int:
    """Bring the files under `path` from the URI to this node (replacing what was there), unless it sees
    the driver's folder. Returns the files copied."""
    folder, shared = path.here()
    if shared:
        return 0
    fs, remote = path.remote()
    shutil.rmtree(folder, ignore_errors=True)
    return len(download_tree(fs, remote, folder))


def drop_from_node(path: RunPath) -> None:
    """Remove this node's scratch copy of `path` (a checkpoint it loaded), unless it is the driver's."""
    folder, shared = path.here()
    if not shared:
        shutil.rmtree(folder, ignore_errors=True)
