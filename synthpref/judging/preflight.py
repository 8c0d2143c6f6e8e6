"""Checks a jury's config before any engine starts: every function judge imports, every template
resolves, every model's tokenizer loads, every API key is set and every endpoint answers."""
from __future__ import annotations

from synthpref.config import ConfigError, JudgingConfig
from synthpref.models.loading import tokenizer_or_error

TEMPLATE_JUDGES = ("vllm", "http")


def preflight(judging: JudgingConfig) -> None:
    """Fail before any engine starts: every function judge imports, every template resolves, every model's
    tokenizer loads, every API key is set and every endpoint answers."""
    from synthpref.judging.backends import load_function
    from synthpref.judging.http_client import check_reachable, read_api_key
    from synthpref.judging.templates import get_template

    if judging.constitution:
        from synthpref.judging.constitution import load_constitution
        try:
            load_constitution(judging.constitution)
        except ConfigError as exc:
            raise ConfigError(f"judging.constitution: {exc}") from exc
    for i, judge in enumerate(judging.judges):
        key = f"judging.judges.{i}"
        tpl = None
        try:
            if judge.type == "function":
                load_function(judge.function)
            elif judge.type in TEMPLATE_JUDGES:
                tpl = get_template(judge.template, judging.mode, judge.verdict, bool(judging.constitution))
        except (ConfigError, ValueError, TypeError, FileNotFoundError) as exc:
            field = "function" if judge.type == "function" else "template"
            raise ConfigError(f"{key}.{field}: {exc}") from exc
        if tpl and judge.rationale and judge.verdict == "logprob" and judging.mode == "pairwise" \
                and "{reasoning}" not in tpl.user:
            raise ConfigError(f"{key}.rationale: chain of thought before a logprob verdict needs a template with a "
                              f"{{reasoning}} placeholder ({tpl.name} has none; the built-in "
                              f"constitutional-pairwise-logprob has one)")
    for i, judge in enumerate(judging.judges):
        key = f"judging.judges.{i}"
        if judge.type in ("vllm", "reward_model"):
            tokenizer_or_error(judge.model, f"{key}.model")
        if judge.type == "http":
            read_api_key(judge.endpoint.api_key_env, f"{key}.endpoint.api_key_env")
            check_reachable(judge.endpoint.base_url, f"{key}.endpoint.base_url")
