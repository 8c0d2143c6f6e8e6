"""Reward over-optimisation monitor (Gao et al. 2022, "Scaling Laws for Reward Model Overoptimization"):
the proxy reward keeps rising past the point where a gold judge's reward peaks. Each evaluation records
proxy and gold reward on held-out prompts; when the gold reward has fallen for `patience` evaluations in
a row while the proxy rose, the monitor says so (and the run stops if told to). The best gold evaluation
is remembered, so its policy can be kept."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class OverOptimisation:
    patience: int
    history: list[dict] = field(default_factory=list)    # {"step", "proxy", "gold", "kl", "length"}
    streak: int = 0                                       # evaluations in a row: gold down while proxy up
    best_step: int | None = None
    best_gold: float | None = None

    def record(self, step: int, proxy: float | None, gold: float | None, kl: float | None, length: float) -> dict:
        """Add one evaluation; returns {"diverging": bool, "new_best": bool, "streak": n}."""
        previous = self.history[-1] if self.history else None
        self.history.append({"step": step, "proxy": proxy, "gold": gold, "kl": kl, "length": length})
        diverging_now = (previous is not None and None not in (gold, proxy, previous["gold"], previous["proxy"])
                         and gold < previous["gold"] and proxy > previous["proxy"])
        self.streak = self.streak + 1 if diverging_now else 0
        new_best = gold is not None and (self.best_gold is None or gold > self.best_gold)
        if new_best:
            self.best_step, self.best_gold = step, gold
        return {"diverging": self.streak >= self.patience, "new_best": new_best, "streak": self.streak}

    def state(self) -> dict:
        return asdict(self)

    @classmethod
    def restore(cls, patience: int, state: dict | None) -> "OverOptimisation":
        if not state:
            return cls(patience)
        return cls(patience, list(state["history"]), state["streak"], state["best_step"], state["best_gold"])

    def message(self) -> str:
        last = self.history[-self.patience - 1:]
        gold = " -> ".join(f"{e['gold']:.3f}" for e in last)
        proxy = " -> ".join(f"{e['proxy']:.3f}" for e in last)
        return (f"reward over-optimisation: over the last {self.patience} evaluations the gold reward fell "
                f"({gold}) while the proxy rose ({proxy}); best gold {self.best_gold:.3f} at step {self.best_step}")
