"""trainlab: the practical playbook of training neural networks, as JAX tools.

One sub-package per capability:

* ``research.optim``     update rules (init/update pairs) and schedules
* ``research.checks``    gradient checks and pre-training sanity checks
* ``research.models``    flax models (MLP, CNN, 1-D CNN)
* ``research.data``      data sets (digits embedded; MNIST-1D generated; TFDS optional)
* ``research.train``     jit-compiled, data-parallel training with checkpoints
* ``research.monitor``   babysitting: metrics, histograms, figures, verdicts
* ``research.averaging`` Polyak / EMA parameter averaging
* ``research.ensemble``  ensembles and distillation
* ``research.search``    hyperparameter search
"""
