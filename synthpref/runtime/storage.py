"""Filesystems an `output_dir` URI may name, and copying files to and from them.

A URI is opened with pyarrow's filesystems first (`file://`, `s3://`, `gs://`, `hdfs://`, `abfs://`, with
pyarrow's query options such as `?endpoint_override=...`), then with any fsspec implementation that is
installed (`memory://`, `gcs://`, `az://`, ...), wrapped as a pyarrow filesystem. Each copied file lands
whole: on stores where a finished write appears at once (object stores) it is written in place, elsewhere
beside its name and renamed into place, so a copy cut short never leaves a torn file under its real name.
"""
from __future__ import annotations

import hashlib
import os
import re
import tempfile
import uuid
from pathlib import Path

from synthpref.config.loader import ConfigError

_URI = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
# stores whose writes become visible whole when the stream is closed (pyarrow's, and fsspec's by protocol)
_WHOLE_WRITES = ("s3", "gcs", "abfs")
_FSSPEC_WHOLE_WRITES = ("s3", "gs", "gcs", "az", "abfs", "memory")
CHUNK = 8 << 20


def is_uri(text: str | os.PathLike) -> bool:
    """True for `scheme://...` (a filesystem URI), false for a plain path."""
    return bool(_URI.match(str(text)))


def open_uri(uri: str, key: str = "output_dir"):
    """(pyarrow filesystem, path inside it) for `uri`; a scheme neither pyarrow nor fsspec knows is an error
    naming `key`."""
    import pyarrow.fs as pafs
    try:
        fs, path = pafs.FileSystem.from_uri(uri)
        return fs, path.rstrip("/")
    except (ValueError, OSError) as exc:        # ArrowInvalid is a ValueError
        first = exc
    try:
        import fsspec.core
        fs, path = fsspec.core.url_to_fs(uri)
    except (ImportError, ValueError) as exc:
        raise ConfigError(f"{key}: {uri!r} names a filesystem neither pyarrow nor fsspec knows ({first}; {exc})") from exc
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path.rstrip("/")


def staging_root() -> Path:
    """Where this node keeps local copies of URI outputs: $SYNTHPREF_STAGING_DIR, else
    ~/.cache/synthpref/staging (a node's local disk)."""
    return Path(os.environ.get("SYNTHPREF_STAGING_DIR") or Path.home() / ".cache" / "synthpref" / "staging")


def staging_dir(uri: str) -> Path:
    """This node's local folder for `uri`: its last name and a hash of the whole URI."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", uri.rstrip("/").rsplit("/", 1)[-1]) or "run"
    return staging_root() / f"{name}-{hashlib.sha1(uri.rstrip('/').encode()).hexdigest()[:12]}"


def join_key(root: str, rel: str) -> str:
    """`root/rel` as a filesystem key, where either may be empty (`memory://`, a run's top folder)."""
    return f"{root}/{rel}" if root and rel else (root or rel)


def is_partial(name: str) -> bool:
    """A file being written under a temporary name (ours and atomic_write's `.NAME.XXXX.tmp`)."""
    return name.startswith(".") and name.endswith(".tmp")


def remote_files(fs, root: str) -> dict[str, tuple[int, int]]:
    """{relative path: (size, mtime_ns)} of the files under `root` (empty if it does not exist)."""
    import pyarrow.fs as pafs
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    out = {}
    for info in infos:
        if info.type != pafs.FileType.File:
            continue
        rel = info.path[len(root):].lstrip("/") if root else info.path.lstrip("/")
        if rel and not is_partial(rel.rsplit("/", 1)[-1]):
            out[rel] = (info.size, info.mtime_ns or 0)
    return out


def writes_whole(fs) -> bool:
    name = fs.type_name
    return name in _WHOLE_WRITES or (name.startswith("py::fsspec") and any(p in name for p in _FSSPEC_WHOLE_WRITES))


SMALL = 64 << 20                # files up to this size reach object stores through a hidden key and a copy


def write_remote(fs, dest: str, source, size: int | None = None) -> None:
    """Copy the open binary file `source` (its first `size` bytes, or all) to `dest`, whole or not at all.
    Elsewhere than object stores it is written beside `dest` and renamed. On object stores a stream that
    is closed early still publishes what it had, so a small file (every record) goes to a hidden key and is
    copied into place by the store; a large one (checkpoint data, never named by a record before it is
    whole) goes in place and is deleted if its copy fails."""
    parent = dest.rsplit("/", 1)[0]
    if parent and parent != dest:
        fs.create_dir(parent, recursive=True)
    in_place = writes_whole(fs) and size is not None and size > SMALL
    target = dest if in_place else f"{parent}/.{dest.rsplit('/', 1)[-1]}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with fs.open_output_stream(target) as stream:
            left = size
            while left is None or left > 0:
                block = source.read(CHUNK if left is None else min(CHUNK, left))
                if not block:
                    break
                stream.write(block)
                if left is not None:
                    left -= len(block)
        if not in_place:
            if writes_whole(fs):
                fs.copy_file(target, dest)
                fs.delete_file(target)
            else:
                fs.move(target, dest)
    except BaseException:
        try:
            fs.delete_file(target)
        except Exception:
            pass
        raise


def read_remote(fs, src: str, dest: Path) -> None:
    """Copy the remote file `src` to the local `dest`, written beside it and renamed into place."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out, fs.open_input_stream(src) as stream:
            while True:
                block = stream.read(CHUNK)
                if not block:
                    break
                out.write(block)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def local_files(root: Path, missed: list | None = None) -> dict[str, os.stat_result]:
    """{relative path: stat} of the finished files under `root`; what vanished while it looked (a folder
    renamed or removed, a file replaced) is appended to `missed`."""
    out = {}
    def vanished(error: OSError) -> None:           # a folder renamed or removed while we looked
        if missed is not None and isinstance(error, FileNotFoundError):
            missed.append(error.filename)
    for folder, _, names in os.walk(root, onerror=vanished):
        for name in names:
            if is_partial(name):
                continue
            path = os.path.join(folder, name)
            try:
                st = os.stat(path)
            except FileNotFoundError:
                if missed is not None and not os.path.lexists(path):      # not a dangling link: gone
                    missed.append(path)
                continue
            out[os.path.relpath(path, root).replace(os.sep, "/")] = st
    return out


def upload_tree(local: Path, fs, remote: str) -> list[str]:
    """Every file under `local` to `remote` (a checkpoint a node wrote); returns their relative paths."""
    copied = []
    for rel, st in sorted(local_files(local).items()) if local.is_dir() else ():
        try:
            source = open(local / rel, "rb")
        except FileNotFoundError:           # another process of this node copied and removed it
            continue
        with source:
            write_remote(fs, join_key(remote, rel), source, st.st_size)
        copied.append(rel)
    return copied


def download_tree(fs, remote: str, local: Path, only: set[str] | None = None) -> dict[str, tuple[int, int]]:
    """The files under `remote` (those named in `only`, if given) into `local`, whatever `local` held (a
    checkpoint redone after a kill has files of the same sizes as the one it replaces); returns
    {relative path: (size, mtime_ns)} of those copied."""
    files = {rel: info for rel, info in remote_files(fs, remote).items() if only is None or rel in only}
    for rel in files:
        read_remote(fs, join_key(remote, rel), local / rel)
    return files
