r"""Benchmark: what the babysitting monitors cost (issue 4: at most 10% when sampled).

Two measurements in one run, each interleaved (off, on, off, on, ...) with the best repeat
counting, so machine noise hits both alike:

1. ``step``: a jitted training step of the configured model (``research.models.create_model``,
   ``research.optim.get_optimizer``, softmax cross-entropy) over one epoch of shuffled batches,
   without monitors and with monitors sampled every N steps (a second jitted step that also returns
   ``update_ratios`` + ``layer_statistics``, written by a ``MetricsWriter`` to a temporary
   workdir, as the training loop does). N = 1 shows the raw price of a monitored step.
2. ``loop``: ``research.train.train_and_evaluate`` for a few epochs with ``config.monitor.enabled``
   False vs True (its own every_steps), checkpoints off, when research.train provides it. The
   figures refresh is excluded (``figures_every_epochs`` large); ``make_figures`` is timed apart.

Usage:
    python3 scripts/bench_monitor.py                         # digits MLP, default config
    python3 scripts/bench_monitor.py --every=20,100 --epochs=3 --repeats=5
    python3 scripts/bench_monitor.py --config.model.name=cnn
"""
import os
import shutil
import tempfile
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
import optax

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


from research.launch import default_config, define_config_file  # noqa: E402

_DEFAULT_CONFIG = default_config("default.py")
_CONFIG = define_config_file(_DEFAULT_CONFIG, "Experiment config.")
_EVERY = flags.DEFINE_list("every", ["1", "20", "100"], "Sampling intervals (steps) to time.")
_EPOCHS = flags.DEFINE_integer("epochs", 3, "Epochs per timed repeat.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed repeats per variant (best reported).")
_LOOP = flags.DEFINE_bool("loop", True, "Also time train_and_evaluate with monitors off/on.")


def _step_functions(config, model, tx):
  """(plain_step, monitored_step): jitted, params and optimizer state donated."""
  from research import monitor

  def loss_fn(params, x, y, mutable):
    logits, mutated = model.apply({"params": params}, x, train=True, mutable=mutable)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return loss, mutated

  def plain(params, opt_state, x, y):
    (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, x, y, [])
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  def monitored(params, opt_state, x, y):
    (loss, mutated), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, x, y, ["intermediates"])
    updates, opt_state = tx.update(grads, opt_state, params)
    ratios = monitor.update_ratios(updates, params)
    stats = monitor.layer_statistics(mutated, grads, config.model.activation,
                                     config.monitor.histogram_bins)
    return optax.apply_updates(params, updates), opt_state, loss, ratios, stats

  return (jax.jit(plain, donate_argnums=(0, 1)), jax.jit(monitored, donate_argnums=(0, 1)))


