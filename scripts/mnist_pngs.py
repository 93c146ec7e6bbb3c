"""Write a folder of PNG images to label: the first N real MNIST test images (28×28 grey), and, beside the folder,
their true labels (``truth.csv``) -- to play the person who answers robustal's requests (scripts/answer.py).

Usage: python scripts/mnist_pngs.py [OUT_DIR] [N] [MNIST_DIR]   (defaults: mnist-pngs, 2000, ../shared/datasets/mnist)
"""

import sys
from pathlib import Path

from PIL import Image

from robustal.data.readers import read_idx

out = Path(sys.argv[1] if len(sys.argv) > 1 else "mnist-pngs")
n = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
src = Path(sys.argv[3] if len(sys.argv) > 3 else Path(__file__).resolve().parents[2] / "shared/datasets/mnist")
x = read_idx(src / "t10k-images-idx3-ubyte.gz")[:n]
y = read_idx(src / "t10k-labels-idx1-ubyte.gz")[:n]
out.mkdir(parents=True, exist_ok=True)
rows = ["id,label"]
for i in range(n):
    name = f"mnist-{i:05d}.png"
    Image.fromarray(x[i]).save(out / name)
    rows.append(f"{name},{y[i]}")
truth = out.parent / f"{out.name}-truth.csv"
truth.write_text("\n".join(rows) + "\n")
print(f"wrote {n} images to {out}/ and their labels to {truth}")
