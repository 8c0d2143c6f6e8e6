"""Reading a job's input rows: `data.limit` counted over rows read (usable or not), and prompts that will
be sampled checked against the policy engine's context with room for `max_tokens`."""
from __future__ import annotations

import json
from typing import Iterator

from synthpref.config import ConfigError, DataConfig, PolicyConfig
from synthpref.data.readers import PromptRow, Quarantined, read_prompts
from synthpref.models.loading import chat_prompt_ids, tokenizer_or_error


def read_rows(data: DataConfig) -> Iterator[PromptRow | Quarantined]:
    """The rows of `data`, at most `data.limit` of them."""
    for n_read, item in enumerate(read_prompts(data.path, data.format, data.split, data.prompts_only)):
        if data.limit is not None and n_read >= data.limit:
            return
        yield item


def load_prompts(data: DataConfig, policy: PolicyConfig) -> tuple[list[PromptRow], list[Quarantined], int]:
    """Usable rows, quarantined rows, and the number of rows read. Prompts that will be sampled are
    checked against the policy engine's context with room for `max_tokens`."""
    rows, quarantined, n_read = [], [], 0
    for item in read_rows(data):
        n_read += 1
        (rows if isinstance(item, PromptRow) else quarantined).append(item)
    needs_sampling = [r for r in rows if r.completions is None]
    if needs_sampling and not policy.model:
        raise ConfigError(f"policy.model: {len(needs_sampling)} prompts have no completions, so a policy "
                          f"model is needed to sample them")
    if needs_sampling:
        too_long = _over_long(needs_sampling, policy)
        quarantined.extend(too_long.values())
        rows = [r for r in rows if r.prompt_id not in too_long]
    return rows, quarantined, n_read


def _over_long(rows: list[PromptRow], policy: PolicyConfig) -> dict[str, Quarantined]:
    tok = tokenizer_or_error(policy.model, "policy.model")
    limit = policy.engine.max_model_len - policy.max_tokens
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
                f"{n} prompt tokens > max_model_len {policy.engine.max_model_len} - max_tokens "
                f"{policy.max_tokens}", json.dumps({"messages": r.messages}, ensure_ascii=False)[:2000])
    return bad


def prompts_for_round(prompts: list, round_: int, per_round: int) -> list:
    """Round r (1-based: an rft iteration, a ppo step) takes the next `per_round` prompts, cycling through
    the set, never one prompt twice in a round."""
    start = (round_ - 1) * per_round
    return [prompts[(start + j) % len(prompts)] for j in range(min(per_round, len(prompts)))]


def round_seed(seed: int, job: str, round_: int) -> int:
    """The seed of one round of a job (its sampling seeds and batch order derive from it)."""
    from synthpref.data.schema import content_id
    return int(content_id(seed, job, round_), 16) % (2 ** 31)
