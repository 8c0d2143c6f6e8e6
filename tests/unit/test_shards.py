import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from synthpref.data.schema import PREFERENCES, SAMPLES, to_table
from synthpref.data.shards import ShardStore


def sample_rows(n, prefix="s"):
    return [{"prompt_id": "p", "sample_id": f"{prefix}{i}", "policy": "m", "text": f"t{i}", "n_tokens": i,
             "logprob": -1.0 * i, "finish_reason": "stop", "seed": i, "dtype": "float32",
             "token_ids": [i, 2], "token_logprobs": [-0.5, -0.5]}
            for i in range(n)]


def test_write_skip_and_redo(tmp_path):
    store = ShardStore(tmp_path)
    store.write_shard("a", 0, {"samples": to_table(sample_rows(3), SAMPLES)}, {"n": 3})
    store.write_shard("b", 1, {"samples": to_table(sample_rows(2, "u"), SAMPLES)}, {"n": 2})
    reopened = ShardStore(tmp_path)
    assert reopened.is_done("a") and reopened.is_done("b") and not reopened.is_done("c")
    assert reopened.read_table("samples").num_rows == 5
    (tmp_path / "samples" / "shard-00001.parquet").unlink()
    assert not ShardStore(tmp_path).is_done("b")
    # a truncated file (wrong row count) is not done either
    pq.write_table(to_table(sample_rows(1), SAMPLES), tmp_path / "samples" / "shard-00000.parquet")
    assert not ShardStore(tmp_path).is_done("a")
    assert not list(tmp_path.rglob("*.tmp"))


def test_schema_round_trip_and_bad_rows(tmp_path):
    row = {"prompt_id": "p", "pair_id": "x", "prompt": [{"role": "user", "content": "hi"}],
           "chosen": [{"role": "assistant", "content": "hello"}], "rejected": [{"role": "assistant", "content": "go"}],
           "score_chosen": 0.8, "score_rejected": 0.2, "confidence": 0.8, "n_votes": 2, "agreement": 1.0,
           "position_consistent": True, "length_delta": 3, "provenance": "{}"}
    pq.write_table(to_table([row], PREFERENCES), tmp_path / "p.parquet")
    back = pq.read_table(tmp_path / "p.parquet")
    assert back.schema.equals(PREFERENCES)
    assert back.to_pylist() == [row]
    with pytest.raises(ValueError, match="missing fields"):
        to_table([{k: v for k, v in row.items() if k != "chosen"}], PREFERENCES)
    with pytest.raises((pa.ArrowInvalid, pa.ArrowTypeError)):
        to_table([dict(row, n_votes="two")], PREFERENCES)


def test_shards_of_an_old_plan_are_removed(tmp_path):
    store = ShardStore(tmp_path)
    for i, sid in enumerate(["a", "b", "c"]):
        store.write_shard(sid, i, {"samples": to_table(sample_rows(2, sid), SAMPLES)}, {})
    store.forget_other_shards({"a", "b2"})             # the input changed: shard 1 differs, shard 2 is gone
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == ["shard-00000.parquet"]
    reopened = ShardStore(tmp_path)
    assert set(reopened.manifest["shards"]) == {"a"} and reopened.read_table("samples").num_rows == 2


def test_unrecorded_files_are_removed_and_files_are_readable_by_others(tmp_path):
    import os
    old = os.umask(0o022)
    try:
        store = ShardStore(tmp_path)
        store.write_shard("a", 0, {"samples": to_table(sample_rows(2), SAMPLES)}, {})
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "samples" / "shard-00000.parquet").st_mode & 0o777 == 0o644
    assert os.stat(tmp_path / "manifest.json").st_mode & 0o777 == 0o644
    orphan = tmp_path / "samples" / "shard-00007.parquet"       # renamed into place, manifest never saved
    pq.write_table(to_table(sample_rows(1), SAMPLES), orphan)
    ShardStore(tmp_path)
    assert not orphan.exists() and (tmp_path / "samples" / "shard-00000.parquet").exists()
