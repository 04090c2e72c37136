"""research.data: the data sets, split with a fixed seed and standardized on the training split.

``load_dataset(config.data) -> Dataset``; ``DATASETS`` lists the names. 'digits' (scikit-learn's
bundled 8x8 digits) is embedded, 'mnist1d' is generated locally, and the TFDS image data sets work
only when already prepared (a clear error otherwise). Nothing is ever downloaded.
"""
from research.data.dataset import (DATASETS, Dataset, check_data_config, load_dataset,
                                   split_indices, standardize)
from research.data.sources import DataUnavailableError

__all__ = ["DATASETS", "DataUnavailableError", "Dataset", "check_data_config", "load_dataset",
           "split_indices", "standardize"]
