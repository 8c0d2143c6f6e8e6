"""Typed job configs: YAML files plus `key.sub=value` overrides.

Every config is a tree of dataclasses. `load_config` reads YAML, applies command-line overrides and
validates each value against its annotation; an unknown key or a bad value raises `ConfigError`
naming the dotted key (e.g. `judging.judges.0.verdict`).
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml

from synthpref.errors import UserError


class ConfigError(UserError, ValueError):
    """A config key is unknown or its value is invalid; the message names the key."""


@dataclass
class EngineConfig:
    """How one vLLM engine is built and placed (one engine per Ray actor)."""
    max_model_len: int = field(default=1024, metadata={"help": "context window of the engine (<= the model's max_position_embeddings)"})
    dtype: str = field(default="auto", metadata={"help": 'auto | float32 | bfloat16 | float16'})
    tensor_parallel_size: int = field(default=1, metadata={"help": '>1 only on GPU nodes'})
    num_gpus: float = field(default=0, metadata={"help": 'GPUs per engine actor (0 = CPU engine)'})
    num_cpus: float = field(default=1, metadata={"help": 'Ray CPUs per engine actor'})
    gpu_memory_utilization: float = field(default=0.9, metadata={"help": 'GPU engines: share of GPU memory vLLM may take'})
    kv_cache_gib: float = field(default=1.0, metadata={"help": 'CPU engines: VLLM_CPU_KVCACHE_SPACE'})
    cpu_cores: str = field(default="auto", metadata={"help": 'CPU engines: "auto" hands out distinct cores, or e.g. "0-1"'})
    enable_prefix_caching: bool = field(default=True, metadata={"help": 'reuse KV cache across prompts that share a prefix (both orders of a pair)'})
    chunked_prefill: Optional[bool] = field(default=None, metadata={"help": "null: off on CPU (vLLM 0.32's CPU engine crashes on seeded sampling when a prefix-cache hit meets chunked prefill), vLLM's default on GPU"})
    in_process: Optional[bool] = field(default=None, metadata={"help": "run vLLM's engine core inside the actor process: null = yes on CPU (starts ~30 s sooner on 2 cores, throughput as good or better, no child processes to orphan), no on GPU"})
    enforce_eager: bool = field(default=True, metadata={"help": 'skip CUDA graphs / torch.compile (needed on CPU)'})
    seed: int = field(default=0, metadata={"help": "engine's base random seed"})
    weight_transfer: Literal["reload", "nccl"] = field(default="reload", metadata={"help": "how a trainer's new weights reach this engine (rft): reload = through Ray's object store and vLLM's in-place reload (any device, any node); nccl = vLLM's NCCL weight-transfer engine, trainer rank 0 broadcasting to GPU engines (fixed replicas)"})


@dataclass
class PoolConfig:
    """How many replicas of a worker actor run, and how work is retried when one fails."""
    replicas: int = field(default=1, metadata={"help": 'replicas started with the pool (the autoscaling minimum)'})
    max_replicas: Optional[int] = field(default=None, metadata={"help": 'autoscale up to this many replicas when work queues up (null: fixed at replicas)'})
    scale_up_queue: int = field(default=2, metadata={"help": 'chunks waiting per live replica before the pool starts another'})
    scale_down_idle_s: float = field(default=120.0, metadata={"help": 'a replica above the minimum that is idle this long is stopped'})
    max_inflight: int = field(default=2, metadata={"help": 'chunks in flight per replica (backpressure: the rest wait in the driver)'})
    max_attempts: int = field(default=3, metadata={"help": 'tries of one chunk (on any live replica) before its requests become errors'})
    max_replacements: int = field(default=8, metadata={"help": 'dead replicas the pool replaces before it gives up on the job'})
    start_timeout_s: float = field(default=600.0, metadata={"help": 'a replica not started within this many seconds fails the pool, naming the missing resource'})


@dataclass
class EndpointConfig:
    """An OpenAI-compatible chat-completions server (vLLM serve, OpenAI, a gateway)."""
    base_url: str = field(default="", metadata={"help": 'e.g. http://127.0.0.1:8000/v1'})
    model: str = field(default="", metadata={"help": "the model name the server expects (default: the judge's model)"})
    api_key_env: str = field(default="", metadata={"help": 'name of the environment variable holding the API key ("" = no key); the key itself is never written anywhere'})
    timeout_s: float = field(default=60.0, metadata={"help": 'per-request timeout'})
    max_retries: int = field(default=5, metadata={"help": 'retries of one request on 429, 5xx, timeouts and unreadable answers'})
    backoff_s: float = field(default=0.5, metadata={"help": 'first retry delay; doubles each retry, with full jitter'})
    backoff_max_s: float = field(default=20.0, metadata={"help": 'cap on one retry delay'})
    concurrency: int = field(default=16, metadata={"help": 'requests in flight per replica'})
    top_logprobs: int = field(default=20, metadata={"help": 'logprob verdicts: top_logprobs asked of the server'})


@dataclass
class RayConfig:
    address: Optional[str] = field(default=None, metadata={"help": 'None starts a local Ray; "auto" or "ray://host:port" joins one'})
    num_cpus: Optional[int] = field(default=None, metadata={"help": 'logical CPUs of a local Ray (default: enough for all actors)'})
    namespace: str = field(default="synthpref", metadata={"help": "Ray namespace of the job's actors"})


@dataclass
class DataConfig:
    path: str = field(default="", metadata={"help": 'prompt source: a .jsonl file, a Parquet file or folder, or a Hugging Face dataset'})
    format: Literal["auto", "jsonl", "parquet", "hf", "hh-rlhf"] = field(default="auto", metadata={"help": 'auto guesses from the path; hh-rlhf rows (chosen/rejected transcripts) are recognised in any format'})
    split: str = field(default="train", metadata={"help": 'for Hugging Face datasets'})
    limit: Optional[int] = field(default=None, metadata={"help": 'read at most this many rows'})
    shard_size: int = field(default=16, metadata={"help": 'prompts per shard (the unit of resume)'})


@dataclass
class PolicyConfig:
    model: str = field(default="", metadata={"help": 'Hugging Face name or local path'})
    samples_per_prompt: int = field(default=2, metadata={"help": 'completions sampled per prompt (k >= 2)'})
    max_tokens: int = field(default=64, metadata={"help": 'new tokens per completion'})
    temperature: float = field(default=1.0, metadata={"help": 'sampling temperature'})
    top_p: float = field(default=1.0, metadata={"help": 'nucleus sampling threshold'})
    chunk_size: int = field(default=256, metadata={"help": 'most requests per dispatch to one engine (one vLLM batch); small shards are split evenly over the replicas'})
    engine: EngineConfig = field(default_factory=EngineConfig)
    pool: PoolConfig = field(default_factory=PoolConfig)


@dataclass
class JudgeConfig:
    id: str = field(default="", metadata={"help": 'unique name of the judge (appears in judgments and provenance)'})
    type: Literal["vllm", "http", "reward_model", "function"] = field(default="vllm", metadata={"help": 'vllm: a model on vLLM engine actors; http: an OpenAI-compatible server; reward_model: a sequence-classification model scoring each response; function: a Python scorer'})
    model: str = field(default="", metadata={"help": "vllm and reward_model judges: HF name or local path; http judges: the model's tokenizer (optional) or served name"})
    function: str = field(default="", metadata={"help": 'function judges: "module:function"'})
    verdict: Literal["logprob", "text"] = field(default="logprob", metadata={"help": 'logprob: P(first) from one next token; text: a generated, parsed verdict'})
    template: str = field(default="", metadata={"help": 'template name; "" picks the default for mode and verdict'})
    rationale: bool = field(default=False, metadata={"help": 'text verdicts: ask for reasoning before the verdict'})
    max_tokens: int = field(default=256, metadata={"help": 'text verdicts'})
    weight: float = field(default=1.0, metadata={"help": 'jury_rule=weighted'})
    chunk_size: int = field(default=256, metadata={"help": 'most judge requests per dispatch to one replica (one vLLM batch; reward models: the batch size); small shards are split evenly over the replicas'})
    usd_per_1m_prompt_tokens: Optional[float] = field(default=None, metadata={"help": 'price of a million prompt tokens, for cost per label in the summary'})
    usd_per_1m_completion_tokens: Optional[float] = field(default=None, metadata={"help": 'price of a million completion tokens'})
    engine: EngineConfig = field(default_factory=EngineConfig)
    pool: PoolConfig = field(default_factory=PoolConfig)
    endpoint: EndpointConfig = field(default_factory=EndpointConfig)


@dataclass
class JudgingConfig:
    mode: Literal["pairwise", "pointwise"] = field(default="pairwise", metadata={"help": 'pairwise: judge pairs; pointwise: score each completion, best vs worst'})
    both_orders: bool = field(default=True, metadata={"help": 'judge each pair as (a, b) and (b, a) to cancel position bias'})
    order_rule: Literal["mean_prob", "consistent"] = field(default="mean_prob", metadata={"help": 'mean_prob: average P(a better) over orders (RLAIF); consistent: win in both orders or tie (MT-Bench)'})
    jury_rule: Literal["majority", "mean_prob", "weighted"] = field(default="majority", metadata={"help": "how judges' votes combine: majority vote, mean probability, or weighted vote"})
    tie_margin: float = field(default=0.0, metadata={"help": '|P(first) - 0.5| <= margin counts as a tie'})
    max_pairs_per_prompt: Optional[int] = field(default=None, metadata={"help": 'cap on pairs per prompt (default: all pairs of the k completions)'})
    judges: list[JudgeConfig] = field(default_factory=list, metadata={"help": 'the jury: a list of judges'})


@dataclass
class LabelConfig:
    output_dir: str = field(default="runs/label", metadata={"help": 'where preferences/, judgments/, samples/ and the reports go'})
    seed: int = field(default=0, metadata={"help": "base seed: every completion's seed derives from it and the prompt"})
    progress: bool = field(default=True, metadata={"help": 'show progress bars'})
    ray: RayConfig = field(default_factory=RayConfig)
    data: DataConfig = field(default_factory=DataConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    judging: JudgingConfig = field(default_factory=JudgingConfig)


@dataclass
class EvalJudgeConfig:
    """`synthpref eval-judge`: a judge's or a jury's agreement with human preference labels."""
    output: str = field(default="", metadata={"help": 'write the report JSON here ("" = print only)'})
    progress: bool = field(default=True, metadata={"help": 'show progress bars'})
    chunk_pairs: int = field(default=64, metadata={"help": 'pairs judged per round (progress and memory)'})
    ray: RayConfig = field(default_factory=RayConfig)
    data: DataConfig = field(default_factory=DataConfig)
    judging: JudgingConfig = field(default_factory=JudgingConfig)


def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return "|".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args).replace("NoneType", "null")
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check (and gently convert) `value` against annotation `tp`; raise ConfigError naming `key`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {list(args)}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__}")
        return [_coerce(v, args[0], f"{key}.{i}") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        return from_dict(tp, value, prefix=key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):           # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported type {_type_name(tp)}")


def from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    """Build dataclass `cls` from a mapping; unknown keys and bad values raise ConfigError."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise ConfigError(f"{dotted}: unknown key (known: {', '.join(sorted(names))})")
        kwargs[key] = _coerce(value, hints[key], dotted)
    return cls(**kwargs)


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.0.c=value` -> (["a", "b", "0", "c"], value parsed as a YAML scalar)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key.sub=value")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"{key}: cannot parse value {raw!r}: {exc}") from exc
    return key.split("."), value


def apply_override(tree: dict, path: list[str], value: Any) -> None:
    """Set `value` at `path` inside a plain dict/list tree, creating mappings as needed."""
    node: Any = tree
    for i, part in enumerate(path[:-1]):
        dotted = ".".join(path[: i + 1])
        if isinstance(node, list):
            node = node[_list_index(node, part, dotted)]
        else:
            node = node.setdefault(part, {})
            if not isinstance(node, (dict, list)):
                raise ConfigError(f"{dotted}: is a value, cannot set {'.'.join(path)}")
    last = path[-1]
    if isinstance(node, list):
        node[_list_index(node, last, ".".join(path))] = value
    else:
        node[last] = value


def _list_index(node: list, part: str, dotted: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"{dotted}: no list item {part!r} (the list has {len(node)})")
    return int(part)


def load_config(cls: type, path: str | Path | None, overrides: list[str] = ()) -> Any:
    """Read YAML at `path` (optional), apply overrides, validate into `cls`."""
    tree: dict = {}
    if path:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"config file {p} does not exist")
        loaded = yaml.safe_load(p.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {p}: top level must be a mapping")
        tree = loaded
    for text in overrides:
        key_path, value = parse_override(text)
        apply_override(tree, key_path, value)
    return from_dict(cls, tree)


def validate_judging(judging: JudgingConfig) -> None:
    """Checks of the jury that a type annotation cannot express."""
    if not judging.judges:
        raise ConfigError("judging.judges: at least one judge is required")
    seen = set()
    for i, judge in enumerate(judging.judges):
        key = f"judging.judges.{i}"
        if not judge.id:
            raise ConfigError(f"{key}.id: every judge needs an id")
        if judge.id in seen:
            raise ConfigError(f"{key}.id: duplicate judge id {judge.id!r}")
        seen.add(judge.id)
        if judge.type in ("vllm", "reward_model") and not judge.model:
            raise ConfigError(f"{key}.model: a {judge.type} judge needs a model")
        if judge.type == "http":
            validate_endpoint(judge, key)
        if judge.type == "reward_model" and judge.verdict != "logprob":
            raise ConfigError(f"{key}.verdict: a reward_model judge gives scores; leave verdict at its default")
        validate_pool(judge.pool, f"{key}.pool")
        for name in ("usd_per_1m_prompt_tokens", "usd_per_1m_completion_tokens"):
            if (getattr(judge, name) or 0) < 0:
                raise ConfigError(f"{key}.{name}: must be >= 0")
        if judge.type == "function" and ":" not in judge.function:
            raise ConfigError(f"{key}.function: expected 'module:function', got {judge.function!r}")
        if judge.weight < 0:
            raise ConfigError(f"{key}.weight: must be >= 0")
        if judge.chunk_size < 1:
            raise ConfigError(f"{key}.chunk_size: must be >= 1")
        if judge.max_tokens < 1:
            raise ConfigError(f"{key}.max_tokens: must be >= 1")
    if judging.jury_rule == "weighted" and sum(j.weight for j in judging.judges) <= 0:
        raise ConfigError("judging.judges: jury_rule=weighted needs at least one judge with weight > 0")
    if judging.max_pairs_per_prompt is not None and judging.max_pairs_per_prompt < 1:
        raise ConfigError("judging.max_pairs_per_prompt: must be >= 1 (or null for all pairs)")
    if not 0 <= judging.tie_margin < 0.5:
        raise ConfigError("judging.tie_margin: must be in [0, 0.5)")


def validate_eval_config(cfg: EvalJudgeConfig) -> EvalJudgeConfig:
    validate_judging(cfg.judging)
    if not cfg.data.path:
        raise ConfigError("data.path: no human-labelled pairs given")
    if cfg.chunk_pairs < 1:
        raise ConfigError("chunk_pairs: must be >= 1")
    return cfg


def validate_label_config(cfg: LabelConfig) -> LabelConfig:
    """Cross-field checks that a type annotation cannot express."""
    validate_judging(cfg.judging)
    validate_pool(cfg.policy.pool, "policy.pool")
    if cfg.policy.chunk_size < 1:
        raise ConfigError("policy.chunk_size: must be >= 1")
    if not 1 <= cfg.policy.max_tokens < cfg.policy.engine.max_model_len:
        raise ConfigError(f"policy.max_tokens: must be >= 1 and below policy.engine.max_model_len "
                          f"({cfg.policy.engine.max_model_len}) to leave room for the prompt")
    if cfg.policy.samples_per_prompt < 2:
        raise ConfigError("policy.samples_per_prompt: need at least 2 completions to make a pair")
    if cfg.data.shard_size < 1:
        raise ConfigError("data.shard_size: must be >= 1")
    if not cfg.data.path:
        raise ConfigError("data.path: no prompt source given")
    return cfg


def validate_pool(pool: PoolConfig, key: str) -> None:
    if pool.replicas < 1:
        raise ConfigError(f"{key}.replicas: must be >= 1")
    if pool.max_replicas is not None and pool.max_replicas < pool.replicas:
        raise ConfigError(f"{key}.max_replicas: must be >= replicas ({pool.replicas}) or null")
    for name in ("scale_up_queue", "max_inflight", "max_attempts"):
        if getattr(pool, name) < 1:
            raise ConfigError(f"{key}.{name}: must be >= 1")
    if pool.max_replacements < 0:
        raise ConfigError(f"{key}.max_replacements: must be >= 0")
    if pool.start_timeout_s <= 0:
        raise ConfigError(f"{key}.start_timeout_s: must be > 0")


def validate_endpoint(judge: JudgeConfig, key: str) -> None:
    ep = judge.endpoint
    if not ep.base_url.startswith(("http://", "https://")):
        raise ConfigError(f"{key}.endpoint.base_url: expected http(s)://host[:port]/v1, got {ep.base_url!r}")
    if not (ep.model or judge.model):
        raise ConfigError(f"{key}.endpoint.model: an http judge needs the served model name (or judges.N.model)")
    if ep.timeout_s <= 0 or ep.backoff_s < 0 or ep.backoff_max_s < ep.backoff_s:
        raise ConfigError(f"{key}.endpoint: need timeout_s > 0 and 0 <= backoff_s <= backoff_max_s")
    if ep.max_retries < 0 or ep.concurrency < 1 or not 1 <= ep.top_logprobs <= 20:
        raise ConfigError(f"{key}.endpoint: need max_retries >= 0, concurrency >= 1, 1 <= top_logprobs <= 20")
    if ep.api_key_env and not ep.api_key_env.replace("_", "").isalnum():
        raise ConfigError(f"{key}.endpoint.api_key_env: expected an environment variable name, got a value that "
                          "looks like something else (put the key in the environment, not in the config)")


def describe_keys(cls: type, prefix: str = "") -> list[str]:
    """One line per config key: `dotted.key (type, default): help`, for --help."""
    lines = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            lines.extend(describe_keys(tp, key + "."))
            continue
        if typing.get_origin(tp) is list and dataclasses.is_dataclass(typing.get_args(tp)[0]):
            lines.append(f"  {key}: {f.metadata.get('help', '')}; each item has:")
            lines.extend(describe_keys(typing.get_args(tp)[0], key + ".N."))
            continue
        default = f.default if f.default is not dataclasses.MISSING else "[]"
        lines.append(f"  {key} ({_type_name(tp)}, default {default!r}): {f.metadata.get('help', '')}")
    return lines
