"""Image folders read into uint8 tensors, built from real digits saved as PNG and JPEG through Pillow."""

from __future__ import annotations

import itertools
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from robustal.data import Dataset
from robustal.data.folders import FolderInfo, folder_dataset, read_image_folder
from robustal.errors import ConfigError, DataError

NAMES = {0: "zero", 1: "one", 2: "two"}  # sorted: one, two, zero


def save(path: Path, image: np.ndarray | Image.Image, fmt: str | None = None, **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(path, format=fmt, **options)
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
    ({"notes.txt": 0, "cat/readme.md": 0},
     r"no images \(\.png, \.jpg, \.jpeg, \.bmp, \.gif, \.webp\) found \(only files of other types: cat/readme\.md, "
     r"notes\.txt\)"),
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


def test_folder_dataset_takes_the_training_classes_and_the_test_set_may_lack_one(tmp_path, digit_images):
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


# --- images read as a person sees them (issue 19.3) ----------------------------------------------------------------
def test_16_bit_grey_png_is_scaled_to_8_bits_not_clipped(tmp_path, digit_images):
    """A 16-bit PNG of a digit (what exporting MNIST at 16 bits gives) reads as the 8-bit digit, not binarised."""
    images, _ = digit_images
    digit = images[0]
    save(tmp_path / "p" / "a.png", digit.astype(np.uint16) * 257)  # 0-255 → 0-65535 exactly
    ramp = np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000  # 0 .. 63 000, not multiples of 257
    save(tmp_path / "p" / "b.png", ramp)
    assert Image.open(tmp_path / "p" / "a.png").mode == "I;16"
    clipped = np.asarray(Image.open(tmp_path / "p" / "a.png").convert("L"))
    assert set(np.unique(clipped)) <= {0, 255}  # what Pillow's own conversion gives: the bug this guards against
    f = read_image_folder(tmp_path / "p", image_size=8, channels=1)
    np.testing.assert_array_equal(f.x[0, 0].numpy(), digit)
    np.testing.assert_array_equal(f.x[1, 0].numpy(), np.round(ramp / 257).astype(np.uint8))
    rgb = read_image_folder(tmp_path / "p", image_size=8, channels=3)
    np.testing.assert_array_equal(rgb.x[0].numpy(), np.stack([digit] * 3))


def test_content_in_the_alpha_channel_is_composited_on_white(tmp_path, digit_images, caplog):
    """RGBA and LA images drawn in black on a transparent background (the digit is in the alpha channel) read as a
    viewer shows them: a black digit on white (255 - alpha), not an all-black image."""
    images, _ = digit_images
    digit = images[1]
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 3] = digit
    save(tmp_path / "p" / "rgba.png", rgba)
    save(tmp_path / "p" / "la.png", np.stack([np.zeros_like(digit), digit], axis=-1))
    red = rgba.copy()
    red[..., 0] = 200  # red ink, half transparent where the digit fades
    save(tmp_path / "p" / "red.png", red)
    assert [Image.open(tmp_path / "p" / n).mode for n in ("rgba.png", "la.png")] == ["RGBA", "LA"]
    with caplog.at_level(logging.INFO, logger="robustal.data.folders"):
        grey = read_image_folder(tmp_path / "p", image_size=8, channels=1)
    assert grey.ids == ["la.png", "red.png", "rgba.png"]
    np.testing.assert_array_equal(grey.x[0, 0].numpy(), 255 - digit)
    np.testing.assert_array_equal(grey.x[2, 0].numpy(), 255 - digit)
    assert "3 of 3 images have transparent pixels" in caplog.text and "white background" in caplog.text
    rgb = read_image_folder(tmp_path / "p", image_size=8, channels=3)
    alpha = digit.astype(float) / 255
    np.testing.assert_array_equal(rgb.x[1, 0].numpy(), np.round(200 * alpha + 255 * (1 - alpha)).astype(np.uint8))
    np.testing.assert_array_equal(rgb.x[1, 1].numpy(), 255 - digit)
    opaque = np.concatenate([np.stack([digit] * 3, axis=-1), np.full((8, 8, 1), 255, np.uint8)], axis=-1)
    save(tmp_path / "o" / "opaque.png", opaque)  # an opaque RGBA (a screenshot): its colours as they are
    np.testing.assert_array_equal(read_image_folder(tmp_path / "o", image_size=8, channels=1).x[0, 0].numpy(), digit)


