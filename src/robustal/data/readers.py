"""Readers for the public datasets' file formats: IDX (MNIST, Fashion-MNIST), CIFAR-10's pickled batches, SVHN's .mat.

Each reader returns numpy arrays (images N×H×W or N×H×W×C, uint8) and turns any malformed file into a
:class:`~robustal.errors.DataError` that names the file and says what to do.
"""

from __future__ import annotations

import codecs
import gzip
import pickle
import tarfile
import zlib
from pathlib import Path
from typing import IO, Any

import numpy as np

from robustal.errors import DataError

#: IDX type codes (the third byte of the magic number) → big-endian numpy dtypes.
IDX_DTYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}

_REDOWNLOAD = "Delete it and re-run to download it again."


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (gzip-compressed or plain) as a numpy array in native byte order.

    The header is checked: magic number ``00 00 <type> <ndim>``, a known type code, and a byte count that matches
    the dimensions exactly, so a truncated or padded file is rejected instead of misread.

    Raises:
        DataError: The file is missing, not IDX, or corrupt or truncated.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(2)
            f.seek(0)
            data = gzip.GzipFile(fileobj=f).read() if head == b"\x1f\x8b" else f.read()
    except FileNotFoundError:
        raise DataError(f"IDX file {path} does not exist.") from None
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise DataError(f"Corrupt or truncated IDX file {path}: the gzip stream cannot be read ({e or 'ends early'}). "
                        f"{_REDOWNLOAD}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_DTYPES or data[3] == 0:
        raise DataError(f"{path} is not an IDX file: its magic number is {data[:4].hex() or 'missing'}, expected "
                        f"0000<type><ndim> with type one of {', '.join(f'{k:02x}' for k in IDX_DTYPES)}. "
                        f"{_REDOWNLOAD}")
    dtype, ndim = IDX_DTYPES[data[2]], data[3]
    offset = 4 + 4 * ndim
    if len(data) < offset:
        raise DataError(f"Corrupt or truncated IDX file {path}: expected a {offset}-byte header for {ndim} dimensions, "
                        f"found {len(data)} bytes. {_REDOWNLOAD}")
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    expected = offset + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise DataError(f"Corrupt or truncated IDX file {path}: expected {expected} bytes for shape {dims} of "
                        f"{dtype.name}, found {len(data)}. {_REDOWNLOAD}")
    return np.frombuffer(data, dtype, offset=offset).reshape(dims).astype(dtype.newbyteorder("="))


# --------------------------------------------------------------------------------------------------- CIFAR-10

CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_BATCH = "test_batch"
_RECONSTRUCT = np.empty(0).__reduce__()[0]  # numpy's array-unpickling helper, wherever this numpy version keeps it


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles CIFAR's batches, refusing every global other than the few a numpy array needs.

    Pickle can run arbitrary code, so it is only safe on trusted files. The CIFAR-10 archive is checked against its
    published MD5 before it is read (see :mod:`robustal.data.download`); this allow-list is a second line of defence
    for archives or folders given by hand.
    """

    def find_class(self, module: str, name: str) -> Any:
        if name == "_reconstruct" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            return _RECONSTRUCT
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if module == "_codecs" and name == "encode":  # how Python 3 writes bytes in protocol-2 pickles
            return codecs.encode
        raise pickle.UnpicklingError(f"unexpected global {module}.{name} (a CIFAR batch holds only numpy arrays)")


def _load_batch(f: IO[bytes] | None, where: str) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch → images N×32×32×3 uint8 and labels (N,) int64."""
    try:
        batch = _CifarUnpickler(f, encoding="bytes").load()
        data = np.asarray(batch[b"data"])
        labels = np.asarray(batch.get(b"labels", batch.get(b"fine_labels")), dtype=np.int64)
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, AttributeError, IndexError,
            OSError, zlib.error) as e:
        raise DataError(f"Corrupt or truncated CIFAR-10 batch {where}: {type(e).__name__}: {e}. "
                        f"{_REDOWNLOAD}") from None
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.shape != (len(data),):
        raise DataError(f"Corrupt CIFAR-10 batch {where}: expected uint8 data of shape (N, 3072) and N labels, got "
                        f"{data.dtype} {data.shape} and labels of shape {labels.shape}. {_REDOWNLOAD}")
    # rows are 1024 red, 1024 green, 1024 blue values, each a 32×32 image in row-major order
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def read_cifar10(tar_or_dir: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """CIFAR-10's python batches, read from ``cifar-10-python.tar.gz`` directly or from its extracted folder.

    Args:
        tar_or_dir: The archive, or a folder holding ``data_batch_1`` .. ``data_batch_5`` and ``test_batch`` (either
            directly or in ``cifar-10-batches-py/``).

    Returns:
        ``(x_train, y_train, x_test, y_test)``: images N×32×32×3 uint8, labels int64.

    Raises:
        DataError: A batch is missing or corrupt.
    """
    path = Path(tar_or_dir)
    wanted = (*CIFAR10_TRAIN_BATCHES, CIFAR10_TEST_BATCH)
    batches: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if path.is_dir():
        folder = path / "cifar-10-batches-py" if (path / "cifar-10-batches-py").is_dir() else path
        for name in wanted:
            if (folder / name).is_file():
                with open(folder / name, "rb") as f:
                    batches[name] = _load_batch(f, str(folder / name))
    else:
        try:
            # one pass over the archive, unpickling the members we need straight from the stream
            with tarfile.open(path, "r:*") as tar:
                for member in tar:
                    name = member.name.rsplit("/", 1)[-1]
                    if member.isfile() and name in wanted and name not in batches:
                        batches[name] = _load_batch(tar.extractfile(member), f"{path}:{member.name}")
        except FileNotFoundError:
            raise DataError(f"CIFAR-10 archive {path} does not exist.") from None
        except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
            raise DataError(f"Corrupt or truncated CIFAR-10 archive {path} ({type(e).__name__}: {e}). "
                            f"{_REDOWNLOAD}") from None
    missing = [n for n in wanted if n not in batches]
    if missing:
        raise DataError(f"{path} lacks the CIFAR-10 batches {', '.join(missing)}; expected the python version "
                        f"(cifar-10-python.tar.gz). {_REDOWNLOAD}")
    x_train = np.concatenate([batches[n][0] for n in CIFAR10_TRAIN_BATCHES])
    y_train = np.concatenate([batches[n][1] for n in CIFAR10_TRAIN_BATCHES])
    x_test, y_test = batches[CIFAR10_TEST_BATCH]
    return x_train, y_train, np.ascontiguousarray(x_test), y_test


# --------------------------------------------------------------------------------------------------- SVHN


def read_svhn_mat(path: str | Path, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """SVHN's cropped-digits ``train_32x32.mat`` / ``test_32x32.mat``.

    Args:
        path: The .mat file (``X`` of shape 32×32×3×N, ``y`` of shape N×1 with label 10 for the digit 0).
        limit: Keep only the first ``limit`` samples (the paper uses 50 000 train / 10 000 test); all when ``None``
            or when the file holds fewer.

    Returns:
        ``(x, y)``: images N×32×32×3 uint8 and labels (N,) int64 in 0..9.

    Raises:
        DataError: The file is missing, not a MATLAB file, or lacks ``X``/``y`` of the right shapes.
    """
    import scipy.io

    path = Path(path)
    if limit is not None and limit < 0:
        raise ValueError(f"The 'limit' parameter of read_svhn_mat must be None or >= 0. Got {limit} instead.")
    try:
        mat = scipy.io.loadmat(path, variable_names=["X", "y"])
    except FileNotFoundError:
        raise DataError(f"SVHN file {path} does not exist.") from None
    except Exception as e:  # scipy raises ValueError, TypeError, MatReadError, OSError, ... on malformed files
        raise DataError(f"Corrupt or truncated SVHN file {path} ({type(e).__name__}: {e}). {_REDOWNLOAD}") from None
    if "X" not in mat or "y" not in mat:
        raise DataError(f"{path} is not an SVHN cropped-digits file: it lacks the variables X and y. {_REDOWNLOAD}")
    x, y = np.asarray(mat["X"]), np.asarray(mat["y"]).reshape(-1)
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.shape[3] != len(y):
        raise DataError(f"{path}: expected uint8 X of shape 32×32×3×N and N labels, got X {x.dtype} {x.shape} and "
                        f"{len(y)} labels. "
                        f"{_REDOWNLOAD}")
    n = len(y) if limit is None else min(limit, len(y))
    x = np.ascontiguousarray(x[..., :n].transpose(3, 0, 1, 2))  # → N×H×W×C
    y = y[:n]
    if not np.all(np.isin(y, np.arange(1, 11))):
        raise DataError(f"{path}: labels must be 1..10 (10 stands for the digit 0); found {np.unique(y)[:20]}. "
                        f"{_REDOWNLOAD}")
    y = y.astype(np.int64)
    y[y == 10] = 0
    return x, y
