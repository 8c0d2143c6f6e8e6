"""Judge backends behind one interface: `start_pairs(requests)` and `start_scores(requests)` return a
`Pending`: the pool jobs to run (the jury runs every judge's jobs at once) and a `finish()` that turns
their results into judgment rows.

- ModelJudge: a model behind a pool of replicas that answer `choice_logprobs` and `generate`: vLLM
  engine actors, or HTTP clients of an OpenAI-compatible server. Logprob verdicts (one prefill, one
  token) or text verdicts (generated, optionally with reasoning first, parsed strictly).
- FunctionJudge: `module:function(messages, completion) -> float`, for verifiable tasks and tests.
- RewardModelJudge (reward_model.py): a sequence-classification model's scalar scores.

A verdict in a judgment row is relative to the order shown: "A" means the first shown response won.
A failure is a FAILED row with its error; it never becomes a side.
"""
from __future__ import annotations

import importlib
import json
import math
import time
from dataclasses import dataclass
from typing import Callable

from synthpref.config import ConfigError, JudgeConfig
from synthpref.data.schema import content_id
from synthpref.judging import templates
from synthpref.judging.expected_score import expected_rating, is_rating_scale
from synthpref.judging.verdicts import (FAILED, VerdictParseError, label_probs,
                                        parse_pairwise_text, parse_score_text, verdict_from_p, verdict_from_scores)
from synthpref.cluster.pool import Job, run_jobs

Progress = Callable[[int], None] | None
CHOICE_SPELLINGS = lambda label: [label, " " + label]  # noqa: E731  the verdict token with or without a space


@dataclass
class PairRequest:
    pair_id: str
    order: str                 # ab | ba
    conversation: list[dict]
    first: str
    second: str
    principle: object = None   # constitutional judging: the pair's Principle (its comparison question is asked)


@dataclass
class PointRequest:
    pair_id: str               # the sample being scored
    conversation: list[dict]
    response: str
    token_ids: list[int] | None = None   # the ids the sampler produced (reward functions in TRL's signature get them)


@dataclass
class Pending:
    jobs: list[Job]
    finish: Callable[[], list[dict]]


def run_pending(pending: Pending) -> list[dict]:
    run_jobs(pending.jobs)
    return pending.finish()


class PooledJudge:
    """Blocking forms of start_pairs/start_scores, for one judge on its own."""

    def judge_pairs(self, requests: list[PairRequest], on_done: Progress = None) -> list[dict]:
        return run_pending(self.start_pairs(requests, on_done))

    def score(self, requests: list[PointRequest], on_done: Progress = None) -> list[dict]:
        return run_pending(self.start_scores(requests, on_done))


def judge_seed(base: int, item: str, k: int) -> int:
    """The seed of a judge's k-th sampled verdict on one item (stable across reruns)."""
    return int(content_id(base, item, k), 16) % (2 ** 31)


def judgment_row(judge_id: str, template_hash: str, pair_id: str, order: str, verdict: str, **fields) -> dict:
    row = {"pair_id": pair_id, "judge_id": judge_id, "template_hash": template_hash, "order": order,
           "verdict": verdict, "p_first": None, "score": None, "raw": "", "rationale": None, "error": None,
           "latency_s": None, "prompt_tokens": None, "completion_tokens": None, "attempts": None,
           "choice_probs": None, "weight_version": None, "principle": None}
    row.update(fields)
    return row


def clamp(p: float, band: list[float] | None) -> float:
    """P(first) clamped into [low, high] (constitutional AI's chain-of-thought labels: [0.4, 0.6])."""
    return p if not band else min(max(p, band[0]), band[1])