def test_palette_images_read_their_colours_and_transparency(tmp_path, digit_images):
    images, _ = digit_images
    digit = images[2]
    save(tmp_path / "p" / "a.png", Image.fromarray(digit).convert("P"))  # a grey palette: the same digit
    indexed = Image.new("P", (8, 8))
    indexed.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255])  # 0 black (transparent), 1 red, 2 blue
    pixels = np.where(digit > 128, 1, 0).astype(np.uint8)
    pixels[0, :] = 2
    indexed.putdata(pixels.ravel().tolist())
    save(tmp_path / "p" / "b.png", indexed, transparency=0)
    assert [Image.open(tmp_path / "p" / n).mode for n in ("a.png", "b.png")] == ["P", "P"]
    f = read_image_folder(tmp_path / "p", image_size=8, channels=3)
    np.testing.assert_array_equal(f.x[0, 0].numpy(), digit)
    expected = np.full((8, 8, 3), 255, np.uint8)  # transparent index → white
    expected[pixels == 1] = (255, 0, 0)
    expected[pixels == 2] = (0, 0, 255)
    np.testing.assert_array_equal(f.x[1].permute(1, 2, 0).numpy(), expected)


def test_bmp_gif_and_webp_images_are_read(tmp_path, digit_images):
    images, labels = digit_images
    save(tmp_path / "d" / "a" / "x.bmp", images[3])
    save(tmp_path / "d" / "a" / "y.GIF", images[4])
    save(tmp_path / "d" / "b" / "z.webp", images[5], lossless=True)
    f = read_image_folder(tmp_path / "d", image_size=8, channels=1)
    assert f.ids == ["a/x.bmp", "a/y.GIF", "b/z.webp"] and f.y.tolist() == [0, 0, 1]
    for k, i in enumerate((3, 4, 5)):
        np.testing.assert_array_equal(f.x[k, 0].numpy(), images[i])  # all three lossless


def test_files_of_other_types_are_listed_in_a_warning(tmp_path, digit_images, caplog):
    images, _ = digit_images
    save(tmp_path / "d" / "cat" / "a.png", images[0])
    save(tmp_path / "d" / "cat" / "b.tif", images[1])
    (tmp_path / "d" / "dog").mkdir()
    save(tmp_path / "d" / "dog" / "c.png", images[2])
    (tmp_path / "d" / "dog" / "labels.csv").write_text("x\n")
    with caplog.at_level(logging.WARNING, logger="robustal.data.folders"):
        f = read_image_folder(tmp_path / "d", image_size=8, channels=1)
    assert f.ids == ["cat/a.png", "dog/c.png"]
    assert "skipped 2 file(s)" in caplog.text and "cat/b.tif, dog/labels.csv" in caplog.text


def test_folder_dataset_refuses_classes_it_could_not_learn(tmp_path, digit_images):
    images, labels = digit_images
    root = tmp_path / "ds"
    labeled_folder(root / "train", images, labels, per_class=2)
    labeled_folder(root / "test", images, labels, per_class=1)
    assert folder_dataset(root, image_size=8, channels=1, epsilon=0.3)[0].num_classes == 3
    (root / "train" / "three").mkdir()  # an empty class folder in train/
    with pytest.raises(DataError, match=r"train: the class folder\(s\) three/ hold no .*images") as e:
        folder_dataset(root, image_size=8, channels=1, epsilon=0.3)
    assert str(root / "train") in str(e.value)
    (root / "train" / "three" / "notes.txt").write_text("a non-image file does not make a class")
    with pytest.raises(DataError, match=r"three/ hold no"):
        folder_dataset(root, image_size=8, channels=1, epsilon=0.3)
    (root / "train" / "three" / "notes.txt").unlink()
    (root / "train" / "three").rmdir()
    save(root / "test" / "four" / "t.png", images[4])  # a test class absent from train/
    with pytest.raises(DataError, match=r"test: the class folder\(s\) four/ have no counterpart in .*train, so the "
                                        r"model could never learn them.*train/four/"):
        folder_dataset(root, image_size=8, channels=1, epsilon=0.3)
    (root / "test" / "four" / "t.png").unlink()
    (root / "test" / "four").rmdir()
    for part, name in itertools.product(("train", "test"), ("one", "two")):  # a single class
        shutil.rmtree(root / part / name)
    with pytest.raises(DataError, match=r"holds one class \(zero/\)"):
        folder_dataset(root, image_size=8, channels=1, epsilon=0.3)
