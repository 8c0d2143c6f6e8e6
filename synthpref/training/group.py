"""TrainerGroup: N TrainerActor ranks in a Ray placement group, with batch scatter and gather in one place.

Rank r gets rows r, r + N, r + 2N, ... of every tensor of a batch; per-row results come back in the
batch's order. A rank whose share would be empty (fewer rows than ranks) gets a copy of row 0 with
weight 0, so every rank joins each collective step and the copy adds no gradient.
"""
from __future__ import annotations

import dataclasses
import os
import time

import ray

from ray.exceptions import ObjectLostError

from synthpref.cluster.pool import ACTOR_LOST, PoolError, missing_resources
from synthpref.cluster.ray_setup import actor_env
from synthpref.config import TrainConfig
from synthpref.models.loading import for_workers
from synthpref.runtime.mirror import active as active_mirror
from synthpref.training.trainer import TrainerActor


def rows_of(batch: dict) -> int:
    return len(next(iter(batch.values())))


def split(batch: dict, n: int) -> list[dict]:
    """The n shares of a batch (see the module docstring); a padding share carries weight 0."""
    import torch
    total = rows_of(batch)
    shares = []
    for r in range(n):
        if r < total:
            shares.append({k: v[r::n] for k, v in batch.items()})
        else:
            shares.append({**{k: v[:1] for k, v in batch.items()}, "weight": torch.tensor(0.0)})
    return shares


def merge_rows(per_rank: list[list], total: int) -> list:
    """Inverse of the r::n scatter for per-row results (padding shares' rows dropped)."""
    out: list = [None] * total
    for r, rows in enumerate(per_rank):
        if r < total:
            out[r::len(per_rank)] = rows
    return out


def mean_stats(per_rank: list[dict], total: int) -> dict:
    """Row-weighted means of the numeric results of the ranks that had real rows."""
    real = per_rank[:min(total, len(per_rank))]
    weights = [len(range(r, total, len(per_rank))) for r in range(len(real))]
    out = {}
    for key in real[0]:
        if key in ("rows", "tokens"):
            out[key] = sum(s[key] for s in real)
        elif "max" in key:
            out[key] = max(s[key] for s in real)
        else:
            out[key] = sum(s[key] * w for s, w in zip(real, weights)) / sum(weights)
    return out


def common_dtype(per_rank: list[str]) -> str:
    """One dtype for every rank (their collectives need it): bf16 only when each rank's hardware has it."""
    return per_rank[0] if len(set(per_rank)) == 1 else "float32"


class RankLost(PoolError):
    """A trainer rank died (its node was lost, or its process killed) or did not answer within
    train.rank_timeout_s; the message names the rank and its node. The job stops: rerunning (resubmitting)
    it resumes from its last checkpoint."""


