"""research.ablate: research ablations, launched as a grid and compared side by side.

* :mod:`~research.ablate.grid`     ``parse_grid(config, ['<field>=<v1>,<v2>'], seeds)``: axes whose
  values are parsed with each field's own type; ``expand`` -> :class:`Variant` s (name, overrides,
  config), named ``optimizer.learning_rate=1e-3,model.init=he,seed=1``.
* :mod:`~research.ablate.plan`     ``plan_units(variants)``: variants that differ only in what the
  members trainer can stack (``research.train.members.VARYING_PATHS``) become ONE
  ``train_members`` program; the rest separate ``train_and_evaluate`` runs.
* :mod:`~research.ablate.launcher` ``run_ablation(root, units)``: sibling workdirs, finished
  variants skipped, interrupted ones resumed (a members program is rerun whole).
* :mod:`~research.ablate.compare`  ``read_run``, ``compare`` (differing config fields, mean ± std
  over seeds, sorted), ``format_table``, ``write_outputs`` (CSV, JSON), ``figure`` (overlaid
  validation curves, seeds as a band).

Entry points: ``scripts/ablate.py`` and ``scripts/compare.py``; the reference is
research/ablate/README.md.
Importing this package is cheap: jax, the training engine and matplotlib load where they are used.
"""
from research.ablate.grid import Axis, Variant, expand, parse_axis, parse_grid, variant_name
from research.ablate.plan import MEMBERS, SINGLE, Unit, describe, plan_units

__all__ = [
    "Axis", "MEMBERS", "SINGLE", "Unit", "Variant", "describe", "expand", "parse_axis",
    "parse_grid", "plan_units", "variant_name",
]
