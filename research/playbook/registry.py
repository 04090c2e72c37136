"""The claims, in the playbook's order, by the names ``--claims`` takes.

Each name is a module of :mod:`research.playbook.claims` defining ``CLAIM``; modules are imported
only when a claim is looked up, so listing the names costs nothing.
"""
from __future__ import annotations

import importlib
from typing import Sequence

from research.playbook.core import Claim

#: Every claim's name, numbered 1.. in this order (the issue's order).
NAMES: tuple[str, ...] = (
    # Gradient checks
    "centered", "precision", "depth", "kinks",
    # Sanity checks
    "initial_loss", "reg_loss", "overfit",
    # Babysitting
    "lr_curves", "batch_noise", "update_ratio", "regularization",
    # Initialization and batch norm
    "zero_init", "activations", "init", "batch_norm",
    # Update rules
    "bowl", "saddle", "rules", "nesterov", "annealing", "second_order",
    # Search and ensembles
    "random_search", "log_scale", "ensembles", "ema",
)


def get(name: str) -> Claim:
  """The claim called ``name``.

  Raises:
    ValueError: an unknown name (the message lists the known ones).
  """
  if name not in NAMES:
    raise ValueError(f"unknown claim {name!r}; known: {', '.join(NAMES)}")
  claim = importlib.import_module(f"research.playbook.claims.{name}").CLAIM
  if claim.name != name or claim.number != NAMES.index(name) + 1:
    raise RuntimeError(f"claim module {name!r} defines claim {claim.number} {claim.name!r}")
  return claim


def parse(names: str | Sequence[str] | None) -> list[str]:
  """``"init,bowl"`` (or a list) -> the names in the playbook's order, without duplicates; None
  or ``"all"`` -> every name.

  Raises:
    ValueError: an unknown or empty name list (the message lists the known names).
  """
  if names is None:
    return list(NAMES)
  if isinstance(names, str):
    names = names.split(",")
  wanted = [n.strip() for n in names if n.strip()]
  if wanted == ["all"]:
    return list(NAMES)
  unknown = [n for n in wanted if n not in NAMES]
  if unknown:
    raise ValueError(f"unknown claim{'s' if len(unknown) > 1 else ''} "
                     f"{', '.join(repr(n) for n in unknown)}; known: {', '.join(NAMES)}")
  if not wanted:
    raise ValueError(f"no claim given; known: {', '.join(NAMES)}")
  return [n for n in NAMES if n in wanted]
