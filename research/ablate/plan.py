"""Which variants train together as vmapped members of one program, and which alone.

Variants whose configs are equal outside ``research.train.members.VARYING_PATHS`` (the seed,
the optimizer's hyperparameters, ``loss.l2``, ``model.dropout``, ``model.init``,
``model.output_scale``) form one group, and a group of two or more that the members trainer
accepts (``research.train.members.check_compatible``) is ONE ``train_members`` call: one compiled
program, each member equal to its single run. Everything else (a single variant, a group the
members trainer refuses, or ``vmap=False``) is a separate ``train_and_evaluate`` run, with the
full babysitting of a single run (batch losses, update ratios, checkpoints every epoch).

Units keep the order of the variants' first appearance, so a re-launch visits them in the same
order.
"""
from __future__ import annotations

import json
from typing import NamedTuple, Sequence

from research.ablate.grid import Variant
from research.launch.config_tree import flatten_config

MEMBERS = "members"
SINGLE = "single"


class Unit(NamedTuple):
  """What one training call runs: ``kind`` is :data:`MEMBERS` or :data:`SINGLE`."""
  kind: str
  variants: tuple[Variant, ...]
  why: str = ""                   # why a group of two or more is not stacked (empty otherwise)


def shared_key(variant: Variant) -> str:
  """The part of a variant's config that members of one program must share (as JSON)."""
  from research.train.members import VARYING_PATHS
  flat = flatten_config(variant.config.to_dict(), tuples_as_lists=True)
  return json.dumps({k: v for k, v in flat.items() if k not in VARYING_PATHS}, sort_keys=True,
                    default=repr)


def plan_units(variants: Sequence[Variant], vmap: bool = True, max_members: int = 0
               ) -> list[Unit]:
  """The training calls of an ablation (module docstring).

  Args:
    variants: the grid's variants.
    vmap: stack the variants that may be stacked (False: every variant alone).
    max_members: at most this many members per program (0: no limit); a larger group is split
      into programs of at most that many, in order.
  """
  from research.train.members import check_compatible
  if isinstance(max_members, bool) or not isinstance(max_members, int) or max_members < 0:
    raise ValueError(f"--max_members={max_members!r} must be an integer >= 0 (0: no limit)")
  groups: dict[str, list[Variant]] = {}
  for variant in variants:
    groups.setdefault(shared_key(variant) if vmap else variant.name, []).append(variant)
  units: list[Unit] = []
  for group in groups.values():
    why = ""
    if len(group) > 1:
      try:
        check_compatible([v.config for v in group])
      except ValueError as e:
        why = str(e)
    if len(group) == 1 or why:
      units.extend(Unit(SINGLE, (v,), why) for v in group)
      continue
    size = max_members or len(group)
    for start in range(0, len(group), size):
      chunk = tuple(group[start:start + size])
      units.append(Unit(MEMBERS, chunk) if len(chunk) > 1 else Unit(SINGLE, chunk))
  return units


def describe(units: Sequence[Unit]) -> list[str]:
  """How each unit trains: one line for a separate run, a line per member for a program."""
  lines = []
  for i, unit in enumerate(units, 1):
    if unit.kind == MEMBERS:
      lines.append(f"[{i}/{len(units)}] {len(unit.variants)} vmapped members of one program:")
      lines.extend(f"    {v.name}" for v in unit.variants)
    else:
      lines.append(f"[{i}/{len(units)}] separate run: {unit.variants[0].name}"
                   + (f" (not stacked: {unit.why})" if unit.why else ""))
  return lines
