"""The label job's inputs and outputs: prompt loading with length checks, shard plans, the config
fingerprint, preference rows, quarantine and the summary."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from synthpref.config import ConfigError, LabelConfig
from synthpref.data.readers import PromptRow, Quarantined, read_prompts
from synthpref.data.schema import SCHEMA_VERSION, content_id
from synthpref.data.shards import ShardStore, atomic_write_bytes
from synthpref.judging.verdicts import FIRST
from synthpref.models.loading import chat_prompt_ids, tokenizer_or_error
from synthpref.monitor import bias

# Settings that change where or how fast work runs, not what it produces: left out of the fingerprint.
_PLACEMENT_KEYS = {"num_cpus", "num_gpus", "cpu_cores", "kv_cache_gib", "gpu_memory_utilization",
                   "tensor_parallel_size", "chunk_size", "pool", "base_url", "api_key_env", "timeout_s",
                   "max_retries", "backoff_s", "backoff_max_s", "concurrency", "usd_per_1m_prompt_tokens",
                   "usd_per_1m_completion_tokens"}
TEMPLATE_JUDGES = ("vllm", "http")


@dataclass
class Shard:
    index: int
    shard_id: str
    rows: list[PromptRow]


def fingerprint(cfg: LabelConfig) -> str:
    """A hash of every setting that changes the output; a resumed job must match it."""
    def strip(node):
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k not in _PLACEMENT_KEYS}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node
    from synthpref.judging.templates import get_template

    tree = dataclasses.asdict(cfg)
    for key in ("output_dir", "progress", "ray"):
        tree.pop(key)
    tree["schema_version"] = SCHEMA_VERSION
    # a template given as a YAML file may change under the same name: its content hash counts
    tree["template_hashes"] = [get_template(j.template, cfg.judging.mode, j.verdict).hash
                               for j in cfg.judging.judges if j.type in TEMPLATE_JUDGES]
    return content_id(strip(tree))


def preflight(cfg: LabelConfig) -> None:
    """Fail before any engine starts: every function judge imports, every template resolves, every model's
    tokenizer loads, every API key is set and every endpoint answers."""
    from synthpref.judging.backends import load_function
    from synthpref.judging.http_client import check_reachable, read_api_key
    from synthpref.judging.templates import get_template

    for i, judge in enumerate(cfg.judging.judges):
        key = f"judging.judges.{i}"
        try:
            if judge.type == "function":
                load_function(judge.function)
            elif judge.type in TEMPLATE_JUDGES:
                get_template(judge.template, cfg.judging.mode, judge.verdict)
        except (ConfigError, ValueError, TypeError, FileNotFoundError) as exc:
            field = "function" if judge.type == "function" else "template"
            raise ConfigError(f"{key}.{field}: {exc}") from exc
    for i, judge in enumerate(cfg.judging.judges):
        key = f"judging.judges.{i}"
        if judge.type in ("vllm", "reward_model"):
            tokenizer_or_error(judge.model, f"{key}.model")
        if judge.type == "http":
            read_api_key(judge.endpoint.api_key_env, f"{key}.endpoint.api_key_env")
            check_reachable(judge.endpoint.base_url, f"{key}.endpoint.base_url")


def load_prompts(cfg: LabelConfig) -> tuple[list[PromptRow], list[Quarantined], int]:
    """Usable rows, quarantined rows, and the number of rows read. Prompts that will be sampled are
    checked against the policy engine's context with room for `max_tokens`."""
    rows, quarantined, n_read = [], [], 0
    for item in read_prompts(cfg.data.path, cfg.data.format, cfg.data.split):
        if cfg.data.limit is not None and n_read >= cfg.data.limit:
            break
        n_read += 1
        (rows if isinstance(item, PromptRow) else quarantined).append(item)
    needs_sampling = [r for r in rows if r.completions is None]
    if needs_sampling and not cfg.policy.model:
        raise ConfigError(f"policy.model: {len(needs_sampling)} prompts have no completions, so a policy "
                          f"model is needed to sample them")
    if needs_sampling:
        too_long = _over_long(needs_sampling, cfg)
        quarantined.extend(too_long.values())
        rows = [r for r in rows if r.prompt_id not in too_long]
    return rows, quarantined, n_read


