"""ReplicaPool: replicas of one Ray actor behind one queue of work, kept busy, bounded and fault tolerant.

- `Job` cuts a list of request dicts into chunks (at most `chunk_size`, and no more than an even share
  per replica, so a small job still reaches every replica). Each replica holds at most `max_inflight` chunks
  (backpressure: the rest wait in the driver, not in Ray's queues), and the next chunk goes to the
  replica with the least work in flight, so every engine stays busy.
- A chunk whose replica dies (kill -9, a lost node) goes back to the queue and runs on a live replica;
  the dead replica is replaced in its slot. A chunk whose method raises is retried up to `max_attempts`
  times, then each of its requests gets an error result. Results are stored by request index, once.
- Autoscaling (with `max_replicas`): a replica is added while more than `scale_up_queue` chunks wait per
  replica, and one above `replicas` that has idled `scale_down_idle_s` is stopped.
- A replica that does not start within `start_timeout_s` fails the pool with the resource it lacks
  (Ray would otherwise wait forever for a pending actor or placement group).

`run_jobs` drives jobs of several pools in one loop, so a jury's judges all run at once.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import ray
from ray.exceptions import ActorUnavailableError, RayActorError

from synthpref.config import PoolConfig
from synthpref.errors import ResourceError

log = logging.getLogger(__name__)
ACTOR_LOST = (RayActorError, ActorUnavailableError)
UNHEALTHY_AFTER = 3            # consecutive failed chunks before an idle replica is restarted


class PoolError(ResourceError):
    """The pool cannot go on: a replica cannot start, or replacements are used up."""


@dataclass
class Spawned:
    actor: Any
    demand: dict                                  # resources one replica needs, for error messages
    release: Callable[[], None] = lambda: None    # frees what the replica held (a placement group)


@dataclass
class Replica:
    slot: int
    spawned: Spawned
    started_at: float
    ready: bool = False
    inflight: int = 0
    failures: int = 0
    idle_since: float = field(default_factory=time.monotonic)
    info: dict = field(default_factory=dict)
    initial: bool = False                          # one of the replicas the pool starts with


@dataclass
class Chunk:
    start: int
    end: int
    attempts: int = 0
    done: bool = False
    last_error: str = ""


class Job:
    """One `method` over `requests` on one pool; `results` come back in request order."""

    def __init__(self, pool: "ReplicaPool", method: str, requests: list[dict], chunk_size: int,
                 on_done: Callable[[int], None] | None = None):
        self.pool, self.method, self.requests, self.on_done = pool, method, requests, on_done
        self.results: list[Any] = [None] * len(requests)
        # small jobs are split evenly so that every replica gets work; large ones in chunks of chunk_size
        chunk_size = max(1, min(chunk_size, -(-len(requests) // max(1, len(pool.replicas)))))
        self.queue = deque(Chunk(s, min(s + chunk_size, len(requests))) for s in range(0, len(requests), chunk_size))
        self.remaining = len(self.queue)

    @property
    def done(self) -> bool:
        return self.remaining == 0

    def finish(self, chunk: Chunk, outputs: list) -> None:
        if chunk.done:                       # never store a chunk twice
            return
        chunk.done = True
        self.results[chunk.start:chunk.end] = outputs
        self.remaining -= 1
        if self.on_done:
            self.on_done(chunk.end - chunk.start)

    def retry_or_fail(self, chunk: Chunk, error: str, max_attempts: int) -> None:
        chunk.attempts += 1
        chunk.last_error = error
        if chunk.attempts < max_attempts:
            self.queue.appendleft(chunk)
            self.pool.stats["retried_chunks"] += 1
            return
        self.pool.stats["failed_chunks"] += 1
        self.finish(chunk, [{"error": f"failed after {chunk.attempts} attempts: {error}"}] * (chunk.end - chunk.start))


class ReplicaPool:
    def __init__(self, name: str, spawn: Callable[[int], Spawned], cfg: PoolConfig,
                 events: Callable[[dict], None] | None = None):
        self.name, self.spawn, self.cfg = name, spawn, cfg
        self.events = events or (lambda e: None)
        self.replicas: dict[int, Replica] = {}
        self.starting: dict[Any, Replica] = {}            # ready ref -> replica
        self.inflight: dict[Any, tuple] = {}              # task ref -> (replica, job, chunk)
        self.stats = {k: 0 for k in ("started", "lost", "replaced", "retried_chunks", "failed_chunks",
                                     "scaled_up", "scaled_down", "peak_inflight")}
        self.replacements_left = cfg.max_replacements
        try:
            for _ in range(cfg.replicas):
                self._start().initial = True
            self.wait_started()
        except BaseException:          # a replica that cannot start (or Ctrl-C): stop the ones that did
            self.shutdown()
            raise

    # -- replicas ----------------------------------------------------------------------------------
    @property
    def max_replicas(self) -> int:
        return self.cfg.most

    def _start(self) -> Replica:
        slot = min(s for s in range(len(self.replicas) + 1) if s not in self.replicas)
        replica = Replica(slot, self.spawn(slot), time.monotonic())
        self.replicas[slot] = replica
        self.starting[replica.spawned.actor.info.remote()] = replica
        self.stats["started"] += 1
        return replica

    def wait_started(self) -> None:
        """Block until every starting replica is up; a PoolError names what is missing."""
        while self.starting:
            done, _ = ray.wait(list(self.starting), num_returns=1, timeout=1.0)
            for ref in done:
                self._started(ref)
            self._check_start_timeouts()

    def _started(self, ref) -> None:
        replica = self.starting.pop(ref)
        try:
            replica.info = ray.get(ref)
        except ACTOR_LOST as exc:
            if "creation task" in str(exc) or self.stats["started"] <= self.cfg.replicas:
                self._stop(replica)
                raise PoolError(f"pool {self.name}: replica {replica.slot} failed to start: {exc}") from exc
            self._replace(replica, f"died while starting: {exc}")
            return
        replica.ready = True
        replica.idle_since = time.monotonic()
        self.events({"event": "replica_ready", "pool": self.name, "slot": replica.slot, "pid": replica.info.get("pid"),
                     "node_id": replica.info.get("node_id"), "seconds": round(time.monotonic() - replica.started_at, 2)})

    def _check_start_timeouts(self) -> None:
        """A replica that did not start in time fails the pool, unless it is a replacement or a scale-up
        while other replicas work (after a node loss the cluster may have no room): then it is given up and
        the pool goes on with the replicas it has."""
        now = time.monotonic()
        for ref, replica in list(self.starting.items()):
            if now - replica.started_at > self.cfg.start_timeout_s:
                missing = missing_resources(replica.spawned.demand)
                if not replica.initial and any(r.ready for r in self.replicas.values()):
                    self.starting.pop(ref, None)
                    self._stop(replica)
                    self.events({"event": "replica_unplaced", "pool": self.name, "slot": replica.slot,
                                 "reason": f"not started within {self.cfg.start_timeout_s:g}s: {missing}"[:500]})
                    log.warning("pool %s: replica %d not placed (%s); going on with %d replicas", self.name,
                                replica.slot, missing, len(self.replicas))
                    continue
                self.shutdown()
                raise PoolError(f"pool {self.name}: replica {replica.slot} did not start within "
                                f"{self.cfg.start_timeout_s:g}s (pool.start_timeout_s); each replica needs "
                                f"{replica.spawned.demand}: {missing}")

    def _stop(self, replica: Replica, graceful: bool = False) -> None:
        self.replicas.pop(replica.slot, None)
        if graceful:
            try:
                ray.get(replica.spawned.actor.shutdown.remote(), timeout=120)
            except Exception:  # already dead or stuck: the kill below ends it
                pass
        ray.kill(replica.spawned.actor, no_restart=True)
        replica.spawned.release()

    def _replace(self, replica: Replica, reason: str) -> None:
        if self.replicas.get(replica.slot) is not replica:
            return                           # already replaced (several lost chunks report one death)
        self.stats["lost"] += 1
        self._stop(replica)
        self.events({"event": "replica_lost", "pool": self.name, "slot": replica.slot, "pid": replica.info.get("pid"),
                     "node_id": replica.info.get("node_id"), "reason": reason[:500]})
        log.warning("pool %s: replica %d lost (%s); replacing it", self.name, replica.slot, reason[:200])
        if self.replacements_left <= 0:
            raise PoolError(f"pool {self.name}: replica {replica.slot} lost ({reason[:300]}) and "
                            f"pool.max_replacements ({self.cfg.max_replacements}) are used up")
        self.replacements_left -= 1
        self.stats["replaced"] += 1
        self._start()

    def _autoscale(self, queued: int) -> None:
        live = len(self.replicas)
        if live < self.max_replicas and queued > self.cfg.scale_up_queue * live:
            self.stats["scaled_up"] += 1
            replica = self._start()
            self.events({"event": "scale_up", "pool": self.name, "slot": replica.slot, "queued_chunks": queued})
            return
        if queued or live <= self.cfg.replicas:
            return
        now = time.monotonic()
        for replica in sorted(self.replicas.values(), key=lambda r: -r.slot):
            if replica.ready and replica.inflight == 0 and now - replica.idle_since > self.cfg.scale_down_idle_s:
                self.stats["scaled_down"] += 1
                self.events({"event": "scale_down", "pool": self.name, "slot": replica.slot})
                self._stop(replica, graceful=True)
                return

    # -- work --------------------------------------------------------------------------------------
    def _dispatch(self, jobs: list[Job]) -> None:
        """Fill free in-flight slots of ready replicas, taking chunks from the jobs in turn."""
        waiting = [j for j in jobs if j.queue]
        while waiting:
            free = [r for r in self.replicas.values() if r.ready and r.inflight < self.cfg.max_inflight]
            if not free:
                return
            replica = min(free, key=lambda r: (r.inflight, r.slot))
            job = waiting.pop(0)
            chunk = job.queue.popleft()
            ref = getattr(replica.spawned.actor, job.method).remote(job.requests[chunk.start:chunk.end])
            self.inflight[ref] = (replica, job, chunk)
            replica.inflight += 1
            self.stats["peak_inflight"] = max(self.stats["peak_inflight"], replica.inflight)
            if job.queue:
                waiting.append(job)

    def _completed(self, ref) -> None:
        replica, job, chunk = self.inflight.pop(ref)
        replica.inflight -= 1
        if replica.inflight == 0:
            replica.idle_since = time.monotonic()
        try:
            outputs = ray.get(ref)
        except ACTOR_LOST as exc:
            job.retry_or_fail(chunk, f"replica {replica.slot} lost: {type(exc).__name__}", self.cfg.max_attempts)
            self._replace(replica, str(exc))
            return
        except Exception as exc:  # the method raised: retry elsewhere, restart a replica that keeps failing
            job.retry_or_fail(chunk, f"{type(exc).__name__}: {str(exc)[-500:]}", self.cfg.max_attempts)
            replica.failures += 1
            if replica.failures >= UNHEALTHY_AFTER and replica.inflight == 0:   # restart it, losing nothing
                self._replace(replica, f"{replica.failures} chunks failed in a row: {str(exc).strip().splitlines()[-1][:300]}")
            return
        replica.failures = 0
        if len(outputs) != chunk.end - chunk.start:
            job.retry_or_fail(chunk, f"replica returned {len(outputs)} results for {chunk.end - chunk.start} "
                                     "requests", self.cfg.max_attempts)
            return
        job.finish(chunk, outputs)

    def run(self, method: str, requests: list[dict], chunk_size: int,
            on_done: Callable[[int], None] | None = None) -> list:
        job = Job(self, method, requests, chunk_size, on_done)
        run_jobs([job])
        return job.results

    def export_state(self, queued_chunks: int) -> None:
        """Replicas, queue depth, work in flight and the pool's counters as live Ray metrics (once a second)."""
        from synthpref.monitor import ray_metrics
        ray_metrics.export_every(f"pool:{id(self)}", 1.0, "pool", {
            "replicas": sum(r.ready for r in self.replicas.values()), "starting": len(self.starting),
            "queued_chunks": queued_chunks, "inflight_chunks": len(self.inflight), **self.stats}, pool=self.name)

    def call_all(self, method: str, *args) -> list:
        """`method` on every started replica, answers in slot order. A replica found dead (its node lost) is
        replaced and left out (a replacement loads the latest weights as it starts); one still starting is
        not waited for."""
        ready = sorted((r for r in self.replicas.values() if r.ready), key=lambda r: r.slot)
        refs = [getattr(r.spawned.actor, method).remote(*args) for r in ready]
        answers = []
        for replica, ref in zip(ready, refs):
            try:
                answers.append(ray.get(ref))
            except ACTOR_LOST as exc:
                self._replace(replica, f"lost during {method}: {exc}")
        return answers

    def infos(self) -> list[dict]:
        return [r.info for r in sorted(self.replicas.values(), key=lambda r: r.slot)]

    def dtype(self) -> str | None:
        """The dtype the started replicas report running ("a, b" if they differ; None: not reported)."""
        seen = sorted({r.info["dtype"] for r in self.replicas.values() if r.info.get("dtype")})
        return ", ".join(seen) or None

    def shutdown(self) -> None:
        """Stop every replica gracefully (engines free their processes), then end the actors."""
        replicas = list(self.replicas.values())
        refs = [r.spawned.actor.shutdown.remote() for r in replicas if r.ready]
        try:
            ray.get(refs, timeout=120)
        except Exception:  # a dead or stuck replica: the kill below ends it
            pass
        for replica in replicas:
            self._stop(replica)
        self.starting.clear()
        self.inflight.clear()


