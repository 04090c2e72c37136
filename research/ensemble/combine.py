"""Combining members: the ensemble averages predicted probabilities.

``p_ens(y | x) = (1/K) sum_k softmax(z_k(x) / T)`` (T = 1 for prediction; T > 1 gives the soft
targets for distillation). Averaging probabilities, not logits, is the playbook's rule: it is the
mixture of the members' predictive distributions.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from research.ensemble.members import softmax


def ensemble_probabilities(logits: np.ndarray, temperature: float = 1.0,
                           weights: Sequence[float] | None = None) -> np.ndarray:
  """Mean over members of ``softmax(logits / T)``; ``logits`` has shape ``(K, N, C)``.

  Args:
    logits: member logits, ``(K, N, C)``.
    temperature: T > 0.
    weights: optional non-negative member weights (normalised to sum to 1).

  Returns:
    ``(N, C)`` probabilities.
  """
  logits = np.asarray(logits)
  if logits.ndim != 3:
    raise ValueError(f"logits must have shape (K, N, C); got {logits.shape}.")
  probs = softmax(logits, temperature)
  if weights is None:
    return probs.mean(axis=0)
  w = np.asarray(weights, np.float64)
  if w.shape != (logits.shape[0],) or np.any(w < 0) or w.sum() <= 0:
    raise ValueError(f"weights={list(w)} must be {logits.shape[0]} non-negative numbers with a "
                     "positive sum.")
  return np.tensordot(w / w.sum(), probs, axes=1)


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
  """Fraction of examples whose arg-max class equals the label."""
  return float(np.mean(np.argmax(probs, axis=-1) == np.asarray(labels)))


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
  """Mean negative log-likelihood ``-log p(y | x)`` (probabilities clipped at 1e-12)."""
  p = np.take_along_axis(probs, np.asarray(labels)[:, None].astype(np.int64), axis=-1)[:, 0]
  return float(-np.mean(np.log(np.clip(p, 1e-12, None))))


def member_metrics(logits: np.ndarray, labels: np.ndarray) -> list[dict[str, float]]:
  """Accuracy and NLL of each member alone."""
  return [{"accuracy": accuracy(softmax(z), labels), "nll": nll(softmax(z), labels)}
          for z in np.asarray(logits)]


def cumulative_metrics(logits: np.ndarray, labels: np.ndarray) -> list[dict[str, float]]:
  """Ensemble accuracy and NLL of the first k members, for k = 1..K (members in given order),
  with ``n`` the number of examples they were measured on."""
  probs = softmax(np.asarray(logits))
  running = np.cumsum(probs, axis=0)
  out = []
  for k in range(1, len(probs) + 1):
    p = running[k - 1] / k
    out.append({"k": k, "accuracy": accuracy(p, labels), "nll": nll(p, labels),
                "n": int(len(labels))})
  return out
