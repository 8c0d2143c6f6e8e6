"""Jury: several judges, each judging every pair in both orders, aggregated into one decision per pair.

Each model judge runs on its own replica pool (JudgePool): vLLM engines, HTTP clients of a served model,
or reward-model actors. Judges that name the same model, engine and pool settings share one pool of
engines. All judges' work is dispatched at once, so every replica of every pool stays busy.
"""
from __future__ import annotations

import dataclasses
import json

from synthpref.config import JudgingConfig
from synthpref.data.pairs import Pair
from synthpref.judging.aggregate import PointChoice, Vote, combine_orders, jury, pointwise_choice
from synthpref.judging.backends import FunctionJudge, ModelJudge, PairRequest, PointRequest
from synthpref.judging.verdicts import FAILED
from synthpref.models.loading import for_workers
from synthpref.monitor import bias
from synthpref.cluster.pool import ReplicaPool, run_jobs


def engine_key(model: str, engine, pool) -> str:
    """Judges with the same key share one engine pool."""
    return json.dumps([model, dataclasses.asdict(engine), dataclasses.asdict(pool)], sort_keys=True)


def jury_cpus(judging: JudgingConfig) -> float:
    """Ray CPUs the jury's local replicas take at their most (HTTP and function judges take none)."""
    return sum(j.pool.most * j.engine.num_cpus for j in judging.judges if j.type in ("vllm", "reward_model"))


def needs_actors(judging: JudgingConfig) -> bool:
    return any(j.type != "function" for j in judging.judges)


