"""Shared fixtures: real MNIST test images as the 8 000 / 2 000 npz of the README, the digits dataset, and tiny
tensors. Tests run torch on one thread: the ops are small and the CI machine has two cores."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

#: The real MNIST test set (IDX, gzip) shipped beside the repository; ROBUSTAL_TEST_MNIST overrides.
MNIST_DIR = Path(os.environ.get("ROBUSTAL_TEST_MNIST",
                                Path(__file__).resolve().parents[2] / "shared" / "datasets" / "mnist"))


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def build_mnist_npz(path: Path, n_train: int = 8000, n_test: int = 2000) -> Path:
    """The first ``n_train`` real MNIST test images as training set, the next ``n_test`` as test set, 32×32."""
    from robustal.data.readers import read_idx

    x = read_idx(MNIST_DIR / "t10k-images-idx3-ubyte.gz")
    y = read_idx(MNIST_DIR / "t10k-labels-idx1-ubyte.gz").astype(np.int64)
    x = np.pad(x, ((0, 0), (2, 2), (2, 2)))
    np.savez(path, x_train=x[:n_train], y_train=y[:n_train], x_test=x[n_train:n_train + n_test],
             y_test=y[n_train:n_train + n_test])
    return path


@pytest.fixture(scope="session")
def mnist_npz(tmp_path_factory) -> Path:
    """Path of the README's npz: 8 000 train / 2 000 test real MNIST images (skips where the files are absent)."""
    if not (MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"real MNIST test set not found in {MNIST_DIR} (set ROBUSTAL_TEST_MNIST)")
    return build_mnist_npz(tmp_path_factory.mktemp("mnist") / "mnist-8k.npz")


@pytest.fixture(scope="session")
def digits():
    from robustal.data import load_dataset

    return load_dataset("digits")


@pytest.fixture(scope="session")
def run_script():
    """``run_script(name, *args, env={...})``: run ``scripts/NAME`` in a fresh interpreter with ``src`` on the path,
    as a user runs it; ``env`` adds variables, and a variable given as None is removed."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]

    def run(name: str, *args: str, env: dict[str, str | None] | None = None) -> subprocess.CompletedProcess:
        environment = {**os.environ, "PYTHONPATH": str(root / "src"), **(env or {})}
        environment = {k: v for k, v in environment.items() if v is not None}
        return subprocess.run([sys.executable, str(root / "scripts" / name), *args], capture_output=True, text=True,
                              env=environment, timeout=120)

    return run
