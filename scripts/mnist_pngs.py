"""Write a folder of PNG images to label: the first N real MNIST test images (28×28 grey), and, beside the folder,
their true labels (``OUT_DIR-truth.csv``) -- to play the person who answers robustal's requests (scripts/answer.py).

Usage: python scripts/mnist_pngs.py [OUT_DIR] [N] [MNIST_DIR]   (defaults: mnist-pngs, 2000)
MNIST_DIR holds t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz; without it, those two files are downloaded
(about 2 MB, MD5-checked) into robustal's cache ($ROBUSTAL_DATA/mnist or ~/.cache/robustal/mnist) the first time.
"""

import argparse
from pathlib import Path

from _mnist import mnist_test_set
from PIL import Image


def count(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 10_000:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of images between 1 and 10000")
    return int(text)


ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
ap.add_argument("out", nargs="?", type=Path, default=Path("mnist-pngs"), metavar="OUT_DIR",
                help="folder of PNG images to write (default: mnist-pngs)")
ap.add_argument("n", nargs="?", type=count, default=2000, metavar="N", help="how many images (default: 2000)")
ap.add_argument("mnist_dir", nargs="?", metavar="MNIST_DIR",
                help="folder with t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz (default: download them)")
args = ap.parse_args()
out, n = args.out, args.n
x, y = mnist_test_set(args.mnist_dir)
x, y = x[:n], y[:n]
out.mkdir(parents=True, exist_ok=True)
rows = ["id,label"]
for i in range(n):
    name = f"mnist-{i:05d}.png"
    Image.fromarray(x[i]).save(out / name)
    rows.append(f"{name},{y[i]}")
truth = out.parent / f"{out.name}-truth.csv"
truth.write_text("\n".join(rows) + "\n")
print(f"wrote {n} images to {out}/ and their labels to {truth}")
