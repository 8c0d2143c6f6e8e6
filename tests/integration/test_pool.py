"""ReplicaPool on real Ray actors: backpressure, retries, replacement after kill -9, autoscaling, and a
start timeout that names the missing resource."""
from __future__ import annotations

import pytest
import ray

from synthpref.config import PoolConfig
from synthpref.cluster.pool import Job, PoolError, ReplicaPool, Spawned, run_jobs
from tests.pool_workers import EchoWorker

pytestmark = pytest.mark.integration


def echo_spawner(demand: dict | None = None, fail_init: bool = False, num_cpus: float = 0):
    remote_cls = ray.remote(EchoWorker)

    def spawn(slot: int) -> Spawned:
        opts = {"num_cpus": num_cpus, **({"resources": demand} if demand else {})}
        return Spawned(remote_cls.options(**opts).remote(fail_init), dict(demand or {}, CPU=num_cpus))
    return spawn


def requests(n: int, **extra) -> list[dict]:
    return [{"id": i, **extra} for i in range(n)]


def test_work_is_spread_bounded_and_returned_in_order(ray_session):
    events = []
    pool = ReplicaPool("echo", echo_spawner(), PoolConfig(replicas=2, max_inflight=2), events.append)
    try:
        done = []
        out = pool.run("work", requests(40, sleep=0.01), chunk_size=2, on_done=done.append)
        assert [r["id"] for r in out] == list(range(40))              # request order, each exactly once
        assert sum(done) == 40
        assert len({r["pid"] for r in out}) == 2                       # both replicas served work
        assert pool.stats["peak_inflight"] == 2                        # never more than max_inflight each
        assert [e["event"] for e in events] == ["replica_ready", "replica_ready"]
    finally:
        pool.shutdown()


def test_kill_9_mid_chunk_is_retried_on_a_live_replica_and_replaced(ray_session, tmp_path):
    events = []
    pool = ReplicaPool("echo", echo_spawner(), PoolConfig(replicas=2), events.append)
    try:
        reqs = requests(30)
        reqs[17]["die_once"] = str(tmp_path / "died")
        out = pool.run("work", reqs, chunk_size=3)
        assert [r["id"] for r in out] == list(range(30))               # none lost, none duplicated
        assert (tmp_path / "died").exists()
        assert pool.stats["lost"] == 1 and pool.stats["replaced"] == 1
        assert 1 <= pool.stats["retried_chunks"] <= 2                   # the chunks in flight on it (max_inflight)
        pool.wait_started()                                            # the replacement comes up in its slot
        assert sorted(pool.replicas) == [0, 1] and all(r.ready for r in pool.replicas.values())
        assert [e["event"] for e in events].count("replica_lost") == 1
    finally:
        pool.shutdown()


def test_failing_chunks_are_retried_then_become_errors(ray_session, tmp_path):
    pool = ReplicaPool("echo", echo_spawner(), PoolConfig(replicas=1, max_attempts=3))
    try:
        reqs = requests(4)
        reqs[1].update(fail=2, fail_file=str(tmp_path / "flaky"))       # fails twice, then works
        reqs[3].update(fail=99, fail_file=str(tmp_path / "broken"))     # never works
        out = pool.run("work", reqs, chunk_size=1)
        assert [r.get("id") for r in out[:3]] == [0, 1, 2]
        assert out[3]["error"].startswith("failed after 3 attempts: RayTaskError")
        assert "transient failure 3" in out[3]["error"]
        assert pool.stats["retried_chunks"] == 4 and pool.stats["failed_chunks"] == 1
    finally:
        pool.shutdown()


def test_autoscaling_adds_replicas_under_load_and_stops_idle_ones(ray_session):
    cfg = PoolConfig(replicas=1, max_replicas=3, scale_up_queue=1, scale_down_idle_s=600)
    pool = ReplicaPool("echo", echo_spawner(), cfg)
    try:
        out = pool.run("work", requests(24, sleep=0.1), chunk_size=1)
        assert [r["id"] for r in out] == list(range(24))
        assert pool.stats["scaled_up"] == 2 and len({r["pid"] for r in out}) >= 2   # the 3rd may start late
        pool.wait_started()
        assert len(pool.replicas) == 3                                  # never more than max_replicas
        pool.cfg.scale_down_idle_s = 0.0
        pool.run("work", requests(1, sleep=1.5), chunk_size=1)        # idle replicas above the minimum stop
        assert pool.stats["scaled_down"] >= 1 and len(pool.replicas) < 3
    finally:
        pool.shutdown()


def test_two_pools_run_their_jobs_at_once(ray_session):
    a = ReplicaPool("a", echo_spawner(), PoolConfig(replicas=1))
    b = ReplicaPool("b", echo_spawner(), PoolConfig(replicas=1))
    try:
        jobs = [Job(a, "work", requests(4, sleep=0.3), 1), Job(b, "work", requests(4, sleep=0.3), 1)]
        run_jobs(jobs)
        assert all([r["id"] for r in j.results] == [0, 1, 2, 3] for j in jobs)
        first_a, first_b = jobs[0].results[0], jobs[1].results[0]
        assert first_a["t0"] < first_b["t1"] and first_b["t0"] < first_a["t1"]   # the pools worked at once
    finally:
        a.shutdown()
        b.shutdown()


def test_unplaceable_pool_fails_within_its_timeout_naming_the_resource(ray_session):
    with pytest.raises(PoolError, match=r"judge_gpu: needs 1, cluster has 0") as err:
        ReplicaPool("judge:big", echo_spawner({"judge_gpu": 1}), PoolConfig(replicas=1, start_timeout_s=2))
    assert "pool.start_timeout_s" in str(err.value)


def test_replica_that_cannot_start_fails_the_pool_with_its_cause(ray_session):
    with pytest.raises(PoolError, match="bad model path"):
        ReplicaPool("echo", echo_spawner(fail_init=True), PoolConfig(replicas=1))


def test_replacements_are_bounded(ray_session, tmp_path):
    pool = ReplicaPool("echo", echo_spawner(), PoolConfig(replicas=1, max_replacements=0))
    try:
        with pytest.raises(PoolError, match="max_replacements"):
            pool.run("work", [{"id": 0, "die_once": str(tmp_path / "d")}], chunk_size=1)
    finally:
        pool.shutdown()
