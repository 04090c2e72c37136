"""``train_and_evaluate``: the training loop that babysits itself.

Reads top to bottom: build (data, model, update rule, state) -> resume from the latest checkpoint
-> per epoch: jitted steps over the shuffled batches (monitored every N steps), divergence check,
validation of the raw and averaged parameters, reduce-on-plateau, checkpoint, metrics and progress
line -> figures and verdict. Epochs are the unit of every x-axis.
"""
from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from research import averaging, data as data_lib, models, monitor, optim
from research.train import checkpoints as checkpoints_lib
from research.train.config_checks import validate_config
from research.train.parallel import DataParallel
from research.train.state import TrainState, create_train_state, epoch_permutation
from research.train.steps import make_eval_step, make_train_step

CONFIG_FILE = "config.json"
SUMMARY_FILE = "summary.json"
# Changing these between a run and its resumption would make the checkpoint meaningless.
_RESUME_KEYS = ("data", "model", "optimizer", "loss", "averaging", "seed")


class DivergenceError(RuntimeError):
  """The loss became NaN/Inf or exploded; the last good checkpoint is kept."""


class TrainResult(NamedTuple):
  state: TrainState
  history: list[dict]
  best_val_accuracy: float
  workdir: str


def evaluate(eval_step: Callable, params, batch_stats, x: np.ndarray, y: np.ndarray,
             batch_size: int, put: Callable) -> dict[str, float]:
  """Mean loss and accuracy over ``(x, y)`` in batches (weighted by batch size)."""
  totals = {"loss": 0.0, "accuracy": 0.0}
  outs = []
  for start in range(0, len(x), batch_size):
    xb, yb = put(x[start:start + batch_size]), put(y[start:start + batch_size])
    outs.append((len(xb), eval_step(params, batch_stats, xb, yb)))
  for n, out in outs:
    for key in totals:
      totals[key] += float(out[key]) * n
  return {key: value / len(x) for key, value in totals.items()}


def _check_resumable(workdir: str, config: Any) -> None:
  """Saves the config on a fresh run; on a resumed one refuses a different experiment."""
  path = os.path.join(workdir, CONFIG_FILE)
  current = json.loads(config.to_json())
  if os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    changed = [k for k in _RESUME_KEYS if saved.get(k) != current.get(k)]
    if changed:
      raise checkpoints_lib.CheckpointError(
          f"{workdir} holds a run with a different config ({', '.join(changed)} changed); resume "
          "it with its own config or choose another --workdir.")
  with open(path + ".tmp", "w") as f:
    json.dump(current, f, indent=2)
  os.replace(path + ".tmp", path)


def _truncate_records(workdir: str, after_epoch: int) -> None:
  """Drops metrics/histogram rows of epochs that were lost with a kill (after the checkpoint)."""
  for name in ("metrics.jsonl", "histograms.jsonl"):
    path = os.path.join(workdir, name)
    if not os.path.exists(path):
      continue
    with open(path) as f:
      kept = [line for line in f if line.strip() and json.loads(line).get("epoch", 0)
              <= after_epoch + 1e-9]
    with open(path + ".tmp", "w") as f:
      f.writelines(kept)
    os.replace(path + ".tmp", path)


def _diverged_message(epoch: int, step: int, loss: float, reference: float, factor: float,
                      learning_rate: float, kept: int | None, workdir: str) -> str:
  what = (f"loss = {loss}" if not math.isfinite(loss) else
          f"loss {loss:.4g} > {factor:g} x the first loss {reference:.4g}")
  kept_text = (f"the last good checkpoint (epoch {kept}) is kept in "
               f"{checkpoints_lib.checkpoint_dir(workdir)}" if kept else
               "no checkpoint was written before it")
  return (f"training diverged in epoch {epoch + 1} at step {step}: {what}. The learning rate "
          f"({learning_rate:.3g}) is likely too high: lower it (e.g. by 10x) or add a schedule; "
          f"{kept_text}.")


def _first_kernel(params) -> Any:
  """The first layer's kernel (``Dense_0`` of an MLP, ``Conv_0`` of a CNN)."""
  for name in ("Conv_0", "Dense_0"):
    if name in params:
      return params[name]["kernel"]
  return None


