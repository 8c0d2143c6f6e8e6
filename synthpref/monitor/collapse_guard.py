"""The collapse guard: stop (or warn) when a diversity measure of a policy's samples has fallen too far
below the starting policy's.

Alemohammad et al. 2023 ("Self-Consuming Generative Models Go MAD"): a model trained on its own samples
loses diversity generation after generation (Model Autophagy Disorder); no share of synthetic data is
safe in general, so the rule is to measure and stop. The guard compares one measure of the panel
(diversity.py) with its baseline: it fires when the measure falls below `min_fraction` of the baseline.
For self-BLEU, where higher means less diverse, it compares the diversity 1 - self-BLEU the same way.
"""
from __future__ import annotations

from dataclasses import dataclass

from synthpref.monitor.diversity import HIGHER_IS_MORE_DIVERSE


@dataclass
class GuardVerdict:
    fired: bool
    metric: str
    value: float | None            # the measure now
    baseline: float | None         # the measure of the baseline panel
    threshold: float | None        # in the measure's own units: fires below it (self_bleu: above it)
    message: str


def check_collapse(panel: dict, baseline: dict, metric: str, min_fraction: float, label: str) -> GuardVerdict:
    """Compare `panel[metric]` with `baseline[metric]`; `label` says where the panel comes from (e.g.
    "iteration 3"). A missing value or baseline never fires; the message says why."""
    if metric not in HIGHER_IS_MORE_DIVERSE:
        raise ValueError(f"unknown diversity metric {metric!r} (known: {', '.join(HIGHER_IS_MORE_DIVERSE)})")
    value, base = panel.get(metric), baseline.get(metric)
    if value is None or base is None:
        missing = "no value" if value is None else "no baseline value"
        return GuardVerdict(False, metric, value, base, None,
                            f"collapse guard: {metric} not checked at {label}: {missing} (too few words to measure)")
    if HIGHER_IS_MORE_DIVERSE[metric]:
        threshold = min_fraction * base
        fired = value < threshold
        message = (f"collapse guard: {metric} fell to {value:.3f} at {label}, below {min_fraction:g} x the baseline "
                   f"{base:.3f} (threshold {threshold:.3f})" if fired else
                   f"collapse guard: {metric} {value:.3f} at {label}, not below {min_fraction:g} x the baseline "
                   f"{base:.3f} (threshold {threshold:.3f})")
    else:                                          # self_bleu: the diversity 1 - self_bleu must keep its share
        threshold = 1 - min_fraction * (1 - base)
        fired = value > threshold
        message = (f"collapse guard: {metric} rose to {value:.3f} at {label}, so 1 - {metric} fell below "
                   f"{min_fraction:g} x the baseline's {1 - base:.3f} (threshold {threshold:.3f})" if fired else
                   f"collapse guard: {metric} {value:.3f} at {label}, not above the threshold {threshold:.3f} "
                   f"(1 - {min_fraction:g} x (1 - the baseline {base:.3f}))")
    return GuardVerdict(fired, metric, value, base, threshold, message)
