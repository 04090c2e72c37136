r"""Benchmark: what the babysitting monitors cost (issue 4: at most 10% when sampled).

Measurements in one run, each interleaved (A, B, A, B, ...) so machine noise hits both alike
(``--sections`` picks them):

1. ``step``: a jitted training step of the configured model (``research.models.create_model``,
   ``research.optim.get_optimizer``, softmax cross-entropy) over one epoch of shuffled batches,
   without monitors and with monitors sampled every N steps (a second jitted step that also returns
   ``update_ratios`` + ``layer_statistics``, written by a ``MetricsWriter`` to a temporary
   workdir, as the training loop does). N = 1 shows the raw price of a monitored step.
2. ``loop``: ``research.train.train_and_evaluate`` for a few epochs with ``config.monitor.enabled``
   False vs True (its own every_steps), checkpoints off, when research.train provides it. The
   figures refresh is excluded (``figures_every_epochs`` large); ``make_figures`` is timed apart.
3. ``writer``: host time to write one monitored sample (update ratios + layer statistics of the
   configured model: ~25 scalars, ~8 histograms) with ``MetricsWriter(asynchronous=False)``
   against the same records through tensorboardX (``summary.scalar`` / ``histogram_raw`` +
   ``EventsWriter``, what the writer did before it encoded events itself). Medians with spread.
4. ``import``: a fresh interpreter's ``import research.monitor`` + one ``MetricsWriter`` (what a
   training process pays) against ``import tensorboardX`` alone (which imports torch when it is
   installed). Medians with spread.
5. ``ranges``: the jitted ``layer_statistics`` of the model's activations with each layer's
   robust data range (default) against a fixed range (the old ``[0, 5]``), per call.

Usage:
    python3 scripts/bench/bench_monitor.py                         # digits MLP, default config
    python3 scripts/bench/bench_monitor.py --every=20,100 --epochs=3 --repeats=5
    python3 scripts/bench/bench_monitor.py --config.model.name=cnn
"""
import json
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
_SECTIONS = flags.DEFINE_list("sections", ["step", "loop", "writer", "import", "ranges"],
                              "Which measurements to run (see the module docstring).")


def _spread(values: list[float], scale: float = 1.0, unit: str = "") -> str:
  """``median [min .. max]`` of ``values`` times ``scale``."""
  v = np.asarray(values) * scale
  return f"{np.median(v):.3g}{unit} [{v.min():.3g} .. {v.max():.3g}]"


def _sample(config, dataset):
  """One monitored sample of the configured model, on the host: (ratios, layer statistics)."""
  from research import models, optim
  model = models.create_model(config.model, dataset.num_classes, image_shape=dataset.image_shape)
  tx = optim.get_optimizer(config.optimizer, 10)
  x = jnp.asarray(dataset.x_train[:config.train.batch_size], jnp.float32)
  y = jnp.asarray(dataset.y_train[:config.train.batch_size], jnp.int32)
  params = model.init(jax.random.key(0), x[:1], train=False)["params"]
  _, monitored = _step_functions(config, model, tx)
  copy = jax.tree_util.tree_map(jnp.copy, params)  # the step donates its arguments
  _, _, _, ratios, stats = monitored(copy, tx.init(copy), x, y)
  return jax.device_get(ratios), jax.device_get(stats), model, params, x


def _time_writer(config, dataset, repeats: int, calls: int = 50) -> None:
  """Host ms per sample: MetricsWriter vs the same records through tensorboardX's protos."""
  from research import monitor
  from research.monitor import writer as writer_lib
  ratios, stats, *_ = _sample(config, dataset)
  from tensorboardX import summary  # the reference: imported outside the timing
  from tensorboardX.event_file_writer import EventsWriter

  def ours(workdir):
    writer = monitor.MetricsWriter(workdir, asynchronous=False, steps_per_epoch=19)
    start = time.perf_counter()
    for i in range(calls):
      writer.write_sample(i / 19, ratios, stats)
    writer.flush()
    seconds = time.perf_counter() - start
    writer.close()
    return seconds / calls

  def reference(workdir):
    """The same records, the TensorBoard ones built with tensorboardX's summary helpers."""
    from tensorboardX.proto import event_pb2, summary_pb2
    events = EventsWriter(os.path.join(workdir, "events"))
    metrics = open(os.path.join(workdir, "metrics.jsonl"), "a", encoding="utf-8")
    histograms = open(os.path.join(workdir, "histograms.jsonl"), "a", encoding="utf-8")
    start = time.perf_counter()
    for i in range(calls):
      host = writer_lib.jax_to_numpy(stats)
      epoch = i / 19
      flat = {f"update_ratio/{name}": float(r) for name, r in ratios.items()}
      metrics.write(json.dumps({"epoch": epoch, **flat}) + "\n")
      values = [v for name, r in flat.items() for v in summary.scalar(name, r).value]
      scalars = {}
      for name, s in host.items():
        for prefix, counts, edges in (("activations", s.get("act_counts"), s.get("act_edges")),
                                      ("gradients", s.get("grad_counts"), s.get("grad_edges"))):
          if counts is None:
            continue
          counts, edges = np.asarray(counts, np.float64), np.asarray(edges, np.float64)
          histograms.write(json.dumps({"epoch": epoch, "tag": f"{prefix}/{name}",
                                       "counts": counts.tolist(), "edges": edges.tolist()}) + "\n")
          centers = 0.5 * (edges[:-1] + edges[1:])
          values += summary.histogram_raw(
              f"{prefix}/{name}", min=float(edges[0]), max=float(edges[-1]),
              num=float(counts.sum()), sum=float(counts @ centers),
              sum_squares=float(counts @ centers**2), bucket_limits=edges[1:].tolist(),
              bucket_counts=counts.tolist()).value
        for key in ("act_mean", "act_std", "dead_fraction", "saturated_fraction", "grad_norm"):
          if key in s:
            scalars[f"{name}/{key}"] = float(s[key])
      metrics.write(json.dumps({"epoch": epoch, **scalars}) + "\n")
      values += [v for name, value in scalars.items() for v in summary.scalar(name, value).value]
      events.write_event(event_pb2.Event(wall_time=time.time(), step=i,
                                         summary=summary_pb2.Summary(value=values)))
    for f in (metrics, histograms):
      f.flush()
    events.flush()
    seconds = time.perf_counter() - start
    for f in (metrics, histograms):
      f.close()
    events.close()
    return seconds / calls

  times = {"ours": [], "tensorboardX": []}
  for _ in range(repeats):
    for name, fn in (("ours", ours), ("tensorboardX", reference)):
      workdir = tempfile.mkdtemp(prefix="bench_writer_")
      times[name].append(fn(workdir))
      shutil.rmtree(workdir, ignore_errors=True)
  print(f"\n3. host time per monitored sample ({len(ratios)} ratios, {len(stats)} stat groups; "
        f"{repeats} x {calls} calls, median [min .. max])")
  for name, values in times.items():
    print(f"   {name:<13} {_spread(values, 1e3, ' ms')}")
  ratio = np.median(times["ours"]) / np.median(times["tensorboardX"])
  print(f"   ours / tensorboardX: {ratio:.2f}x (both write the same JSON lines; only the "
        "TensorBoard encoding differs)")