def _over_long(rows: list[PromptRow], cfg: LabelConfig) -> dict[str, Quarantined]:
    tok = tokenizer_or_error(cfg.policy.model, "policy.model")
    limit = cfg.policy.engine.max_model_len - cfg.policy.max_tokens
    bad = {}
    for r in rows:
        try:
            n = len(chat_prompt_ids(tok, r.messages))
        except Exception as exc:  # the model's chat template rejects this conversation
            bad[r.prompt_id] = Quarantined(r.source, "wrong_type", f"chat template failed: {exc}",
                                           json.dumps({"messages": r.messages})[:2000])
            continue
        if n > limit:
            bad[r.prompt_id] = Quarantined(
                r.source, "prompt_too_long",
                f"{n} prompt tokens > max_model_len {cfg.policy.engine.max_model_len} - max_tokens "
                f"{cfg.policy.max_tokens}", json.dumps({"messages": r.messages}, ensure_ascii=False)[:2000])
    return bad


def plan_shards(rows: list[PromptRow], shard_size: int) -> list[Shard]:
    shards = []
    for index, start in enumerate(range(0, len(rows), shard_size)):
        chunk = rows[start:start + shard_size]
        shards.append(Shard(index, content_id(index, [r.prompt_id for r in chunk]), chunk))
    return shards


def prompt_row(row: PromptRow) -> dict:
    return {"prompt_id": row.prompt_id, "messages": row.messages, "source": row.source,
            "meta": json.dumps(row.meta, ensure_ascii=False, default=str)}


def preference_row(cfg: LabelConfig, pair, decision, votes, conversation: list[dict], judges: list[dict],
                   chosen: dict | None = None, rejected: dict | None = None) -> dict:
    """A TRL-ready row: conversational prompt/chosen/rejected plus scores and provenance."""
    if pair is not None:                                  # pairwise: a Decision over a Pair
        a_wins = decision.winner == FIRST
        chosen, rejected = (pair.a, pair.b) if a_wins else (pair.b, pair.a)
        score_chosen = decision.p_a if a_wins else 1 - decision.p_a
        score_rejected = 1 - score_chosen
        pair_id, confidence, consistent = pair.pair_id, decision.confidence, decision.consistent
        vote_of = {v.judge_id: v.winner for v in votes}
    else:                                                 # pointwise: a PointChoice
        score_chosen, score_rejected = decision.score_best, decision.score_worst
        pair_id = content_id(chosen["prompt_id"], chosen["sample_id"], rejected["sample_id"])
        confidence, consistent, vote_of = decision.agreement, None, None
    provenance = {"policy": chosen["policy"], "policy_dtype": chosen.get("dtype"), "sample_ids": [chosen["sample_id"], rejected["sample_id"]],
                  "seeds": [chosen["seed"], rejected["seed"]], "judges": judges, "mode": cfg.judging.mode,
                  "both_orders": cfg.judging.both_orders, "order_rule": cfg.judging.order_rule,
                  "jury_rule": cfg.judging.jury_rule, "votes": vote_of}
    return {"prompt_id": chosen["prompt_id"], "pair_id": pair_id, "prompt": conversation,
            "chosen": [{"role": "assistant", "content": chosen["text"]}],
            "rejected": [{"role": "assistant", "content": rejected["text"]}],
            "score_chosen": score_chosen, "score_rejected": score_rejected, "confidence": confidence,
            "n_votes": decision.n_votes, "agreement": decision.agreement, "position_consistent": consistent,
            "length_delta": len(chosen["text"]) - len(rejected["text"]),
            "provenance": json.dumps(provenance, ensure_ascii=False)}


def _sampling_errors(store: ShardStore, shards: list[Shard]) -> list[dict]:
    return [e for s in shards if s.shard_id in store.manifest["shards"] for e in store.stats(s.shard_id)["sampling_errors"]]


def write_quarantine(path: Path, quarantined: list[Quarantined], store: ShardStore, shards: list[Shard]) -> None:
    """Every unusable row with its reason: bad input, and completions the engine could not produce."""
    lines = [json.dumps(q.to_json(), ensure_ascii=False) for q in quarantined]
    lines += [json.dumps({"source": e["source"], "reason": "sampling_failed", "prompt_id": e["prompt_id"],
                          "detail": f"completion {e['index']}: {e['error']}", "raw": ""}) for e in _sampling_errors(store, shards)]
    atomic_write_bytes(path, ("\n".join(lines) + ("\n" if lines else "")).encode())


_SUMMED = ("prompts", "samples", "unpaired_prompts", "pairs", "identical_pairs", "preferences", "ties", "failed_pairs", "judgments",
           "failed_verdicts", "consistent_pairs", "checked_pairs", "prompt_tokens", "completion_tokens", "chosen_longer")


