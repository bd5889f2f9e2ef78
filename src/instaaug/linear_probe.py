"""A linear probe of frozen features (scikit-learn's logistic regression), with its regularisation chosen on
held-out training data and test-time augmentation by averaging log-probabilities over views.

Used to score self-supervised encoders: ``instaaug run contrastive`` and ``instaaug fit --task contrastive``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler


@dataclass(frozen=True)
class Readout:
    """Standardisation and a multinomial logistic regression fitted on features (N, D)."""

    scaler: StandardScaler
    model: LogisticRegression

    @classmethod
    def fit(cls, features: torch.Tensor, labels: torch.Tensor, c: float, seed: int = 0) -> Readout:
        """Fit on features (N, D) and integer labels (N,) with inverse L2 strength ``c``."""
        x, y = features.float().numpy(), labels.numpy()
        scaler = StandardScaler().fit(x)
        model = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(scaler.transform(x), y)
        return cls(scaler, model)

    def log_probs(self, features: torch.Tensor) -> torch.Tensor:
        """Features (..., D) → log-probabilities (..., K), computed from the logits (no log(0))."""
        flat = features.reshape(-1, features.shape[-1]).float().numpy()
        logits = torch.from_numpy(self.model.decision_function(self.scaler.transform(flat)))
        if logits.dim() == 1:  # two classes: one logit for the second
            logits = torch.stack((torch.zeros_like(logits), logits), dim=1)
        return logits.log_softmax(-1).reshape(*features.shape[:-1], -1).float()

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        """Labels (N,) for features (N, D), or for views (N, V, D) by the mean log-probability over the V views."""
        log_p = self.log_probs(features)
        if features.dim() == 3:
            log_p = log_p.mean(1)
        return torch.from_numpy(np.asarray(self.model.classes_))[log_p.argmax(-1)]

    def accuracy(self, features: torch.Tensor, labels: torch.Tensor) -> float:
        """Accuracy on features (N, D) or views (N, V, D)."""
        return float((self.predict(features) == labels).float().mean())


def select_readouts(
    train: tuple[torch.Tensor, torch.Tensor],
    held_out: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    cs: tuple[float, ...],
    seed: int = 0,
) -> tuple[Readout, Readout, dict[str, float]]:
    """Fit a readout per C on ``train`` (features (N, D), labels (N,)) and choose C on ``held_out`` (clean features
    (M, D), views' features (M, V, D), labels (M,)): separately for the clean and the TTA evaluation.

    Returns (best clean readout, best TTA readout, {"c", "c_tta", "held_out_accuracy", "held_out_accuracy_tta"}).
    """
    if not cs or not all(c > 0 for c in cs):
        raise ValueError(f"the probe's C values must be positive numbers, got {cs}")
    clean, views, labels = held_out
    readouts = {c: Readout.fit(*train, c, seed) for c in cs}
    scores = {c: (r.accuracy(clean, labels), r.accuracy(views, labels)) for c, r in readouts.items()}
    best = max(cs, key=lambda c: scores[c][0])
    best_tta = max(cs, key=lambda c: scores[c][1])
    chosen = {
        "c": best,
        "c_tta": best_tta,
        "held_out_accuracy": scores[best][0],
        "held_out_accuracy_tta": scores[best_tta][1],
    }
    return readouts[best], readouts[best_tta], chosen
