"""``train_and_evaluate``: the training loop that babysits itself.

Reads top to bottom in named parts, as the flax examples split ``train_epoch`` from
``train_and_evaluate``::

    run = start_run(config, workdir)          # build the experiment, resume from a checkpoint
    for epoch in remaining epochs:
      losses = train_epoch(run, epoch)        # jitted steps over the shuffled batches
      check_divergence(run, epoch, losses)    # NaN/Inf or exploding: stop, keep the last good one
      record = validate(run, losses)          # raw parameters and each running average
      end_epoch(run, epoch, record)           # plateau, checkpoint, records, progress line
    finish(run, "done")                       # test of the best checkpoint, summary, verdict

Epochs are the unit of every x-axis. Nothing of an epoch is kept when it diverges.

Several processes (``research.train.distributed``: a TPU pod slice, a SLURM job,
``--num_processes``) run this same loop as one run over the devices of all of them: each reads its
share of every batch; process 0 alone writes the records, figures, verdict and summary;
checkpoints are saved and restored by all; divergence, the epoch's record and an early stop are
process 0's, agreed by every process (none waits alone in a collective).
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Any, Callable, NamedTuple

import jax
import numpy as np

from research import averaging, data as data_lib, monitor, optim
from research.train import distributed, resume
from research.train.config_checks import validate_config
from research.train.evaluation import evaluate
from research.train.experiment import Experiment, build_experiment, init_state
from research.train.parallel import DataParallel
from research.train.phases import PhaseTimer
from research.train.state import TrainState, epoch_permutation
from research.train.steps import make_eval_step, make_train_step
from research.train.summary import write_summary

CONFIG_FILE = resume.CONFIG_FILE
SUMMARY_FILE = "summary.json"


class DivergenceError(RuntimeError):
  """The loss became NaN/Inf or exploded; the last good checkpoint is kept."""


class TrainResult(NamedTuple):
  state: TrainState
  history: list[dict]
  best_val_accuracy: float
  workdir: str


@dataclasses.dataclass
class Run:
  """Everything one run holds while it trains (built by :func:`start_run`)."""
  config: Any
  workdir: str
  experiment: Experiment
  parallel: DataParallel
  state: TrainState
  train_step: Callable
  monitored_step: Callable | None
  eval_step: Callable
  multi_step: Callable | None   # config.train.steps_per_call steps per dispatch (lax.scan)
  writer: Any                   # monitor.MetricsWriter
  checkpoints: Any              # checkpoints.Checkpoints, or None when off
  progress: monitor.ProgressLine
  log: Callable[[str], None]
  start_epoch: int
  started: float                # time.time() when the run started (or the caller's start)
  phases: PhaseTimer
  # Host-side loop state (saved in each checkpoint's meta so a resumed run continues exactly).
  loop: dict = dataclasses.field(default_factory=dict)
  best_state: Any = None        # host copy of the best epoch's state when checkpoints are off
  pending_figures: Any = None   # the background figure refresh (a Future), if one runs

  @property
  def export(self) -> str:
    return self.config.averaging.get("export", "raw")

  def close(self) -> None:
    self.writer.close()
    if self.checkpoints:
      self.checkpoints.close()


def _diverged_message(epoch: int, step: int, loss: float, reference: float, factor: float,
                      learning_rate: float, kept: int | None, workdir: str) -> str:
  from research.train.checkpoints import checkpoint_dir
  what = (f"loss = {loss}" if not math.isfinite(loss) else
          f"loss {loss:.4g} > {factor:g} x the first loss {reference:.4g}")
  kept_text = (f"the last good checkpoint (epoch {kept}) is kept in {checkpoint_dir(workdir)}"
               if kept else "no checkpoint was written before it")
  return (f"training diverged in epoch {epoch + 1} at step {step}: {what}. The learning rate "
          f"({learning_rate:.3g}) is likely too high: lower it (e.g. by 10x) or add a schedule; "
          f"{kept_text}.")


def _first_kernel(params) -> Any:
  """The first layer's kernel (``Dense_0`` of an MLP, ``Conv_0`` of a CNN)."""
  for name in ("Conv_0", "Dense_0"):
    if name in params:
      return params[name]["kernel"]
  return None


