"""Write the README's MNIST npz: the first 8 000 real MNIST *test* images as training set, the next 2 000 as test.

Usage: python scripts/mnist_npz.py [MNIST_DIR] [OUT.npz]   (default OUT.npz: mnist-8k.npz)
MNIST_DIR holds t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz; without it, those two files are downloaded
(about 2 MB, MD5-checked) into robustal's cache ($ROBUSTAL_DATA/mnist or ~/.cache/robustal/mnist) the first time.
Images are padded to 32×32.
"""

import sys
from pathlib import Path

import numpy as np
from _mnist import mnist_test_set

x, y = mnist_test_set(sys.argv[1] if len(sys.argv) > 1 else None)
out = Path(sys.argv[2] if len(sys.argv) > 2 else "mnist-8k.npz")
x = np.pad(x, ((0, 0), (2, 2), (2, 2)))
np.savez(out, x_train=x[:8000], y_train=y[:8000], x_test=x[8000:10000], y_test=y[8000:10000])
print(f"wrote {out}: 8000 train / 2000 test images, 32x32")
