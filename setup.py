"""Build of trainlab: the packages (metadata in pyproject.toml) and the fused CPU update kernels.

``research/optim/fused/kernels.cc`` is compiled with the system C++ compiler into
``research/optim/fused/libtrainlab_fused.so`` (a plain shared library that
``research.optim.fused`` loads with ctypes and registers through ``jax.ffi``; the XLA FFI headers
come from ``jax.ffi.include_dir()``). The kernels are optional: without a compiler, or when the
compilation fails, the install goes on with a warning and the update rules run in pure JAX
(``research.optim.fused.status()`` says so).
"""
import os
import sysconfig

from setuptools import Extension, errors, setup
from setuptools.command.build_ext import build_ext

_KERNELS = Extension(
    "research.optim.fused.libtrainlab_fused",
    sources=["research/optim/fused/kernels.cc"],
    language="c++",
    # -ffp-contract=off: no FMA the compiler chooses; the kernels spell out the ones XLA:CPU
    # contracts, so they round as the pure-JAX rules do; -fno-math-errno: sqrt without errno,
    # so the loops vectorize.
    extra_compile_args=["-std=c++17", "-O3", "-g0", "-ffp-contract=off", "-fno-math-errno"],
    optional=True,
)


class BuildFusedKernels(build_ext):
  """``build_ext`` for a ctypes library: no Python ABI tag in the file name, headers from jax, and
  a failure (no compiler, no jax in the build environment) is a warning, not an error."""

  def get_ext_filename(self, fullname):
    return os.path.join(*fullname.split(".")[:-1], "libtrainlab_fused.so")

  def get_export_symbols(self, ext):
    return []  # not a Python module: nothing named PyInit_* to export

  def build_extension(self, ext):
    try:
      import jax  # pylint: disable=import-outside-toplevel
      # -isystem: the XLA FFI headers' own warnings are not ours to print
      ext.extra_compile_args = ["-isystem", jax.ffi.include_dir(), *ext.extra_compile_args]
      super().build_extension(ext)
    except (ImportError, AttributeError, OSError, errors.CCompilerError, errors.BaseError) as error:
      self.warn(f"the fused update kernels were not built ({type(error).__name__}: {error}); "
                "the update rules will run in pure JAX")


# The compile flags above are GCC's and Clang's: no kernels on Windows (pure JAX there).
_EXT_MODULES = [] if sysconfig.get_platform().startswith("win") else [_KERNELS]

setup(ext_modules=_EXT_MODULES, cmdclass={"build_ext": BuildFusedKernels})