def start_run(config: Any, workdir: str, dataset: data_lib.Dataset | None = None,
              log: Callable[[str], None] = print, started: float | None = None) -> Run:
  """Validates and builds everything, resumes from the newest intact checkpoint (if any) and
  compiles the training steps.

  Nothing is written before the config, the data, the model and the rule are known to be good.
  ``started``: when the caller started (``time.time()``; e.g. a script before its imports), so
  that the summary's wall time and phases cover the whole run.
  """
  from research.train import checkpoints as checkpoints_lib
  phases = PhaseTimer()
  now = time.time()
  if started is not None:
    phases.add("import", now - started)
  validate_config(config)
  # (and a bad TRAINLAB_FUSED is refused before anything runs)
  update_path = optim.fused.status(config.optimizer.name)
  main = distributed.is_main()
  if not main:   # one voice: process 0 says what the run does
    log = lambda _: None
  with phases("data"):
    dataset = data_lib.load_dataset(config.data) if dataset is None else dataset
  with phases("init"):
    experiment = build_experiment(config, dataset)
    parallel = DataParallel()
    parallel.check_batch_size(experiment.batch_size)
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    resume.check_resumable(workdir, config)
    resume.check_not_a_member(workdir)
    state = init_state(experiment)
  with phases("checkpoint"):
    ckpts = None
    if config.checkpoint.enabled:
      ckpts = checkpoints_lib.Checkpoints(workdir, config.checkpoint.keep_latest,
                                          config.checkpoint.keep_best, log=log)
    loop = {"best_val_accuracy": -1.0, "best_epoch": 0, "reference_loss": None,
            "plateau": list(experiment.plateau.init()) if experiment.plateau else None,
            "history": []}
    start_epoch = 0
    restored = ckpts.restore_latest_good(state) if ckpts else None
    if restored is not None:
      start_epoch, state, meta = restored
      loop.update(meta["loop"])
      log(f"resumed from {ckpts.directory}/{start_epoch} (epoch {start_epoch} of "
          f"{config.train.num_epochs} done)")
    if main:
      # Rows after the checkpoint (or every row, without one) were lost with a kill: written again.
      resume.truncate_records(workdir, start_epoch, log)
      resume.save_config(workdir, config)
  state = parallel.replicate(state)
  with phases("compile"):
    train_step, monitored_step, multi_step = _compile_steps(experiment, parallel, state)
  devices = parallel.devices
  processes = parallel.num_processes
  log(f"backend {jax.default_backend()}: {len(devices)} device"
      f"{'s' if len(devices) > 1 else ''} ({', '.join(str(d) for d in devices[:4])}"
      f"{', ...' if len(devices) > 4 else ''})"
      + (f" in {processes} processes" if processes > 1 else "")
      + f"; {experiment.steps_per_epoch} steps of {experiment.batch_size} per epoch; updates: "
      f"{update_path}")
  return Run(
      config=config, workdir=workdir, experiment=experiment, parallel=parallel, state=state,
      train_step=train_step, monitored_step=monitored_step, multi_step=multi_step,
      eval_step=jax.jit(make_eval_step(experiment.model)),
      writer=_writer(workdir, config, experiment) if main else distributed.Muted(),
      checkpoints=ckpts,
      progress=monitor.ProgressLine(int(config.train.num_epochs), start_epoch=start_epoch),
      log=log, start_epoch=start_epoch, started=started if started is not None else now,
      phases=phases, loop=loop)


