"""Test-wide settings.

x64 is enabled before any array is created, so float64 tests are really float64. Tests that
need to see x64 *off* (the gradient checker's "works either way") run in a subprocess.
"""
import os

os.environ.setdefault("XLA_FLAGS", "")
os.environ.setdefault("MPLBACKEND", "Agg")

import jax

jax.config.update("jax_enable_x64", True)
