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

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np
import optax

from research import optim
from research.optim import validation

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from research.launch import default_config, define_config_file  # noqa: E402

_DEFAULT_CONFIG = default_config("default.py")
_CONFIG = define_config_file(_DEFAULT_CONFIG, "Experiment config file.")
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/optim_demo", "Where the figure is written.")
_STEPS = flags.DEFINE_integer("steps", 100, "Updates per rule.")
_RULES = flags.DEFINE_list("rules", ["sgd", "momentum", "nesterov", "nesterov_lookahead",
                                     "adagrad", "rmsprop", "adam"], "Rules to run.")
_WITH_CONFIG = flags.DEFINE_bool(
    "with_config", False, "Also run the rule of --config (config.optimizer) as 'config:<name>'.")

START = (-7.0, 2.0)

#: ``name: (rule, learning rate, other hyperparameters)``; the learning rates suit the bowl (its
#: curvatures are 0.1 and 2: SGD diverges above lr = 1).
DEMO_RULES = {
    "sgd": (optim.sgd, 0.5, {}),
    "momentum": (optim.momentum, 0.05, {"mu": 0.9}),
    "nesterov": (optim.nesterov, 0.05, {"mu": 0.9}),
    "nesterov_lookahead": (optim.nesterov_lookahead, 0.05, {"mu": 0.9}),
    "adagrad": (optim.adagrad, 1.0, {}),
    "rmsprop": (optim.rmsprop, 0.05, {}),
    "adam": (optim.adam, 0.1, {}),
}


def demo_label(name: str, learning_rate: float, hyperparameters: dict) -> str:
  """``"momentum (lr 0.05, mu 0.9)"``: what the legend and the table call a rule."""
  settings = [f"lr {learning_rate:g}"] + [f"{k} {v:g}" for k, v in hyperparameters.items()]
  return f"{name} ({', '.join(settings)})"


def bowl(xy: jax.Array) -> jax.Array:
  """``z = x**2 / 20 + y**2``."""
  return xy[0] ** 2 / 20 + xy[1] ** 2


def run(tx: optax.GradientTransformation, steps: int) -> tuple[np.ndarray, np.ndarray]:
  """Positions (steps + 1, 2) and losses (steps + 1,) of ``tx`` from ``START``."""

  def step(carry, _):
    xy, state = carry
    grads = jax.grad(bowl)(optim.gradient_point(xy, state))
    deltas, state = tx.update(grads, state, xy)
    xy = optax.apply_updates(xy, deltas)
    return (xy, state), xy

  start = jnp.array(START, jnp.float32)
  _, path = jax.jit(lambda s: jax.lax.scan(step, (s, tx.init(s)), length=steps))(start)
  path = np.concatenate([np.asarray(start)[None], np.asarray(path)])
  return path, np.array([float(bowl(p)) for p in path])


def plot(paths: dict[str, np.ndarray], losses: dict[str, np.ndarray], path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  figure, (ax_path, ax_loss) = plt.subplots(1, 2, figsize=(13, 5))
  grid_x, grid_y = np.meshgrid(np.linspace(-8, 8, 200), np.linspace(-3, 3, 200))
  ax_path.contour(grid_x, grid_y, grid_x**2 / 20 + grid_y**2, levels=20, cmap="Greys", alpha=0.6)
  for name, positions in paths.items():
    ax_path.plot(positions[:, 0], positions[:, 1], ".-", markersize=3, linewidth=1, label=name)
    ax_loss.semilogy(np.maximum(losses[name], 1e-12), label=name)
  ax_path.plot(*START, "k*", markersize=12)
  ax_path.set(xlim=(-8, 8), ylim=(-3, 3), xlabel="x", ylabel="y",
              title="trajectories on z = x^2/20 + y^2")
  ax_loss.set(xlabel="step", ylabel="z (log)", title="loss")
  ax_path.legend(fontsize=8)
  ax_loss.legend(fontsize=8)
  figure.tight_layout()
  figure.savefig(path, dpi=110)
  plt.close(figure)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  for name in _RULES.value:
    validation.check_choice("rule", name, DEMO_RULES)
  transforms = {}
  for name in _RULES.value:
    rule, learning_rate, hyperparameters = DEMO_RULES[name]
    transforms[demo_label(name, learning_rate, hyperparameters)] = rule(learning_rate,
                                                                        **hyperparameters)
  if _WITH_CONFIG.value:
    opt_cfg = _CONFIG.value.optimizer
    label = f"config:{opt_cfg.name} (lr {float(opt_cfg.learning_rate):g})"
    transforms[label] = optim.get_optimizer(opt_cfg, steps_per_epoch=10)

  paths, losses = {}, {}
  report_at = sorted({0, 10, 25, 50, _STEPS.value} & set(range(_STEPS.value + 1)))
  width = max(24, max(len(name) for name in transforms) + 2)
  print(f"{'rule':<{width}}" + "".join(f"{f'step {s}':>12}" for s in report_at))
  for name, tx in transforms.items():
    paths[name], losses[name] = run(tx, _STEPS.value)
    print(f"{name:<{width}}" + "".join(f"{losses[name][s]:>12.3e}" for s in report_at))

  os.makedirs(_WORKDIR.value, exist_ok=True)
  figure_path = os.path.join(_WORKDIR.value, "optim_demo.png")
  plot(paths, losses, figure_path)
  print(f"wrote {figure_path}")


if __name__ == "__main__":
  app.run(main)
