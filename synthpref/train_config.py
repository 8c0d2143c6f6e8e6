"""Configs of the training jobs: `synthpref train-rm` and `synthpref rft` (same YAML + override rules as
config.py; every key has a help string that `--help` prints)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from synthpref.config import (ConfigError, DataConfig, JudgingConfig, PolicyConfig, RayConfig, validate_judging,
                              validate_pool)


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


@dataclass
class HumanEvalConfig:
    path: str = field(default="", metadata={"help": 'human-labelled pairs (hh-rlhf or prompt/chosen/rejected); "" = none'})
    limit: Optional[int] = field(default=None, metadata={"help": "read at most this many pairs"})


@dataclass
class TrainRMConfig:
    """`synthpref train-rm`: a Bradley-Terry reward model from a preference table."""
    output_dir: str = field(default="runs/reward-model", metadata={"help": "model/ (Hugging Face format), report.json, metrics.jsonl, tensorboard/, checkpoints/"})
    model: str = field(default="", metadata={"help": "base model (HF name or path): a causal LM gets a new one-logit score head"})
    seed: int = field(default=0, metadata={"help": "seed of the score head, the held-out split and the batch order"})
    progress: bool = field(default=True, metadata={"help": "show progress bars"})
    eval_fraction: float = field(default=0.1, metadata={"help": "share of prompts held out for accuracy (split by prompt, so no prompt is in both)"})
    human_eval: HumanEvalConfig = field(default_factory=HumanEvalConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass
class RFTConfig:
    """`synthpref rft`: iterative rejection-sampling fine-tuning."""
    output_dir: str = field(default="runs/rft", metadata={"help": "iterations/NNNN/ tables, checkpoints/, policy/ (final, HF format), metrics.jsonl, tensorboard/"})
    seed: int = field(default=0, metadata={"help": "base seed of sampling and batch order (iteration i derives its own)"})
    progress: bool = field(default=True, metadata={"help": "show progress bars"})
    iterations: int = field(default=3, metadata={"help": "rounds of sample, score, keep the best, fine-tune, sync"})
    prompts_per_iteration: int = field(default=64, metadata={"help": "prompts sampled per iteration (the prompt set is cycled)"})
    keep_threshold: Optional[float] = field(default=None, metadata={"help": "keep a prompt's best sample only if its score is >= this (null: always keep the best)"})
    kl_prompts: int = field(default=16, metadata={"help": "fixed prompts (the first ones) on which KL(policy || starting policy) is estimated each iteration"})
    distinct_n: int = field(default=2, metadata={"help": "n of the distinct-n diversity metric of the samples"})
    ray: RayConfig = field(default_factory=RayConfig)
    data: DataConfig = field(default_factory=DataConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    judging: JudgingConfig = field(default_factory=lambda: JudgingConfig(mode="pointwise"))
    train: TrainConfig = field(default_factory=TrainConfig)


def validate_train(train: TrainConfig) -> None:
    if train.world_size < 1:
        raise ConfigError("train.world_size: must be >= 1")
    if train.zero_stage not in (0, 1, 2, 3):
        raise ConfigError("train.zero_stage: must be 0, 1, 2 or 3")
    if train.micro_batch < 1 or train.epochs < 1:
        raise ConfigError("train.micro_batch and train.epochs: must be >= 1")
    if train.lr <= 0:
        raise ConfigError("train.lr: must be > 0")
    if train.max_len < 8:
        raise ConfigError("train.max_len: must be >= 8")
    if train.num_cpus <= 0 and train.num_gpus <= 0:
        raise ConfigError("train.num_cpus: a rank needs CPUs or GPUs")


def validate_train_rm_config(cfg: TrainRMConfig) -> TrainRMConfig:
    validate_train(cfg.train)
    if not cfg.model:
        raise ConfigError("model: no base model given")
    if not cfg.data.path:
        raise ConfigError("data.path: no preference data given")
    if not 0 < cfg.eval_fraction < 1:
        raise ConfigError("eval_fraction: must be in (0, 1)")
    return cfg


def validate_rft_config(cfg: RFTConfig) -> RFTConfig:
    validate_train(cfg.train)
    validate_judging(cfg.judging)
    validate_pool(cfg.policy.pool, "policy.pool")
    if cfg.judging.mode != "pointwise":
        raise ConfigError("judging.mode: rft scores every sample; set it to pointwise")
    if not cfg.policy.model:
        raise ConfigError("policy.model: no policy given")
    if not cfg.data.path:
        raise ConfigError("data.path: no prompt source given")
    if cfg.iterations < 1 or cfg.prompts_per_iteration < 1:
        raise ConfigError("iterations and prompts_per_iteration: must be >= 1")
    if cfg.policy.samples_per_prompt < 1:
        raise ConfigError("policy.samples_per_prompt: must be >= 1")
    if not 1 <= cfg.policy.max_tokens < cfg.policy.engine.max_model_len:
        raise ConfigError("policy.max_tokens: must be >= 1 and below policy.engine.max_model_len")
    if cfg.kl_prompts < 0 or cfg.distinct_n < 1:
        raise ConfigError("kl_prompts must be >= 0 and distinct_n >= 1")
    if cfg.policy.engine.weight_transfer == "nccl":
        if not (cfg.policy.engine.num_gpus > 0 and cfg.train.num_gpus > 0):
            raise ConfigError("policy.engine.weight_transfer: nccl needs GPU engines (policy.engine.num_gpus > 0) "
                              "and GPU trainer ranks (train.num_gpus > 0); use reload on CPU")
        if cfg.policy.pool.max_replicas not in (None, cfg.policy.pool.replicas):
            raise ConfigError("policy.pool.max_replicas: an NCCL group cannot take new members; with "
                              "weight_transfer: nccl the sampler pool has a fixed size")
    return cfg
