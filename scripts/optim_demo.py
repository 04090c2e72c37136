r"""Every update rule on the elongated bowl ``z = x**2 / 20 + y**2``, from (-7, 2).

    python3 scripts/optim_demo.py --workdir=/tmp/optim_demo
    python3 scripts/optim_demo.py --steps=200 --rules=sgd,momentum,adam --with_config \
        --config.optimizer.name=nesterov --config.optimizer.learning_rate=0.05

Prints the loss of each rule every few steps and writes ``<workdir>/optim_demo.png`` (trajectories
over the bowl's contours, and loss against step on a log scale). Each rule runs with a
learning rate suited to the bowl (``DEMO_RULES``, shown in the legend and the table). With
``--with_config``, the rule of ``--config`` (built by ``research.optim.get_optimizer`` with 10
steps per "epoch", so its schedules step every 10 updates) runs as an extra line named
``config:<name>``.

``nesterov`` stores (and so plots) the look-ahead point ``x + mu * v``; ``nesterov_lookahead``
stores ``x``: the two lines differ by that offset, not by the algorithm (tests/test_optim_rules.py
shows they are the same trajectory).
"""
import os

from absl import flags
import numpy as np

from research import launch

_CONFIG = launch.define_config_file(launch.default_config("default.py"), "Experiment config file.")
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/optim_demo", "Where the figure is written.")
_STEPS = flags.DEFINE_integer("steps", 100, "Updates per rule.")
_RULES = flags.DEFINE_list("rules", ["sgd", "momentum", "nesterov", "nesterov_lookahead",
                                     "adagrad", "rmsprop", "adam"], "Rules to run.")
_WITH_CONFIG = flags.DEFINE_bool(
    "with_config", False, "Also run the rule of --config (config.optimizer) as 'config:<name>'.")

#: name -> (learning rate, other hyperparameters) that suit the bowl
DEMO_RULES = {
    "sgd": (0.5, {}),
    "momentum": (0.05, {"mu": 0.9}),
    "nesterov": (0.05, {"mu": 0.9}),
    "nesterov_lookahead": (0.05, {"mu": 0.9}),
    "adagrad": (1.0, {}),
    "rmsprop": (0.05, {}),
    "adam": (0.1, {}),
}


def demo_label(name: str, learning_rate: float, hyperparameters: dict) -> str:
  """``"momentum (lr 0.05, mu 0.9)"``: what the legend and the table call a rule."""
  settings = [f"lr {learning_rate:g}"] + [f"{k} {v:g}" for k, v in hyperparameters.items()]
  return f"{name} ({', '.join(settings)})"


def plot(paths: dict[str, np.ndarray], losses: dict[str, np.ndarray], start, path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  figure, (ax_path, ax_loss) = plt.subplots(1, 2, figsize=(13, 5))
  grid_x, grid_y = np.meshgrid(np.linspace(-8, 8, 200), np.linspace(-3, 3, 200))
  ax_path.contour(grid_x, grid_y, grid_x**2 / 20 + grid_y**2, levels=20, cmap="Greys", alpha=0.6)
  for name, positions in paths.items():
    ax_path.plot(positions[:, 0], positions[:, 1], ".-", markersize=3, linewidth=1, label=name)
    ax_loss.semilogy(np.maximum(losses[name], 1e-12), label=name)
  ax_path.plot(*start, "k*", markersize=12)
  ax_path.set(xlim=(-8, 8), ylim=(-3, 3), xlabel="x", ylabel="y",
              title="trajectories on z = x^2/20 + y^2")
  ax_loss.set(xlabel="step", ylabel="z (log)", title="loss")
  ax_path.legend(fontsize=8)
  ax_loss.legend(fontsize=8)
  figure.tight_layout()
  figure.savefig(path, dpi=110)
  plt.close(figure)


def main() -> int:
  from research import optim
  from research.optim import validation
  from research import train
  from research.playbook.claims.bowl import START, bowl
  for name in _RULES.value:
    launch.validated(validation.check_choice, "rule", name, DEMO_RULES)
  workdir = launch.checked_workdir(_WORKDIR.value)
  # label -> (rule, learning rate); each runs through research.train.make_step (the engine's
  # update, the Nesterov look-ahead point included): research.train.toy_paths.
  rules = {demo_label(name, lr, hps): (getattr(optim, name)(lr, **hps), lr)
           for name, (lr, hps) in ((n, DEMO_RULES[n]) for n in _RULES.value)}
  if _WITH_CONFIG.value:
    opt_cfg = _CONFIG.value.optimizer
    tx = launch.validated(optim.get_optimizer, opt_cfg, 10)
    rules[f"config:{opt_cfg.name} (lr {float(opt_cfg.learning_rate):g})"] = (
        tx, float(opt_cfg.learning_rate))

  paths, losses = {}, {}
  report_at = sorted({0, 10, 25, 50, _STEPS.value} & set(range(_STEPS.value + 1)))
  width = max(24, max(len(name) for name in rules) + 2)
  print(f"{'rule':<{width}}" + "".join(f"{f'step {s}':>12}" for s in report_at))
  for name, (tx, lr) in rules.items():
    paths[name] = train.toy_paths(tx, bowl, START, {"learning_rate": [lr]}, _STEPS.value)[0]
    losses[name] = np.array([float(bowl(p)) for p in paths[name]])
    print(f"{name:<{width}}" + "".join(f"{losses[name][s]:>12.3e}" for s in report_at))

  os.makedirs(workdir, exist_ok=True)
  figure_path = os.path.join(workdir, "optim_demo.png")
  plot(paths, losses, START, figure_path)
  print(f"wrote {figure_path}")
  return launch.EXIT_OK


if __name__ == "__main__":
  launch.run(main, config=_CONFIG)
