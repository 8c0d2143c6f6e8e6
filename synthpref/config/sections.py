"""The config sections jobs share (ray, data, engine, pool, judges, judging, policy, train), each with
the help text `--help` and docs/config.md print, and a `check(key)` that `loader.validate` runs once
per section wherever it appears."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from synthpref.config.loader import ConfigError


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

    def check(self, key: str) -> None:
        if self.max_model_len < 16:
            raise ConfigError(f"{key}.max_model_len: must be >= 16")
        if self.tensor_parallel_size < 1 or self.num_cpus < 0 or self.num_gpus < 0:
            raise ConfigError(f"{key}: need tensor_parallel_size >= 1, num_cpus >= 0 and num_gpus >= 0")


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

    def check(self, key: str) -> None:
        if self.replicas < 1:
            raise ConfigError(f"{key}.replicas: must be >= 1")
        if self.max_replicas is not None and self.max_replicas < self.replicas:
            raise ConfigError(f"{key}.max_replicas: must be >= replicas ({self.replicas}) or null")
        for name in ("scale_up_queue", "max_inflight", "max_attempts"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{key}.{name}: must be >= 1")
        if self.max_replacements < 0:
            raise ConfigError(f"{key}.max_replacements: must be >= 0")
        if self.start_timeout_s <= 0:
            raise ConfigError(f"{key}.start_timeout_s: must be > 0")

    @property
    def most(self) -> int:
        """The most replicas this pool may run (the autoscaling maximum)."""
        return self.max_replicas or self.replicas


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
    metrics_export_port: Optional[int] = field(default=None, metadata={"help": "a local Ray started by the job serves its metrics (Ray's and synthpref's live gauges) in Prometheus format on this port; on a cluster, `ray start --metrics-export-port` sets it per node"})


@dataclass
class DataConfig:
    path: str = field(default="", metadata={"help": 'prompt source: a .jsonl file, a Parquet file or folder, or a Hugging Face dataset'})
    format: Literal["auto", "jsonl", "parquet", "hf", "hh-rlhf"] = field(default="auto", metadata={"help": 'auto guesses from the path; hh-rlhf rows (chosen/rejected transcripts) are recognised in any format'})
    split: str = field(default="train", metadata={"help": 'for Hugging Face datasets'})
    limit: Optional[int] = field(default=None, metadata={"help": 'read at most this many rows'})
    shard_size: int = field(default=16, metadata={"help": 'prompts per shard (the unit of resume)'})
    prompts_only: bool = field(default=False, metadata={"help": "read only the conversations: ready completions (chosen/rejected, completions) are set aside so every prompt is sampled, and a conversation that repeats is a duplicate (e.g. hh-rlhf transcripts as red-team prompts)"})

    def check(self, key: str) -> None:
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"{key}.limit: must be >= 1 or null")
        if self.shard_size < 1:
            raise ConfigError(f"{key}.shard_size: must be >= 1")

    def require(self, key: str, what: str) -> None:
        if not self.path:
            raise ConfigError(f"{key}.path: no {what} given")


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

    def check(self, key: str) -> None:
        if self.chunk_size < 1:
            raise ConfigError(f"{key}.chunk_size: must be >= 1")
        if not 1 <= self.max_tokens < self.engine.max_model_len:
            raise ConfigError(f"{key}.max_tokens: must be >= 1 and below {key}.engine.max_model_len "
                              f"({self.engine.max_model_len}) to leave room for the prompt")
        if self.samples_per_prompt < 1:
            raise ConfigError(f"{key}.samples_per_prompt: must be >= 1")


@dataclass
class JudgeConfig:
    id: str = field(default="", metadata={"help": 'unique name of the judge (appears in judgments and provenance)'})
    type: Literal["vllm", "http", "reward_model", "function"] = field(default="vllm", metadata={"help": 'vllm: a model on vLLM engine actors; http: an OpenAI-compatible server; reward_model: a sequence-classification model scoring each response; function: a Python scorer'})
    model: str = field(default="", metadata={"help": "vllm and reward_model judges: HF name or local path; http judges: the model's tokenizer (optional) or served name"})
    function: str = field(default="", metadata={"help": 'function judges: "module:function"'})
    verdict: Literal["logprob", "text"] = field(default="logprob", metadata={"help": 'logprob: P(first) from one next token; text: a generated, parsed verdict'})
    template: str = field(default="", metadata={"help": 'template name; "" picks the default for mode and verdict'})
    rationale: bool = field(default=False, metadata={"help": "text verdicts: ask for reasoning before the verdict; pairwise logprob verdicts: chain of thought, the judge writes its reasoning and the choice probabilities are read in a second turn (two engine calls)"})
    p_band: Optional[list[float]] = field(default=None, metadata={"help": "pairwise logprob verdicts: clamp each P(first) into [low, high] (constitutional AI clamps chain-of-thought labels to [0.4, 0.6]); null = off"})
    max_tokens: int = field(default=256, metadata={"help": 'text verdicts'})
    samples: int = field(default=1, metadata={"help": "pointwise text verdicts: judge each response this many times (seeded, at `temperature`) and average the scores that parse (self-consistency; self-rewarding uses 3); a response none of whose verdicts parse is FAILED"})
    temperature: float = field(default=0.0, metadata={"help": "text verdicts: sampling temperature of the judge (> 0 when samples > 1)"})
    weight: float = field(default=1.0, metadata={"help": 'jury_rule=weighted'})
    chunk_size: int = field(default=256, metadata={"help": 'most judge requests per dispatch to one replica (one vLLM batch; reward models: the batch size); small shards are split evenly over the replicas'})
    usd_per_1m_prompt_tokens: Optional[float] = field(default=None, metadata={"help": 'price of a million prompt tokens, for cost per label in the summary'})
    usd_per_1m_completion_tokens: Optional[float] = field(default=None, metadata={"help": 'price of a million completion tokens'})
    engine: EngineConfig = field(default_factory=EngineConfig)
    pool: PoolConfig = field(default_factory=PoolConfig)
    endpoint: EndpointConfig = field(default_factory=EndpointConfig)

    def check(self, key: str) -> None:
        if not self.id:
            raise ConfigError(f"{key}.id: every judge needs an id")
        if self.type in ("vllm", "reward_model") and not self.model:
            raise ConfigError(f"{key}.model: a {self.type} judge needs a model")
        if self.type == "http":
            check_endpoint(self, key)
        if self.type == "reward_model" and self.verdict != "logprob":
            raise ConfigError(f"{key}.verdict: a reward_model judge gives scores; leave verdict at its default")
        for name in ("usd_per_1m_prompt_tokens", "usd_per_1m_completion_tokens"):
            if (getattr(self, name) or 0) < 0:
                raise ConfigError(f"{key}.{name}: must be >= 0")
        if self.type == "function" and ":" not in self.function:
            raise ConfigError(f"{key}.function: expected 'module:function', got {self.function!r}")
        if self.weight < 0:
            raise ConfigError(f"{key}.weight: must be >= 0")
        if self.chunk_size < 1:
            raise ConfigError(f"{key}.chunk_size: must be >= 1")
        if self.max_tokens < 1:
            raise ConfigError(f"{key}.max_tokens: must be >= 1")
        if self.samples < 1 or self.temperature < 0:
            raise ConfigError(f"{key}: need samples >= 1 and temperature >= 0")
        if self.p_band is not None:
            if len(self.p_band) != 2 or not 0 <= self.p_band[0] <= 0.5 <= self.p_band[1] <= 1 \
                    or abs(self.p_band[0] + self.p_band[1] - 1) > 1e-9:
                raise ConfigError(f"{key}.p_band: expected [low, high] symmetric around 0.5 (low + high = 1, so "
                                  f"neither position is favoured), got {self.p_band}")
            if self.verdict != "logprob" or self.type not in ("vllm", "http"):
                raise ConfigError(f"{key}.p_band: clamps probabilities read from logprobs; it needs a vllm or "
                                  f"http judge with verdict logprob")
        if self.samples > 1 and (self.verdict != "text" or self.temperature <= 0 or self.type not in ("vllm", "http")):
            raise ConfigError(f"{key}.samples: several judge samples need a vllm or http judge with verdict text "
                              f"and temperature > 0")


@dataclass
class JudgingConfig:
    mode: Literal["pairwise", "pointwise"] = field(default="pairwise", metadata={"help": 'pairwise: judge pairs; pointwise: score each completion, best vs worst'})
    both_orders: bool = field(default=True, metadata={"help": 'judge each pair as (a, b) and (b, a) to cancel position bias'})
    order_rule: Literal["mean_prob", "consistent"] = field(default="mean_prob", metadata={"help": 'mean_prob: average P(a better) over orders (RLAIF); consistent: win in both orders or tie (MT-Bench)'})
    jury_rule: Literal["majority", "mean_prob", "weighted"] = field(default="majority", metadata={"help": "how judges' votes combine: majority vote, mean probability, or weighted vote"})
    tie_margin: float = field(default=0.0, metadata={"help": '|P(first) - 0.5| <= margin counts as a tie'})
    max_pairs_per_prompt: Optional[int] = field(default=None, metadata={"help": 'cap on pairs per prompt (default: all pairs of the k completions)'})
    constitution: str = field(default="", metadata={"help": 'principle-conditioned comparisons (constitutional AI, Bai et al. 2022): "default" (the built-in constitution) or a constitution YAML file; each pair draws one principle, asked of every judge in both orders and recorded with its judgments and preference. "" = off'})
    judges: list[JudgeConfig] = field(default_factory=list, metadata={"help": 'the jury: a list of judges'})

    def check(self, key: str) -> None:
        if not self.judges:
            raise ConfigError(f"{key}.judges: at least one judge is required")
        seen = set()
        for i, judge in enumerate(self.judges):
            if judge.id in seen:
                raise ConfigError(f"{key}.judges.{i}.id: duplicate judge id {judge.id!r}")
            seen.add(judge.id)
        if self.jury_rule == "weighted" and sum(j.weight for j in self.judges) <= 0:
            raise ConfigError(f"{key}.judges: jury_rule=weighted needs at least one judge with weight > 0")
        if self.mode == "pairwise" and any(j.samples > 1 for j in self.judges):
            raise ConfigError(f"{key}.judges: samples > 1 (averaged scores) is for pointwise judging")
        if self.max_pairs_per_prompt is not None and self.max_pairs_per_prompt < 1:
            raise ConfigError(f"{key}.max_pairs_per_prompt: must be >= 1 (or null for all pairs)")
        if not 0 <= self.tie_margin < 0.5:
            raise ConfigError(f"{key}.tie_margin: must be in [0, 0.5)")
        if self.constitution and self.mode != "pairwise":
            raise ConfigError(f"{key}.constitution: principle-conditioned comparisons judge pairs; set mode: pairwise")


# the attention and MLP projections of Llama-style models
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class TrainConfig:
    """How a model trains: DeepSpeed ranks as Ray actors."""
    world_size: int = field(default=1, metadata={"help": "data-parallel ranks (Ray actors, one DeepSpeed engine each)"})
    zero_stage: int = field(default=0, metadata={"help": "DeepSpeed ZeRO stage 0-3 (3 shards parameters; weights are gathered for saving and sync)"})
    micro_batch: int = field(default=8, metadata={"help": "rows (pairs for reward models) per rank per optimizer step"})
    lr: float = field(default=1e-5, metadata={"help": "AdamW learning rate"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    epochs: int = field(default=1, metadata={"help": "passes over the training rows (rft: over each iteration's survivors)"})
    max_len: int = field(default=1024, metadata={"help": "tokens per row; longer prompts are cut from the left, rows whose response alone does not fit are quarantined"})
    dtype: Literal["auto", "float32", "bfloat16"] = field(default="auto", metadata={"help": "auto: bf16 where the hardware has it (bf16 GPUs, CPUs with AVX512-BF16/AMX), else fp32"})
    num_cpus: float = field(default=1, metadata={"help": "Ray CPUs per rank (CPU training uses as many threads)"})
    num_gpus: float = field(default=0, metadata={"help": "GPUs per rank (NCCL between ranks when > 0)"})
    center_coef: float = field(default=0.0, metadata={"help": "reward models: weight of the mean((r_c + r_r)^2) centring term"})
    start_timeout_s: float = field(default=600.0, metadata={"help": "ranks not placed within this many seconds fail the job, naming the missing resource"})
    rank_timeout_s: float = field(default=3600.0, metadata={"help": "a rank that does not finish one call (a step, a forward pass, a checkpoint) within this many seconds stops the job with an error naming it and its node; a rank found dead (its node lost) stops it at once. A rerun resumes from the last checkpoint"})
    lora_r: int = field(default=0, metadata={"help": "0: full fine-tuning; > 0: train LoRA adapters of this rank (Hu et al. 2021) through peft, weights merged for saving and engine sync"})
    lora_alpha: float = field(default=16.0, metadata={"help": "LoRA scale numerator: the update is (lora_alpha / lora_r) * B @ A"})
    lora_dropout: float = field(default=0.0, metadata={"help": "dropout on the LoRA branch's input while training"})
    lora_target_modules: list[str] = field(default_factory=lambda: list(LORA_TARGETS), metadata={"help": "names of the linear layers that get adapters (default: " + ", ".join(LORA_TARGETS) + ")"})

    def check(self, key: str) -> None:
        if self.world_size < 1:
            raise ConfigError(f"{key}.world_size: must be >= 1")
        if self.zero_stage not in (0, 1, 2, 3):
            raise ConfigError(f"{key}.zero_stage: must be 0, 1, 2 or 3")
        if self.micro_batch < 1 or self.epochs < 1:
            raise ConfigError(f"{key}.micro_batch and {key}.epochs: must be >= 1")
        if self.lr <= 0:
            raise ConfigError(f"{key}.lr: must be > 0")
        if self.rank_timeout_s <= 0:
            raise ConfigError(f"{key}.rank_timeout_s: must be > 0")
        if self.max_len < 8:
            raise ConfigError(f"{key}.max_len: must be >= 8")
        if self.num_cpus <= 0 and self.num_gpus <= 0:
            raise ConfigError(f"{key}.num_cpus: a rank needs CPUs or GPUs")
        if self.lora_r < 0:
            raise ConfigError(f"{key}.lora_r: must be >= 0 (0 = full fine-tuning)")
        if self.lora_alpha <= 0:
            raise ConfigError(f"{key}.lora_alpha: must be > 0")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"{key}.lora_dropout: must be in [0, 1)")
        if self.lora_r > 0 and not self.lora_target_modules:
            raise ConfigError(f"{key}.lora_target_modules: LoRA (lora_r > 0) needs at least one module name")


@dataclass
class HumanEvalConfig:
    path: str = field(default="", metadata={"help": 'human-labelled pairs (hh-rlhf or prompt/chosen/rejected); "" = none'})
    limit: Optional[int] = field(default=None, metadata={"help": "read at most this many pairs"})


def check_endpoint(judge: JudgeConfig, key: str) -> None:
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
