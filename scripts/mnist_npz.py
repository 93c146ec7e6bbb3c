"""Write the README's MNIST npz: the first 8 000 real MNIST *test* images as training set, the next 2 000 as test.

Usage: python scripts/mnist_npz.py [MNIST_DIR] [OUT.npz]   (default OUT.npz: mnist-8k.npz)
MNIST_DIR holds t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz; without it, those two files are downloaded
(about 2 MB, MD5-checked) into robustal's cache ($ROBUSTAL_DATA/mnist or ~/.cache/robustal/mnist) the first time.
Images are padded to 32×32.
"""

import argparse
from pathlib import Path

import numpy as np
from _mnist import mnist_test_set

ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
ap.add_argument("mnist_dir", nargs="?", metavar="MNIST_DIR",
                help="folder with t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz (default: download them)")
ap.add_argument("out", nargs="?", type=Path, default=Path("mnist-8k.npz"), metavar="OUT.npz",
                help="the npz to write (default: mnist-8k.npz)")
args = ap.parse_args()
x, y = mnist_test_set(args.mnist_dir)
x = np.pad(x, ((0, 0), (2, 2), (2, 2)))
np.savez(args.out, x_train=x[:8000], y_train=y[:8000], x_test=x[8000:10000], y_test=y[8000:10000])
print(f"wrote {args.out}: 8000 train / 2000 test images, 32x32")
