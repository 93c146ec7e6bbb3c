"""The file-format readers: IDX, CIFAR-10 pickled batches, SVHN .mat."""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile

import numpy as np
import pytest

from robustal.data.readers import read_cifar10, read_idx, read_svhn_mat
from robustal.errors import DataError

# ----------------------------------------------------------------------------------------------------- IDX


def test_read_idx_mnist(mnist_dir):
    x = read_idx(mnist_dir / "t10k-images-idx3-ubyte.gz")
    y = read_idx(mnist_dir / "t10k-labels-idx1-ubyte.gz")
    assert x.dtype == np.uint8 and x.ndim == 3 and x.shape[1:] == (28, 28)
    assert y.dtype == np.uint8 and y.shape == (len(x),) and y.max() <= 9
    assert x.flags.writeable and x.any()
    if len(x) == 10_000:  # the real MNIST test set
        assert y[:5].tolist() == [7, 2, 1, 0, 4]
        assert x.max() == 255 and x.mean() < 50  # white digits on a black background


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_round_trip(tmp_path, makers, dtype, compress):
    a = (np.arange(24) - (0 if dtype == np.uint8 else 5)).astype(dtype).reshape(2, 3, 4)
    out = read_idx(makers.write_idx(tmp_path / "a.idx", a, compress))
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, a)


def _idx_bytes(n: int = 3) -> bytes:
    return bytes([0, 0, 8, 3]) + np.array([n, 2, 2], ">u4").tobytes() + bytes(range(4 * n))


@pytest.mark.parametrize("raw, match", [
    (_idx_bytes()[:-1], "expected 28 bytes"),  # one byte short
    (_idx_bytes() + b"\0", "expected 28 bytes"),  # one byte too many
    (_idx_bytes()[:10], "header"),  # cut inside the header
    (b"\x00\x00\x08", "not an IDX file"),
    (b"PK\x03\x04" + bytes(20), "not an IDX file"),  # a zip, not IDX
    (bytes([0, 0, 0x0A, 1, 0, 0, 0, 1, 7]), "not an IDX file"),  # unknown type code
])
def test_read_idx_rejects_corrupt_files(tmp_path, raw, match):
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(raw)
    with pytest.raises(DataError, match=match) as e:
        read_idx(path)
    assert str(path) in str(e.value) and "re-run" in str(e.value)


def test_read_idx_truncated_gzip(tmp_path, mnist_dir):
    data = (mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes()
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="Corrupt or truncated IDX file") as e:
        read_idx(path)
    assert str(path) in str(e.value) and "Delete it and re-run" in str(e.value)


def test_read_idx_gzip_of_truncated_idx(tmp_path):
    path = tmp_path / "x-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(_idx_bytes()[:-3]))
    with pytest.raises(DataError, match=r"truncated IDX file .*expected 28 bytes .* found 25"):
        read_idx(path)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_idx(tmp_path / "nope.gz")


# ----------------------------------------------------------------------------------------------------- CIFAR-10


def _expected_images(rows: np.ndarray) -> np.ndarray:
    """The CIFAR row layout spelled out: pixel (h, w) of channel c is at c·1024 + h·32 + w."""
    n = len(rows)
    out = np.empty((n, 32, 32, 3), np.uint8)
    for c in range(3):
        for h in range(32):
            out[:, h, :, c] = rows[:, c * 1024 + h * 32: c * 1024 + h * 32 + 32]
    return out


@pytest.fixture(scope="module")
def cifar_tar(tmp_path_factory, makers):
    path = tmp_path_factory.mktemp("cifar") / "cifar-10-python.tar.gz"
    return path, makers.make_cifar_tar(path)


def test_read_cifar10_from_archive(cifar_tar):
    path, ref = cifar_tar
    x_train, y_train, x_test, y_test = read_cifar10(path)
    assert x_train.shape == (20, 32, 32, 3) and x_test.shape == (6, 32, 32, 3)
    assert x_train.dtype == np.uint8 and y_train.dtype == np.int64 and y_train.shape == (20,)
    rows = np.concatenate([ref[f"data_batch_{i}/data"] for i in range(1, 6)])
    np.testing.assert_array_equal(x_train, _expected_images(rows))
    np.testing.assert_array_equal(y_train, np.concatenate([ref[f"data_batch_{i}/labels"] for i in range(1, 6)]))
    np.testing.assert_array_equal(x_test, _expected_images(ref["test_batch/data"]))
    np.testing.assert_array_equal(y_test, ref["test_batch/labels"])


