"""The `guard` section of rft and ppo: which diversity measure the collapse guard watches, how far it may
fall below the starting policy's, and what happens then (synthpref/monitor/collapse_guard.py)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from synthpref.config.loader import ConfigError


@dataclass
class CollapseGuardConfig:
    """Model collapse guard (Alemohammad et al. 2023): compares a diversity measure of the policy's samples
    with the starting policy's and acts when it falls below min_fraction of it."""
    metric: Literal["distinct_1", "distinct_2", "distinct_3", "self_bleu", "unigram_entropy", "rare_mass"] = field(default="distinct_2", metadata={"help": "the measure watched: distinct_N = distinct word N-grams / all N-grams; self_bleu = mean BLEU of each sample against the others (higher = less diverse, so 1 - self_bleu is compared); unigram_entropy in bits; rare_mass = share of words outside the starting samples' most frequent words covering 90% of their tokens"})
    min_fraction: float = field(default=0.5, metadata={"help": "the guard fires when the measure falls below this fraction of the starting policy's value, in (0, 1]"})
    action: Literal["stop", "warn", "off"] = field(default="stop", metadata={"help": "stop: end the run there, keeping the final policy; warn: print the message and go on; off: measure only (rft and ppo set warn as their default, so a run goes on unless told to stop)"})

    def check(self, key: str) -> None:
        if not 0 < self.min_fraction <= 1:
            raise ConfigError(f"{key}.min_fraction: must be in (0, 1], got {self.min_fraction}")
