"""Real images for the labeling tests: scikit-learn's bundled 8×8 digits, scaled to 0-255."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def digit_images() -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 (N, 8, 8), labels int64 (N,))`` of scikit-learn's digits."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return np.round(d.images * (255 / 16)).astype(np.uint8), d.target.astype(np.int64)
