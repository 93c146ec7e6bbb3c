"""Image folders read into uint8 tensors, built from real digits saved as PNG and JPEG through Pillow."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from robustal.data import Dataset
from robustal.data.folders import FolderInfo, folder_dataset, read_image_folder
from robustal.errors import ConfigError, DataError

NAMES = {0: "zero", 1: "one", 2: "two"}  # sorted: one, two, zero


def save(path: Path, image: np.ndarray, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, format=fmt)
    return path


def labeled_folder(root: Path, images: np.ndarray, labels: np.ndarray, per_class: int = 4,
                   suffix: str = ".png") -> dict[str, tuple[np.ndarray, int]]:
    """``root/<name>/img_<i>.png`` for the first ``per_class`` digits of 0, 1, 2; returns {id: (image, digit)}."""
    out = {}
    for digit, name in NAMES.items():
        for i in np.flatnonzero(labels == digit)[:per_class]:
            sample_id = f"{name}/img_{i:04d}{suffix}"
            save(root / sample_id, images[i])
            out[sample_id] = (images[i], digit)
    return out


def test_labeled_png_folder_round_trips_pixels_ids_and_labels(tmp_path, digit_images):
    images, labels = digit_images
    truth = labeled_folder(tmp_path / "data", images, labels)
    f = read_image_folder(tmp_path / "data", image_size=8, channels=1)
    assert f.ids == sorted(truth) and f.root == tmp_path / "data"
    assert f.classes == ["one", "two", "zero"]
    assert f.x.dtype == torch.uint8 and f.x.shape == (12, 1, 8, 8)
    assert f.y is not None and f.y.dtype == torch.int64 and f.y.shape == (12,)
    for k, sample_id in enumerate(f.ids):
        image, digit = truth[sample_id]
        assert f.classes[f.y[k]] == NAMES[digit] == sample_id.split("/")[0]
        np.testing.assert_array_equal(f.x[k, 0].numpy(), image)  # PNG is lossless, size unchanged


def test_rgb_resize_and_given_class_order(tmp_path, digit_images):
    images, labels = digit_images
    labeled_folder(tmp_path / "data", images, labels, per_class=2)
    grey = read_image_folder(tmp_path / "data", image_size=16, channels=1)
    rgb = read_image_folder(tmp_path / "data", image_size=16, channels=3, classes=["zero", "one", "two"])
    assert grey.x.shape == (6, 1, 16, 16) and rgb.x.shape == (6, 3, 16, 16)
    assert torch.equal(rgb.x[:, 0], rgb.x[:, 1]) and torch.equal(rgb.x[:, 0], rgb.x[:, 2])
    assert torch.equal(rgb.x[:, :1], grey.x)  # grey → RGB repeats the grey level
    assert rgb.x.float().std() > 50  # resized digits, not blank
    assert rgb.classes == ["zero", "one", "two"]
    assert [rgb.classes[k] for k in rgb.y] == [i.split("/")[0] for i in rgb.ids]


def test_colour_png_round_trip_and_grey_conversion(tmp_path, digit_images):
    images, _ = digit_images
    colour = np.stack([images[0], images[1], 255 - images[2]], axis=-1)  # (8, 8, 3), three different channels
    save(tmp_path / "c" / "a.png", colour)
    rgb = read_image_folder(tmp_path / "c", image_size=8, channels=3)
    np.testing.assert_array_equal(rgb.x[0].permute(1, 2, 0).numpy(), colour)
    grey = read_image_folder(tmp_path / "c", image_size=8, channels=1)
    np.testing.assert_array_equal(grey.x[0, 0].numpy(), np.asarray(Image.fromarray(colour).convert("L")))


def test_jpeg_with_upper_case_suffix_is_read_close_to_the_original(tmp_path, digit_images):
    images, labels = digit_images
    big = np.asarray(Image.fromarray(images[5]).resize((32, 32), Image.Resampling.NEAREST))
    save(tmp_path / "j" / "a" / "x.JPG", big, fmt="JPEG")
    save(tmp_path / "j" / "b" / "y.jpeg", 255 - big, fmt="JPEG")
    f = read_image_folder(tmp_path / "j", image_size=32, channels=1)
    assert f.ids == ["a/x.JPG", "b/y.jpeg"] and f.y.tolist() == [0, 1]
    assert np.abs(f.x[0, 0].numpy().astype(int) - big).mean() < 12  # lossy, but the same picture


def test_flat_folder_has_no_labels_and_ignores_hidden_and_other_files(tmp_path, digit_images, caplog):
    images, _ = digit_images
    for i in (3, 1, 2, 10):
        save(tmp_path / "pool" / f"{i}.png", images[i])
    (tmp_path / "pool" / "notes.txt").write_text("not an image")
    (tmp_path / "pool" / ".DS_Store").write_bytes(b"\0\1garbage")
    save(tmp_path / "pool" / ".thumbs" / "t.png", images[0])  # hidden folder: ignored, not a class
    with caplog.at_level(logging.DEBUG, logger="robustal.data.folders"):
        f = read_image_folder(tmp_path / "pool", image_size=8, channels=1)
    assert f.y is None and f.classes is None
    assert f.ids == ["1.png", "10.png", "2.png", "3.png"]
    np.testing.assert_array_equal(f.x[1, 0].numpy(), images[10])
    assert "notes.txt" in caplog.text and ".DS_Store" not in caplog.text


def test_every_unreadable_image_is_reported_by_name_in_one_error(tmp_path, digit_images):
    images, labels = digit_images
    labeled_folder(tmp_path / "data", images, labels, per_class=2)
    png = (tmp_path / "data" / "one" / "img_0001.png").read_bytes()
    (tmp_path / "data" / "one" / "garbage.png").write_bytes(b"this is not a PNG at all" * 10)
    (tmp_path / "data" / "two" / "truncated.png").write_bytes(png[: len(png) // 2])
    (tmp_path / "data" / "zero" / "empty.jpg").write_bytes(b"")
    with pytest.raises(DataError) as e:
        read_image_folder(tmp_path / "data", image_size=8, channels=1)
    msg = str(e.value)
    assert "3 of 9 image files cannot be read" in msg
    for name in ("one/garbage.png", "two/truncated.png", "zero/empty.jpg"):
        assert name in msg
    assert "The first, one/garbage.png:" in msg and "Remove or replace" in msg
    assert str(tmp_path / "data") in msg


def test_zero_byte_file_reason_and_long_lists_are_cut(tmp_path, digit_images):
    images, _ = digit_images
    save(tmp_path / "p" / "ok.png", images[0])
    for i in range(25):
        (tmp_path / "p" / f"bad{i:02d}.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"25 of 26 .*bad19\.png and 5 more.*empty file \(0 bytes\)"):
        read_image_folder(tmp_path / "p", image_size=8, channels=1)


@pytest.mark.parametrize("layout, expected", [
    ({"a.png": 1, "cat/b.png": 1}, r"both directly \(a\.png\) and in sub-folders \(cat/\)"),
    ({"cat/deep/b.png": 1}, r"nested more than one sub-folder deep in cat/deep/"),
    ({"notes.txt": 0, "cat/readme.md": 0}, r"no images \(\.png, \.jpg, \.jpeg\) found"),
    ({}, r"no images"),
])
def test_layout_errors_say_which_layout_is_expected(tmp_path, digit_images, layout, expected):
    images, _ = digit_images
    root = tmp_path / "d"
    root.mkdir()
    for name, is_image in layout.items():
        if is_image:
            save(root / name, images[0])
        else:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text("x")
    with pytest.raises(DataError, match=expected) as e:
        read_image_folder(root, image_size=8)
    assert "DIR/<class>/*.png" in str(e.value) and str(root) in str(e.value)


def test_missing_folder_and_unknown_class(tmp_path, digit_images):
    images, labels = digit_images
    with pytest.raises(DataError, match="does not exist"):
        read_image_folder(tmp_path / "nope", image_size=8)
    labeled_folder(tmp_path / "data", images, labels, per_class=1)
    with pytest.raises(DataError, match=r"sub-folder\(s\) two/ are not among the classes zero, one"):
        read_image_folder(tmp_path / "data", image_size=8, classes=["zero", "one"])


@pytest.mark.parametrize("kwargs, param", [
    ({"image_size": 3}, "image_size"), ({"image_size": 8.0}, "image_size"), ({"image_size": True}, "image_size"),
    ({"channels": 2}, "channels"), ({"channels": "3"}, "channels"), ({"channels": True}, "channels"),
])
def test_bad_arguments(tmp_path, kwargs, param):
    args = {"image_size": 8, "channels": 1} | kwargs
    with pytest.raises(ConfigError, match=f"The '{param}' parameter of read_image_folder must be"):
        read_image_folder(tmp_path, **args)


def test_folder_dataset_takes_the_union_of_classes(tmp_path, digit_images):
    images, labels = digit_images
    train = labeled_folder(tmp_path / "ds" / "train", images, labels, per_class=3)
    test_ids = [f"zero/t{i}.png" for i in np.flatnonzero(labels == 0)[10:12]] + ["two/t.png"]  # no "one"
    sources = [*np.flatnonzero(labels == 0)[10:12], np.flatnonzero(labels == 2)[20]]
    for sample_id, i in zip(test_ids, sources, strict=True):
        save(tmp_path / "ds" / "test" / sample_id, images[i])
    dataset, info = folder_dataset(tmp_path / "ds", image_size=8, channels=1, epsilon=0.3)
    assert isinstance(dataset, Dataset) and isinstance(info, FolderInfo)
    assert info.classes == ["one", "two", "zero"] and dataset.num_classes == 3
    assert info.train_ids == sorted(train) and info.test_ids == sorted(test_ids)
    assert dataset.test.y.tolist() == [1, 2, 2]
    assert [info.classes[k] for k in dataset.train.y] == [i.split("/")[0] for i in info.train_ids]
    assert dataset.train.x.shape == (9, 1, 8, 8) and dataset.name == str(tmp_path / "ds")
    assert dataset.epsilon == 0.3 and dataset.step_size == pytest.approx(0.01)
    assert dataset.default_model == "small-cnn" and dataset.augment == ()
    rgb, _ = folder_dataset(tmp_path / "ds", image_size=32, channels=3, epsilon=8 / 255)
    assert rgb.step_size == pytest.approx(2 / 255) and rgb.default_model == "resnet18"
    grey, _ = folder_dataset(tmp_path / "ds", image_size=28, channels=1, epsilon=0.3, step_size=0.02)
    assert grey.step_size == 0.02 and grey.default_model == "lenet5"


def test_folder_dataset_layout_errors(tmp_path, digit_images):
    images, labels = digit_images
    labeled_folder(tmp_path / "ds" / "train", images, labels, per_class=1)
    with pytest.raises(DataError, match=r"no test/ sub-folder.*DIR/train/<class>/\*\.png and DIR/test/<class>"):
        folder_dataset(tmp_path / "ds", image_size=8, channels=1, epsilon=0.3)
    with pytest.raises(DataError, match=r"no train/ or test/ sub-folder"):
        folder_dataset(tmp_path / "empty", image_size=8, channels=1, epsilon=0.3)
    save(tmp_path / "ds" / "test" / "x.png", images[0])  # flat test folder: no classes
    with pytest.raises(DataError, match=r"test: holds images directly \(x\.png\) but needs one sub-folder per class"):
        folder_dataset(tmp_path / "ds", image_size=8, channels=1, epsilon=0.3)
    with pytest.raises(ConfigError, match="The 'epsilon' parameter of folder_dataset"):
        folder_dataset(tmp_path / "ds", image_size=8, channels=1, epsilon=-1)


def test_an_image_folder_is_a_dataset_on_the_command_line(tmp_path, digit_images, capsys):
    from robustal.cli import main

    images, labels = digit_images
    for part, rows in (("train", range(0, 300)), ("test", range(300, 400))):
        for i in rows:
            save(tmp_path / "data" / part / str(labels[i]) / f"{i:04d}.png", images[i])
    common = ["train", "--dataset", str(tmp_path / "data"), "--training", "standard", "--epochs", "2",
              "--eval-steps", "2", "--no-progress"]
    assert main([*common, "--image-size", "8", "--channels", "1", "--epsilon", "0.2"]) == 0
    out = capsys.readouterr()
    assert "300 train / 50 val / 50 test" in out.err and "clean accuracy:" in out.out
    assert main([*common, "--image-size", "8"]) == 2
    assert "is an image folder: give --channels, --epsilon" in capsys.readouterr().err