def _compile_steps(experiment: Experiment, parallel: DataParallel, state: TrainState
                   ) -> tuple[Callable, Callable | None, Callable | None]:
  """The train step, the monitored step and (``config.train.steps_per_call > 1``) the scanned
  steps, compiled once, ahead of the first batch (one program each, whatever the epochs)."""
  config = experiment.config
  dataset = experiment.dataset
  x_shape, batch_size = dataset.x_train.shape[1:], experiment.batch_size

  def spec(shape, dtype, sharding):
    return jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)

  batch = (spec((batch_size,) + x_shape, dataset.x_train.dtype, parallel.batch),
           spec((batch_size,), dataset.y_train.dtype, parallel.batch))

  def compiled(monitored: bool) -> Callable:
    step = jax.jit(make_train_step(experiment.model, experiment.tx, config, monitored=monitored),
                   donate_argnums=0)
    return step.lower(state, *batch).compile()

  monitored = compiled(True) if config.monitor.enabled else None
  multi = None
  per_call = int(config.train.get("steps_per_call", 1))
  if per_call > 1:
    step = make_train_step(experiment.model, experiment.tx, config)

    def steps(state, xs, ys):   # several updates per dispatch: one lax.scan over the batches
      return jax.lax.scan(lambda s, xy: step(s, *xy), state, (xs, ys))

    batches = (spec((per_call, batch_size) + x_shape, dataset.x_train.dtype, parallel.batches),
               spec((per_call, batch_size), dataset.y_train.dtype, parallel.batches))
    multi = jax.jit(steps, donate_argnums=0).lower(state, *batches).compile()
  return compiled(False), monitored, multi


def _writer(workdir: str, config: Any, experiment: Experiment) -> monitor.MetricsWriter:
  """Records of the run: TensorBoard's x axis is the global step; the config goes in as text."""
  writer = monitor.MetricsWriter(workdir, steps_per_epoch=experiment.steps_per_epoch)
  writer.write_config(config)
  return writer


def train_epoch(run: Run, epoch: int) -> tuple[np.ndarray, float]:
  """One pass over the shuffled training set; ``(batch losses, mean batch accuracy)``.

  Every ``config.monitor.every_steps``-th step is the monitored step (update ratios, activation
  and gradient statistics, written as a sample). With ``config.train.steps_per_call = S > 1`` the
  steps in between run S at a time in one dispatch (the same updates, in the same order).
  """
  config, experiment = run.config, run.experiment
  steps, batch_size = experiment.steps_per_epoch, experiment.batch_size
  x_train, y_train = experiment.dataset.x_train, experiment.dataset.y_train
  monitor_every = int(config.monitor.every_steps) if config.monitor.enabled else 0
  per_call = int(config.train.get("steps_per_call", 1)) if run.multi_step is not None else 1
  order = epoch_permutation(config.seed, epoch, len(x_train))[:steps * batch_size]
  batches = order.reshape(steps, batch_size)[:, run.parallel.local_rows(batch_size)]
  losses, accuracies = [], []
  state = run.state
  i = 0
  while i < steps:
    step = epoch * steps + i
    if monitor_every and step % monitor_every == 0:
      x, y = run.parallel.shard_batch(x_train[batches[i]], y_train[batches[i]])
      state, metrics = run.monitored_step(state, x, y)
      run.writer.write_sample(step / steps, metrics["update_ratio"], metrics["layers"])
      taken = 1
    else:
      free = steps - i   # steps until the next monitored one or the end of the epoch
      if monitor_every:
        free = min(free, monitor_every - step % monitor_every)
      if per_call > 1 and free >= per_call:
        idx = batches[i:i + per_call]
        xs, ys = run.parallel.shard_batches(x_train[idx], y_train[idx])
        state, metrics = run.multi_step(state, xs, ys)
        taken = per_call
      else:
        x, y = run.parallel.shard_batch(x_train[batches[i]], y_train[batches[i]])
        state, metrics = run.train_step(state, x, y)
        taken = 1
    # Kept as they come (a scalar, or one per step of a multi-step call) and read once at the end:
    # reshaping them here would be two more dispatches per step.
    losses.append(metrics["loss"])
    accuracies.append(metrics["accuracy"])
    run.parallel.throttle(i, taken, metrics["loss"])
    i += taken
  run.state = state
  losses, accuracies = jax.device_get((losses, accuracies))
  batch_losses = np.concatenate([np.reshape(v, (-1,)) for v in losses]).astype(np.float64)
  run.writer.write_batch_losses(epoch, batch_losses)
  return batch_losses, float(np.mean(np.concatenate([np.reshape(v, (-1,)) for v in accuracies])))


