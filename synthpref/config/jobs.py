"""The job configs: one per subcommand, each a tree of the shared sections (sections.py) plus the
job's own keys and cross-field checks. `length_keys` are the settings a rerun may raise to continue
the same run (the job runtime's rerun rule)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Optional

from synthpref.config.guard import CollapseGuardConfig
from synthpref.config.loader import ConfigError
from synthpref.config.sections import (DataConfig, HumanEvalConfig, JudgingConfig, PolicyConfig, RayConfig,
                                       TrainConfig)


@dataclass
class LabelConfig:
    output_dir: str = field(default="runs/label", metadata={"help": 'where preferences/, judgments/, samples/ and the reports go; a folder, or a URI that pyarrow or fsspec knows (file://, s3://, gs://, ...: docs/cluster.md)'})
    seed: int = field(default=0, metadata={"help": "base seed: every completion's seed derives from it and the prompt"})
    progress: bool = field(default=True, metadata={"help": 'show progress bars'})
    verbose: bool = field(default=False, metadata={"help": "show engine, DeepSpeed, transformers and Ray worker output in the terminal (quiet runs write it to OUTPUT/logs/ instead)"})
    ray: RayConfig = field(default_factory=RayConfig)
    data: DataConfig = field(default_factory=DataConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    judging: JudgingConfig = field(default_factory=JudgingConfig)

    length_keys: ClassVar[tuple[str, ...]] = ()

    def check(self, key: str = "") -> None:
        self.data.require("data", "prompt source")
        if self.policy.samples_per_prompt < 2:
            raise ConfigError("policy.samples_per_prompt: need at least 2 completions to make a pair")


@dataclass
class EvalJudgeConfig:
    """`synthpref eval-judge`: a judge's or a jury's agreement with human preference labels."""
    output_dir: str = field(default="runs/eval-judge", metadata={"help": "report.json, metrics.jsonl and logs/ go here; a folder, or a URI that pyarrow or fsspec knows (file://, s3://, gs://, ...: docs/cluster.md)"})
    progress: bool = field(default=True, metadata={"help": 'show progress bars'})
    verbose: bool = field(default=False, metadata={"help": "show engine, DeepSpeed, transformers and Ray worker output in the terminal (quiet runs write it to OUTPUT/logs/ instead)"})
    chunk_pairs: int = field(default=64, metadata={"help": 'pairs judged per round (progress and memory)'})
    ray: RayConfig = field(default_factory=RayConfig)
    data: DataConfig = field(default_factory=DataConfig)
    judging: JudgingConfig = field(default_factory=JudgingConfig)

    length_keys: ClassVar[tuple[str, ...]] = ()

    def check(self, key: str = "") -> None:
        self.data.require("data", "human-labelled pairs")
        if self.chunk_pairs < 1:
            raise ConfigError("chunk_pairs: must be >= 1")


@dataclass
class TrainRMConfig:
    """`synthpref train-rm`: a Bradley-Terry reward model from a preference table."""
    output_dir: str = field(default="runs/reward-model", metadata={"help": "model/ (Hugging Face format), report.json, metrics.jsonl, tensorboard/, checkpoints/; a folder, or a URI that pyarrow or fsspec knows (file://, s3://, gs://, ...: docs/cluster.md)"})
    model: str = field(default="", metadata={"help": "base model (HF name or path): a causal LM gets a new one-logit score head"})
    seed: int = field(default=0, metadata={"help": "seed of the score head, the held-out split and the batch order"})
    progress: bool = field(default=True, metadata={"help": "show progress bars"})
    verbose: bool = field(default=False, metadata={"help": "show engine, DeepSpeed, transformers and Ray worker output in the terminal (quiet runs write it to OUTPUT/logs/ instead)"})
    eval_fraction: float = field(default=0.1, metadata={"help": "share of prompts held out for accuracy (split by prompt, so no prompt is in both)"})
    soft_labels: bool = field(default=False, metadata={"help": "train on soft labels: the target of each pair is its P(chosen preferred) (the row's soft_label, else score_chosen of a pairwise label table judged with mean_prob rules), not 1; rows without one are quarantined (constitutional AI's preference model, Bai et al. 2022)"})
    human_eval: HumanEvalConfig = field(default_factory=HumanEvalConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    length_keys: ClassVar[tuple[str, ...]] = ("train.epochs",)

    def check(self, key: str = "") -> None:
        if not self.model:
            raise ConfigError("model: no base model given")
        self.data.require("data", "preference data")
        if not 0 < self.eval_fraction < 1:
            raise ConfigError("eval_fraction: must be in (0, 1)")


@dataclass
class RFTConfig:
    """`synthpref rft`: iterative rejection-sampling fine-tuning."""
    output_dir: str = field(default="runs/rft", metadata={"help": "iterations/NNNN/ tables, checkpoints/, policy/ (final, HF format), metrics.jsonl, tensorboard/; a folder, or a URI that pyarrow or fsspec knows (file://, s3://, gs://, ...: docs/cluster.md)"})
    seed: int = field(default=0, metadata={"help": "base seed of sampling and batch order (iteration i derives its own)"})
    progress: bool = field(default=True, metadata={"help": "show progress bars"})
    verbose: bool = field(default=False, metadata={"help": "show engine, DeepSpeed, transformers and Ray worker output in the terminal (quiet runs write it to OUTPUT/logs/ instead)"})
    iterations: int = field(default=3, metadata={"help": "rounds of sample, score, keep the best, fine-tune, sync"})
    prompts_per_iteration: int = field(default=64, metadata={"help": "prompts sampled per iteration (the prompt set is cycled)"})
    keep_threshold: Optional[float] = field(default=None, metadata={"help": "keep a prompt's best sample only if its jury score is >= this (null: always keep the best); the score is the judge's own with one judge, and in [0, 1] with several (each judge's scores min-max scaled per prompt, then weighted)"})
    kl_prompts: int = field(default=16, metadata={"help": "fixed prompts (the first ones) on which KL(policy || starting policy) is estimated each iteration"})
    distinct_n: int = field(default=2, metadata={"help": "n of the distinct-n diversity metric of the samples"})
    ray: RayConfig = field(default_factory=RayConfig)
    data: DataConfig = field(default_factory=DataConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    judging: JudgingConfig = field(default_factory=lambda: JudgingConfig(mode="pointwise"))
    train: TrainConfig = field(default_factory=TrainConfig)
    guard: CollapseGuardConfig = field(default_factory=lambda: CollapseGuardConfig(action="warn"), metadata={"help": "the collapse guard: each iteration's samples against iteration 1's (the starting policy's); rft's default action is warn"})

    length_keys: ClassVar[tuple[str, ...]] = ("iterations",)

    def check(self, key: str = "") -> None:
        if self.judging.mode != "pointwise":
            raise ConfigError("judging.mode: rft scores every sample; set it to pointwise")
        if not self.policy.model:
            raise ConfigError("policy.model: no policy given")
        self.data.require("data", "prompt source")
        if self.iterations < 1 or self.prompts_per_iteration < 1:
            raise ConfigError("iterations and prompts_per_iteration: must be >= 1")
        if self.kl_prompts < 0 or self.distinct_n < 1:
            raise ConfigError("kl_prompts must be >= 0 and distinct_n >= 1")
        engine = self.policy.engine
        if engine.weight_transfer == "nccl":
            if not (engine.num_gpus > 0 and self.train.num_gpus > 0):
                raise ConfigError("policy.engine.weight_transfer: nccl needs GPU engines (policy.engine.num_gpus > 0) "
                                  "and GPU trainer ranks (train.num_gpus > 0); use reload on CPU")
            if self.policy.pool.max_replicas not in (None, self.policy.pool.replicas):
                raise ConfigError("policy.pool.max_replicas: an NCCL group cannot take new members; with "
                                  "weight_transfer: nccl the sampler pool has a fixed size")
