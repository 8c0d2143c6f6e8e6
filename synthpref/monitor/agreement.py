"""Agreement of machine verdicts with human ones, one tally per judge, jury rule or group: shared by
`synthpref eval-judge` (human-labelled pairs) and spot checks (human reviews of a run's labels)."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from synthpref.judging.verdicts import FAILED, TIE


@dataclass
class Tally:
    """Machine verdicts against the human choice; they add up: pairs = agree + disagree + ties + failed (a
    human tie counts apart, in human_ties: it cannot be agreed with)."""
    pairs: int = 0
    agree: int = 0
    disagree: int = 0
    ties: int = 0
    failed: int = 0
    human_ties: int = 0

    def count(self, machine: str, human: str) -> None:
        if human == TIE:
            self.human_ties += 1
            return
        self.pairs += 1
        if machine == FAILED:
            self.failed += 1
        elif machine == TIE:
            self.ties += 1
        elif machine == human:
            self.agree += 1
        else:
            self.disagree += 1

    @property
    def decided(self) -> int:
        return self.agree + self.disagree

    def rates(self) -> dict:
        """The counts, agreement over decided pairs, agreement with machine ties as half, tie and failure rates."""
        counted = self.decided + self.ties
        return {**asdict(self), "agreement": self.agree / self.decided if self.decided else None,
                "agreement_ties_half": (self.agree + 0.5 * self.ties) / counted if counted else None,
                "tie_rate": self.ties / self.pairs if self.pairs else None,
                "failure_rate": self.failed / self.pairs if self.pairs else None}