def check_divergence(run: Run, epoch: int, batch_losses: np.ndarray) -> None:
  """Raises :class:`DivergenceError` on a NaN/Inf batch loss or one above ``divergence_factor``
  x the run's first loss (nothing of this epoch is saved)."""
  loop = run.loop
  if loop["reference_loss"] is None:
    loop["reference_loss"] = float(batch_losses[0])
  factor = float(run.config.train.divergence_factor)
  bad = ~np.isfinite(batch_losses) | (batch_losses > factor * loop["reference_loss"])
  message = None
  if bad.any():
    first = int(np.argmax(bad))
    kept = run.checkpoints.latest_epoch() if run.checkpoints else None
    message = _diverged_message(
        epoch, epoch * run.experiment.steps_per_epoch + first + 1, float(batch_losses[first]),
        loop["reference_loss"], factor, float(optim.get_learning_rate(run.state.opt_state)),
        kept, run.workdir)
  message = distributed.agreed(message)   # every process stops, or none
  if message:
    raise DivergenceError(message)


def evaluate_candidates(run: Run, state: TrainState, x: np.ndarray, y: np.ndarray
                        ) -> dict[str, dict[str, float]]:
  """``{'raw' | 'ema' | 'polyak': {'loss', 'accuracy'}}`` of the raw parameters and of each
  running average of ``state`` on ``(x, y)`` (batch-norm statistics recomputed for averages)."""
  model, x_train = run.experiment.model, run.experiment.dataset.x_train
  out = {}
  for name, params in {"raw": state.params, **averaging.averaged_params(state.averages)}.items():
    batch_stats = state.batch_stats
    if name != "raw" and jax.tree.leaves(batch_stats):
      batch_stats = averaging.recompute_batch_stats(model, params, batch_stats, x_train)
    out[name] = evaluate(run.eval_step, params, batch_stats, x, y,
                         int(run.config.train.eval_batch_size), run.parallel.replicate)
  return out


def validate(run: Run, batch_losses: np.ndarray, train_accuracy: float) -> dict[str, float]:
  """The epoch's record: training means, learning rate, and validation of the raw parameters
  and of each running average side by side (``val_loss``, ``ema/val_loss``, ...)."""
  dataset = run.experiment.dataset
  record = {"train_loss": float(batch_losses.mean()), "train_accuracy": train_accuracy,
            "learning_rate": float(optim.get_learning_rate(run.state.opt_state))}
  for name, val in evaluate_candidates(run, run.state, dataset.x_val, dataset.y_val).items():
    prefix = "" if name == "raw" else f"{name}/"
    record[f"{prefix}val_loss"], record[f"{prefix}val_accuracy"] = val["loss"], val["accuracy"]
  # Process 0's record everywhere: the best epoch and the plateau's scale of the learning rate
  # (in the replicated state) must be the same on every process.
  return distributed.agreed(record)


def _selected(run: Run, record: dict) -> float:
  return record[("" if run.export == "raw" else f"{run.export}/") + "val_accuracy"]