class Jury:
    def __init__(self, cfg: JudgingConfig, pools: dict | None = None, events=None):
        self.cfg, self.events = cfg, events
        self.pools: dict[str, ReplicaPool] = pools if pools is not None else {}
        self.constitution = None
        if cfg.constitution:
            from synthpref.judging.constitution import load_constitution
            self.constitution = load_constitution(cfg.constitution)
        self.judges = []
        try:
            for i, jc in enumerate(cfg.judges):
                self.judges.append(self._build(jc, i))
        except BaseException:
            self.shutdown()
            raise
        self.weights = {j.id: j.weight for j in cfg.judges}

    def _build(self, jc, index: int):
        if jc.type == "function":
            return FunctionJudge(jc, self.cfg.tie_margin)
        if jc.type == "http":
            from synthpref.judging.http_client import http_spawner, read_api_key
            key = read_api_key(jc.endpoint.api_key_env, f"judging.judges.{index}.endpoint.api_key_env")
            pool = ReplicaPool(f"judge:{jc.id}", http_spawner(jc, key, jc.pool.max_inflight), jc.pool, self.events)
            self.pools[f"http:{jc.id}"] = pool
            return ModelJudge(jc, self.cfg.mode, pool, self.cfg.tie_margin, bool(self.cfg.constitution))
        from synthpref.sampling.group import engine_spawner
        if jc.type == "reward_model":
            from synthpref.judging.reward_model import RewardModelActor, RewardModelJudge
            spawn = engine_spawner(jc.model, jc.engine, jc.pool.most, RewardModelActor)
            pool = ReplicaPool(f"judge:{jc.id}", spawn, jc.pool, self.events)
            self.pools[f"rm:{jc.id}"] = pool
            return RewardModelJudge(jc, pool, self.cfg.tie_margin)
        key = engine_key(for_workers(jc.model), jc.engine, jc.pool)   # ./m and /abs/m share one pool
        if key not in self.pools:
            spawn = engine_spawner(jc.model, jc.engine, jc.pool.most)
            self.pools[key] = ReplicaPool(f"judge:{jc.id}", spawn, jc.pool, self.events)
        return ModelJudge(jc, self.cfg.mode, self.pools[key], self.cfg.tie_margin, bool(self.cfg.constitution))

    def run_all(self, start) -> list[list[dict]]:
        """Start every judge's work, run all of it at once, return each judge's rows."""
        pending = [start(judge) for judge in self.judges]
        run_jobs([job for p in pending for job in p.jobs])
        return [p.finish() for p in pending]

    def describe(self) -> list[dict]:
        return [{"id": j.id, "type": j.cfg.type, "model": j.cfg.model or None, "function": j.cfg.function or None,
                 "verdict": j.cfg.verdict, "template": getattr(getattr(j, "template", None), "name", None),
                 "template_hash": j.template_hash, "dtype": self._dtype(j)} for j in self.judges]

    def dtypes(self) -> dict[str, str]:
        """{"judge:ID": dtype} for the judges whose replicas report one (local engines, reward models)."""
        return {f"judge:{j.id}": self._dtype(j) for j in self.judges if self._dtype(j)}

    @staticmethod
    def _dtype(judge) -> str | None:
        pool = getattr(judge, "pool", None)
        return pool.dtype() if pool is not None else None

    def shutdown(self) -> None:
        for pool in self.pools.values():
            pool.shutdown()
        self.pools.clear()

    # -- pairwise --------------------------------------------------------------------------------
    def principle_of(self, pair_id: str):
        """The principle a pair is compared under (constitutional judging), the same for every judge and
        order and on every rerun; None without a constitution."""
        return self.constitution.draw(0, pair_id) if self.constitution is not None else None

    def judge_pairs(self, pairs: list[Pair], conversations: dict[str, list[dict]], on_done=None):
        """Returns (judgment rows, {pair_id: (Decision, votes)}, {"judges": per-judge stats,
        "agreement": how often each two judges gave the same vote, "principles": per-principle sums
        (bias.new_principle_stats) when judging under a constitution})."""
        requests, principle = [], {p.pair_id: self.principle_of(p.pair_id) for p in pairs}
        for p in pairs:
            conv, rule = conversations[p.prompt_id], principle[p.pair_id]
            requests.append(PairRequest(p.pair_id, "ab", conv, p.a["text"], p.b["text"], rule))
            if self.cfg.both_orders:
                requests.append(PairRequest(p.pair_id, "ba", conv, p.b["text"], p.a["text"], rule))
        rows: list[dict] = []
        by_key: dict = {}
        decisions, stats, agreement = {}, {j.id: bias.new_judge_stats() for j in self.judges}, {}
        by_principle: dict[str, dict] = {}
        for judge, judged in zip(self.judges, self.run_all(lambda j: j.start_pairs(requests, on_done))):
            for row in judged:
                if principle.get(row["pair_id"]) is not None:
                    row["principle"] = principle[row["pair_id"]].id
                rows.append(row)
                by_key[(row["pair_id"], judge.id, row["order"])] = row
                bias.add_call(stats[judge.id], row)
        for p in pairs:
            votes = []
            for judge in self.judges:
                vote = combine_orders(judge.id, by_key.get((p.pair_id, judge.id, "ab")),
                                      by_key.get((p.pair_id, judge.id, "ba")), self.cfg.order_rule, self.cfg.tie_margin)
                votes.append(vote)
                s = stats[judge.id]
                s["votes"] += 1
                if vote.winner == FAILED:
                    s["failed"] += 1
                    continue
                if vote.consistent is not None:
                    s["both_orders"] += 1
                    s["flips"] += 0 if vote.consistent else 1
                bias.add_point(s["length"], vote.p_a, p.length_delta)
            decisions[p.pair_id] = (jury(votes, self.cfg.jury_rule, self.weights, self.cfg.tie_margin), votes)
            bias.add_agreement(agreement, votes)
            if principle[p.pair_id] is not None:
                bias.add_principle(by_principle.setdefault(principle[p.pair_id].id, bias.new_principle_stats()),
                                   decisions[p.pair_id][0].winner, votes)
        return rows, decisions, {"judges": stats, "agreement": agreement, "principles": by_principle}

    # -- pointwise -------------------------------------------------------------------------------
    def score_samples(self, samples_of: dict[str, list[dict]], conversations: dict[str, list[dict]], on_done=None):
        """Returns (judgment rows, {prompt_id: PointChoice}, {"judges": per-judge stats, "agreement": how often
        each two judges would pick the same best completion})."""
        requests = [PointRequest(s["sample_id"], conversations[pid], s["text"])
                    for pid, samples in samples_of.items() for s in samples]
        rows, scores = [], {}
        stats = {j.id: bias.new_judge_stats() for j in self.judges}
        length_of = {req.pair_id: len(req.response) for req in requests}
        for judge, judged in zip(self.judges, self.run_all(lambda j: j.start_scores(requests, on_done))):
            rows.extend(judged)
            scores[judge.id] = {r["pair_id"]: r["score"] for r in judged}
            for r in judged:
                bias.add_call(stats[judge.id], r)
                stats[judge.id]["votes"] += 1
                if r["verdict"] == FAILED:
                    stats[judge.id]["failed"] += 1
                else:
                    bias.add_point(stats[judge.id]["score_length"], r["score"], length_of[r["pair_id"]])
        choices: dict[str, PointChoice] = {}
        agreement: dict = {}
        for pid, samples in samples_of.items():
            ids = [s["sample_id"] for s in samples]
            own = {j: {x: scores[j].get(x) for x in ids} for j in scores}
            choices[pid] = pointwise_choice(ids, own, self.weights)
            if len(ids) >= 2:   # two judges agree when they would pick the same best completion
                bias.add_agreement(agreement, [Vote(j, max(ids, key=s.get) if None not in s.values() else FAILED,
                                                    None, None) for j, s in own.items()])
        return rows, choices, {"judges": stats, "agreement": agreement}

