"""research.checks: checks that a model, its loss and its gradient are right before trusting a run.

* ``check_gradients(loss_fn, params, *args, **options) -> GradCheckReport``: the analytic gradient
  of any JAX function of a parameter pytree against centered differences in float64, per leaf,
  with kink detection, an ``h`` sweep, regularization apart, burn-in and a directional check
  (``research.checks.gradcheck``; options in ``GradCheckOptions``).
* ``check_model_gradients(config) -> GradCheckReport``: the same for a configured experiment
  (what ``scripts/gradcheck.py`` runs; ``research.checks.model_check``).
* ``run_sanity_checks(config) -> SanityReport``: loss at chance, regularization raises the loss,
  overfit a tiny subset (what ``scripts/sanity.py`` runs; ``research.checks.sanity``).

The model-level checks import the training stack only when called, so ``check_gradients`` stays
usable on its own.
"""
from research.checks.gradcheck import GradCheckOptions, check_gradients, make_options
from research.checks.model_check import check_model_gradients
from research.checks.report import GradCheckReport, LeafResult, error_band, relative_error
from research.checks.sanity import CheckResult, SanityReport, run_sanity_checks

__all__ = [
    "CheckResult", "GradCheckOptions", "GradCheckReport", "LeafResult", "SanityReport",
    "check_gradients", "check_model_gradients", "error_band", "make_options", "relative_error",
    "run_sanity_checks",
]