def end_epoch(run: Run, epoch: int, record: dict, elapsed: float) -> None:
  """Best epoch, reduce-on-plateau, checkpoint, records and the progress line."""
  loop, config = run.loop, run.config
  selected = _selected(run, record)
  if selected >= loop["best_val_accuracy"]:  # ties: the later epoch, as orbax BestN keeps
    loop["best_val_accuracy"], loop["best_epoch"] = selected, epoch + 1
    if not run.checkpoints:
      run.best_state = jax.device_get(run.state)
  plateau = run.experiment.plateau
  if plateau:  # fed the selected validation accuracy once per epoch
    plateau_state = plateau.update(type(plateau.init())(*loop["plateau"]), selected)
    loop["plateau"] = list(plateau_state)
    run.state = run.state.replace(opt_state=optim.scale_learning_rate(run.state.opt_state,
                                                                      plateau_state.scale))
  record["time"] = elapsed
  loop["history"].append({"epoch": epoch + 1, **record})
  run.writer.write_scalars(epoch + 1, record)
  if run.checkpoints:
    with run.phases("checkpoint"):
      run.writer.flush()  # the epoch's records reach the disk before the checkpoint covering it
      run.checkpoints.save(epoch + 1, run.state, {"epoch": epoch + 1, "val_accuracy": selected,
                                                  "loop": loop}, selected)
  run.log(run.progress(epoch, record))
  figures_every = (int(config.monitor.figures_every_epochs)
                   if config.monitor.get("figures", True) else 0)
  if figures_every and (epoch + 1) % figures_every == 0 and epoch + 1 < config.train.num_epochs:
    # Refreshed in a child process, off the training thread; one refresh at a time.
    if distributed.is_main() and (run.pending_figures is None or run.pending_figures.done()):
      run.writer.flush()
      run.pending_figures = monitor.make_figures_async(run.workdir, warn=run.log)


def _draw_figures(run: Run) -> list[str]:
  """Figures are for people: one that cannot be drawn is reported, never fatal."""
  if run.pending_figures is not None:
    run.pending_figures.result()   # the refresh writes the same files: let it finish first
    run.pending_figures = None
  try:
    # Shared with a child process: the end of a short run is mostly drawing.
    return monitor.make_figures(run.workdir, warn=run.log, processes=2)
  except Exception as e:  # noqa: BLE001 - any failure to draw must not stop training
    run.log(f"figures: could not draw into {os.path.join(run.workdir, 'figures')} "
            f"({type(e).__name__}: {e})")
    return []


def best_state(run: Run) -> TrainState:
  """The state of the best epoch (from its checkpoint, or the in-memory copy)."""
  if run.checkpoints and run.loop["best_epoch"]:
    epoch = run.checkpoints.best_epoch()
    if epoch is not None:
      state, _ = run.checkpoints.restore(epoch, run.state)
      return state
  return run.best_state if run.best_state is not None else run.state


def _test_metrics(run: Run, state: TrainState) -> dict[str, dict[str, float]]:
  dataset = run.experiment.dataset
  return evaluate_candidates(run, run.parallel.replicate(state), dataset.x_test, dataset.y_test)


def finish(run: Run, status: str) -> dict:
  """Test metrics of the best checkpoint, first-layer weights, figures, the verdict and
  ``summary.json`` (written for every end, a diverged or interrupted run included)."""
  run.writer.flush()  # the figures and the verdict read the records from disk
  history = run.loop["history"]
  summary = {"status": status, "best_val_accuracy": run.loop["best_val_accuracy"],
             "best_epoch": run.loop["best_epoch"], "epochs": len(history),
             "num_epochs": int(run.config.train.num_epochs), "exported": run.export,
             "num_devices": run.parallel.num_devices,
             "num_processes": run.parallel.num_processes, "backend": jax.default_backend(),
             "update_path": optim.fused.status(run.config.optimizer.name),
             "last": history[-1] if history else None,
             "best": next((h for h in history if h["epoch"] == run.loop["best_epoch"]), None),
             "config": run.config.to_dict()}
  if history and status != "interrupted":
    with run.phases("test"):
      test = _test_metrics(run, best_state(run))
    summary["test"] = test
    summary["test_accuracy"], summary["test_loss"] = (test[run.export]["accuracy"],
                                                      test[run.export]["loss"])
    run.log(f"best val accuracy {run.loop['best_val_accuracy']:.4f} (epoch "
            f"{run.loop['best_epoch']}), test accuracy {summary['test_accuracy']:.4f} "
            f"({run.export} parameters of the best epoch)")
  final_metrics = {key: summary.get(key) for key in ("best_val_accuracy", "best_epoch",
                                                      "test_accuracy", "test_loss", "epochs")}
  run.writer.write_hparams(monitor.flatten_config(run.config),
                           {k: v for k, v in final_metrics.items() if v is not None},
                           status="success" if status in ("done", "stopped") else "failure")
  run.writer.flush()
  main = distributed.is_main()   # the files of the run are process 0's
  if status != "interrupted" and main:
    kernel = _first_kernel(jax.device_get(run.state.params))
    if kernel is not None and status == "done":
      monitor.save_first_layer(run.workdir, kernel, run.experiment.dataset.image_shape)
    draw = bool(run.config.monitor.get("figures", True))
    with run.phases("figures"):
      figures = _draw_figures(run) if draw else []
    summary["verdict"] = monitor.write_verdict(run.workdir)
    where = (f"{os.path.join(run.workdir, 'figures')} ({len(figures)} PNGs)" if draw else
             "off (config.monitor.figures=False)")
    run.log(f"figures: {where}; verdict ({os.path.join(run.workdir, 'verdict.txt')}):")
    for line in summary["verdict"]:
      run.log(f"  {line}")
  wall = time.time() - run.started
  run.phases.add("other", max(0.0, wall - sum(run.phases.seconds.values())))
  summary["wall_time_s"] = wall
  summary["phases_s"] = run.phases.rounded()
  if main:
    write_summary(run.workdir, summary)
  if status != "interrupted":   # an interrupted process may be alone: it must not wait
    # Every process returns once process 0 has written the run's files: callers read them next.
    distributed.barrier("train_and_evaluate: the run's files are written")
  return summary


