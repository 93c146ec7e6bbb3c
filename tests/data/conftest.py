"""Fixtures for the data tests: a local HTTP server, and small files in the datasets' real formats.

MNIST is the real thing where a copy is at hand (``$ROBUSTAL_TEST_MNIST``, by default the shared folder of this
project's machines): its t10k files are served under both the t10k and the train names. Elsewhere a small synthetic
IDX set stands in, so the tests never need the network.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import shutil
import tarfile
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from robustal.data import builtin

REAL_MNIST = Path(os.environ.get("ROBUSTAL_TEST_MNIST",
                                 Path(__file__).resolve().parents[3] / "shared" / "datasets" / "mnist"))
MNIST_NAMES = {"images": "idx3-ubyte.gz", "labels": "idx1-ubyte.gz"}


def md5(path: Path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------------------ HTTP server


@dataclass
class FileServer:
    """Serves the files under ``root`` on 127.0.0.1; records requested paths; cuts short the bodies in ``drop``."""

    root: Path
    requests: list[str] = field(default_factory=list)
    drop: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                rel = urllib.parse.unquote(urllib.parse.urlparse(self.path).path).lstrip("/")
                server.requests.append(rel)
                file = (server.root / rel).resolve()
                if not file.is_file() or server.root.resolve() not in file.parents:
                    self.send_error(404)
                    return
                body = file.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if rel in server.drop:  # the connection drops halfway through the body
                    self.wfile.write(body[: len(body) // 2])
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()
        self.running = True

    def stop(self) -> None:
        """Stop serving: later requests get 'connection refused'."""
        if self.running:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join()
            self.running = False


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    srv = FileServer(root)
    yield srv
    srv.stop()


# ------------------------------------------------------------------------------------------------ file makers


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> Path:
    """``array`` in IDX format (the type code follows the dtype)."""
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(np.int16): 0x0B,
             np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D, np.dtype(np.float64): 0x0E}
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    raw = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(raw, mtime=0) if compress else raw)
    return path


def make_cifar_tar(path: Path, n_per_batch: int = 4, n_test: int = 6, seed: int = 0) -> dict[str, np.ndarray]:
    """A CIFAR-10 ``cifar-10-python.tar.gz`` in the real layout; returns the rows and labels it holds."""
    rng = np.random.default_rng(seed)
    sizes = {f"data_batch_{i}": n_per_batch for i in range(1, 6)} | {"test_batch": n_test}
    out: dict[str, np.ndarray] = {}
    with tarfile.open(path, "w:gz") as tar:

        def add(name: str, obj: dict) -> None:
            raw = pickle.dumps(obj, protocol=2)
            # The real batches were pickled by Python 2 with numpy 1, whose array helper lives in numpy.core.
            raw = raw.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))

        add("batches.meta", {b"label_names": [b"airplane", b"automobile"], b"num_vis": 3072})
        for name, n in sizes.items():
            data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
            labels = rng.integers(0, 10, n).tolist()
            add(name, {b"batch_label": name.encode(), b"labels": labels, b"data": data,
                       b"filenames": [f"img_{i}.png".encode() for i in range(n)]})
            out[f"{name}/data"], out[f"{name}/labels"] = data, np.array(labels)
    return out


def make_svhn_mat(path: Path, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """An SVHN ``*_32x32.mat`` in the real layout (X 32×32×3×N uint8, y N×1 in 1..10); returns (X, y)."""
    import scipy.io

    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
    y = rng.integers(1, 11, (n, 1)).astype(np.uint8)
    y[0, 0], y[1, 0] = 10, 1  # always at least one 0-digit and one 1-digit
    scipy.io.savemat(path, {"X": x, "y": y})
    return x, y


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory) -> Path:
    """The four MNIST files under their canonical names: real t10k files if at hand, else a synthetic set."""
    out = tmp_path_factory.mktemp("mnist")
    real = {k: REAL_MNIST / f"t10k-{k}-{v}" for k, v in MNIST_NAMES.items()}
    if all(p.is_file() for p in real.values()):
        for prefix in ("train", "t10k"):
            for kind, suffix in MNIST_NAMES.items():
                shutil.copyfile(real[kind], out / f"{prefix}-{kind}-{suffix}")
        return out
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 60), ("t10k", 40)):
        write_idx(out / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(out / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n).astype(np.uint8))
    return out


@pytest.fixture
def datasets_server(server, mnist_dir, monkeypatch, tmp_path_factory):
    """Serves every built-in dataset's files (MNIST for Fashion-MNIST too, tiny CIFAR-10 and SVHN) and points
    :mod:`robustal.data.builtin` at it, with the checksums of the served files."""
    for name in ("mnist", "fashion-mnist"):
        shutil.copytree(mnist_dir, server.root / name)
    (server.root / "cifar10").mkdir()
    make_cifar_tar(server.root / "cifar10" / "cifar-10-python.tar.gz")
    (server.root / "svhn").mkdir()
    make_svhn_mat(server.root / "svhn" / "train_32x32.mat", 12, seed=1)
    make_svhn_mat(server.root / "svhn" / "test_32x32.mat", 8, seed=2)
    for name in builtin.FILES:
        monkeypatch.setitem(builtin.MIRRORS, name, (f"{server.url}{name}/",))
        monkeypatch.setitem(builtin.FILES, name, {f: md5(server.root / name / f) for f in builtin.FILES[name]})
    return server


@pytest.fixture(scope="session")
def makers() -> SimpleNamespace:
    """The file makers above, as a fixture (test modules need not import this conftest by name)."""
    return SimpleNamespace(write_idx=write_idx, make_cifar_tar=make_cifar_tar, make_svhn_mat=make_svhn_mat, md5=md5)
