"""Ensembles on MNIST-1D (generated, 40-dimensional sequences, 10 classes): same study as
configs/ensemble_digits.py with an MLP on the harder data set.

Launch:
    python3 scripts/ensemble.py --config=configs/ensemble_mnist1d.py --workdir=/tmp/ens_mnist1d
"""
import ml_collections

from configs import ensemble_digits


def get_config() -> ml_collections.ConfigDict:
  config = ensemble_digits.get_config()
  config.data.name = "mnist1d"
  config.train.num_epochs = 30
  config.averaging.polyak_start_epoch = 15
  config.ensemble.topk_epochs = 30
  config.distill.num_epochs = 40
  return config
