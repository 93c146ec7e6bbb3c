"""Write the README's MNIST npz: the first 8 000 real MNIST *test* images as training set, the next 2 000 as test.

Usage: python scripts/mnist_npz.py [MNIST_DIR] [OUT.npz]   (defaults: ../shared/datasets/mnist, mnist-8k.npz)
MNIST_DIR holds t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz; images are padded to 32×32.
"""

import sys
from pathlib import Path

import numpy as np

from robustal.data.readers import read_idx

src = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "shared/datasets/mnist")
out = Path(sys.argv[2] if len(sys.argv) > 2 else "mnist-8k.npz")
x = np.pad(read_idx(src / "t10k-images-idx3-ubyte.gz"), ((0, 0), (2, 2), (2, 2)))
y = read_idx(src / "t10k-labels-idx1-ubyte.gz").astype(np.int64)
np.savez(out, x_train=x[:8000], y_train=y[:8000], x_test=x[8000:10000], y_test=y[8000:10000])
print(f"wrote {out}: 8000 train / 2000 test images, 32x32")