def _time_imports(repeats: int) -> None:
  """Fresh-interpreter seconds: research.monitor + a MetricsWriter vs import tensorboardX."""
  import subprocess
  import sys
  workdir = tempfile.mkdtemp(prefix="bench_import_")
  programs = {
      "research.monitor + MetricsWriter": (
          "import time, sys; t = time.perf_counter(); import research.monitor as m; "
          f"m.MetricsWriter({workdir!r}).close(); print(time.perf_counter() - t)"),
      "import tensorboardX (reference)": (
          "import time; t = time.perf_counter(); import tensorboardX; "
          "print(time.perf_counter() - t)"),
  }
  times = {name: [] for name in programs}
  for _ in range(repeats):
    for name, code in programs.items():
      out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True)
      times[name].append(float(out.stdout.strip().splitlines()[-1]))
  shutil.rmtree(workdir, ignore_errors=True)
  print(f"\n4. fresh interpreter, {repeats} runs each, median [min .. max]")
  for name, values in times.items():
    print(f"   {name:<34} {_spread(values, 1.0, ' s')}")


def _time_ranges(config, dataset, repeats: int, calls: int = 200) -> None:
  """us per jitted layer_statistics call: robust data range vs a fixed range."""
  from research import monitor
  _, _, model, params, x = _sample(config, dataset)
  _, mutated = model.apply({"params": params}, x, train=True, mutable=["intermediates"])
  grads = jax.tree_util.tree_map(jnp.ones_like, params)
  bins = config.monitor.histogram_bins
  activation = config.model.activation
  variants = {
      "robust data range": jax.jit(lambda m, g: monitor.layer_statistics(m, g, activation, bins)),
      "fixed [0, 5]": jax.jit(lambda m, g: monitor.layer_statistics(m, g, activation, bins,
                                                                    value_range=(0.0, 5.0))),
  }
  for fn in variants.values():
    jax.block_until_ready(fn(mutated, grads))
  times = {name: [] for name in variants}
  for _ in range(repeats):
    for name, fn in variants.items():
      start = time.perf_counter()
      for _ in range(calls):
        out = fn(mutated, grads)
      jax.block_until_ready(out)
      times[name].append((time.perf_counter() - start) / calls)
  print(f"\n5. jitted layer_statistics per call ({repeats} x {calls} calls, median [min .. max])")
  for name, values in times.items():
    print(f"   {name:<18} {_spread(values, 1e6, ' us')}")


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
  sections = set(_SECTIONS.value)
  if "step" in sections:
    print("\n1. jitted step over epochs (monitored step + MetricsWriter every N steps)")
    print(f"{'every N':>8} {'off s/epoch':>12} {'on s/epoch':>12} {'overhead':>9}")
    for every in (int(e) for e in _EVERY.value):
      off, on = _time_steps(config, dataset, every, _REPEATS.value, _EPOCHS.value)
      print(f"{every:>8} {off:>12.4f} {on:>12.4f} {on / off - 1:>9.1%}")
  if "writer" in sections:
    _time_writer(config, dataset, max(5, _REPEATS.value))
  if "import" in sections:
    _time_imports(max(5, _REPEATS.value))
  if "ranges" in sections:
    _time_ranges(config, dataset, max(5, _REPEATS.value))
  if _LOOP.value and "loop" in sections:
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
