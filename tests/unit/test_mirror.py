"""output_dir as a URI (runtime/mirror.py, runtime/storage.py), on real filesystems: pyarrow's local one through
`file://` URIs (another folder than the staging one) and fsspec's in-memory one."""
import json
import os
import time
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
    write(m.local / "checkpoints" / "iter2" / "model.pt", "weights-2")    # data first, as every job writes
    write(m.local / "checkpoints" / "iter2" / "optim.pt", "optimizer-2")
    write(m.local / "run.json", '{"finished": 2}')
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
    assert len(copied) == cut_after and "run.json" not in copied
    assert not [p for p in (tmp_path / "bucket").rglob("*.tmp")]      # nothing torn left on the URI
    monkeypatch.setattr(mirror_mod, "write_remote", real)
    assert m.push()
    assert remote(tmp_path)["run.json"] == '{"finished": 2}' and len(remote(tmp_path)) == 3


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
    assert upload_from_node(m.run_path(m.local / "checkpoints" / "iter1")) == 0
    node("b")
    folder = local_path(root)                                          # another node: its own staging folder
    assert folder != str(m.local / "checkpoints")
    write(tmp_path / folder / "iter1" / "zero_pp_rank_1_optim_states.pt", "shard-1")
    tag = RunPath(str(m.local / "checkpoints" / "iter1"), m.uri, "checkpoints/iter1", m.token)
    assert upload_from_node(tag) == 1 and not os.path.exists(os.path.join(folder, "iter1"))
    assert m.fetch(m.local / "checkpoints" / "iter1") == 1            # the driver's copy is whole again
    assert (m.local / "checkpoints" / "iter1" / "zero_pp_rank_1_optim_states.pt").read_text() == "shard-1"
    assert m.push() and remote(tmp_path) == {"checkpoints/iter1/zero_pp_rank_1_optim_states.pt": "shard-1"}
    assert download_to_node(tag) == 1                                  # a resumed rank on node b
    assert open(os.path.join(folder, "iter1", "zero_pp_rank_1_optim_states.pt")).read() == "shard-1"
