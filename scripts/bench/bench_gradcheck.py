r"""Speed of the gradient checker against jax.test_util.check_grads and torch.autograd.gradcheck.

    python scripts/bench/bench_gradcheck.py                  # 784-128-10 tanh MLP (~102k params)
    python scripts/bench/bench_gradcheck.py --batch=8 --coords_per_leaf=20 --repeats=5

Same model (784-128-10 tanh MLP, mean softmax cross-entropy, float64) and batch for every tool:

* ours: ``check_gradients(..., coords_per_leaf=20)``: 20 coordinates of every leaf (the 10-element
  output bias entirely), centered differences, kink tracing on, 2 random directions; cold (first
  call: tracing + compilation) and warm (best of ``--repeats``, new coordinates each call).
* ``jax.test_util.check_grads(f, (params,), order=1, modes=['rev'])`` on the jitted loss: one
  random direction (VJP against a numerical JVP); best of repeats after a warm-up call.
* ``torch.autograd.gradcheck``: ``fast_mode=True`` (random projections; one direction) and the
  default full mode (every one of the ~102k coordinates: the whole numerical Jacobian), once.

Printed ratios are other / ours (warm). Timings are wall-clock on this machine and shared CPUs:
compare ratios from one run, not absolute numbers across runs.
"""
import time

from absl import app
from absl import flags

import jax
import jax.numpy as jnp
import numpy as np

_BATCH = flags.DEFINE_integer("batch", 8, "examples in the batch")
_COORDS = flags.DEFINE_integer("coords_per_leaf", 20, "coordinates per leaf (ours)")
_REPEATS = flags.DEFINE_integer("repeats", 5, "warm repeats (best is reported)")
_TORCH_FULL = flags.DEFINE_boolean("torch_full", True,
                                   "also run torch.autograd.gradcheck's full mode (slow)")

SIZES = (784, 128, 10)


def _data(batch: int):
  rng = np.random.default_rng(0)
  params = {"w1": rng.standard_normal(SIZES[:2]) / np.sqrt(SIZES[0]), "b1": np.zeros(SIZES[1]),
            "w2": rng.standard_normal(SIZES[1:]) / np.sqrt(SIZES[1]), "b2": np.zeros(SIZES[2])}
  x = rng.standard_normal((batch, SIZES[0]))
  y = rng.integers(0, SIZES[2], batch)
  return params, x, y


def loss_fn(params, x, y):
  h = jnp.tanh(x @ params["w1"] + params["b1"])
  logits = h @ params["w2"] + params["b2"]
  return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(y.shape[0]), y])


def _best(fn, repeats: int) -> float:
  times = []
  for k in range(repeats):
    start = time.perf_counter()
    fn(k)
    times.append(time.perf_counter() - start)
  return min(times)


def bench_ours(params, x, y, coords: int, repeats: int) -> dict:
  from research.checks.gradcheck import check_gradients
  start = time.perf_counter()
  report = check_gradients(loss_fn, params, x, y, coords_per_leaf=coords, seed=0)
  cold = time.perf_counter() - start
  assert report.ok, str(report)
  warm = _best(lambda k: check_gradients(loss_fn, params, x, y, coords_per_leaf=coords,
                                         seed=k + 1), repeats)
  checked = sum(leaf.num_checked for leaf in report.leaves)
  return {"cold": cold, "warm": warm, "coordinates": checked,
          "max_rel_error": max(leaf.max_rel_error for leaf in report.leaves)}


def bench_check_grads(params, x, y, repeats: int) -> dict:
  from jax.test_util import check_grads
  params = jax.tree.map(jnp.asarray, params)
  x, y = jnp.asarray(x), jnp.asarray(y)
  f = jax.jit(lambda p: loss_fn(p, x, y))
  start = time.perf_counter()
  check_grads(f, (params,), order=1, modes=["rev"])
  cold = time.perf_counter() - start
  warm = _best(lambda k: check_grads(f, (params,), order=1, modes=["rev"]), repeats)
  return {"cold": cold, "warm": warm}


def bench_torch(params, x, y, repeats: int, full: bool) -> dict | None:
  try:
    import torch
  except ImportError:
    return None
  torch.set_num_threads(max(1, torch.get_num_threads()))
  tp = [torch.tensor(params[k], dtype=torch.float64, requires_grad=True)
        for k in ("w1", "b1", "w2", "b2")]
  tx = torch.tensor(x, dtype=torch.float64)
  ty = torch.tensor(y, dtype=torch.long)

  def f(w1, b1, w2, b2):
    logits = torch.tanh(tx @ w1 + b1) @ w2 + b2
    return torch.nn.functional.cross_entropy(logits, ty)

  out = {}
  out["fast"] = _best(lambda k: torch.autograd.gradcheck(f, tuple(tp), fast_mode=True),
                      repeats)
  if full:
    start = time.perf_counter()
    torch.autograd.gradcheck(f, tuple(tp))
    out["full"] = time.perf_counter() - start
  return out


def main(argv):
  del argv
  jax.config.update("jax_enable_x64", True)
  params, x, y = _data(_BATCH.value)
  num_params = sum(v.size for v in params.values())
  print(f"model: {'-'.join(map(str, SIZES))} tanh MLP, {num_params} parameters, batch "
        f"{_BATCH.value}, float64; jax {jax.__version__}, {jax.devices()[0].platform}")
  ours = bench_ours(params, x, y, _COORDS.value, _REPEATS.value)
  print(f"ours  check_gradients ({ours['coordinates']} coordinates, {_COORDS.value}/leaf, "
        f"+2 directions, kinks traced): warm {ours['warm'] * 1e3:8.1f} ms   cold "
        f"{ours['cold']:.2f} s   max rel err {ours['max_rel_error']:.2e}")
  base = ours["warm"]
  jx = bench_check_grads(params, x, y, _REPEATS.value)
  print(f"jax.test_util.check_grads (1 direction, rev):                warm "
        f"{jx['warm'] * 1e3:8.1f} ms   cold {jx['cold']:.2f} s   ratio {jx['warm'] / base:.2f}x")
  th = bench_torch(params, x, y, _REPEATS.value, _TORCH_FULL.value)
  if th is None:
    print("torch not installed: torch.autograd.gradcheck skipped")
    return
  print(f"torch.autograd.gradcheck fast_mode (1 direction):            warm "
        f"{th['fast'] * 1e3:8.1f} ms   ratio {th['fast'] / base:.2f}x")
  if "full" in th:
    per = th["full"] / num_params
    ours_per = base / ours["coordinates"]
    print(f"torch.autograd.gradcheck full ({num_params} coordinates):           "
          f"{th['full']:8.2f} s    ratio {th['full'] / base:.0f}x; per coordinate "
          f"{per * 1e6:.1f} us vs ours {ours_per * 1e6:.1f} us ({per / ours_per:.2f}x)")


if __name__ == "__main__":
  app.run(main)
