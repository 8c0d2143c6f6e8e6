"""KL to the reference policy: per-token estimators and the coefficient controllers.

Estimators of KL(pi || pi_ref) from samples of pi, on log r = log pi - log pi_ref per token (Schulman
2020, "Approximating KL Divergence"): k1 = log r (unbiased, can be negative), k2 = (log r)^2 / 2 (biased,
low variance), k3 = exp(-log r) - 1 + log r (unbiased, never negative). Values are clamped to
[-10, 10] as OpenRLHF does, so one wild token cannot dominate. Controllers: fixed, and the adaptive one of
Ziegler et al. 2019 ("Fine-Tuning Language Models from Human Preferences").
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

ESTIMATORS = ("k1", "k2", "k3")


def kl_per_token(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str = "k1",
                 mask: torch.Tensor | None = None) -> torch.Tensor:
    """The chosen estimator per token ([B, T]); masked positions are 0."""
    log_r = logp.float() - ref_logp.float()
    if estimator == "k1":
        kl = log_r
    elif estimator == "k2":
        kl = 0.5 * log_r ** 2
    elif estimator == "k3":
        kl = torch.exp(-log_r) - 1 + log_r
    else:
        raise ValueError(f"KL estimator {estimator!r}: expected one of {ESTIMATORS}")
    kl = torch.clamp(kl, -10.0, 10.0)
    return kl if mask is None else kl * mask


@dataclass
class FixedKL:
    """A constant KL coefficient."""
    value: float

    def update(self, observed_kl: float, n_samples: int) -> float:
        return self.value


@dataclass
class AdaptiveKL:
    """Ziegler et al. 2019: beta <- beta (1 + clip(KL / target - 1, -0.2, 0.2) n / horizon), which steers
    the observed KL (nats per sequence) towards `target`."""
    value: float
    target: float
    horizon: int = 10000

    def update(self, observed_kl: float, n_samples: int) -> float:
        error = min(max(observed_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_samples / self.horizon
        return self.value


def kl_controller(coef: float, target: float | None, horizon: int) -> FixedKL | AdaptiveKL:
    return AdaptiveKL(coef, target, horizon) if target else FixedKL(coef)