def test_read_cifar10_from_extracted_folder(cifar_tar, tmp_path):
    path, _ = cifar_tar
    with tarfile.open(path) as tar:
        tar.extractall(tmp_path, filter="data")
    from_tar = read_cifar10(path)
    for folder in (tmp_path, tmp_path / "cifar-10-batches-py"):
        for a, b in zip(read_cifar10(folder), from_tar, strict=True):
            np.testing.assert_array_equal(a, b)


def test_read_cifar10_missing_batch(tmp_path, cifar_tar):
    path, _ = cifar_tar
    with tarfile.open(path) as tar:
        tar.extractall(tmp_path, filter="data")
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataError, match="lacks the CIFAR-10 batches data_batch_3") as e:
        read_cifar10(tmp_path)
    assert str(tmp_path) in str(e.value)


def test_read_cifar10_truncated_archive(tmp_path, cifar_tar):
    path, _ = cifar_tar
    bad = tmp_path / "cifar-10-python.tar.gz"
    bad.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(DataError, match="Corrupt or truncated CIFAR-10") as e:
        read_cifar10(bad)
    assert str(bad) in str(e.value) and "re-run" in str(e.value)


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_read_cifar10_refuses_foreign_pickles(tmp_path, capsys):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    good = pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [0]}, protocol=2)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(good)
    (folder / "data_batch_2").write_bytes(pickle.dumps({b"data": _Evil(), b"labels": [0]}, protocol=2))
    with pytest.raises(DataError, match=r"data_batch_2.*unexpected global .*print"):
        read_cifar10(tmp_path)
    assert "pwned" not in capsys.readouterr().out


def test_read_cifar10_wrong_row_length(tmp_path):
    buf = io.BytesIO(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, protocol=2))
    folder = tmp_path
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(buf.getvalue())
    with pytest.raises(DataError, match=r"expected uint8 data of shape \(N, 3072\)"):
        read_cifar10(folder)


# ----------------------------------------------------------------------------------------------------- SVHN


def test_read_svhn_mat_layout_labels_and_limit(tmp_path, makers):
    path = tmp_path / "train_32x32.mat"
    X, y = makers.make_svhn_mat(path, 9)
    x_all, y_all = read_svhn_mat(path)
    assert x_all.shape == (9, 32, 32, 3) and x_all.dtype == np.uint8 and y_all.dtype == np.int64
    np.testing.assert_array_equal(x_all, X.transpose(3, 0, 1, 2))
    np.testing.assert_array_equal(y_all, np.where(y[:, 0] == 10, 0, y[:, 0]))
    assert y_all[0] == 0 and y_all.min() >= 0 and y_all.max() <= 9

    x5, y5 = read_svhn_mat(path, limit=5)
    np.testing.assert_array_equal(x5, x_all[:5])
    np.testing.assert_array_equal(y5, y_all[:5])
    assert len(read_svhn_mat(path, limit=100)[0]) == 9  # fewer samples than the limit: all of them


def test_read_svhn_mat_corrupt(tmp_path, makers):
    path = tmp_path / "test_32x32.mat"
    makers.make_svhn_mat(path, 4)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(DataError, match="Corrupt or truncated SVHN file") as e:
        read_svhn_mat(path)
    assert str(path) in str(e.value)


def test_read_svhn_mat_wrong_variables(tmp_path):
    import scipy.io

    path = tmp_path / "other.mat"
    scipy.io.savemat(path, {"images": np.zeros((2, 2))})
    with pytest.raises(DataError, match="lacks the variables X and y"):
        read_svhn_mat(path)
    scipy.io.savemat(path, {"X": np.zeros((28, 28, 3, 2), np.uint8), "y": np.ones((2, 1))})
    with pytest.raises(DataError, match="32×32×3×N"):
        read_svhn_mat(path)
