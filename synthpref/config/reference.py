"""docs/config.md, generated from the configs' help text: `python -m synthpref.config.reference > docs/config.md`
(a unit test fails when the file is stale)."""
from __future__ import annotations

from synthpref.config.jobs import EvalJudgeConfig, LabelConfig, RFTConfig, TrainRMConfig
from synthpref.config.loader import describe_keys
from synthpref.config.dpo import DPOConfig
from synthpref.config.ppo import PPOConfig
from synthpref.config.self_reward import SelfRewardConfig
from synthpref.config.cai import CAIConfig

# (subcommand, config class, what the job does)
JOBS = [
    ("label", LabelConfig, "sample k completions per prompt, pair them, judge every pair in both orders with a jury, "
                           "write preferences"),
    ("eval-judge", EvalJudgeConfig, "a judge's or a jury's agreement with human preference labels"),
    ("train-rm", TrainRMConfig, "a Bradley-Terry reward model trained on preference pairs"),
    ("rft", RFTConfig, "iterative rejection-sampling fine-tuning with live weight sync"),
    ("ppo", PPOConfig, "reinforcement learning from AI feedback (PPO with a critic, or RLOO/GRPO group baselines) "
                       "with a KL penalty to the starting policy and an over-optimisation monitor"),
    ("dpo", DPOConfig, "offline DPO or IPO on preference pairs, the reference log-probs computed once"),
    ("self-reward", SelfRewardConfig, "self-rewarding DPO: the policy samples, judges its own candidates and learns "
                                      "from its best-vs-worst pairs, with the collapse and self-preference guards"),
    ("cai", CAIConfig, "constitutional AI: critique and revision against drawn principles and fine-tuning on the "
                       "revisions (SL phase), then principle-conditioned soft labels, a reward model trained on them "
                       "and PPO against it (RL phase), one resumable job"),
]


def config_reference() -> str:
    parts = ["# Config reference",
             "",
             "Generated from the configs' help text by `python -m synthpref.config.reference > docs/config.md`;",
             "`synthpref <job> --help` prints the same lists. Every key can be set in the YAML file given with",
             "`--config` or on the command line as `key.sub=value` (list items by index, e.g.",
             "`judging.judges.0.verdict=text`). Sections with the same name (`ray`, `data`, `policy`, `judging`,",
             "`train`) mean the same in every job and are checked by the same code.",
             ""]
    for name, cls, what in JOBS:
        rerun = (f" A rerun in the same output folder may raise {', '.join(f'`{k}`' for k in cls.length_keys)}"
                 f" to continue the run; any other change is refused, naming the key." if cls.length_keys else
                 " A rerun in the same output folder resumes; any change that alters the output is refused, "
                 "naming the key.")
        parts += [f"## `synthpref {name}`", "", f"{what[0].upper()}{what[1:]}.{rerun}", "", "```"]
        parts += describe_keys(cls)
        parts += ["```", ""]
    return "\n".join(parts)


if __name__ == "__main__":
    print(config_reference(), end="")