def summarise(cfg: LabelConfig, store: ShardStore, shards: list[Shard], quarantined: list[Quarantined],
              n_read: int, skipped: int) -> dict:
    """Counts summed over every shard of the plan (run now or earlier), and per-judge bias figures."""
    totals = {k: 0 for k in _SUMMED}
    judges: dict[str, dict] = {}
    agreement: dict[str, tuple] = {}
    for s in shards:
        stats = store.stats(s.shard_id)
        for k in _SUMMED:
            totals[k] += stats[k]
        for jid, js in stats["judges"].items():
            judges[jid] = bias.merge_judge_stats(judges.get(jid, bias.new_judge_stats()), js)
        for key, (n, same) in stats["judge_agreement"].items():
            agreement[key] = (agreement.get(key, (0, 0))[0] + n, agreement.get(key, (0, 0))[1] + same)
    reasons: dict[str, int] = {}
    for q in quarantined:
        reasons[q.reason] = reasons.get(q.reason, 0) + 1
    n_sampling_errors = len(_sampling_errors(store, shards))
    if n_sampling_errors:
        reasons["sampling_failed"] = n_sampling_errors
    counts = {"rows_read": n_read, "prompts": totals["prompts"], "quarantined_rows": len(quarantined),
              "quarantined": len(quarantined) + n_sampling_errors, "samples": totals["samples"],
              "sampling_errors": n_sampling_errors, "unpaired_prompts": totals["unpaired_prompts"], "pairs": totals["pairs"],
              "identical_pairs": totals["identical_pairs"], "preferences": totals["preferences"],
              "ties": totals["ties"], "failed_pairs": totals["failed_pairs"], "judgments": totals["judgments"],
              "failed_verdicts": totals["failed_verdicts"]}
    checked = totals["checked_pairs"]
    return {
        "dtypes": merged_dtypes(store.stats(s.shard_id).get("dtypes", {}) for s in shards),
        "output_dir": str(Path(cfg.output_dir).resolve()),
        "counts": counts,
        "quarantined_by_reason": reasons,
        "position_consistency": totals["consistent_pairs"] / checked if checked else None,
        "judges": {jid: bias.judge_report(js) for jid, js in judges.items()},
        "judge_agreement": bias.agreement_report(agreement),
        "chosen_longer_rate": totals["chosen_longer"] / totals["preferences"] if totals["preferences"] else None,
        "tokens": {"prompt": totals["prompt_tokens"], "completion": totals["completion_tokens"],
                   "per_label": ((totals["prompt_tokens"] + totals["completion_tokens"]) / totals["preferences"]
                                 if totals["preferences"] else None)},
        "cost": cost_report(cfg, judges, totals["preferences"]),
        "shards": {"total": len(shards), "skipped_as_done": skipped, "run": len(shards) - skipped},
        "outputs": {name: str(Path(cfg.output_dir) / name) for name in
                    ("preferences", "judgments", "samples", "prompts", "quarantine.jsonl", "metrics.jsonl", "summary.json")},
    }


def merged_dtypes(per_shard) -> dict[str, str]:
    """{component: dtype} over the shards' records ("a, b" where shards ran in different dtypes)."""
    seen: dict[str, set] = {}
    for dtypes in per_shard:
        for name, dtype in dtypes.items():
            seen.setdefault(name, set()).update(dtype.split(", "))
    return {name: ", ".join(sorted(values)) for name, values in seen.items()}


def cost_report(cfg: LabelConfig, judges: dict[str, dict], labels: int) -> dict | None:
    """USD spent on judge tokens, in all and per preference label, for judges with prices in the config
    (None when no judge has one). A human preference label costs about $0.50-$5."""
    by_judge = {}
    for jc in cfg.judging.judges:
        if jc.usd_per_1m_prompt_tokens is None and jc.usd_per_1m_completion_tokens is None:
            continue
        stats = judges.get(jc.id, {})
        by_judge[jc.id] = (stats.get("prompt_tokens", 0) * (jc.usd_per_1m_prompt_tokens or 0)
                           + stats.get("completion_tokens", 0) * (jc.usd_per_1m_completion_tokens or 0)) / 1e6
    if not by_judge:
        return None
    total = sum(by_judge.values())
    return {"usd_total": total, "usd_per_label": total / labels if labels else None, "by_judge": by_judge}
