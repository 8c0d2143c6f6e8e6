"""`synthpref dpo`'s config, and the DPO loss section that `synthpref self-reward` shares."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from synthpref.config.loader import ConfigError
from synthpref.config.sections import DataConfig, HumanEvalConfig, RayConfig, TrainConfig


@dataclass
class DPOLossConfig:
    """The preference loss on (chosen, rejected) pairs against a frozen reference."""
    loss: Literal["sigmoid", "ipo"] = field(default="sigmoid", metadata={"help": "sigmoid: DPO (Rafailov et al. 2023); ipo: IPO (Azar et al. 2023), on per-token mean log-probs"})
    beta: float = field(default=0.1, metadata={"help": "strength of the pull towards the reference (DPO's beta; IPO's tau)"})
    label_smoothing: float = field(default=0.0, metadata={"help": "conservative DPO: the probability that a label is wrong, in [0, 0.5) (sigmoid loss only)"})
    shared_prompt: bool = field(default=True, metadata={"help": "score chosen and rejected in one row that holds their prompt once (a 4D attention mask keeps rejected from seeing chosen; the same log-probs, fewer tokens); false = two rows per pair. Flash attention cannot take the mask: such models use two rows"})
    confidence_weighting: bool = field(default=False, metadata={"help": "weight each pair's loss by its label confidence (the `confidence` column of a `synthpref label` table; pairs without one weigh 1, and are counted)"})

    def check(self, key: str) -> None:
        if self.beta <= 0:
            raise ConfigError(f"{key}.beta: must be > 0")
        if not 0 <= self.label_smoothing < 0.5:
            raise ConfigError(f"{key}.label_smoothing: must be in [0, 0.5)")
        if self.label_smoothing and self.loss == "ipo":
            raise ConfigError(f"{key}.label_smoothing: applies to the sigmoid loss only, not ipo")

    def settings(self) -> dict:
        """What TrainerActor.train_dpo takes."""
        return {"beta": self.beta, "loss": self.loss, "label_smoothing": self.label_smoothing,
                "shared_prompt": self.shared_prompt}


@dataclass
class DPOConfig:
    """`synthpref dpo`: offline DPO or IPO on a preference table."""
    output_dir: str = field(default="runs/dpo", metadata={"help": "policy/ (HF format, LoRA merged), reference_logprobs.parquet, checkpoints/, report.json, metrics.jsonl, tensorboard/; a folder, or a URI that pyarrow or fsspec knows (file://, s3://, gs://, ...: docs/cluster.md)"})
    model: str = field(default="", metadata={"help": "the policy to start from (HF name or path), usually an SFT model"})
    reference: str = field(default="", metadata={"help": "the frozen reference (\"\" = model); its log-probs are computed once, before training"})
    seed: int = field(default=0, metadata={"help": "seed of the held-out split and the batch order"})
    progress: bool = field(default=True, metadata={"help": "show progress bars"})
    verbose: bool = field(default=False, metadata={"help": "show engine, DeepSpeed, transformers and Ray worker output in the terminal (quiet runs write it to OUTPUT/logs/ instead)"})
    eval_fraction: float = field(default=0.1, metadata={"help": "share of prompts held out for preference accuracy and reward margins (split by prompt)"})
    save_every: int = field(default=0, metadata={"help": "checkpoint every this many optimizer steps as well as at each epoch's end (0 = epoch ends only); a rerun resumes after the last"})
    keep_checkpoints: int = field(default=2, metadata={"help": "checkpoints kept (older ones are deleted)"})
    dpo: DPOLossConfig = field(default_factory=DPOLossConfig)
    human_eval: HumanEvalConfig = field(default_factory=HumanEvalConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=5e-7))

    length_keys: ClassVar[tuple[str, ...]] = ("train.epochs",)

    def check(self, key: str = "") -> None:
        if not self.model:
            raise ConfigError("model: no policy given")
        self.data.require("data", "preference data (prompt/chosen/rejected)")
        if not 0 < self.eval_fraction < 1:
            raise ConfigError("eval_fraction: must be in (0, 1)")
        if self.save_every < 0 or self.keep_checkpoints < 1:
            raise ConfigError("save_every must be >= 0 and keep_checkpoints >= 1")
