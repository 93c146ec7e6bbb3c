"""Write a folder of PNG images to label: the first N real MNIST test images (28×28 grey), and, beside the folder,
their true labels (``OUT_DIR-truth.csv``) -- to play the person who answers robustal's requests (scripts/answer.py).

Usage: python scripts/mnist_pngs.py [OUT_DIR] [N] [MNIST_DIR]   (defaults: mnist-pngs, 2000)
MNIST_DIR holds t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz; without it, those two files are downloaded
(about 2 MB, MD5-checked) into robustal's cache ($ROBUSTAL_DATA/mnist or ~/.cache/robustal/mnist) the first time.
"""

import sys
from pathlib import Path

from _mnist import mnist_test_set
from PIL import Image

out = Path(sys.argv[1] if len(sys.argv) > 1 else "mnist-pngs")
n = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
x, y = mnist_test_set(sys.argv[3] if len(sys.argv) > 3 else None)
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
