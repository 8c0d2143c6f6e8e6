"""The bridge from job records to Ray gauges: names Prometheus accepts, numbers only (nested ones
flattened), the job/run/pool tags, rate-limited pool state, and nothing at all without Ray."""
from __future__ import annotations

import pytest

from synthpref.monitor import ray_metrics


class FakeGauge:
    made: dict = {}

    def __init__(self, name, description="", tag_keys=()):
        self.name, self.tag_keys, self.values = name, tag_keys, []
        FakeGauge.made[name] = self

    def set(self, value, tags=None):
        assert set(tags) == set(self.tag_keys)
        self.values.append((value, dict(tags)))


@pytest.fixture
def gauges(monkeypatch):
    import ray
    import ray.util.metrics
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray.util.metrics, "Gauge", FakeGauge)
    monkeypatch.setattr(ray_metrics, "_GAUGES", {})
    monkeypatch.setattr(ray_metrics, "_LAST", {})
    FakeGauge.made = {}
    ray_metrics.set_job("label", "run-7")
    return FakeGauge.made


def test_names_and_numbers():
    assert ray_metrics.metric_name("synthpref", "ppo phases", "step-s") == "synthpref_ppo_phases_step_s"
    assert ray_metrics.metric_name("9lives") == "m_9lives"
    assert ray_metrics.numbers_of({"a": 1, "b": True, "c": None, "d": "x", "e": {"f": 2.5, "g": [1]}}) == \
        {"a": 1.0, "e_f": 2.5}


def test_records_become_tagged_gauges(gauges):
    n = ray_metrics.export("shard", {"labels_per_s": 16.5, "dtypes": {"sampler": "bf16"}, "pairs": 24})
    assert n == 2 and set(gauges) == {"synthpref_shard_labels_per_s", "synthpref_shard_pairs"}
    assert gauges["synthpref_shard_pairs"].values == [(24.0, {"synthpref_job": "label", "run": "run-7", "pool": ""})]
    ray_metrics.export("pool", {"replicas": 2}, pool="sampler")
    assert gauges["synthpref_pool_replicas"].values[-1][1]["pool"] == "sampler"


def test_pool_state_is_sampled_at_most_once_per_interval(gauges):
    assert ray_metrics.export_every("p", 60.0, "pool", {"queued_chunks": 3}) == 1
    assert ray_metrics.export_every("p", 60.0, "pool", {"queued_chunks": 4}) == 0
    assert ray_metrics.export_every("q", 60.0, "pool", {"queued_chunks": 5}) == 1
    assert [v for v, _ in gauges["synthpref_pool_queued_chunks"].values] == [3.0, 5.0]


def test_without_ray_nothing_is_exported(monkeypatch):
    import ray
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    assert ray_metrics.export("shard", {"pairs": 1}) == 0
