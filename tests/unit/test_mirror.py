"""output_dir as a URI (runtime/mirror.py, runtime/storage.py), on real filesystems: pyarrow's local one through
`file://` URIs (another folder than the staging one) and fsspec's in-memory one."""
import io
import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from synthpref.config.loader import ConfigError
from synthpref.runtime import mirror as mirror_mod
from synthpref.runtime import storage
from synthpref.runtime.mirror import Mirror, RunPath, download_to_node, local_path, staged_output, upload_from_node


@pytest.fixture
def node(tmp_path, monkeypatch):
    """This process's staging root; switch_node() makes it look like another node (another local disk)."""
    def switch_node(name: str):
        monkeypatch.setenv("SYNTHPREF_STAGING_DIR", str(tmp_path / f"staging-{name}"))
    switch_node("a")
    monkeypatch.setenv("SYNTHPREF_SYNC_INTERVAL_S", "3600")        # passes run when the test says
    return switch_node


def write(path, text: str) -> None:
    """Written as the jobs write (beside the name, then renamed), a little apart in time from the last."""
    path.parent.mkdir(parents=True, exist_ok=True)
    time.sleep(0.01)
    tmp = path.with_name(f".{path.name}.x.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def remote(tmp_path) -> dict:
    root = tmp_path / "bucket" / "run"
    return {str(p.relative_to(root)): p.read_text() for p in root.rglob("*") if p.is_file()}


def uri_of(tmp_path) -> str:
    return f"file://{tmp_path / 'bucket' / 'run'}"


def settled(m: Mirror) -> None:
    time.sleep(mirror_mod.RECENT_NS / 1e9 + 0.02)
    assert m.push()


def test_a_pass_copies_the_run_and_a_fresh_node_pulls_it_back(tmp_path, node):
    m = Mirror(uri_of(tmp_path))
    assert m.pull() == 0 and m.local == storage.staging_dir(uri_of(tmp_path))
    write(m.local / "checkpoints" / "iter1" / "model.pt", "weights-1")
    write(m.local / "run.json", '{"finished": 1}')
    write(m.local / "logs" / "engine.log", "chatter")
    (m.local / ".run.json.abc.tmp").write_text("half")               # a write in progress stays behind
    settled(m)
    assert remote(tmp_path) == {"checkpoints/iter1/model.pt": "weights-1", "run.json": '{"finished": 1}',
                                "logs/engine.log": "chatter"}
    node("b")                                                         # another node resumes the run
    other = Mirror(uri_of(tmp_path))
    assert other.local != m.local and other.pull() == 3
    assert (other.local / "checkpoints" / "iter1" / "model.pt").read_text() == "weights-1"
    assert other.pull() == 0                                          # nothing changed: nothing copied again


def test_pull_makes_the_staging_folder_what_the_uri_holds(tmp_path, node):
    m = Mirror(uri_of(tmp_path))
    m.pull()
    write(m.local / "run.json", '{"finished": 1}')
    write(m.local / "shard-1.parquet", "rows")
    settled(m)
    write(m.local / "run.json", '{"finished": 2}')                    # work the URI never got (a kill)
    write(m.local / "shard-2.parquet", "more rows")
    again = Mirror(uri_of(tmp_path))
    assert again.pull() == 1                                          # run.json changed: brought back
    assert json.loads((again.local / "run.json").read_text()) == {"finished": 1}
    assert not (again.local / "shard-2.parquet").exists()            # what the URI lacks is removed


@pytest.mark.parametrize("cut_after", [0, 1, 2])
def test_a_pass_cut_short_never_leaves_a_record_ahead_of_its_data(tmp_path, node, monkeypatch, cut_after):
    m = Mirror(uri_of(tmp_path))
    m.pull()
    write(m.local / "z-shards" / "model.pt", "weights-2")            # data first, as every job writes; its
    write(m.local / "z-shards" / "optim.pt", "optimizer-2")          # names sort after the record's, so
    write(m.local / "a-run.json", '{"finished": 2}')                 # copying by name would fail here
    time.sleep(mirror_mod.RECENT_NS / 1e9 + 0.02)
    real, calls = storage.write_remote, []

    def dying(fs, dest, source, size=None):
        if len(calls) == cut_after:
            raise OSError("killed")
        calls.append(dest)
        real(fs, dest, source, size)
    monkeypatch.setattr(mirror_mod, "write_remote", dying)
    with pytest.raises(OSError):
        m.push()
    copied = remote(tmp_path)
    assert len(copied) == cut_after and "a-run.json" not in copied
    assert not [p for p in (tmp_path / "bucket").rglob("*.tmp")]      # nothing torn left on the URI
    monkeypatch.setattr(mirror_mod, "write_remote", real)
    assert m.push()
    assert remote(tmp_path)["a-run.json"] == '{"finished": 2}' and len(remote(tmp_path)) == 3


def test_a_record_replaced_during_a_pass_goes_as_it_was_listed(tmp_path, node, monkeypatch):
    """run.json is replaced (naming a checkpoint written after the pass looked) while the pass copies: the
    pass copies the run.json it listed, and the next pass the checkpoint and then the new run.json."""
    m = Mirror(uri_of(tmp_path))
    m.pull()
    write(m.local / "a.parquet", "a")
    write(m.local / "run.json", '{"finished": 1}')
    time.sleep(mirror_mod.RECENT_NS / 1e9 + 0.02)
    real = storage.write_remote

    def meanwhile(fs, dest, source, size=None):
        if dest.endswith("a.parquet"):
            write(m.local / "checkpoints" / "iter2.pt", "weights-2")
            write(m.local / "run.json", '{"finished": 2}')
        real(fs, dest, source, size)
    monkeypatch.setattr(mirror_mod, "write_remote", meanwhile)
    m.push()
    assert remote(tmp_path) == {"a.parquet": "a", "run.json": '{"finished": 1}'}
    monkeypatch.setattr(mirror_mod, "write_remote", real)
    settled(m)
    assert remote(tmp_path)["run.json"] == '{"finished": 2}' and "checkpoints/iter2.pt" in remote(tmp_path)


def test_removals_wait_for_a_pass_that_copied_everything(tmp_path, node, monkeypatch):
    m = Mirror(uri_of(tmp_path))
    m.pull()
    write(m.local / "checkpoints" / "iter1.pt", "weights-1")
    settled(m)
    write(m.local / "checkpoints" / "iter2.pt", "weights-2")
    (m.local / "checkpoints" / "iter1.pt").unlink()
    monkeypatch.setattr(mirror_mod, "RECENT_NS", 10**12)             # everything looks too recent to copy
    assert not m.push()
    assert set(remote(tmp_path)) == {"checkpoints/iter1.pt"}          # not removed before its successor is there
    monkeypatch.setattr(mirror_mod, "RECENT_NS", 0)
    assert m.push()
    assert set(remote(tmp_path)) == {"checkpoints/iter2.pt"}


def test_fsspec_filesystems_work_and_unknown_schemes_are_named(tmp_path, node):
    m = Mirror("memory://synthpref-test/run")
    m.pull()
    write(m.local / "preferences" / "part-00000.parquet", "rows")
    settled(m)
    assert m.fs.type_name.startswith("py::fsspec") and storage.writes_whole(m.fs)
    assert storage.remote_files(m.fs, m.root).keys() == {"preferences/part-00000.parquet"}
    with pytest.raises(ConfigError, match="output_dir: 'nosuchfs://x/y' names a filesystem"):
        storage.open_uri("nosuchfs://x/y")
    assert storage.is_uri("s3://bucket/run") and storage.is_uri("file:///tmp/x") and not storage.is_uri("runs/x")


def test_staged_output_runs_the_job_locally_and_copies_at_the_end_even_when_it_fails(tmp_path, node):
    uri = uri_of(tmp_path)
    cfg = SimpleNamespace(output_dir=uri)
    with staged_output(cfg) as m:
        assert cfg.output_dir == str(m.local) and mirror_mod.active() is m
        write(m.local / "summary.json", "{}")
    assert cfg.output_dir == uri and mirror_mod.active() is None
    assert remote(tmp_path) == {"summary.json": "{}"}
    with pytest.raises(KeyError):
        with staged_output(cfg) as m:
            write(m.local / "quarantine.jsonl", "bad row")
            raise KeyError("the job failed")
    assert remote(tmp_path)["quarantine.jsonl"] == "bad row"
    plain = SimpleNamespace(output_dir=str(tmp_path / "plain"))
    with staged_output(plain) as m:
        assert m is None and plain.output_dir == str(tmp_path / "plain")


def test_a_rank_on_another_node_copies_its_checkpoint_through_the_uri(tmp_path, node):
    m = Mirror(uri_of(tmp_path))
    m.pull()
    root = m.run_path(m.local / "checkpoints")
    assert root.rel == "checkpoints" and m.run_path(tmp_path / "elsewhere") is None
    assert local_path(root) == str(m.local / "checkpoints")            # the driver's node: its own folder
    assert upload_from_node(m.run_path(m.local / "checkpoints" / "iter1")) == []
    node("b")
    folder = local_path(root)                                          # another node: its own staging folder
    assert folder != str(m.local / "checkpoints")
    write(tmp_path / folder / "iter1" / "zero_pp_rank_1_optim_states.pt", "shard-1")
    tag = RunPath(m.uri, "checkpoints/iter1", m.token)
    names = upload_from_node(tag)
    assert names == ["zero_pp_rank_1_optim_states.pt"] and not os.path.exists(os.path.join(folder, "iter1"))
    assert m.fetch(m.local / "checkpoints" / "iter1", set(names)) == 1     # the driver's copy is whole again
    assert (m.local / "checkpoints" / "iter1" / "zero_pp_rank_1_optim_states.pt").read_text() == "shard-1"
    assert m.push() and remote(tmp_path) == {"checkpoints/iter1/zero_pp_rank_1_optim_states.pt": "shard-1"}
    assert download_to_node(tag) == 1                                  # a resumed rank on node b
    assert open(os.path.join(folder, "iter1", "zero_pp_rank_1_optim_states.pt")).read() == "shard-1"


def test_on_a_coarse_clock_the_deeper_file_goes_first(tmp_path, node, monkeypatch):
    """Equal ctimes (kernels before 6.13 keep them to a few ms): the shards go before the manifest above them."""
    m = Mirror(uri_of(tmp_path))
    m.pull()
    write(m.local / "preferences" / "part-0.parquet", "rows")
    write(m.local / "manifest.json", "{}")
    time.sleep(mirror_mod.RECENT_NS / 1e9 + 0.02)
    real_listing, order = mirror_mod.local_files, []

    def same_ctime(root, missed=None):
        return {rel: SimpleNamespace(st_size=st.st_size, st_mtime_ns=st.st_mtime_ns, st_ino=st.st_ino, st_ctime_ns=10**9)
                for rel, st in real_listing(root, missed).items()}
    monkeypatch.setattr(mirror_mod, "local_files", same_ctime)
    monkeypatch.setattr(mirror_mod, "write_remote", lambda fs, dest, source, size: order.append(dest.rsplit("/run/", 1)[1]))
    m.push()
    assert order == ["preferences/part-0.parquet", "manifest.json"]


def test_a_folder_renamed_in_during_a_pass_is_not_copied_as_the_one_listed(tmp_path, node, monkeypatch):
    """ppo replaces best_policy/ by renaming best_policy.partial/ onto it. A file listed before the rename is
    not copied with the content renamed in after it (the ctime of a renamed folder's files does not change),
    and a pass during which files moved removes nothing from the URI."""
    m = Mirror(uri_of(tmp_path))
    m.pull()
    write(m.local / "best_policy" / "model.safetensors", "v1")
    write(m.local / "best_policy.partial" / "model.safetensors", "v2")
    settled(m)
    write(m.local / "best_policy" / "model.safetensors", "v1b")
    write(m.local / "best_policy.partial" / "model.safetensors", "v3")
    time.sleep(mirror_mod.RECENT_NS / 1e9 + 0.02)                    # both old enough to copy
    real_listing, calls = mirror_mod.local_files, []

    def listing_then_rename(root, missed=None):
        files = real_listing(root, missed)
        if not calls:
            os.rename(m.local / "best_policy", m.local / "best_policy.old")
            os.rename(m.local / "best_policy.partial", m.local / "best_policy")
        calls.append(1)
        return files
    monkeypatch.setattr(mirror_mod, "local_files", listing_then_rename)
    assert not m.push()
    copied = remote(tmp_path)
    assert copied["best_policy/model.safetensors"] in ("v1", "v1b")      # never v3 under the name listed
    assert "best_policy.partial/model.safetensors" in copied           # not removed by an unsettled pass
    monkeypatch.setattr(mirror_mod, "local_files", real_listing)
    settled(m)
    assert remote(tmp_path) == {"best_policy/model.safetensors": "v3", "best_policy.old/model.safetensors": "v1b"}


def test_pull_removes_the_folders_it_empties(tmp_path, node):
    """self-reward resumes from checkpoints/iter0/ when that folder exists: a copy the URI never got must not
    leave it behind, empty."""
    m = Mirror(uri_of(tmp_path))
    m.pull()
    write(m.local / "run.json", "{}")
    settled(m)
    write(m.local / "checkpoints" / "iter0" / "model.pt", "never copied")
    Mirror(uri_of(tmp_path)).pull()
    assert not (m.local / "checkpoints").exists() and (m.local / "run.json").exists()


def test_fetch_replaces_a_stale_copy_of_the_same_size(tmp_path, node):
    """A checkpoint redone after a kill has files of the sizes of the one it replaces: the driver's copy takes
    the new files, and a later pull does not trust the old ones."""
    m = Mirror(uri_of(tmp_path))
    m.pull()
    write(m.local / "checkpoints" / "iter2" / "model.pt", "OLD-weights")
    settled(m)
    node("b")
    tag = m.run_path(m.local / "checkpoints" / "iter2")
    write(Path(local_path(tag)) / "model.pt", "NEW-weights")
    names = upload_from_node(tag)
    assert names == ["model.pt"] and m.fetch(m.local / "checkpoints" / "iter2", set(names)) == 1
    assert (m.local / "checkpoints" / "iter2" / "model.pt").read_text() == "NEW-weights"
    assert m.push() and remote(tmp_path)["checkpoints/iter2/model.pt"] == "NEW-weights"


def test_an_object_store_copy_cut_short_leaves_the_old_file(tmp_path, node):
    """On stores that publish what a closed stream had (object stores; fsspec's memory store here), a record
    interrupted half-way must not replace the one there."""
    fs, root = storage.open_uri("memory://synthpref-cut/run")
    storage.write_remote(fs, f"{root}/run.json", io.BytesIO(b'{"finished": 1}'), 15)

    class Dying(io.BytesIO):
        def read(self, n=-1):
            if self.tell():
                raise KeyboardInterrupt
            return super().read(4)
    with pytest.raises(KeyboardInterrupt):
        storage.write_remote(fs, f"{root}/run.json", Dying(b'{"finished": 2}'), 15)
    with fs.open_input_stream(f"{root}/run.json") as stream:
        assert stream.read() == b'{"finished": 1}'
    assert storage.remote_files(fs, root).keys() == {"run.json"}


def test_a_job_given_a_uri_without_staging_is_told_how(tmp_path):
    from synthpref.config import LabelConfig
    from synthpref.runtime.job import JobRuntime
    with pytest.raises(ConfigError, match="output_dir: s3://bucket/run is a URI"):
        JobRuntime(LabelConfig(output_dir="s3://bucket/run"), "label")


def test_fetch_leaves_the_files_the_driver_node_wrote(tmp_path, node):
    """Ranks on the driver's node and on another write into one checkpoint: fetching the other node's file
    never replaces the driver node's own with the URI's (perhaps older or cut-short) copy."""
    m = Mirror(uri_of(tmp_path))
    m.pull()
    write(m.local / "checkpoints" / "iter1" / "mp_rank_00_model_states.pt", "cut")
    settled(m)                                                       # a pass caught it half-written
    write(m.local / "checkpoints" / "iter1" / "mp_rank_00_model_states.pt", "whole weights")
    node("b")
    tag = m.run_path(m.local / "checkpoints" / "iter1")
    write(Path(local_path(tag)) / "zero_pp_rank_1_optim_states.pt", "shard-1")
    assert m.fetch(m.local / "checkpoints" / "iter1", set(upload_from_node(tag))) == 1
    assert (m.local / "checkpoints" / "iter1" / "mp_rank_00_model_states.pt").read_text() == "whole weights"
    settled(m)
    assert remote(tmp_path)["checkpoints/iter1/mp_rank_00_model_states.pt"] == "whole weights"


def test_a_store_without_file_times_is_read_again_on_pull(tmp_path, node):
    """fsspec's memory store reports no mtime: a same-size rewrite by another node is still brought back."""
    m = Mirror("memory://synthpref-mtime/run")
    m.pull()
    write(m.local / "run.json", "AAAA")
    settled(m)
    with m.fs.open_output_stream(f"{m.root}/run.json") as stream:
        stream.write(b"BBBB")
    assert Mirror("memory://synthpref-mtime/run").pull() == 1
    assert (m.local / "run.json").read_text() == "BBBB"


def test_logs_being_written_and_dangling_links_hold_no_removal_back(tmp_path, node):
    m = Mirror(uri_of(tmp_path))
    m.pull()
    write(m.local / "checkpoints" / "iter1.pt", "weights-1")
    settled(m)
    (m.local / "checkpoints" / "iter1.pt").unlink()
    os.symlink(tmp_path / "nowhere", m.local / "dangling")
    write(m.local / "sl" / "logs" / "engine.log", "just now")      # a nested job's log, still being written
    assert m.push()
    assert "checkpoints/iter1.pt" not in remote(tmp_path)