def train_and_evaluate(config: Any, workdir: str, *,
                       on_epoch_end: Callable[[int, dict], bool | None] | None = None,
                       dataset: data_lib.Dataset | None = None,
                       log: Callable[[str], None] | None = print,
                       started: float | None = None) -> TrainResult:
  """Trains ``config`` in ``workdir`` (resuming from its latest checkpoint) and evaluates it.

  Args:
    config: an experiment config (``configs/default.py`` schema).
    workdir: where checkpoints, ``metrics.jsonl``, TensorBoard events, figures, the verdict and
      ``summary.json`` go; made absolute.
    on_epoch_end: called as ``on_epoch_end(epoch, record)`` after each epoch (0-based ``epoch``,
      ``record`` the epoch's metrics); returning True stops training (e.g. search pruning). With
      several processes it is called on each (with the same record); process 0's answer counts.
    dataset: an already loaded data set (default ``load_dataset(config.data)``).
    log: where progress lines go (None: silent).
    started: when the caller started (``time.time()``), for the wall time and phases.

  Returns:
    ``TrainResult(state, history, best_val_accuracy, workdir)``. With several processes each
    returns (or raises ``DivergenceError``) once process 0 has written the run's files.

  Raises:
    ValueError: a bad config value (before anything is written).
    DivergenceError: NaN/Inf or exploding loss (names epoch, step and the likely cause); the
      summary (status "diverged") and the verdict are written first.
    research.train.checkpoints.CheckpointError, research.train.resume.ResumeError: a checkpoint
      or saved config that does not allow resuming.
  """
  run = start_run(config, workdir, dataset, log or (lambda _: None), started)
  status = "done"
  try:
    for epoch in range(run.start_epoch, int(config.train.num_epochs)):
      start = time.perf_counter()
      with run.phases("train"):
        batch_losses, train_accuracy = train_epoch(run, epoch)
      check_divergence(run, epoch, batch_losses)
      with run.phases("validate"):
        record = validate(run, batch_losses, train_accuracy)
      end_epoch(run, epoch, record, time.perf_counter() - start)
      if on_epoch_end is not None and distributed.agreed(  # process 0's call stops them all
          bool(on_epoch_end(epoch, {"epoch": epoch + 1, **record}))):
        run.log(f"stopped after epoch {epoch + 1} by on_epoch_end")
        status = "stopped"
        break
    finish(run, status)
  except DivergenceError:
    finish(run, "diverged")
    raise
  except KeyboardInterrupt:
    finish(run, "interrupted")
    raise
  finally:
    run.close()
  return TrainResult(state=run.state, history=run.loop["history"],
                     best_val_accuracy=run.loop["best_val_accuracy"], workdir=run.workdir)
