"""`synthpref self-reward`'s config: the policy as its own judge (Yuan et al. 2024), DPO on its best-vs-worst
pairs, the measurements of each iteration and the guards against collapse."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal, Optional

from synthpref.config.dpo import DPOLossConfig
from synthpref.config.guard import CollapseGuardConfig
from synthpref.config.loader import ConfigError
from synthpref.config.sections import (DataConfig, HumanEvalConfig, JudgeConfig, JudgingConfig, PolicyConfig,
                                       RayConfig, TrainConfig)


@dataclass
class SelfJudgeConfig:
    """How the policy judges its own candidates, on the engines that sample them."""
    template: str = field(default="", metadata={"help": "\"\" = additive-5-text (text) or additive-5-logprob (logprob): a point per criterion met, 0-5; or a template name or .yaml path"})
    verdict: Literal["text", "logprob"] = field(default="text", metadata={"help": "text: generated verdicts ending in [[N]], `samples` of them averaged (the paper); logprob: the expected total from one next-token distribution over 0-5"})
    samples: int = field(default=3, metadata={"help": "text verdicts: judge samples per candidate, averaged"})
    temperature: float = field(default=0.7, metadata={"help": "text verdicts: the judge's sampling temperature"})
    max_tokens: int = field(default=256, metadata={"help": "text verdicts: tokens per judge answer"})
    pairwise_template: str = field(default="pairwise-logprob", metadata={"help": "the template the policy judges pairs with when its judging is measured (human pairs, self-preference audit)"})
    function: str = field(default="", metadata={"help": "\"module:function\": a function judge stands in for the policy's own judging (tests, ablations); \"\" = the policy judges"})

    def check(self, key: str) -> None:
        if self.samples < 1 or self.max_tokens < 1:
            raise ConfigError(f"{key}: need samples >= 1 and max_tokens >= 1")
        if self.verdict == "text" and self.samples > 1 and self.temperature <= 0:
            raise ConfigError(f"{key}.temperature: several judge samples need temperature > 0")

    def scoring_jury(self, policy: PolicyConfig) -> JudgingConfig:
        """The pointwise jury of one judge that scores the candidates."""
        if self.function:
            judge = JudgeConfig(id="self", type="function", function=self.function)
        else:
            text = self.verdict == "text"
            judge = JudgeConfig(id="self", type="vllm", model=policy.model, engine=policy.engine, pool=policy.pool,
                                verdict=self.verdict, template=self.template or f"additive-5-{self.verdict}",
                                samples=self.samples if text else 1, temperature=self.temperature if text else 0.0,
                                max_tokens=self.max_tokens, chunk_size=policy.chunk_size)
        return JudgingConfig(mode="pointwise", judges=[judge])

    def pairwise_jury(self, policy: PolicyConfig) -> JudgingConfig:
        """The policy as a pairwise judge (both orders), for its agreement with humans and its self-preference."""
        if self.function:
            judge = JudgeConfig(id="self", type="function", function=self.function)
        else:
            judge = JudgeConfig(id="self", type="vllm", model=policy.model, engine=policy.engine, pool=policy.pool,
                                verdict="logprob" if "logprob" in self.pairwise_template else "text",
                                template=self.pairwise_template, chunk_size=policy.chunk_size)
        return JudgingConfig(mode="pairwise", judges=[judge])


@dataclass
class SelfRewardEvalConfig:
    """What each iteration measures besides its own training data."""
    prompts: int = field(default=16, metadata={"help": "held-out prompts (the last N of data, never trained on): win rate over the starting policy and the diversity panel"})
    samples_per_prompt: int = field(default=4, metadata={"help": "samples per held-out prompt for the diversity panel (the first is the one judged for win rate)"})
    judging: Optional[JudgingConfig] = field(default=None, metadata={"help": "the independent jury (pairwise; never the policy): win rate of each iteration's policy over the starting one, and the self-preference baseline; null = not measured"})
    human: HumanEvalConfig = field(default_factory=HumanEvalConfig, metadata={"help": "human-labelled pairs: the policy-as-judge's agreement with the human choice and its position flip rate; their chosen responses are the real reference text of the diversity panel and the other side of the self-preference audit"})
    audit_pairs: int = field(default=32, metadata={"help": "self-preference audit: pairs of the policy's own response and the human-chosen one (from human.path)"})

    def check(self, key: str) -> None:
        if self.prompts < 1 or self.samples_per_prompt < 1 or self.audit_pairs < 0:
            raise ConfigError(f"{key}: need prompts >= 1, samples_per_prompt >= 1 and audit_pairs >= 0")
        if self.judging is not None and self.judging.mode != "pairwise":
            raise ConfigError(f"{key}.judging.mode: the independent jury compares pairs; set it to pairwise")


@dataclass
class SeedSFTConfig:
    """Supervised fine-tuning before iteration 1 (the paper's IFT and EFT seed data)."""
    data: str = field(default="", metadata={"help": "instruction data (prompt/completion, or chosen/rejected rows: the chosen response) for SFT; \"\" = none"})
    judge_data: str = field(default="", metadata={"help": "judge-format examples (prompt = a judging request, completion = the verdict, e.g. ending in [[4]]) for EFT; \"\" = none"})
    limit: Optional[int] = field(default=None, metadata={"help": "read at most this many rows of each"})
    epochs: int = field(default=1, metadata={"help": "passes over the seed rows"})


@dataclass
class SelfRewardConfig:
    """`synthpref self-reward`: the policy samples, judges itself, and learns by DPO from its best-vs-worst pairs."""
    output_dir: str = field(default="runs/self-reward", metadata={"help": "iterations/NNNN/ tables, checkpoints/, policy/ (final, HF format), report.json, metrics.jsonl, tensorboard/; a folder, or a URI that pyarrow or fsspec knows (file://, s3://, gs://, ...: docs/cluster.md)"})
    seed: int = field(default=0, metadata={"help": "base seed of sampling, judging and batch order (iteration t derives its own)"})
    progress: bool = field(default=True, metadata={"help": "show progress bars"})
    verbose: bool = field(default=False, metadata={"help": "show engine, DeepSpeed, transformers and Ray worker output in the terminal (quiet runs write it to OUTPUT/logs/ instead)"})
    iterations: int = field(default=3, metadata={"help": "rounds of sample, self-judge, pair, DPO, sync"})
    prompts_per_iteration: int = field(default=64, metadata={"help": "a fresh slice of the prompt source per iteration (cycled when it runs out)"})
    reference: Literal["previous", "initial"] = field(default="previous", metadata={"help": "DPO's reference in iteration t: previous = M_t, the policy that sampled the pairs (the paper; the policy scores them before training, no extra model); initial = M_0 (after seed SFT), a frozen reference group beside the policy (as many ranks and GPUs again)"})
    length_control_margin: Optional[float] = field(default=None, metadata={"help": "length-controlled pairs (Meta-Rewarding, Wu et al. 2024): among candidates scoring within this margin of the top, the shortest is chosen; null = the top score is chosen"})
    data_policy: Literal["replace", "accumulate"] = field(default="replace", metadata={"help": "replace: each iteration trains on its own pairs (the paper); accumulate: on every iteration's pairs so far (Gerstgrasser et al. 2024)"})
    fresh_fraction: float = field(default=0.0, metadata={"help": "share of each iteration's training set made of real human-labelled pairs from fresh.path, a new slice each iteration (Alemohammad et al. 2023), in [0, 1)"})
    fresh: DataConfig = field(default_factory=DataConfig, metadata={"help": "real preference pairs (prompt/chosen/rejected, hh-rlhf) mixed in by fresh_fraction"})
    self_judge: SelfJudgeConfig = field(default_factory=SelfJudgeConfig)
    dpo: DPOLossConfig = field(default_factory=DPOLossConfig)
    guard: CollapseGuardConfig = field(default_factory=CollapseGuardConfig, metadata={"help": "the collapse guard on the held-out samples' diversity panel, against iteration 0's"})
    eval: SelfRewardEvalConfig = field(default_factory=SelfRewardEvalConfig)
    seed_sft: SeedSFTConfig = field(default_factory=SeedSFTConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    data: DataConfig = field(default_factory=DataConfig)
    policy: PolicyConfig = field(default_factory=lambda: PolicyConfig(samples_per_prompt=4, temperature=0.7, top_p=0.9, max_tokens=256))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=1e-6))

    length_keys: ClassVar[tuple[str, ...]] = ("iterations",)

    def check(self, key: str = "") -> None:
        if not self.policy.model:
            raise ConfigError("policy.model: no policy given")
        self.data.require("data", "prompt source")
        if self.iterations < 1 or self.prompts_per_iteration < 1:
            raise ConfigError("iterations and prompts_per_iteration: must be >= 1")
        if self.policy.samples_per_prompt < 2:
            raise ConfigError("policy.samples_per_prompt: best vs worst needs at least 2 candidates per prompt")
        if not 0 <= self.fresh_fraction < 1:
            raise ConfigError("fresh_fraction: must be in [0, 1)")
        if self.fresh_fraction > 0:
            self.fresh.require("fresh", "real preference pairs for fresh_fraction")
        if self.dpo.confidence_weighting:
            raise ConfigError("dpo.confidence_weighting: self-reward pairs have no label confidence (the scores "
                              "decide); leave it false")
        if self.length_control_margin is not None and self.length_control_margin < 0:
            raise ConfigError("length_control_margin: must be >= 0 (or null)")
        if self.policy.engine.weight_transfer == "nccl" and not (self.policy.engine.num_gpus > 0 and self.train.num_gpus > 0):
            raise ConfigError("policy.engine.weight_transfer: nccl needs GPU engines and GPU trainer ranks; use reload on CPU")
