"""The in-memory dataset: uint8 image tensors plus the attack settings that go with the data.

Images stay uint8 ``(N, C, H, W)`` on the host (CIFAR-10's training set is 150 MB) and are converted to float in
[0, 1] one batch at a time, on the device, by :func:`to_float`.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass

import torch

from robustal.errors import DataError

#: The paper's validation set: the first 5 000 test samples (when the test set has at least 10 000).
PAPER_VALIDATION_SIZE = 5000


@dataclass(frozen=True)
class Split:
    """Images ``x`` (uint8, ``(N, C, H, W)``) and integer labels ``y`` (int64, ``(N,)``)."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, index: torch.Tensor) -> Split:
        return Split(self.x[index], self.y[index])


@dataclass(frozen=True)
class Splits:
    """The paper's three splits: the training set is the unlabeled pool; the test set yields validation and test."""

    pool: Split
    val: Split
    test: Split


@dataclass
class Dataset:
    """A labeled image dataset held in memory.

    Attributes:
        name: Registered name or the path it was loaded from.
        train, test: The dataset's own training and test sets.
        num_classes: Number of classes; labels are ``0 .. num_classes - 1``.
        epsilon, step_size: The L-inf budget and PGD-50 step of the paper's evaluation for this data.
        augment: Batched augmentations used while training (``"crop"``, ``"flip"``).
        default_model: The architecture the paper pairs with this data.
        class_names: The name of each class (image folders: the sub-folder names), or None where classes are only
            indices; a checkpoint records them, so that a folder's classes are mapped by name, never by position.
    """

    name: str
    train: Split
    test: Split
    num_classes: int
    epsilon: float = 8 / 255
    step_size: float = 2 / 255
    augment: tuple[str, ...] = ()
    default_model: str = "small-cnn"
    class_names: tuple[str, ...] | None = None
    _fingerprint: str | None = dataclasses.field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for part in ("train", "test"):
            s = getattr(self, part)
            if s.x.dtype != torch.uint8 or s.x.ndim != 4:
                raise DataError(f"{self.name}: {part} images must be a uint8 tensor (N, C, H, W); "
                                f"got {s.x.dtype} of shape {tuple(s.x.shape)}.")
            if s.y.ndim != 1 or len(s.y) != len(s.x):
                raise DataError(f"{self.name}: {part} has {len(s.x)} images but labels of shape {tuple(s.y.shape)}.")
        if self.train.x.shape[1:] != self.test.x.shape[1:]:
            raise DataError(f"{self.name}: train images are {tuple(self.train.x.shape[1:])} but test images are "
                            f"{tuple(self.test.x.shape[1:])}; both splits need the same image shape.")
        if len(self.train) == 0:
            raise DataError(f"{self.name}: the training set is empty; it is the pool that labels are drawn from.")
        if len(self.test) < 2:
            raise DataError(f"{self.name}: the test set has {len(self.test)} sample(s); it needs at least 2, split "
                            "into validation (to pick the best epoch) and test (to report accuracy).")
        if self.num_classes < 2:
            raise DataError(f"{self.name}: every label is the same class; a classifier needs at least 2 classes.")
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise DataError(f"{self.name}: {len(self.class_names)} class names for {self.num_classes} classes.")
        for part in ("train", "test"):
            y = getattr(self, part).y
            if len(y) and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
                raise DataError(f"{self.name}: {part} labels must lie in 0..{self.num_classes - 1}; found "
                                f"{int(y.min())}..{int(y.max())}.")

    def fingerprint(self) -> str:
        """A hash of the images and labels of both splits (blake2b; CIFAR-10 takes about a second): a stored run is
        resumed, and a finished one reused, only on the very data it was made with."""
        if self._fingerprint is None:
            h = hashlib.blake2b(digest_size=16)
            for tensor in (self.train.x, self.train.y, self.test.x, self.test.y):
                h.update(repr((tuple(tensor.shape), str(tensor.dtype))).encode())
                h.update(tensor.contiguous().numpy())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def with_epsilon(self, epsilon: float | None) -> Dataset:
        """This dataset under another L∞ budget (None: unchanged); the PGD-50 step scales with it (MNIST: ε/30)."""
        if epsilon is None or epsilon == self.epsilon:
            return self
        step = self.step_size * epsilon / self.epsilon if self.epsilon else self.step_size
        return dataclasses.replace(self, epsilon=float(epsilon), step_size=step)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.x.shape[1:])  # type: ignore[return-value]

    def splits(self) -> Splits:
        """Pool = training set; validation = the first ``validation_size(len(test))`` test samples; test = the rest."""
        k = validation_size(len(self.test))
        idx = torch.arange(len(self.test))
        return Splits(pool=self.train, val=self.test.subset(idx[:k]), test=self.test.subset(idx[k:]))


def validation_size(n_test: int) -> int:
    """The paper's 5 000 when the test set has at least 10 000 samples, otherwise the first half (rounded down)."""
    return PAPER_VALIDATION_SIZE if n_test >= 2 * PAPER_VALIDATION_SIZE else n_test // 2


def to_float(x: torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """uint8 images → float32 in [0, 1] on ``device`` (float input is moved, not rescaled)."""
    x = x.to(device, non_blocking=True)
    return x.float().div_(255) if x.dtype == torch.uint8 else x.float()
