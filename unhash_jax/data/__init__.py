"""Data sets (tfds builders on array_record, no TensorFlow), retrieval protocols and batching.

Importing this package does not import tensorflow_datasets; :func:`load_source` does.
"""

from unhash_jax.data.builders import DATASETS, DataError, Source, default_data_dir, load_source
from unhash_jax.data.loader import eval_batches, epoch_permutation, steps_per_epoch, train_batches
from unhash_jax.data.protocols import DEFAULT_PROTOCOL, PROTOCOLS, Splits, check_splits, make_splits

__all__ = [
    "DATASETS", "DEFAULT_PROTOCOL", "PROTOCOLS", "DataError", "Source", "Splits", "check_splits",
    "default_data_dir", "epoch_permutation", "eval_batches", "load_source", "make_splits",
    "steps_per_epoch", "train_batches",
]