def train_and_evaluate(config: Any, workdir: str, *,
                       on_epoch_end: Callable[[int, dict], bool | None] | None = None,
                       dataset: data_lib.Dataset | None = None,
                       log: Callable[[str], None] | None = print) -> TrainResult:
  """Trains ``config`` in ``workdir`` (resuming from its latest checkpoint) and evaluates it.

  Args:
    config: an experiment config (``configs/default.py`` schema).
    workdir: where checkpoints, ``metrics.jsonl``, TensorBoard events, figures and the verdict
      go; made absolute.
    on_epoch_end: called as ``on_epoch_end(epoch, record)`` after each epoch (0-based ``epoch``,
      ``record`` the epoch's metrics); returning True stops training (e.g. search pruning).
    dataset: an already loaded data set (default ``load_dataset(config.data)``).
    log: where progress lines go (None: silent).

  Returns:
    ``TrainResult(state, history, best_val_accuracy, workdir)``.

  Raises:
    ValueError: a bad config value (before anything is trained).
    DivergenceError: NaN/Inf or exploding loss (names epoch, step and the likely cause).
    research.train.checkpoints.CheckpointError: an unreadable or mismatched checkpoint.
  """
  log = log or (lambda _: None)
  validate_config(config)
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  dataset = dataset if dataset is not None else data_lib.load_dataset(config.data)
  n, batch_size = len(dataset.x_train), int(config.train.batch_size)
  steps_per_epoch = n // batch_size
  if steps_per_epoch < 1:
    raise ValueError(f"config.train.batch_size={batch_size} is larger than the {n} training "
                     "examples.")
  model = models.create_model(config.model, dataset.num_classes, dataset.image_shape)
  tx = optim.get_optimizer(config.optimizer, steps_per_epoch)
  plateau = optim.get_plateau(config.optimizer)
  parallel = DataParallel()
  parallel.check_batch_size(batch_size)
  state = create_train_state(config, model, tx, jax.random.PRNGKey(int(config.seed)), dataset,
                             steps_per_epoch)
  export = config.averaging.get("export", "raw")
  averaging.select_params(state.params, state.averages, export)  # validates the export choice
  _check_resumable(workdir, config)

  # Host-side loop state (saved in each checkpoint's meta so a resumed run continues exactly).
  loop = {"best_val_accuracy": -1.0, "best_epoch": 0, "reference_loss": None,
          "plateau": list(plateau.init()) if plateau else None, "history": []}
  ckpts = None
  if config.checkpoint.enabled:
    ckpts = checkpoints_lib.Checkpoints(workdir, config.checkpoint.keep_latest,
                                        config.checkpoint.keep_best)
  start_epoch = 0
  if ckpts and ckpts.latest_epoch() is not None:
    start_epoch = ckpts.latest_epoch()
    state, meta = ckpts.restore(start_epoch, state)
    loop.update(meta["loop"])
    _truncate_records(workdir, start_epoch)
    log(f"resumed from {ckpts.directory}/{start_epoch} (epoch {start_epoch} of "
        f"{config.train.num_epochs} done)")
  state = parallel.replicate(state)

  train_step = jax.jit(make_train_step(model, tx, config), donate_argnums=0)
  monitored_step = jax.jit(make_train_step(model, tx, config, monitored=True), donate_argnums=0)
  eval_step = jax.jit(make_eval_step(model))
  monitor_every = int(config.monitor.every_steps) if config.monitor.enabled else 0
  draw_figures = bool(config.monitor.get("figures", True))
  figures_every = int(config.monitor.figures_every_epochs) if draw_figures else 0
  writer = monitor.MetricsWriter(workdir)
  progress = monitor.ProgressLine(int(config.train.num_epochs), start_epoch=start_epoch)
  x_train, y_train = dataset.x_train, dataset.y_train
  num_epochs = int(config.train.num_epochs)
  try:
    for epoch in range(start_epoch, num_epochs):
      start = time.perf_counter()
      order = epoch_permutation(config.seed, epoch, n)[:steps_per_epoch * batch_size]
      losses, accuracies = [], []
      for i, idx in enumerate(order.reshape(steps_per_epoch, batch_size)):
        x, y = parallel.shard_batch(x_train[idx], y_train[idx])
        step = epoch * steps_per_epoch + i
        if monitor_every and step % monitor_every == 0:
          state, metrics = monitored_step(state, x, y)
          writer.write_sample(step / steps_per_epoch, metrics["update_ratio"], metrics["layers"])
        else:
          state, metrics = train_step(state, x, y)
        losses.append(metrics["loss"])
        accuracies.append(metrics["accuracy"])
      batch_losses = np.asarray(jax.device_get(jnp.stack(losses)), np.float64)
      writer.write_batch_losses(epoch, batch_losses)

      # Divergence: NaN/Inf, or far above the run's first loss. Nothing of this epoch is saved.
      if loop["reference_loss"] is None:
        loop["reference_loss"] = float(batch_losses[0])
      factor = float(config.train.divergence_factor)
      bad = ~np.isfinite(batch_losses) | (batch_losses > factor * loop["reference_loss"])
      if bad.any():
        first = int(np.argmax(bad))
        kept = ckpts.latest_epoch() if ckpts else None
        raise DivergenceError(_diverged_message(
            epoch, epoch * steps_per_epoch + first + 1, float(batch_losses[first]),
            loop["reference_loss"], factor, float(optim.get_learning_rate(state.opt_state)),
            kept, workdir))

      # Validation of the raw parameters and of each running average, side by side.
      record = {"train_loss": float(batch_losses.mean()),
                "train_accuracy": float(np.mean(jax.device_get(jnp.stack(accuracies)))),
                "learning_rate": float(optim.get_learning_rate(state.opt_state))}
      candidates = {"raw": state.params, **averaging.averaged_params(state.averages)}
      for name, params in candidates.items():
        batch_stats = state.batch_stats
        if name != "raw" and jax.tree.leaves(batch_stats):
          batch_stats = averaging.recompute_batch_stats(model, params, batch_stats, x_train)
        val = evaluate(eval_step, params, batch_stats, dataset.x_val, dataset.y_val,
                       int(config.train.eval_batch_size), parallel.replicate)
        prefix = "" if name == "raw" else f"{name}/"
        record[f"{prefix}val_loss"], record[f"{prefix}val_accuracy"] = val["loss"], val["accuracy"]
      selected = record[("" if export == "raw" else f"{export}/") + "val_accuracy"]
      if selected >= loop["best_val_accuracy"]:  # ties: the later epoch, as orbax BestN keeps
        loop["best_val_accuracy"], loop["best_epoch"] = selected, epoch + 1

      if plateau:  # reduce-on-plateau, fed the validation accuracy once per epoch
        plateau_state = plateau.update(type(plateau.init())(*loop["plateau"]), selected)
        loop["plateau"] = list(plateau_state)
        state = state.replace(opt_state=optim.scale_learning_rate(state.opt_state,
                                                                  plateau_state.scale))
      record["time"] = time.perf_counter() - start
      loop["history"].append({"epoch": epoch + 1, **record})
      writer.write_scalars(epoch + 1, record)
      if ckpts:
        writer.flush()  # the epoch's records reach the disk before the checkpoint that covers it
        ckpts.save(epoch + 1, state, {"epoch": epoch + 1, "val_accuracy": selected,
                                      "loop": loop}, selected)
      log(progress(epoch, record))
      if figures_every and (epoch + 1) % figures_every == 0 and epoch + 1 < num_epochs:
        writer.flush()
        monitor.make_figures(workdir)
      if on_epoch_end is not None and on_epoch_end(epoch, {"epoch": epoch + 1, **record}):
        log(f"stopped after epoch {epoch + 1} by on_epoch_end")
        break
  finally:
    writer.close()
    if ckpts:
      ckpts.close()

  # The end: test accuracy of the exported parameters, figures and the verdict.
  final_params = averaging.select_params(state.params, state.averages, export)
  test = evaluate(eval_step, final_params, state.batch_stats, dataset.x_test, dataset.y_test,
                  int(config.train.eval_batch_size), parallel.replicate)
  summary = {"best_val_accuracy": loop["best_val_accuracy"], "best_epoch": loop["best_epoch"],
             "final_test_accuracy": test["accuracy"], "final_test_loss": test["loss"],
             "epochs": len(loop["history"]), "exported": export,
             "num_devices": parallel.num_devices}
  with open(os.path.join(workdir, SUMMARY_FILE), "w") as f:
    json.dump(summary, f, indent=2)
  kernel = _first_kernel(jax.device_get(state.params))
  if kernel is not None:
    monitor.save_first_layer(workdir, kernel, dataset.image_shape)
  figures = monitor.make_figures(workdir) if draw_figures else []
  verdict = monitor.write_verdict(workdir)
  log(f"best val accuracy {loop['best_val_accuracy']:.4f} (epoch {loop['best_epoch']}), final "
      f"test accuracy {test['accuracy']:.4f} ({export} parameters)")
  where = (f"{os.path.join(workdir, 'figures')} ({len(figures)} PNGs)" if draw_figures else
           "off (config.monitor.figures=False)")
  log(f"figures: {where}; verdict ({os.path.join(workdir, 'verdict.txt')}):")
  for line in verdict:
    log(f"  {line}")
  return TrainResult(state=state, history=loop["history"],
                     best_val_accuracy=loop["best_val_accuracy"], workdir=workdir)
