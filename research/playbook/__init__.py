"""research.playbook: the playbook's claims, each reproduced by a small experiment of the project.

* :mod:`~research.playbook.core`     ``Claim``, ``Condition``, ``Outcome``; the verdict rule
  (``decide``: mean ± 2 standard errors over seeds against the claim's threshold).
* :mod:`~research.playbook.registry` the claims in the playbook's order (``NAMES``, ``get``,
  ``parse``).
* :mod:`~research.playbook.claims`   one module per claim: the seed's statement and section, the
  experiment (configs + the tools it calls), the rule, the figure.
* :mod:`~research.playbook.report`   ``run_claims`` and ``CLAIMS.md``.
* :mod:`~research.playbook.engine`   configs as overrides, the engine's entry points on cached
  data (``sweep``: variants x seeds as one members program).

``python3 scripts/reproduce.py --workdir=DIR`` runs them all; research/playbook/README.md is the
reference (each claim, its experiment, its rule, how to read its figure).
"""
from research.playbook.core import (ERROR, INCONCLUSIVE, MODES, NOT_REPRODUCED, REPRODUCED,
                                    Claim, Condition, Outcome, combine, condition, decide)
from research.playbook.registry import NAMES, get, parse
from research.playbook.report import run_claims, write_claims

__all__ = ["ERROR", "INCONCLUSIVE", "MODES", "NAMES", "NOT_REPRODUCED", "REPRODUCED", "Claim",
           "Condition", "Outcome", "combine", "condition", "decide", "get", "parse",
           "run_claims", "write_claims"]