class ModelJudge(PooledJudge):
    def __init__(self, cfg: JudgeConfig, mode: str, pool, tie_margin: float = 0.0, constitutional: bool = False):
        self.cfg, self.id, self.pool, self.tie_margin = cfg, cfg.id, pool, tie_margin
        self.template = templates.get_template(cfg.template, mode, cfg.verdict, constitutional)
        self.template_hash = self.template.hash

    def _job(self, messages: list[list[dict]], groups: list[str], on_done: Progress) -> Job:
        """`groups`: requests sharing a prompt prefix (both orders of a pair), for the engine's prefix cache."""
        if self.cfg.verdict == "logprob":
            choices = {label: CHOICE_SPELLINGS(label) for label in self.template.choices}
            reqs = [{"messages": m, "choices": choices, "prefix_group": g} for m, g in zip(messages, groups)]
            return Job(self.pool, "choice_logprobs", reqs, self.cfg.chunk_size, on_done)
        reqs = [{"messages": m, "max_tokens": self.cfg.max_tokens, "temperature": self.cfg.temperature,
                 "prefix_group": g, **({"seed": judge_seed(self.cfg.engine.seed, g, k)} if self.cfg.samples > 1 else {})}
                for m, g in zip(messages, groups) for k in range(self.cfg.samples)]
        return Job(self.pool, "generate", reqs, self.cfg.chunk_size, on_done)

    def _outputs(self, job: Job) -> list[dict]:
        for out in job.results:
            if "logprobs" in out and "error" not in out:
                try:
                    out["probs"] = label_probs(out["logprobs"])
                except ValueError:
                    out["error"] = f"no probability on any of the choice tokens {self.template.choices}"
        return job.results

    def _common(self, out: dict) -> dict:
        return {"raw": out.get("raw", out.get("text", "")) or "", "latency_s": out.get("latency_s"),
                "weight_version": out.get("weight_version"),
                "choice_probs": json.dumps(out["probs"]) if "probs" in out else None,
                "prompt_tokens": out.get("prompt_tokens"),
                "completion_tokens": out.get("completion_tokens", out.get("n_tokens")),
                "attempts": out.get("attempts")}

    def _pair_fields(self, out: dict) -> dict:
        if "error" in out:
            return {"verdict": FAILED, "error": out["error"]}
        if self.cfg.verdict == "logprob":
            p_first = clamp(out["probs"][self.template.choices[0]], self.cfg.p_band)
            return {"verdict": verdict_from_p(p_first, self.tie_margin), "p_first": p_first}
        try:
            verdict, rationale = parse_pairwise_text(out["text"])
            return {"verdict": verdict, "rationale": rationale or None}
        except VerdictParseError as exc:
            return {"verdict": FAILED, "error": f"unparseable verdict: {exc}"}

    def _score_fields(self, out: dict) -> dict:
        if "error" in out:
            return {"verdict": FAILED, "error": out["error"]}
        if "mean_score" in out:
            return {"verdict": "SCORE", "score": out["mean_score"]}
        if self.cfg.verdict == "logprob":
            if is_rating_scale(self.template.choices):       # direct RLAIF: the expected rating
                return {"verdict": "SCORE", "score": expected_rating(out["probs"])}
            return {"verdict": "SCORE", "score": out["probs"][self.template.choices[0]]}
        low, high = templates.score_range(self.template)
        try:
            value, rationale = parse_score_text(out["text"], low, high)
            return {"verdict": "SCORE", "score": value, "rationale": rationale or None}
        except VerdictParseError as exc:
            return {"verdict": FAILED, "error": f"unparseable rating: {exc}"}

    def _sampled_outputs(self, job: Job) -> list[dict]:
        """Text verdicts judged `samples` times: one output per response, its score the mean of the verdicts
        that parse (`raw` keeps every text and its parsed score, as JSON); none parsing is an error."""
        k, outs = self.cfg.samples, self._outputs(job)
        merged = []
        for i in range(0, len(outs), k):
            group = outs[i:i + k]
            fields = [self._score_fields(o) for o in group]
            scores = [f["score"] for f in fields if f["verdict"] == "SCORE"]
            out = {**group[0], "raw": json.dumps({"texts": [o.get("text") for o in group],
                                                  "scores": [f.get("score") for f in fields]})}
            for key in ("prompt_tokens", "completion_tokens", "n_tokens", "attempts"):   # the cost of all k
                if any(o.get(key) is not None for o in group):
                    out[key] = sum(o.get(key) or 0 for o in group)
            out.pop("error", None)
            if scores:
                out["mean_score"] = sum(scores) / len(scores)
            else:
                out["error"] = f"none of {k} verdicts parsed: {fields[0].get('error')}"
            merged.append(out)
        return merged

    def _pair_messages(self, r: PairRequest, reasoning) -> list[dict]:
        question = r.principle.comparison if r.principle is not None else None
        return templates.pairwise_messages(self.template, r.conversation, r.first, r.second, reasoning, question)

    def start_pairs(self, requests: list[PairRequest], on_done: Progress = None) -> Pending:
        if self.cfg.verdict == "logprob" and self.cfg.rationale:
            return self._start_cot_pairs(requests, on_done)
        messages = [self._pair_messages(r, self.cfg.rationale) for r in requests]
        job = self._job(messages, [r.pair_id for r in requests], on_done)
        return Pending([job], lambda: [
            judgment_row(self.id, self.template_hash, r.pair_id, r.order, **self._common(out), **self._pair_fields(out))
            for r, out in zip(requests, self._outputs(job))])

    def _start_cot_pairs(self, requests: list[PairRequest], on_done: Progress) -> Pending:
        """Chain of thought, then a logprob verdict (constitutional AI's CoT labels): the judge first writes its
        reasoning; the choice probabilities are then read after a second turn asking for the letter. The
        reasoning is kept as the rationale; token counts and latency are those of both calls."""
        first = [self._pair_messages(r, templates.THINK) for r in requests]
        think = Job(self.pool, "generate", [{"messages": m, "max_tokens": self.cfg.max_tokens,
                                             "temperature": self.cfg.temperature, "prefix_group": r.pair_id}
                                            for m, r in zip(first, requests)], self.cfg.chunk_size)

        def finish() -> list[dict]:
            thought = {i: out for i, out in enumerate(think.results) if "error" not in out}
            follow = [first[i] + [{"role": "assistant", "content": out["text"]},
                                  {"role": "user", "content": templates.COT_FOLLOW_UP}] for i, out in thought.items()]
            answer = self._job(follow, [requests[i].pair_id for i in thought], on_done)
            run_jobs([answer])
            answers = dict(zip(thought, self._outputs(answer)))
            rows = []
            for i, r in enumerate(requests):
                out = answers.get(i, think.results[i])
                common = self._common(out)
                if i in thought:
                    common["rationale_text"] = thought[i]["text"]
                    for key in ("prompt_tokens", "completion_tokens", "latency_s"):
                        common[key] = (common[key] or 0) + (self._common(thought[i])[key] or 0)
                elif on_done:
                    on_done(1)
                rationale = common.pop("rationale_text", None)
                rows.append(judgment_row(self.id, self.template_hash, r.pair_id, r.order, **common,
                                         **self._pair_fields(out), rationale=rationale))
            return rows
        return Pending([think], finish)

    def start_scores(self, requests: list[PointRequest], on_done: Progress = None) -> Pending:
        messages = [templates.pointwise_messages(self.template, r.conversation, r.response, self.cfg.rationale)
                    for r in requests]
        job = self._job(messages, [r.pair_id for r in requests], on_done)
        outputs = self._sampled_outputs if self.cfg.samples > 1 else self._outputs
        return Pending([job], lambda: [
            judgment_row(self.id, self.template_hash, r.pair_id, "point", **self._common(out), **self._score_fields(out))
            for r, out in zip(requests, outputs(job))])


