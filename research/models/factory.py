"""``create_model(config.model, num_classes, image_shape)``: a network from its config by name."""
from __future__ import annotations

from typing import Any

import flax.linen as nn

from research.models.initializers import INITIALIZERS
from research.models.networks import ACTIVATIONS, CNN, CNN1D, MLP

MODELS = ("mlp", "cnn", "cnn1d")


def _positive_ints(name: str, values: Any, allow_empty: bool = False) -> tuple[int, ...]:
  try:
    values = tuple(values)
  except TypeError:
    values = (values,)
  if ((not values and not allow_empty)
      or any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in values)):
    raise ValueError(f"config.model.{name}={values!r} must be a "
                     f"{'' if allow_empty else 'non-empty '}tuple of positive integers"
                     + (" (empty: no hidden layer, softmax regression)." if allow_empty else "."))
  return values


def validate_model_config(model_cfg: Any) -> None:
  """Rejects unknown names and out-of-range values, naming the field and the allowed values."""
  if model_cfg.name not in MODELS:
    raise ValueError(f"config.model.name={model_cfg.name!r} is unknown; choose one of "
                     f"{', '.join(MODELS)}.")
  if model_cfg.activation not in ACTIVATIONS:
    raise ValueError(f"config.model.activation={model_cfg.activation!r} is unknown; choose one "
                     f"of {', '.join(ACTIVATIONS)}.")
  if model_cfg.init not in INITIALIZERS:
    raise ValueError(f"config.model.init={model_cfg.init!r} is unknown; choose one of "
                     f"{', '.join(INITIALIZERS)}.")
  if not 0.0 <= float(model_cfg.dropout) < 1.0:
    raise ValueError(f"config.model.dropout={model_cfg.dropout!r} is a drop probability: it must "
                     "be in [0, 1).")
  init_std = model_cfg.get("init_std", 0.01)
  if (isinstance(init_std, bool) or not isinstance(init_std, (int, float))
      or not (0 <= init_std < float("inf"))):
    raise ValueError(f"config.model.init_std={init_std!r} must be a finite number >= 0 (the "
                     "std of init='normal', the value of init='constant').")
  if not float(model_cfg.get("output_scale", 0.1)) > 0:
    raise ValueError(f"config.model.output_scale={model_cfg.output_scale!r} must be > 0.")
  if model_cfg.name == "mlp":
    _positive_ints("hidden_sizes", model_cfg.hidden_sizes, allow_empty=True)
  else:
    _positive_ints("features", model_cfg.features)


def create_model(model_cfg: Any, num_classes: int,
                 image_shape: tuple[int, ...] | None = None) -> nn.Module:
  """The linen module described by ``config.model``.

  Args:
    model_cfg: ``config.model``: name (mlp | cnn | cnn1d), hidden_sizes, features, activation,
      init, batch_norm, dropout (and optionally ``hidden``, the CNN's dense width).
    num_classes: number of logits.
    image_shape: ``(H, W, C)`` of image data; 'cnn' needs it (inputs must be images).

  Raises:
    ValueError: unknown names, bad values, or a 2-D CNN for data that are not images.
  """
  validate_model_config(model_cfg)
  common = dict(num_classes=int(num_classes), activation=model_cfg.activation,
                initializer=model_cfg.init, batch_norm=bool(model_cfg.batch_norm),
                dropout=float(model_cfg.dropout),
                output_scale=float(model_cfg.get("output_scale", 0.1)),
                init_std=float(model_cfg.get("init_std", 0.01)))
  if model_cfg.name == "mlp":
    return MLP(hidden_sizes=tuple(int(h) for h in model_cfg.hidden_sizes), **common)
  hidden = int(model_cfg.get("hidden", 128))
  if model_cfg.name == "cnn":
    if image_shape is None or len(image_shape) != 3:
      raise ValueError(f"config.model.name='cnn' needs image data (H, W, C); this data set has "
                       f"image_shape={image_shape!r}: use 'cnn1d' for 1-D signals or 'mlp'.")
    return CNN(features=tuple(model_cfg.features), hidden=hidden, **common)
  return CNN1D(features=tuple(model_cfg.features), hidden=hidden, **common)
