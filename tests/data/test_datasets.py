"""The built-in datasets, downloaded from a local server serving files in their real formats."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from robustal.data import builtin, list_datasets, load_dataset
from robustal.data.readers import read_idx, read_svhn_mat
from robustal.errors import ChecksumError, DataError

ATTRIBUTES = {  # name: (image shape, epsilon, step size, augment, default model)
    "mnist": ((1, 32, 32), 0.3, 0.01, (), "lenet5"),
    "fashion-mnist": ((1, 32, 32), 0.3, 0.01, (), "lenet5"),
    "svhn": ((3, 32, 32), 8 / 255, 2 / 255, ("crop",), "vgg8"),
    "cifar10": ((3, 32, 32), 8 / 255, 2 / 255, ("crop", "flip"), "resnet18"),
}


def test_all_registered():
    assert set(ATTRIBUTES) <= set(list_datasets())


def test_canonical_sources():
    r = builtin.resource("mnist", "t10k-images-idx3-ubyte.gz")
    assert r.url == "https://ossci-datasets.s3.amazonaws.com/mnist/t10k-images-idx3-ubyte.gz"
    assert r.mirrors == ("http://yann.lecun.com/exdb/mnist/t10k-images-idx3-ubyte.gz",)
    assert r.md5 == "9fb629c4189551a2d022fa330f9573f3"
    assert builtin.resource("cifar10", "cifar-10-python.tar.gz").url == \
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    assert builtin.resource("svhn", "train_32x32.mat").md5 == "e26dedcc434d2e4c54c9b2d4a06d8373"
    for name, files in builtin.FILES.items():
        assert all(len(m) == 32 for m in files.values()), name


@pytest.mark.parametrize("name", list(ATTRIBUTES))
def test_attributes(datasets_server, tmp_path, name):
    d = load_dataset(name, tmp_path)
    shape, eps, step, augment, model = ATTRIBUTES[name]
    assert d.name == name and d.num_classes == 10 and d.image_shape == shape
    assert (d.epsilon, d.step_size) == pytest.approx((eps, step))
    assert (d.augment, d.default_model) == (augment, model)
    for s in (d.train, d.test):
        assert s.x.dtype == torch.uint8 and s.y.dtype == torch.int64 and len(s)
        assert 0 <= s.y.min() and s.y.max() <= 9
    assert sorted(p.name for p in (tmp_path / name).iterdir() if not p.name.endswith(".verified")) == \
        sorted(builtin.FILES[name])


def test_mnist_padded_with_content_intact_and_offline_reuse(datasets_server, tmp_path, mnist_dir):
    d = load_dataset("mnist", tmp_path)
    raw = read_idx(mnist_dir / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(mnist_dir / "t10k-labels-idx1-ubyte.gz")
    x = d.test.x[:, 0].numpy()
    assert x.shape == (len(raw), 32, 32)
    np.testing.assert_array_equal(x[:, 2:30, 2:30], raw)  # the 28×28 image, untouched, in the middle
    assert not x[:, :2].any() and not x[:, 30:].any() and not x[:, :, :2].any() and not x[:, :, 30:].any()
    np.testing.assert_array_equal(d.test.y.numpy(), labels)
    assert len(d.train) == len(read_idx(mnist_dir / "train-labels-idx1-ubyte.gz"))

    datasets_server.stop()
    n = len(datasets_server.requests)
    again = load_dataset("mnist", tmp_path)  # from the cache, no network
    assert torch.equal(again.test.x, d.test.x) and torch.equal(again.train.y, d.train.y)
    assert len(datasets_server.requests) == n


def test_svhn_limits_and_zero_label(datasets_server, tmp_path, monkeypatch):
    monkeypatch.setattr(builtin, "SVHN_TRAIN_SIZE", 10)
    monkeypatch.setattr(builtin, "SVHN_TEST_SIZE", 5)
    d = load_dataset("svhn", tmp_path)
    assert (len(d.train), len(d.test)) == (10, 5)
    x, y = read_svhn_mat(datasets_server.root / "svhn" / "train_32x32.mat")
    np.testing.assert_array_equal(d.train.x.numpy(), x[:10].transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(d.train.y.numpy(), y[:10])
    assert d.train.y[0] == 0  # the .mat's label 10


def test_cifar10_shapes(datasets_server, tmp_path):
    d = load_dataset("cifar10", tmp_path)
    assert tuple(d.train.x.shape) == (20, 3, 32, 32) and tuple(d.test.x.shape) == (6, 3, 32, 32)
    assert d.train.x.is_contiguous()


def test_published_checksum_is_enforced(server, tmp_path, mnist_dir, monkeypatch):
    """With the canonical MD5s, files that are not byte-identical to the published ones are refused."""
    shutil.copytree(mnist_dir, server.root / "mnist")
    (server.root / "mnist" / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not mnist")
    monkeypatch.setitem(builtin.MIRRORS, "mnist", (server.url + "mnist/",))
    with pytest.raises(ChecksumError, match="train-images-idx3-ubyte.gz.*f68b3c2dcbeaaa9fbdd348bbdeb94873"):
        load_dataset("mnist", tmp_path)
    assert not (tmp_path / "mnist" / "train-images-idx3-ubyte.gz").exists()


def test_truncated_idx_is_a_data_error(datasets_server, tmp_path, monkeypatch, makers):
    """A file that passes its checksum but is not valid IDX (here: a checksum pinned to a truncated file)."""
    served = datasets_server.root / "mnist" / "t10k-labels-idx1-ubyte.gz"
    makers.write_idx(served, np.zeros(7, np.uint8))
    raw = served.read_bytes()
    served.write_bytes(raw[:-5])
    monkeypatch.setitem(builtin.FILES["mnist"], served.name, makers.md5(served))
    with pytest.raises(DataError, match=r"Corrupt or truncated IDX file .*t10k-labels-idx1-ubyte.gz"):
        load_dataset("mnist", tmp_path)


def test_registered_default_models_match_the_loaded_datasets():
    from robustal.data import default_model_for, list_datasets, load_dataset
    from robustal.models import list_models

    assert all(default_model_for(name) in list_models() for name in list_datasets())
    assert load_dataset("digits").default_model == default_model_for("digits") == "small-cnn"
    assert default_model_for("mnist") == "lenet5" and default_model_for("not-a-dataset") is None
