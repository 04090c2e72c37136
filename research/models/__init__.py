"""research.models: flax linen networks (MLP, CNN, 1-D CNN) chosen by name from the config.

``create_model(config.model, num_classes, image_shape)``; ``MODELS``, ``INITIALIZERS``,
``ACTIVATIONS`` list the choices. Hidden activations are sown as ``intermediates/act_{i}``.
"""
from research.models.factory import MODELS, create_model, validate_model_config
from research.models.initializers import INITIALIZERS, kernel_init
from research.models.networks import ACTIVATIONS, CNN, CNN1D, MLP

__all__ = ["ACTIVATIONS", "CNN", "CNN1D", "INITIALIZERS", "MLP", "MODELS", "create_model",
           "kernel_init", "validate_model_config"]