def _time_steps(config, dataset, every: int, repeats: int, epochs: int) -> tuple[float, float]:
  """Best seconds per epoch: (no monitors, monitors every `every` steps + writer)."""
  from research import models, monitor, optim
  batch = config.train.batch_size
  n = (len(dataset.x_train) // batch) * batch
  steps_per_epoch = n // batch
  model = models.create_model(config.model, dataset.num_classes,
                              image_shape=dataset.image_shape)
  tx = optim.get_optimizer(config.optimizer, steps_per_epoch)
  plain, monitored = _step_functions(config, model, tx)
  x_all = jnp.asarray(dataset.x_train[:n], jnp.float32)
  y_all = jnp.asarray(dataset.y_train[:n], jnp.int32)
  init = model.init(jax.random.key(0), x_all[:1], train=False)["params"]

  def run(monitors: bool) -> float:
    params = jax.tree_util.tree_map(jnp.array, init)
    opt_state = tx.init(params)
    workdir = tempfile.mkdtemp(prefix="bench_monitor_")
    writer = monitor.MetricsWriter(workdir) if monitors else None
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    step = 0
    for epoch in range(epochs):
      order = rng.permutation(n).reshape(steps_per_epoch, batch)
      losses = []
      for indices in order:
        x, y = x_all[indices], y_all[indices]
        if monitors and step % every == 0:
          params, opt_state, loss, ratios, stats = monitored(params, opt_state, x, y)
          writer.write_sample(step / steps_per_epoch, ratios, stats)
        else:
          params, opt_state, loss = plain(params, opt_state, x, y)
        losses.append(loss)
        step += 1
      if writer is not None:
        writer.write_batch_losses(epoch, jnp.stack(losses))
      jax.block_until_ready(losses[-1])
    if writer is not None:
      writer.close()
    seconds = time.perf_counter() - start
    shutil.rmtree(workdir, ignore_errors=True)
    return seconds / epochs

  run(False), run(True)  # compile both
  off, on = [], []
  for _ in range(repeats):
    off.append(run(False))
    on.append(run(True))
  return min(off), min(on)


def _time_loop(config, repeats: int, epochs: int) -> tuple[float, float, float] | None:
  """Best seconds per run of train_and_evaluate with monitors (off, on), and make_figures."""
  try:
    from research import train
    train_and_evaluate = train.train_and_evaluate
  except (ImportError, AttributeError):
    return None
  from research import monitor
  config = config.copy_and_resolve_references()
  config.train.num_epochs = epochs
  config.checkpoint.enabled = False
  config.monitor.figures_every_epochs = 10**6

  def run(enabled: bool) -> float:
    config.monitor.enabled = enabled
    workdir = tempfile.mkdtemp(prefix="bench_monitor_loop_")
    start = time.perf_counter()
    train_and_evaluate(config, workdir)
    seconds = time.perf_counter() - start
    shutil.rmtree(workdir, ignore_errors=True)
    return seconds

  run(False)  # compile / warm caches
  off, on = [], []
  for _ in range(repeats):
    off.append(run(False))
    on.append(run(True))
  config.monitor.enabled = True
  workdir = tempfile.mkdtemp(prefix="bench_monitor_figs_")
  train_and_evaluate(config, workdir)
  start = time.perf_counter()
  monitor.make_figures(workdir)
  figures = time.perf_counter() - start
  shutil.rmtree(workdir, ignore_errors=True)
  return min(off), min(on), figures


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from research import data
  config = _CONFIG.value
  dataset = data.load_dataset(config.data)
  print(f"model {config.model.name} {tuple(config.model.hidden_sizes)}  data {config.data.name}  "
        f"batch {config.train.batch_size}  bins {config.monitor.histogram_bins}  "
        f"devices {jax.device_count()} x {jax.devices()[0].platform}  "
        f"best of {_REPEATS.value} x {_EPOCHS.value} epochs")
  print("\n1. jitted step over epochs (monitored step + MetricsWriter every N steps)")
  print(f"{'every N':>8} {'off s/epoch':>12} {'on s/epoch':>12} {'overhead':>9}")
  for every in (int(e) for e in _EVERY.value):
    off, on = _time_steps(config, dataset, every, _REPEATS.value, _EPOCHS.value)
    print(f"{every:>8} {off:>12.4f} {on:>12.4f} {on / off - 1:>9.1%}")
  if _LOOP.value:
    result = _time_loop(config, max(2, _REPEATS.value // 2), _EPOCHS.value)
    if result is None:
      print("\n2. research.train.train_and_evaluate not available: loop timing skipped")
    else:
      off, on, figures = result
      print(f"\n2. train_and_evaluate, {_EPOCHS.value} epochs, monitor.every_steps="
            f"{config.monitor.every_steps} (checkpoints and figure refreshes off)")
      print(f"   monitors off {off:.3f} s   on {on:.3f} s   overhead {on / off - 1:.1%}")
      print(f"   make_figures(workdir) afterwards: {figures:.2f} s")


if __name__ == "__main__":
  app.run(main)