def run_jobs(jobs: list[Job]) -> None:
    """Run jobs (of one or several pools) to completion in one loop."""
    pools = list({id(j.pool): j.pool for j in jobs}.values())
    while not all(j.done for j in jobs):
        for pool in pools:
            mine = [j for j in jobs if j.pool is pool and not j.done]
            pool._autoscale(sum(len(j.queue) for j in mine))
            pool._dispatch(mine)
        owner = {ref: pool for pool in pools for ref in list(pool.inflight) + list(pool.starting)}
        if not owner:
            raise PoolError(f"pools {[p.name for p in pools]}: work is queued but no replica is alive")
        done, _ = ray.wait(list(owner), num_returns=1, timeout=1.0)
        if done:   # collect everything else that is ready too
            done, _ = ray.wait(list(owner), num_returns=len(owner), timeout=0)
        for ref in done:
            pool = owner[ref]
            if ref in pool.starting:
                pool._started(ref)
            elif ref in pool.inflight:
                pool._completed(ref)
        for pool in pools:
            pool._check_start_timeouts()
            pool.export_state(sum(len(j.queue) for j in jobs if j.pool is pool))


def missing_resources(demand: dict) -> str:
    """Which resources of `demand` the cluster lacks, e.g. "GPU: needs 1, cluster has 0 (0 free)"."""
    total, free = ray.cluster_resources(), ray.available_resources()
    short = [f"{k}: needs {v:g}, cluster has {total.get(k, 0):g} ({free.get(k, 0):g} free)"
             for k, v in sorted(demand.items()) if v and free.get(k, 0) < v]
    return "; ".join(short) if short else "the resources exist but are held by other actors or jobs"
