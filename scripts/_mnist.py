"""Where the MNIST scripts read the real MNIST test set (t10k images and labels, IDX, gzip).

A folder given on the command line is used as it is (nothing is downloaded); without one, robustal's download cache
(``$ROBUSTAL_DATA/mnist`` or ``~/.cache/robustal/mnist``, the folder ``--dataset mnist`` uses) is filled with the two
test files (about 2 MB, checked against their published MD5s) the first time.
"""

import sys
from pathlib import Path

import numpy as np

from robustal.data.builtin import resource
from robustal.data.download import fetch
from robustal.data.readers import read_idx
from robustal.data.registry import default_data_dir
from robustal.errors import DataError

FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def mnist_test_set(folder: str | None) -> tuple[np.ndarray, np.ndarray]:
    """The 10 000 MNIST test images (uint8, 28×28) and labels, from ``folder`` or the download cache."""
    if folder is None:
        try:
            paths = [fetch(resource("mnist", name), default_data_dir() / "mnist") for name in FILES]
        except DataError as e:  # no network: the message names the URLs tried and where to put the file by hand
            sys.exit(f"{e}\nOr give the folder that holds MNIST's two test files as the MNIST_DIR argument.")
    else:
        paths = [Path(folder) / name for name in FILES]
        missing = [p.name for p in paths if not p.is_file()]
        if missing:
            sys.exit(f"{folder}: no {' or '.join(missing)} there. Give the folder that holds MNIST's test files "
                     "(t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz), or leave the folder out to download "
                     "them into robustal's cache.")
    return read_idx(paths[0]), read_idx(paths[1]).astype(np.int64)
