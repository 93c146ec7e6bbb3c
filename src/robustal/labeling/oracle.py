"""Where labels come from: the dataset's own labels, a person answering request files, or a Python callable.

The loop asks its oracle for the labels of the samples it picked at a stage. An oracle either answers at once (the
dataset's labels, a callable) or answers "not yet" (``None``): a person has been asked and has not replied. The loop
then stores the pending selection and stops; run again, it asks again for the very same samples, and continues once
the answers are there. Labels, once given, are kept in the results store, so no sample is ever asked for twice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from robustal.errors import ConfigError


class Oracle:
    """Base class: :meth:`labels` gives the labels of pool samples, or None while they are awaited."""

    #: Stored with the run's configuration: a run resumes only under the same kind of oracle.
    kind = "oracle"

    def labels(self, stage: int, indices: torch.Tensor) -> torch.Tensor | None:
        """int64 labels of ``pool[indices]`` picked at ``stage``, or None when they are not available yet."""
        raise NotImplementedError(f"{type(self).__name__} must implement labels(stage, indices)")

    def awaited(self, stage: int, n: int) -> str:
        """Where the person answers, for the "waiting for N labels" message."""
        return "the oracle"


class DatasetOracle(Oracle):
    """The dataset's labels (the paper's setting: every label is known and revealed when picked)."""

    kind = "dataset"

    def __init__(self, labels: torch.Tensor):
        self.y = labels

    def labels(self, stage: int, indices: torch.Tensor) -> torch.Tensor:
        return self.y[indices]


class CallableOracle(Oracle):
    """A user's function ``fn(indices, images) -> labels`` (images uint8 ``(n, C, H, W)``); returning None means
    "not yet" (the loop stops and asks again when run again)."""

    kind = "callable"

    def __init__(self, fn: Callable[[torch.Tensor, torch.Tensor], Sequence[int] | torch.Tensor | None],
                 images: torch.Tensor, num_classes: int | None = None):
        self.fn, self.images, self.num_classes = fn, images, num_classes

    def labels(self, stage: int, indices: torch.Tensor) -> torch.Tensor | None:
        out = self.fn(indices, self.images[indices])
        if out is None:
            return None
        y = torch.as_tensor(out, dtype=torch.int64).reshape(-1)
        high = self.num_classes if self.num_classes is not None else None
        if len(y) != len(indices) or (len(y) and (int(y.min()) < 0 or (high is not None and int(y.max()) >= high))):
            valid = f"0..{high - 1}" if high is not None else "class indices >= 0"
            raise ConfigError(f"The labelling function returned {len(y)} labels for {len(indices)} samples; it must "
                              f"return one label per sample, each in {valid}.")
        return y


@dataclass
class FileOracle(Oracle):
    """A person labels request files: each stage's picks are written to ``folder/stage-NNN.csv`` (plus a contact
    sheet and a Label Studio task file, :func:`robustal.labeling.label_files.write_request`) and read back once filled
    in -- or from ``answers``, a filled CSV or a Label Studio export given for the awaited request.

    Attributes:
        folder: Where requests are written.
        ids: The stable id of every pool sample (an image's relative path, or the pool index).
        images: The pool images, uint8 ``(N, C, H, W)``.
        classes: Class names; labels are their indices.
        image_paths: Each pool sample's image file (image-folder pools), referenced by the Label Studio tasks.
        answers: A file holding the answers to the request awaited when the command started (default: the filled
            request CSV); a request written by this very run is never answered from it.
        known: Labels imported earlier (a Label Studio project kept across rounds exports them again: they must
            agree).
        predict: Class probabilities ``(n, C)`` of ``pool[indices]`` by the model that picked them, written into
            the requests of stages after the first as Label Studio predictions (None: no predictions).
        origin: The labeling project (:class:`robustal.labeling.label_origin.Origin`): its token is written into every
            request, and answers from another project are refused (None: neither).
    """

    folder: Path
    ids: list[str]
    images: torch.Tensor
    classes: list[str]
    image_paths: list[Path] | None = None
    answers: Path | None = None
    known: dict[str, tuple[int, str]] = field(default_factory=dict)
    predict: Callable[[torch.Tensor], torch.Tensor] | None = None
    origin: object | None = None
    kind = "files"

    def request_csv(self, name: str) -> Path:
        return Path(self.folder) / f"{name}.csv"

    def labels(self, stage: int, indices: torch.Tensor) -> torch.Tensor | None:
        return self.ask(f"stage-{stage:03d}", indices, predict=stage > 0)

    def ask(self, name: str, indices: torch.Tensor, predict: bool = False) -> torch.Tensor | None:
        """The labels of request ``name``: None (writing the request first if needed) until they are answered;
        ``predict``: the request carries the model's predictions (the model has been trained)."""
        from robustal.labeling.label_files import write_request

        if not self.request_csv(name).is_file():  # a new request: nobody can have answered it yet
            paths = [self.image_paths[i] for i in indices.tolist()] if self.image_paths is not None else None
            probs = self.predict(indices) if predict and self.predict is not None else None
            write_request(Path(self.folder), name, [self.ids[i] for i in indices.tolist()], self.images[indices],
                          self.classes, image_paths=paths, predictions=probs,
                          project=getattr(self.origin, "token", None))
            return None
        return self.read(name, indices)

    def read(self, name: str, indices: torch.Tensor) -> torch.Tensor | None:
        """The answers to request ``name``, never writing anything: None while its CSV is not filled in (or not
        written) and no ``answers`` file is given; refused (DataError) when they are wrong."""
        from robustal.labeling.label_answers import filled_in, read_answers, record_answers_source
        from robustal.labeling.label_formats import answers_kind

        ids = [self.ids[i] for i in indices.tolist()]
        csv = self.request_csv(name)
        if not csv.is_file():
            return None
        source = self.answers if self.answers is not None else csv
        if source == csv and not filled_in(csv):
            return None
        answers = read_answers(source, ids, self.classes, known=self.known, request=name, origin=self.origin)
        if source != csv:  # which kind of file answered it: for the exported labels (robustal labels)
            record_answers_source(self.folder, name, answers_kind(source))
        return torch.tensor([answers[i] for i in ids], dtype=torch.int64)

    def awaited(self, stage: int, n: int) -> str:
        name = f"stage-{stage:03d}"
        return (f"{self.request_csv(name)} (fill in its label column; or import {name}-label-studio.json into your "
                "Label Studio project and give its export with --answers)")


__all__ = ["CallableOracle", "DatasetOracle", "FileOracle", "Oracle"]