def load_function(spec: str) -> Callable:
    module_name, _, attr = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"function judge {spec!r} cannot be loaded: {exc}") from exc
    if not callable(fn):
        raise ConfigError(f"function judge {spec!r} is not callable")
    return fn


def takes_trl_signature(fn: Callable) -> bool:
    """Whether `fn` is a TRL reward function, `(prompts, completions, completion_ids, **kwargs) -> list`."""
    import inspect
    try:
        return "completions" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


class FunctionJudge:
    """Scores each completion with a plain function, `fn(messages, completion) -> float`, or a TRL reward
    function `fn(prompts, completions, completion_ids, **kwargs) -> list[float | None]` called once per
    batch (conversational form: prompts are message lists, completions [{"role": "assistant", ...}]);
    a None or a non-finite value is a FAILED verdict. A pair is won by the higher score."""

    def __init__(self, cfg: JudgeConfig, tie_margin: float = 0.0):
        self.cfg, self.id = cfg, cfg.id
        self.fn = load_function(cfg.function)
        self.batched = takes_trl_signature(self.fn)
        self.template_hash = "fn:" + cfg.function
        self.tie_margin = tie_margin

    def _score(self, conversation: list[dict], text: str) -> tuple[float | None, str | None, float]:
        if self.batched:
            return self._score_batch([PointRequest("", conversation, text)])[0]
        start = time.perf_counter()
        try:
            value = self.fn(conversation, text)
            value = float(value)
            if not math.isfinite(value):
                return None, f"function returned a non-finite score {value}", time.perf_counter() - start
            return value, None, time.perf_counter() - start
        except Exception as exc:  # the user's function failed on this input
            return None, f"{type(exc).__name__}: {exc}", time.perf_counter() - start

    def judge_pairs(self, requests: list[PairRequest], on_done: Progress = None) -> list[dict]:
        rows = []
        scored: dict = {}    # both orders of a pair show the same two texts: score each text once

        def score(conversation: list[dict], text: str):
            key = (id(conversation), text)
            if key not in scored:
                scored[key] = self._score(conversation, text)
            return scored[key]

        for r in requests:
            (s1, e1, t1), (s2, e2, t2) = score(r.conversation, r.first), score(r.conversation, r.second)
            common = {"raw": json.dumps({"first": s1, "second": s2}), "latency_s": t1 + t2}
            if e1 or e2:
                rows.append(judgment_row(self.id, self.template_hash, r.pair_id, r.order, FAILED,
                                         error=e1 or e2, **common))
                if on_done:
                    on_done(1)
                continue
            verdict, p_first = verdict_from_scores(s1, s2, self.tie_margin)
            rows.append(judgment_row(self.id, self.template_hash, r.pair_id, r.order, verdict, p_first=p_first, **common))
            if on_done:
                on_done(1)
        return rows

    def start_pairs(self, requests: list[PairRequest], on_done: Progress = None) -> Pending:
        rows = self.judge_pairs(requests, on_done)
        return Pending([], lambda: rows)

    def start_scores(self, requests: list[PointRequest], on_done: Progress = None) -> Pending:
        rows = self.score(requests, on_done)
        return Pending([], lambda: rows)

    def _score_batch(self, requests: list[PointRequest]) -> list[tuple[float | None, str | None, float]]:
        """One call of a TRL-signature reward function for the whole batch."""
        start = time.perf_counter()
        try:
            values = self.fn(prompts=[r.conversation for r in requests],
                             completions=[[{"role": "assistant", "content": r.response}] for r in requests],
                             completion_ids=[r.token_ids for r in requests])
            values = list(values)
            if len(values) != len(requests):
                raise ValueError(f"returned {len(values)} rewards for {len(requests)} completions")
        except Exception as exc:  # the user's function failed on this batch: every verdict FAILED, named
            error = f"{type(exc).__name__}: {exc}"
            return [(None, error, 0.0)] * len(requests)
        latency = (time.perf_counter() - start) / max(1, len(requests))
        out = []
        for v in values:
            if v is None:
                out.append((None, "the reward function returned None", latency))
            elif not math.isfinite(float(v)):
                out.append((None, f"function returned a non-finite score {v}", latency))
            else:
                out.append((float(v), None, latency))
        return out

    def score(self, requests: list[PointRequest], on_done: Progress = None) -> list[dict]:
        rows = []
        batch = self._score_batch(requests) if self.batched and requests else None
        for k, r in enumerate(requests):
            value, error, latency = batch[k] if batch else self._score(r.conversation, r.response)
            verdict = FAILED if error else "SCORE"
            rows.append(judgment_row(self.id, self.template_hash, r.pair_id, "point", verdict, score=value,
                                     error=error, raw=json.dumps({"score": value}), latency_s=latency))
            if on_done:
                on_done(1)
        return rows
