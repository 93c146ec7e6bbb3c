"""Datasets held in memory as uint8 tensors, with download, checksum and cache for the public ones."""

from robustal.data import builtin as _builtin  # noqa: F401  (registers mnist, fashion-mnist, svhn, cifar10)
from robustal.data.dataset import Dataset, Split, Splits, to_float, validation_size
from robustal.data.registry import (
    DATASETS,
    default_data_dir,
    default_model_for,
    list_datasets,
    load_dataset,
    load_npz,
    register_dataset,
)

__all__ = ["DATASETS", "Dataset", "Split", "Splits", "default_data_dir", "default_model_for", "list_datasets",
           "load_dataset", "load_npz",
           "register_dataset", "to_float", "validation_size"]