class TrainerGroup:
    """`world_size` ranks of one model in one role (policy, reference, reward, critic). `train.dtype` ("auto",
    "float32", "bfloat16") is resolved by each rank on its own node; `self.dtype` is what they run."""

    def __init__(self, model: str, role: str = "policy", train: TrainConfig | None = None, seed: int = 0,
                 wait: bool = True, **settings):
        """`train` (a TrainConfig; fp32 by default when built directly) with `settings` replacing its fields,
        e.g. TrainerGroup(model, world_size=2, zero_stage=3). If any step of starting fails, whatever was
        started is stopped before the error propagates."""
        self.train_cfg = dataclasses.replace(train or TrainConfig(dtype="float32"), **settings)
        self.model, self.role, self.world_size = for_workers(model), role, self.train_cfg.world_size
        self.actors: list = []
        self.nodes: list = []                     # the Ray node id of each rank, once ready
        self.placement = None
        try:
            self._start(seed)
            if wait:
                self.ready()
        except BaseException:
            self.shutdown()
            raise

    def _start(self, seed: int) -> None:
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        t = self.train_cfg
        bundle = {"CPU": t.num_cpus, **({"GPU": t.num_gpus} if t.num_gpus else {})}
        self.placement = placement_group([bundle] * t.world_size, strategy="PACK")
        if not self._wait_placement(t.start_timeout_s):
            demand = {k: v * t.world_size for k, v in bundle.items()}
            raise PoolError(f"trainer group {self.role}: {t.world_size} ranks could not be placed within "
                            f"{t.start_timeout_s:g} s: {missing_resources(demand)}")
        nodes = ray.util.placement_group_table(self.placement).get("bundles_to_node_id", {})
        self.nodes = [nodes.get(r) for r in range(t.world_size)]          # until the ranks report their own
        cls = ray.remote(num_cpus=t.num_cpus, num_gpus=t.num_gpus)(TrainerActor)
        self.actors = [cls.options(runtime_env=actor_env(), scheduling_strategy=PlacementGroupSchedulingStrategy(
            self.placement, placement_group_bundle_index=r)).remote(r, t.world_size) for r in range(t.world_size)]
        master = self.gather([self.actors[0].rendezvous_address.remote()], "rendezvous_address")[0]
        threads = max(1, int(t.num_cpus)) if not t.num_gpus else None
        self.dtype = common_dtype(self.gather([a.auto_dtype.remote(t.dtype) for a in self.actors], "auto_dtype"))
        self._setup = [a.setup.remote(master, self.model, self.role, t, seed, self.dtype, threads) for a in self.actors]

    def ready(self) -> "TrainerGroup":
        """Wait until every rank has built its engine (construct with wait=False to start other workers,
        e.g. the vLLM samplers, meanwhile)."""
        if self._setup:
            answers = self.gather(self._setup, "setup")
            self.nodes = [answer.get("node_id") for answer in answers]          # rank r's node, for the records
            ran = {answer["dtype"] for answer in answers}
            if ran != {self.dtype}:
                raise RuntimeError(f"trainer group {self.role}: ranks hold {sorted(ran)}, expected {self.dtype}")
            self._setup = []
        return self

    def gather(self, refs: list, what: str) -> list:
        """The answers of one call per rank (refs[r] from rank r), each fetched once, never hanging on a lost
        rank: the first rank found dead stops the wait at once (the others may be blocked in a collective
        with it, as at a weight-sync rendezvous), and ranks that do not answer within train.rank_timeout_s
        are named too. An error raised inside a rank propagates as it is."""
        rank_of = {ref: r for r, ref in enumerate(refs)}
        results: list = [None] * len(refs)
        pending, deadline = list(refs), time.monotonic() + self.train_cfg.rank_timeout_s
        while pending:
            done, pending = ray.wait(pending, num_returns=1, timeout=max(0.0, min(5.0, deadline - time.monotonic())))
            if pending and not done and time.monotonic() >= deadline:
                done, pending = ray.wait(pending, num_returns=len(pending), timeout=0)
            for ref in done:
                results[rank_of[ref]] = self._result(ref, rank_of[ref], what)
            if pending and time.monotonic() >= deadline:
                ranks = sorted(rank_of[ref] for ref in pending)
                raise RankLost(f"trainer group {self.role}: ranks {ranks} (nodes "
                               f"{[self._node(r) for r in ranks]}) did not finish {what} within "
                               f"{self.train_cfg.rank_timeout_s:g} s (train.rank_timeout_s); the job stops here: "
                               f"rerun it to resume from its last checkpoint")
        return results

    def _result(self, ref, rank: int, what: str):
        try:
            return ray.get(ref)
        except (*ACTOR_LOST, ObjectLostError) as exc:
            if getattr(exc, "actor_init_failed", False):      # the rank could not start: not a lost node
                raise
            cause = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())[-500:]
            raise RankLost(f"trainer group {self.role}: rank {rank} (node {self._node(rank)}) was lost during "
                           f"{what}: {cause}; the job stops here: rerun it to resume from its last checkpoint") from exc

    def _node(self, rank: int) -> str:
        return self.nodes[rank] if rank < len(self.nodes) and self.nodes[rank] else "unknown"

    def _wait_placement(self, timeout_s: float) -> bool:
        ready, _ = ray.wait([self.placement.ready()], timeout=timeout_s)
        return bool(ready)

    # -- scatter / gather ----------------------------------------------------------------------
    def run(self, method: str, batch: dict, *args) -> list:
        """Every rank runs `method` on its share; returns the ranks' raw results."""
        shares = split(batch, self.world_size)
        return self.gather([getattr(a, method).remote(share, *args) for a, share in zip(self.actors, shares)], method)

    def train(self, method: str, batch: dict, *args) -> dict:
        """One optimizer step of every rank (train_sft, train_bt, train_dpo, rl_train); row-weighted mean stats."""
        return self.train_later(method, batch, *args)()

    def train_later(self, method: str, batch: dict, *args):
        """Start `train` and return at once; calling the result waits for the stats (so another group can
        take its step meanwhile, e.g. the critic beside the policy)."""
        shares = split(batch, self.world_size)
        refs = [getattr(a, method).remote(share, *args) for a, share in zip(self.actors, shares)]
        return lambda: mean_stats(self.gather(refs, method), rows_of(batch))

    def forward(self, method: str, batch: dict, *args) -> list:
        """Per-row results (forward_logprobs, forward_scores, forward_pair_logprobs, rl_*) in batch order."""
        return merge_rows(self.run(method, batch, *args), rows_of(batch))

    def forward_later(self, method: str, batch: dict, *args):
        """Start an rl_* forward (rows and a time span per rank) on every rank and return at once; calling
        the result waits for (rows in batch order, (first start, last end)), so other work, e.g. the
        judges, runs meanwhile."""
        shares = split(batch, self.world_size)
        most = max(rows_of(share) for share in shares)          # every rank makes as many forward calls
        refs = [getattr(a, method).remote(share, *args, rows_per_rank=most) for a, share in zip(self.actors, shares)]

        def wait():
            answers = self.gather(refs, method)
            span = (min(a["span"][0] for a in answers), max(a["span"][1] for a in answers))
            return merge_rows([a["rows"] for a in answers], rows_of(batch)), span
        return wait

    def train_sft(self, batch: dict) -> float:
        return self.train("train_sft", batch)["loss"]

    # -- weights -------------------------------------------------------------------------------
    def call_all(self, method: str, *args) -> list:
        return self.gather([getattr(a, method).remote(*args) for a in self.actors], method)

    def full_state_dict_ref(self) -> ray.ObjectRef:
        """A Ray reference to the full weights (rank 0's gather; every rank takes part in ZeRO-3)."""
        refs = [a.full_state_dict.remote() for a in self.actors]
        # every rank's part of the gather; rank 0's weights stay in the object store (its ping, queued after
        # the gather, answers once they are there, or names the rank if it was lost)
        self.gather([self.actors[0].ping.remote()] + refs[1:], "full_state_dict")
        return refs[0]

    def save_pretrained(self, path: str) -> str:
        self.call_all("save_pretrained", self._where(path))
        self._copy_out(path)
        return os.path.abspath(path)

    def save_checkpoint(self, path: str, tag: str) -> None:
        self.call_all("save_checkpoint", self._where(path), tag)
        self._copy_out(os.path.join(path, tag))

    def load_checkpoint(self, path: str, tag: str) -> None:
        self._copy_in(os.path.join(path, tag))
        try:
            self.call_all("load_checkpoint", self._where(path), tag)
        finally:
            self._copy_in(os.path.join(path, tag), drop=True)

    # -- the run folder where output_dir is a URI (runtime/mirror.py) ----------------------------------
    # Ranks on nodes that do not see the driver's staging folder write on their own disks: after a save one
    # rank per node copies what its node wrote to the URI and the driver fetches it; before a load one rank
    # per node brings the checkpoint from the URI. Elsewhere these do nothing.
    def _where(self, path: str):
        mirror = active_mirror()
        return (mirror.run_path(path) if mirror else None) or os.path.abspath(path)

    def _node_leaders(self) -> list[int]:
        first: dict = {}
        for rank, node in enumerate(self.nodes):
            first.setdefault(node or ("rank", rank), rank)
        return sorted(first.values())

    def _copy_out(self, path: str) -> None:
        mirror = active_mirror()
        where = mirror.run_path(path) if mirror else None
        if where is not None:
            copied = self.gather([self.actors[r].upload_run_files.remote(where) for r in self._node_leaders()],
                                 "upload_run_files")
            names = {name for node in copied for name in node}
            if names:
                mirror.fetch(path, names)               # only what other nodes wrote: the driver's own stays

    def _copy_in(self, path: str, drop: bool = False) -> None:
        """Before a load one rank per node brings the checkpoint from the URI; after it (`drop`), removes it."""
        mirror = active_mirror()
        where = mirror.run_path(path) if mirror else None
        if where is not None:
            method = "drop_run_files" if drop else "download_run_files"
            self.gather([getattr(self.actors[r], method).remote(where) for r in self._node_leaders()], method)

    def shutdown(self) -> None:
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []
        if self.placement is not None:
            ray.util.remove_placement_group(self.placement)
            self.placement = None
