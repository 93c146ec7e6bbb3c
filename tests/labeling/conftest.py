"""Real images for the labeling tests: scikit-learn's bundled 8×8 digits, scaled to 0-255, and real MNIST test
images as a folder of PNG files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def digit_images() -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 (N, 8, 8), labels int64 (N,))`` of scikit-learn's digits."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return np.round(d.images * (255 / 16)).astype(np.uint8), d.target.astype(np.int64)


N_POOL = 260
#: The real MNIST test set beside the repository (as in tests/conftest.py).
MNIST_DIR = Path(os.environ.get("ROBUSTAL_TEST_MNIST",
                                Path(__file__).resolve().parents[3] / "shared" / "datasets" / "mnist"))


@pytest.fixture(scope="session")
def mnist_folder(tmp_path_factory):
    """260 real MNIST test images as a flat folder of PNGs, and their true labels by file name."""
    from PIL import Image

    from robustal.data.readers import read_idx

    if not (MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"real MNIST test set not found in {MNIST_DIR}")
    x = read_idx(MNIST_DIR / "t10k-images-idx3-ubyte.gz")[:N_POOL]
    y = read_idx(MNIST_DIR / "t10k-labels-idx1-ubyte.gz")[:N_POOL]
    folder = tmp_path_factory.mktemp("mnist-png") / "pool"
    folder.mkdir()
    truth = {}
    for i in range(N_POOL):
        name = f"digit-{i:04d}.png"
        Image.fromarray(x[i]).save(folder / name)
        truth[name] = int(y[i])
    return folder, truth
