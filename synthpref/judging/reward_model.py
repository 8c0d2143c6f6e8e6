"""Reward-model judge: a sequence-classification model gives each (conversation, response) one scalar.

The Bradley-Terry reading (Ouyang et al., 2022, "Training language models to follow instructions with
human feedback"): P(a better than b) = sigmoid(r(a) - r(b)). Scores are computed in padded batches in
`RewardModelActor` replicas (one per Ray actor, pooled like engines); each distinct response of a pair is
scored once, and both orders of a pair read the same two scores.
"""
from __future__ import annotations

import json
import os
import time

from synthpref.judging.backends import Pending, PairRequest, PointRequest, PooledJudge, judgment_row
from synthpref.judging.verdicts import FAILED, verdict_from_scores
from synthpref.models.loading import conversation_ids
from synthpref.cluster.placement import parse_cores
from synthpref.cluster.pool import Job



class RewardModelActor:
    """One reward model in one Ray actor. `score(requests)`: each request has `messages` ending with the
    assistant's response; returns {"score", "prompt_tokens", ...} or {"error"} per request."""

    def __init__(self, model: str, engine, cores: str | None = None):
        from synthpref.cluster.worker_logs import to_log_file
        to_log_file("reward-model")
        import torch
        from transformers import AutoModelForSequenceClassification

        from synthpref.models.loading import load_tokenizer, pad_id
        from synthpref.models.precision import dtype_name, resolve_dtype

        on_gpu = engine.num_gpus > 0 and torch.cuda.is_available()
        if cores and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, set(parse_cores(cores)))
            torch.set_num_threads(len(parse_cores(cores)))
        dtype = resolve_dtype(engine.dtype, on_gpu)
        self.device = "cuda" if on_gpu else "cpu"
        self.model = AutoModelForSequenceClassification.from_pretrained(
            model, dtype=getattr(torch, dtype)).to(self.device).eval()
        self.tokenizer = load_tokenizer(model)
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = pad_id(self.tokenizer)
        self.max_len = engine.max_model_len
        self.name, self.cores, self.dtype = model, cores, dtype_name(self.model.dtype)
        self.micro_batch = 16

    def info(self) -> dict:
        import ray
        return {"pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id(), "model": self.name,
                "cores": self.cores, "dtype": self.dtype}

    def score(self, requests: list[dict]) -> list[dict]:
        import torch

        results: list[dict] = [{} for _ in requests]
        batch, index = [], []
        for i, req in enumerate(requests):
            try:
                ids = conversation_ids(self.tokenizer, req["messages"])
            except Exception as exc:  # a conversation the chat template cannot render
                results[i] = {"error": f"chat template failed: {exc}"}
                continue
            if len(ids) > self.max_len:
                results[i] = {"error": f"prompt_too_long: {len(ids)} tokens > max_model_len {self.max_len}",
                              "prompt_tokens": len(ids)}
                continue
            batch.append(ids)
            index.append(i)
        # micro-batches of similar lengths: little padding, bounded memory
        by_length = sorted(range(len(batch)), key=lambda k: len(batch[k]))
        for start_k in range(0, len(by_length), self.micro_batch):
            part = by_length[start_k:start_k + self.micro_batch]
            start = time.perf_counter()
            width = max(len(batch[k]) for k in part)
            pad = self.model.config.pad_token_id
            input_ids = torch.tensor([batch[k] + [pad] * (width - len(batch[k])) for k in part], device=self.device)
            mask = torch.tensor([[1] * len(batch[k]) + [0] * (width - len(batch[k])) for k in part], device=self.device)
            with torch.inference_mode():
                logits = self.model(input_ids=input_ids, attention_mask=mask).logits[:, 0].float().tolist()
            latency = (time.perf_counter() - start) / len(part)
            for k, value in zip(part, logits):
                results[index[k]] = {"score": value, "prompt_tokens": len(batch[k]), "completion_tokens": 0,
                                     "latency_s": latency}
        return results

    def shutdown(self) -> bool:
        self.model = None
        return True


class RewardModelJudge(PooledJudge):
    """Pairwise: P(first better) = sigmoid(r(first) - r(second)); pointwise: r(response)."""

    def __init__(self, cfg, pool, tie_margin: float = 0.0):
        self.cfg, self.id, self.pool, self.tie_margin = cfg, cfg.id, pool, tie_margin
        self.template_hash = "rm:" + cfg.model

    def _score_job(self, texts: list[tuple[list[dict], str]], on_done) -> Job:
        requests = [{"messages": [*conv, {"role": "assistant", "content": text}]} for conv, text in texts]
        return Job(self.pool, "score", requests, self.cfg.chunk_size, on_done)

    def start_pairs(self, requests: list[PairRequest], on_done=None) -> Pending:
        keys: dict = {}                      # (conversation, text) -> index of its score request
        for r in requests:
            for text in (r.first, r.second):
                keys.setdefault((id(r.conversation), text), (r.conversation, text))
        order = list(keys)
        job = self._score_job([keys[k] for k in order], None)
        at = {k: i for i, k in enumerate(order)}

        def finish() -> list[dict]:
            rows = []
            for r in requests:
                a, b = (job.results[at[(id(r.conversation), t)]] for t in (r.first, r.second))
                tokens = (a.get("prompt_tokens") or 0) + (b.get("prompt_tokens") or 0)
                common = {"raw": json.dumps({"first": a.get("score"), "second": b.get("score")}),
                          "prompt_tokens": tokens if r.order == "ab" else 0,   # the two texts are scored once
                          "completion_tokens": 0, "latency_s": (a.get("latency_s") or 0) + (b.get("latency_s") or 0)}
                if "error" in a or "error" in b:
                    rows.append(judgment_row(self.id, self.template_hash, r.pair_id, r.order, FAILED,
                                             error=a.get("error") or b.get("error"), **common))
                    continue
                verdict, p_first = verdict_from_scores(a["score"], b["score"], self.tie_margin)
                rows.append(judgment_row(self.id, self.template_hash, r.pair_id, r.order, verdict,
                                         p_first=p_first, **common))
            if on_done:
                on_done(len(requests))
            return rows
        return Pending([job], finish)

    def start_scores(self, requests: list[PointRequest], on_done=None) -> Pending:
        job = self._score_job([(r.conversation, r.response) for r in requests], on_done)

        def finish() -> list[dict]:
            rows = []
            for r, out in zip(requests, job.results):
                common = {"raw": json.dumps({"score": out.get("score")}), "prompt_tokens": out.get("prompt_tokens"),
                          "completion_tokens": 0, "latency_s": out.get("latency_s")}
                if "error" in out:
                    rows.append(judgment_row(self.id, self.template_hash, r.pair_id, "point", FAILED,
                                             error=out["error"], **common))
                else:
                    rows.append(judgment_row(self.id, self.template_hash, r.pair_id, "point", "SCORE",
                                             score=out["score"], **common))
            return rows
        return Pending([job], finish)
