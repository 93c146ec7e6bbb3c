"""The paper's public datasets: ``mnist``, ``fashion-mnist``, ``svhn`` and ``cifar10``.

Each is downloaded on first use into ``<data_dir>/<name>/`` from its canonical URL, checked against the published
MD5 (the same checksums torchvision uses), and read from the cache afterwards, offline. Tests point the downloads at
a local server by replacing entries of :data:`MIRRORS` (and of :data:`FILES` when they serve other files).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from robustal.data.dataset import Dataset, Split
from robustal.data.download import Resource, fetch
from robustal.data.readers import read_cifar10, read_idx, read_svhn_mat
from robustal.data.registry import default_model_for, images_to_tensor, labels_to_tensor, register_dataset
from robustal.errors import DataError

#: Base URLs of each dataset's files, tried in order.
MIRRORS: dict[str, tuple[str, ...]] = {
    "mnist": ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    "svhn": ("http://ufldl.stanford.edu/housenumbers/",),
    "cifar10": ("https://www.cs.toronto.edu/~kriz/",),
}

#: Each dataset's files and their published MD5s.
FILES: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
    "svhn": {
        "train_32x32.mat": "e26dedcc434d2e4c54c9b2d4a06d8373",
        "test_32x32.mat": "eb5a983be6a315427106f1b8d5b07be9",
    },
    "cifar10": {
        "cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a",
    },
}

#: The paper's SVHN subset: the first 50 000 training and 10 000 test samples of the .mat files.
SVHN_TRAIN_SIZE = 50_000
SVHN_TEST_SIZE = 10_000
#: MNIST and Fashion-MNIST are zero-padded by this many pixels on each side, 28×28 → 32×32 (LeNet-5's input).
IDX_PAD = 2


def resource(name: str, filename: str) -> Resource:
    """The download of one of ``name``'s files, from the first of :data:`MIRRORS` with the others as fallbacks."""
    bases = MIRRORS[name]
    return Resource(url=bases[0] + filename, filename=filename, md5=FILES[name][filename],
                    mirrors=tuple(b + filename for b in bases[1:]))


def fetch_files(name: str, data_dir: Path, progress: bool = True) -> dict[str, Path]:
    """Every file of dataset ``name``, verified, in ``data_dir / name``."""
    return {f: fetch(resource(name, f), Path(data_dir) / name, progress=progress) for f in FILES[name]}


def _idx_dataset(name: str, data_dir: Path) -> Dataset:
    files = fetch_files(name, data_dir)
    parts = {}
    for part, prefix in (("train", "train"), ("test", "t10k")):
        images_file, labels_file = files[f"{prefix}-images-idx3-ubyte.gz"], files[f"{prefix}-labels-idx1-ubyte.gz"]
        x, y = read_idx(images_file), read_idx(labels_file)
        if x.ndim != 3 or x.dtype != np.uint8:
            raise DataError(f"{images_file}: expected uint8 images N×28×28, got {x.dtype} {x.shape}. "
                            "Delete it and re-run to download it again.")
        if y.shape != (len(x),) or (len(y) and (y.min() < 0 or y.max() > 9)):
            raise DataError(f"{labels_file}: expected {len(x)} labels in 0..9 (one per image in {images_file.name}), "
                            f"got shape {y.shape}. Delete both files and re-run to download them again.")
        x = np.pad(x, ((0, 0), (IDX_PAD, IDX_PAD), (IDX_PAD, IDX_PAD)))  # N×28×28 → N×32×32, zeros around
        parts[part] = Split(images_to_tensor(x, name, part), torch.from_numpy(y.astype(np.int64)))
    return Dataset(name=name, train=parts["train"], test=parts["test"], num_classes=10, epsilon=0.3, step_size=0.01,
                   augment=(), default_model=default_model_for(name))


@register_dataset("mnist", default_model="lenet5")
def mnist(data_dir: Path) -> Dataset:
    """MNIST handwritten digits, 60 000 train / 10 000 test, zero-padded to 32×32; ε = 0.3, step 0.01."""
    return _idx_dataset("mnist", data_dir)


@register_dataset("fashion-mnist", default_model="lenet5")
def fashion_mnist(data_dir: Path) -> Dataset:
    """Fashion-MNIST clothing images, 60 000 train / 10 000 test, zero-padded to 32×32; ε = 0.3, step 0.01."""
    return _idx_dataset("fashion-mnist", data_dir)


@register_dataset("svhn", default_model="vgg8")
def svhn(data_dir: Path) -> Dataset:
    """SVHN cropped digits, the paper's first 50 000 train / 10 000 test samples; ε = 8/255, step 2/255.

    Augmented with random crops only: flipping a digit changes what it shows.
    """
    files = fetch_files("svhn", data_dir)
    parts = {}
    for part, filename, limit in (("train", "train_32x32.mat", SVHN_TRAIN_SIZE),
                                  ("test", "test_32x32.mat", SVHN_TEST_SIZE)):
        x, y = read_svhn_mat(files[filename], limit)
        x_t = images_to_tensor(x, str(files[filename]), part)
        parts[part] = Split(x_t, labels_to_tensor(y, len(x_t), str(files[filename]), part))
    return Dataset(name="svhn", train=parts["train"], test=parts["test"], num_classes=10, epsilon=8 / 255,
                   step_size=2 / 255, augment=("crop",), default_model=default_model_for("svhn"))


@register_dataset("cifar10", default_model="resnet18")
def cifar10(data_dir: Path) -> Dataset:
    """CIFAR-10, 50 000 train / 10 000 test colour images of 10 classes; ε = 8/255, step 2/255."""
    archive = fetch_files("cifar10", data_dir)["cifar-10-python.tar.gz"]
    x_train, y_train, x_test, y_test = read_cifar10(archive)
    for y in (y_train, y_test):
        if len(y) and (y.min() < 0 or y.max() > 9):
            raise DataError(f"{archive}: CIFAR-10 labels must be 0..9, found {y.min()}..{y.max()}. "
                            "Delete it and re-run to download it again.")
    source = str(archive)
    train = Split(images_to_tensor(x_train, source, "train"), labels_to_tensor(y_train, len(x_train), source, "train"))
    test = Split(images_to_tensor(x_test, source, "test"), labels_to_tensor(y_test, len(x_test), source, "test"))
    return Dataset(name="cifar10", train=train, test=test, num_classes=10, epsilon=8 / 255, step_size=2 / 255,
                   augment=("crop", "flip"), default_model=default_model_for("cifar10"))
