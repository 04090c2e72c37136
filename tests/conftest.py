"""Test-wide settings.

x64 is enabled before any array is created, so float64 tests are really float64. Tests that
need to see x64 *off* (the gradient checker's "works either way") run in a subprocess.

One persistent compilation cache for the whole session (a fresh temporary folder, shared with the
scripts the tests start through ``TRAINLAB_COMPILATION_CACHE``): the tests train the same small
models again and again, and identical programs are then compiled once. A test that needs another
cache (or none) sets the variable itself.
"""
import os
import tempfile

os.environ.setdefault("XLA_FLAGS", "")
os.environ.setdefault("MPLBACKEND", "Agg")
_CACHE = tempfile.mkdtemp(prefix="trainlab_tests_jax_cache_")
os.environ.setdefault("TRAINLAB_COMPILATION_CACHE", _CACHE)

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
if os.environ["TRAINLAB_COMPILATION_CACHE"].lower() not in ("off", "0", "none", "false"):
  jax.config.update("jax_compilation_cache_dir", os.environ["TRAINLAB_COMPILATION_CACHE"])
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
