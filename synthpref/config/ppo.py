"""`synthpref ppo`'s config: the RL loop's own sections (estimator, KL, reward shaping, critic, the
over-optimisation monitor) beside the shared ones. Defaults follow OpenRLHF and the "N+ implementation
details of RLHF with PPO" work where they agree (shared/RESEARCH.md)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal, Optional

from synthpref.config.guard import CollapseGuardConfig
from synthpref.config.loader import ConfigError
from synthpref.config.sections import DataConfig, JudgingConfig, PolicyConfig, RayConfig, TrainConfig

ESTIMATORS = ("gae", "rloo", "grpo", "dr_grpo")


@dataclass
class KLConfig:
    coef: float = field(default=0.05, metadata={"help": "KL coefficient beta (the starting value when target is set)"})
    estimator: Literal["k1", "k2", "k3"] = field(default="k1", metadata={"help": "per-token KL estimator on log(pi/ref): k1 = log r, k2 = (log r)^2/2, k3 = exp(-log r) - 1 + log r"})
    placement: Literal["reward", "loss"] = field(default="reward", metadata={"help": "reward: -beta KL is added to each token's reward (InstructGPT, OpenRLHF's default); loss: beta KL is a term of the policy loss (GRPO, veRL's default)"})
    target: Optional[float] = field(default=None, metadata={"help": "adaptive KL control (Ziegler et al. 2019): steer the KL (nats per sequence) towards this; null = fixed coef"})
    horizon: int = field(default=10000, metadata={"help": "adaptive KL: samples over which the coefficient may change by 20%"})

    def check(self, key: str) -> None:
        if self.coef < 0 or (self.target is not None and self.target <= 0) or self.horizon < 1:
            raise ConfigError(f"{key}: need coef >= 0, target > 0 (or null) and horizon >= 1")


@dataclass
class RewardShapingConfig:
    length_penalty: float = field(default=0.0, metadata={"help": "subtract this times the response's token count from its reward"})
    length_normalise: bool = field(default=False, metadata={"help": "divide the reward by the response's token count (a per-token reward)"})
    no_eos_penalty: Optional[float] = field(default=None, metadata={"help": "a response cut at max_tokens (no EOS) gets this reward instead of its judged one (the \"EOS trick\", e.g. -1); null = off"})
    clip: Optional[float] = field(default=None, metadata={"help": "clip rewards to [-clip, clip] after shaping; null = off"})
    normalise: bool = field(default=False, metadata={"help": "normalise rewards by a running mean and std over all steps so far"})

    def check(self, key: str) -> None:
        if self.length_penalty < 0 or (self.clip is not None and self.clip <= 0):
            raise ConfigError(f"{key}: need length_penalty >= 0 and clip > 0 (or null)")


@dataclass
class CriticConfig:
    model: str = field(default="", metadata={"help": "the critic's starting weights: \"\" = the first reward_model judge's model if there is one, else the policy (a new value head)"})
    lr: float = field(default=5e-6, metadata={"help": "critic AdamW learning rate"})
    value_clip: Optional[float] = field(default=0.2, metadata={"help": "clip the new values to old +- this in the value loss; null = off"})


@dataclass
class MonitorConfig:
    """Over-optimisation monitor (Gao et al. 2022): a held-out prompt set scored by the training reward
    and by a gold jury that is never trained against."""
    every: int = field(default=0, metadata={"help": "evaluate every this many steps (0 = off)"})
    prompts: int = field(default=16, metadata={"help": "held-out prompts: the last N of the data, never trained on"})
    patience: int = field(default=2, metadata={"help": "evaluations in a row with gold reward falling while the proxy rises before the monitor acts"})
    action: Literal["warn", "stop"] = field(default="warn", metadata={"help": "warn, or stop the run (keeping the best-gold policy)"})
    gold: Optional[JudgingConfig] = field(default=None, metadata={"help": "the gold jury, never used for training: the same keys as judging (mode: pointwise); null = the monitor reports proxy reward, KL and length only"})


@dataclass
class PPOConfig:
    """`synthpref ppo`: RL from AI feedback with a KL penalty to the starting (SFT) policy."""
    output_dir: str = field(default="runs/ppo", metadata={"help": "steps/NNNNNN/ tables, checkpoints/, policy/ and best_policy/ (HF format), report.json, metrics.jsonl, tensorboard/; a folder, or a URI that pyarrow or fsspec knows (file://, s3://, gs://, ...: docs/cluster.md)"})
    seed: int = field(default=0, metadata={"help": "base seed of sampling, mini-batch order and new value heads"})
    progress: bool = field(default=True, metadata={"help": "show progress bars"})
    verbose: bool = field(default=False, metadata={"help": "show engine, DeepSpeed, transformers and Ray worker output in the terminal (quiet runs write it to OUTPUT/logs/ instead)"})
    steps: int = field(default=20, metadata={"help": "RL steps (each: sample, reward, reference, values, advantages, update, sync)"})
    prompts_per_step: int = field(default=16, metadata={"help": "prompts sampled per step (policy.samples_per_prompt completions each; the prompt set is cycled)"})
    estimator: Literal["gae", "rloo", "grpo", "dr_grpo"] = field(default="gae", metadata={"help": "gae: a critic per token (PPO); rloo: leave-one-out group baseline; grpo: (r - group mean) / group std; dr_grpo: r - group mean. Group estimators need policy.samples_per_prompt >= 2"})
    gamma: float = field(default=1.0, metadata={"help": "GAE discount"})
    lam: float = field(default=0.95, metadata={"help": "GAE lambda"})
    whiten_advantages: bool = field(default=True, metadata={"help": "whiten advantages over the batch (gae)"})
    ppo_epochs: int = field(default=1, metadata={"help": "passes over each step's rollouts"})
    mini_batch: int = field(default=16, metadata={"help": "rollouts per optimizer step"})
    clip_eps: float = field(default=0.2, metadata={"help": "PPO ratio clip"})
    dual_clip: Optional[float] = field(default=None, metadata={"help": "dual clip c > 1 for negative advantages (null = off)"})
    entropy_coef: float = field(default=0.0, metadata={"help": "entropy bonus weight"})
    loss_agg: Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"] = field(default="token-mean", metadata={"help": "how per-token losses become one number"})
    old_logprobs: Literal["trainer", "engine"] = field(default="trainer", metadata={"help": "trainer: recompute old log-probs on the trainer (ratio 1 on the first mini-batch); engine: use the sampler's"})
    tis_cap: Optional[float] = field(default=None, metadata={"help": "truncated importance sampling: weight each token by min(pi_trainer / pi_engine, cap), for the engine-vs-trainer mismatch (needs policy.temperature 1 and top_p 1); null = off"})
    save_every: int = field(default=5, metadata={"help": "checkpoint every this many steps (a rerun resumes after the last)"})
    keep_checkpoints: int = field(default=2, metadata={"help": "checkpoints kept (older ones are deleted)"})
    colocate: bool = field(default=False, metadata={"help": "GPU nodes: samplers and trainers share GPUs (fractional num_gpus, e.g. 0.5 each), the engines sleeping through each update (vLLM sleep mode); untested here (no GPU)"})
    kl: KLConfig = field(default_factory=KLConfig)
    reward: RewardShapingConfig = field(default_factory=RewardShapingConfig)
    critic: CriticConfig = field(default_factory=CriticConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    data: DataConfig = field(default_factory=DataConfig)
    policy: PolicyConfig = field(default_factory=lambda: PolicyConfig(samples_per_prompt=4, max_tokens=64))
    judging: JudgingConfig = field(default_factory=lambda: JudgingConfig(mode="pointwise"), metadata={"help": "the reward: pointwise judges (reward_model, vllm, http, function), their rewards weighted by judges.N.weight"})
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=1e-6))
    guard: CollapseGuardConfig = field(default_factory=lambda: CollapseGuardConfig(action="warn"), metadata={"help": "the collapse guard, at each monitor evaluation (monitor.every > 0): the held-out greedy samples against the starting policy's; ppo's default action is warn"})

    length_keys: ClassVar[tuple[str, ...]] = ("steps",)

    def check(self, key: str = "") -> None:
        if self.judging.mode != "pointwise":
            raise ConfigError("judging.mode: ppo scores every sample; set it to pointwise")
        if not self.policy.model:
            raise ConfigError("policy.model: no policy given")
        self.data.require("data", "prompt source")
        if min(self.steps, self.prompts_per_step, self.ppo_epochs, self.mini_batch, self.save_every,
               self.keep_checkpoints) < 1:
            raise ConfigError("steps, prompts_per_step, ppo_epochs, mini_batch, save_every, keep_checkpoints: must be >= 1")
        if self.estimator != "gae" and self.policy.samples_per_prompt < 2:
            raise ConfigError(f"policy.samples_per_prompt: the {self.estimator} estimator needs a group of >= 2")
        if self.dual_clip is not None and self.dual_clip <= 1:
            raise ConfigError("dual_clip: must be > 1 (or null)")
        if self.tis_cap is not None and (self.tis_cap <= 0 or self.policy.temperature != 1 or self.policy.top_p != 1):
            raise ConfigError("tis_cap: must be > 0, with policy.temperature 1 and policy.top_p 1 (the engine "
                              "returns temperature-1 log-probs)")
        if self.old_logprobs == "engine" and (self.policy.temperature != 1 or self.policy.top_p != 1):
            raise ConfigError("old_logprobs: engine needs policy.temperature 1 and policy.top_p 1")
        if self.monitor.every < 0 or self.monitor.patience < 1 or self.monitor.prompts < 1:
            raise ConfigError("monitor: need every >= 0, patience >= 1 and prompts >= 1")
        if self.guard.action == "stop" and self.monitor.every == 0:
            raise ConfigError("guard.action: stop watches the monitor's held-out samples; set monitor.every > 0")
        if self.monitor.gold is not None and self.monitor.gold.mode != "pointwise":
            raise ConfigError("monitor.gold.mode: the gold jury scores every sample; set it to pointwise")
        if self.colocate and not (self.policy.engine.num_gpus > 0 and self.train.num_gpus > 0):
            raise ConfigError("colocate: needs GPU engines and GPU trainer ranks (policy.engine.num_gpus and "
                              "train.num_gpus > 0, e.g. 0.5 each so Ray packs one of each per GPU)")
        if not (0 <= self.gamma <= 1 and 0 <= self.lam <= 1) or self.clip_eps <= 0:
            raise ConfigError("gamma and lam: must be in [0, 1]; clip_eps: must be > 0")
        if self.critic.value_clip is not None and self.critic.value_clip <= 0:
            raise ConfigError("critic.value_clip: must be > 0 (or null)")
        if self.kl.target is not None and self.kl.coef <= 0:
            raise ConfigError("kl.coef: adaptive KL (kl.target) multiplies the coefficient, so it must start > 0")
        if self.tis_cap is not None and self.old_logprobs == "engine":
            raise ConfigError("tis_cap: with old_logprobs: engine the ratio of trainer to engine is the PPO ratio "
                              "itself; use tis_cap with old_logprobs: trainer")
        if self.mini_batch < self.train.world_size:
            raise ConfigError(f"mini_batch: {self.mini_batch} rollouts cannot give each of train.world_size "
                              f"{self.train.world_size} ranks one")
        if self.policy.temperature <= 0:
            raise ConfigError("policy.temperature: RL samples must be drawn at temperature > 0")
