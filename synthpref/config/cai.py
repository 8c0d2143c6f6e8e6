"""`synthpref cai`'s config: constitutional AI (Bai et al. 2022, arXiv 2212.08073) as one file. The SL phase
has its own keys (`sl`); the RL phase is three ordinary jobs, `label`, `train_rm` and `ppo`, with the keys
those jobs take. What a phase takes from the one before (the SL policy, the labels, the reward model),
its output folder and the constitution are filled in by the job where the file leaves them empty."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from synthpref.config.jobs import LabelConfig, TrainRMConfig
from synthpref.config.loader import ConfigError
from synthpref.config.ppo import PPOConfig
from synthpref.config.sections import DataConfig, JudgingConfig, PolicyConfig, RayConfig, TrainConfig

PHASES = ("sl", "label", "train_rm", "ppo")


@dataclass
class SLConfig:
    """The supervised phase: answer, then critique and revise against drawn principles, then fine-tune."""
    rounds: int = field(default=4, metadata={"help": "critique -> revision rounds per red-team prompt, each against a principle drawn at random (the paper used 4)"})
    sft_every_round: bool = field(default=False, metadata={"help": "the SFT table keeps every round's revision (the paper trained on all rounds); false: only the final one"})
    helpful: DataConfig = field(default_factory=DataConfig, metadata={"help": "ordinary prompts answered without critique, mixed into the SFT table to keep the policy helpful (path \"\" = none)"})
    helpful_fraction: float = field(default=0.25, metadata={"help": "share of the SFT rows that are helpful answers (as far as sl.helpful has prompts)"})
    few_shot: bool = field(default=True, metadata={"help": "show the constitution's few-shot examples before every critique and revision request"})
    critique_max_tokens: int = field(default=128, metadata={"help": "new tokens per critique (answers and revisions take policy.max_tokens)"})
    temperature: float = field(default=0.7, metadata={"help": "sampling temperature of answers, critiques and revisions"})
    train: TrainConfig = field(default_factory=TrainConfig, metadata={"help": "fine-tuning of the policy on the revisions"})

    def check(self, key: str) -> None:
        if self.rounds < 1:
            raise ConfigError(f"{key}.rounds: must be >= 1")
        if not 0 <= self.helpful_fraction < 1:
            raise ConfigError(f"{key}.helpful_fraction: must be in [0, 1)")
        if self.critique_max_tokens < 1:
            raise ConfigError(f"{key}.critique_max_tokens: must be >= 1")
        if self.temperature < 0:
            raise ConfigError(f"{key}.temperature: must be >= 0")


@dataclass
class CAISLConfig:
    """The SL phase as a job of its own (its own run folder, `OUTPUT/sl`, and rerun rule)."""
    output_dir: str = "runs/cai/sl"
    seed: int = 0
    progress: bool = True
    verbose: bool = False
    constitution: str = "default"
    ray: RayConfig = field(default_factory=RayConfig)
    data: DataConfig = field(default_factory=DataConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    sl: SLConfig = field(default_factory=SLConfig)

    length_keys: ClassVar[tuple[str, ...]] = ("sl.train.epochs",)


@dataclass
class CAIConfig:
    """`synthpref cai`: the SL phase, then RL from AI feedback: principle-conditioned labels, a reward model on
    their soft labels, PPO against it."""
    output_dir: str = field(default="runs/cai", metadata={"help": "sl/, labels/, rm/ and ppo/ (one run folder per phase), report.json, metrics.jsonl; a folder, or a URI that pyarrow or fsspec knows (file://, s3://, gs://, ...: docs/cluster.md)"})
    seed: int = field(default=0, metadata={"help": "base seed of the SL phase (answers, principle draws, batch order)"})
    progress: bool = field(default=True, metadata={"help": "show progress bars"})
    verbose: bool = field(default=False, metadata={"help": "show engine, DeepSpeed, transformers and Ray worker output in the terminal (quiet runs write it to OUTPUT/*/logs/ instead)"})
    constitution: str = field(default="default", metadata={"help": '"default" (the built-in constitution) or a constitution YAML file: principles with critique, revision and comparison requests'})
    phases: list[str] = field(default_factory=lambda: list(PHASES), metadata={"help": "the phases to run, in order: sl, label, train_rm, ppo (a later phase needs the earlier ones' outputs)"})
    chain_of_thought: bool = field(default=False, metadata={"help": "RL labels by chain of thought: every model judge of label.judging reasons first, then its choice probabilities are read and clamped to cot_band"})
    cot_band: list[float] = field(default_factory=lambda: [0.4, 0.6], metadata={"help": "chain-of-thought labels: probabilities clamped into [low, high] (the paper used 40-60%)"})
    soft_labels: bool = field(default=True, metadata={"help": "train the preference model on soft labels, the normalised P(A) / (P(A) + P(B)) averaged over orders and judges (needs label.judging.jury_rule and order_rule mean_prob); false: hard labels"})
    ray: RayConfig = field(default_factory=RayConfig)
    data: DataConfig = field(default_factory=DataConfig, metadata={"help": "red-team prompts (e.g. hh-rlhf harmless transcripts: their first turns)"})
    policy: PolicyConfig = field(default_factory=PolicyConfig, metadata={"help": "the starting policy and how it samples in the SL phase"})
    sl: SLConfig = field(default_factory=SLConfig)
    label: LabelConfig = field(default_factory=lambda: LabelConfig(judging=JudgingConfig(jury_rule="mean_prob")), metadata={"filled_by_job": True, "help": "the RL phase's labels: `synthpref label` keys. Filled in: output_dir OUTPUT/labels; when empty: data = data, policy.model = the SL policy (sampling on policy's engine and pool), judging.constitution = constitution, judging.judges = the starting policy as feedback model. Soft labels need judging.jury_rule: mean_prob"})
    train_rm: TrainRMConfig = field(default_factory=TrainRMConfig, metadata={"filled_by_job": True, "help": "the preference model: `synthpref train-rm` keys. Filled in: output_dir OUTPUT/rm, soft_labels = soft_labels; when empty: data.path = the labels' preferences, model = policy.model"})
    ppo: PPOConfig = field(default_factory=PPOConfig, metadata={"filled_by_job": True, "help": "RL against the preference model: `synthpref ppo` keys. Filled in: output_dir OUTPUT/ppo; when empty: data = data, policy.model = the SL policy (on policy's engine and pool), judging.judges = the trained preference model (a reward_model judge)"})

    length_keys: ClassVar[tuple[str, ...]] = ()

    def check(self, key: str = "") -> None:
        unknown = [p for p in self.phases if p not in PHASES]
        if unknown or not self.phases:
            raise ConfigError(f"phases: unknown {unknown} (known: {', '.join(PHASES)})" if unknown else
                              "phases: at least one phase")
        order = [PHASES.index(p) for p in self.phases]
        if order != sorted(set(order)):
            raise ConfigError(f"phases: give each phase once, in the order {', '.join(PHASES)}")
        if not self.policy.model:
            raise ConfigError("policy.model: no starting policy given")
        self.data.require("data", "red-team prompt source")
        if len(self.cot_band) != 2 or not 0 <= self.cot_band[0] <= 0.5 <= self.cot_band[1] <= 1 \
                or abs(self.cot_band[0] + self.cot_band[1] - 1) > 1e-9:
            raise ConfigError(f"cot_band: expected [low, high] symmetric around 0.5 (low + high = 1), got {self.cot_band}")
        judging = self.label.judging
        if self.chain_of_thought and judging.tie_margin >= self.cot_band[1] - 0.5:
            raise ConfigError(f"label.judging.tie_margin: {judging.tie_margin} would make every chain-of-thought label "
                              f"clamped to {self.cot_band} a tie; use a margin below {self.cot_band[1] - 0.5:g}")
        if self.soft_labels and "label" in self.phases and judging.jury_rule != "mean_prob":
            raise ConfigError(f"label.judging.jury_rule: soft labels average the judges' probabilities; set mean_prob "
                              f"(a {judging.jury_rule} vote gives hard labels), or soft_labels: false")
        if self.soft_labels and "label" in self.phases and judging.both_orders and judging.order_rule != "mean_prob":
            raise ConfigError("label.judging.order_rule: soft labels average P(A) over both orders; set mean_prob, "
                              "or soft_labels: false")
        if "label" in self.phases and judging.mode != "pairwise":
            raise ConfigError("label.judging.mode: the RL phase compares pairs under a principle; set pairwise")

    def sl_job(self) -> CAISLConfig:
        from pathlib import Path
        return CAISLConfig(output_dir=str(Path(self.output_dir) / "sl"), seed=self.seed, progress=self.progress,
                           verbose=self.verbose, constitution=self.constitution, ray=self.ray, data=self.data,
                           policy=self.policy, sl=self.sl)
