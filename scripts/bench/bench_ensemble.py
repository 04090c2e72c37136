r"""Benchmark: one vmapped evaluation of K stacked members against K sequential evaluations.

    python3 scripts/bench/bench_ensemble.py --config=configs/ensemble_digits.py --members=8

All paths are jitted and warmed up (compilation excluded); the sequential path reuses one
compiled single-model function for all K members (K dispatches), the vmapped path one compiled
function for the stacked parameters (batched matmuls), the lax.map path one compiled program that
runs the stacked members one after another (ordinary matmuls, one dispatch). Both evaluate the
test split (or --num_examples random inputs) with the config's eval batch size. Prints the median
times over --repeats and their ratio; numbers depend on the machine and its load (2 shared CPU
cores here), so compare ratios measured in the same run.
"""
from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


from research.launch import default_config, define_config_file  # noqa: E402

_CONFIG = define_config_file(default_config("ensemble_digits.py"),
                             "Experiment config.")
_MEMBERS = flags.DEFINE_integer("members", 8, "K, the number of members.")
_REPEATS = flags.DEFINE_integer("repeats", 20, "Timed repetitions (median reported).")
_NUM_EXAMPLES = flags.DEFINE_integer("num_examples", 0,
                                     "0: the test split; >0: this many random inputs.")


def _median_time(fn, repeats: int) -> float:
  fn()  # warm-up: compile
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def main(argv):
  del argv
  from research import data as data_lib, models
  from research.ensemble import members as members_lib

  config = _CONFIG.value
  k = _MEMBERS.value
  dataset = data_lib.load_dataset(config.data)
  model = models.create_model(config.model, dataset.num_classes, dataset.image_shape)
  x = np.asarray(dataset.x_test, np.float32)
  if _NUM_EXAMPLES.value > 0:
    x = np.random.default_rng(0).normal(
        size=(_NUM_EXAMPLES.value,) + tuple(dataset.x_test.shape[1:])).astype(np.float32)
  batch = int(config.train.eval_batch_size)
  sample = jnp.asarray(x[:1])
  variables = [model.init(jax.random.PRNGKey(i), sample, train=False) for i in range(k)]
  stacked = members_lib.stack_variables(variables)
  batches = [jnp.asarray(x[s:s + batch]) for s in range(0, len(x), batch)]
  single = members_lib.make_single_logits_fn(model)
  vmapped = members_lib.make_stacked_logits_fn(model, "vmap")
  mapped = members_lib.make_stacked_logits_fn(model, "map")

  def sequential():
    for v in variables:
      for xb in batches:
        single(v, xb).block_until_ready()

  def one_model():
    for xb in batches:
      single(variables[0], xb).block_until_ready()

  def together():
    for xb in batches:
      vmapped(stacked, xb).block_until_ready()

  def in_one_program():
    for xb in batches:
      mapped(stacked, xb).block_until_ready()

  # Interleave the paths over rounds so that load changes on a shared machine hit all of them.
  rounds = {"one": [], "seq": [], "vmap": [], "map": []}
  for _ in range(3):
    rounds["one"].append(_median_time(one_model, _REPEATS.value))
    rounds["seq"].append(_median_time(sequential, _REPEATS.value))
    rounds["vmap"].append(_median_time(together, _REPEATS.value))
    rounds["map"].append(_median_time(in_one_program, _REPEATS.value))
  t_one, t_seq, t_vmap, t_map = (float(np.median(rounds[n])) for n in ("one", "seq", "vmap",
                                                                      "map"))
  print(f"data={config.data.name} model={config.model.name} examples={len(x)} "
        f"eval_batch={batch} K={k} devices={jax.devices()}")
  print(f"{'path':<28}{'median ms':>12}{'x one model':>14}")
  for name, t in [("one model", t_one), (f"{k} sequential (jit each)", t_seq),
                  (f"{k} vmapped (one program)", t_vmap), (f"{k} lax.map (one program)", t_map)]:
    print(f"{name:<28}{t * 1e3:>12.3f}{t / t_one:>14.2f}")
  print(f"speed-up over sequential: vmapped {t_seq / t_vmap:.2f}x, lax.map {t_seq / t_map:.2f}x")


if __name__ == "__main__":
  app.run(main)
