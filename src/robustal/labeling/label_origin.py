"""Which labeling project an answer belongs to: answers from another project or pool are refused.

Two projects can ask for the same ids (npz pools number their images ``0..N-1``; image folders often share file
names), so an id alone does not say which image a person labeled. Every request robustal writes carries the
project's token (:data:`PROJECT_FIELD`: the request CSV's third column, and ``data.robustal_project`` of every Label
Studio task), and the answers are checked against it before anything is imported:

* an answer whose token is another project's is refused, naming both projects and their pools;
* a Label Studio task whose ``robustal_request`` names a request this project never wrote, or another request than
  the one that asked for its id, is refused;
* the image a task names (``data.image``) must be the image of that id in this project: for an image-folder pool,
  the pool's own file; for an npz pool, a PNG in this project's ``requests/`` or else one with the same pixels.

Answers written before tokens existed (robustal 0.3) carry none: they are checked by their image and request where
the export holds them; a request CSV without the token column is taken as this project's (its ids must still be the
ones asked for).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple
from urllib.parse import unquote

import torch

#: The request CSV column and Label Studio data field that hold the project's token.
PROJECT_FIELD = "robustal_project"
#: The Label Studio task data field that names the request (see robustal.labeling.label_files).
REQUEST_FIELD = "robustal_request"
#: Label Studio's URL prefix for a local file (see robustal.labeling.label_files).
LOCAL_FILES_URL = "/data/local-files/?d="
#: Entries listed by name in a problem before "…".
SHOWN = 5


class Tags(NamedTuple):
    """What an answer says about where it came from (None: not in the file)."""

    project: str | None = None
    request: str | None = None
    image: str | None = None


def new_token(folder: Path, pool_fingerprint: str) -> str:
    """A project's token: ``FOLDER:POOL:RANDOM`` -- its folder's name (for messages), the start of its pool's
    fingerprint (so that a message can say "another pool") and a random part (two projects on one pool differ)."""
    name = Path(folder).resolve().name.replace(":", "_") or "project"
    return f"{name}:{pool_fingerprint[:10]}:{uuid.uuid4().hex[:10]}"


def _token_parts(token: str) -> tuple[str, str]:
    """``(folder name, pool fingerprint start)`` of a token (empty strings for one robustal did not write)."""
    parts = token.rsplit(":", 2)
    return (parts[0], parts[1]) if len(parts) == 3 else ("", "")


@dataclass(frozen=True)
class Origin:
    """This project, as answers are checked against it.

    Attributes:
        token: The project's token (None: a project made before tokens, whose token is not written yet).
        folder: The project folder; its ``requests/`` holds every request the project wrote.
        pool: The pool's path, and its fingerprint.
        ids: Every pool id, in pool order.
        x: The pool's images, uint8 ``(N, C, H, W)``.
        image_paths: Each pool image's file (image-folder pools), else None.
    """

    token: str | None
    folder: Path
    pool: str
    fingerprint: str
    ids: list[str]
    x: torch.Tensor
    image_paths: list[Path] | None = None

    @property
    def requests(self) -> Path:
        return self.folder / "requests"

    def describe(self) -> str:
        return (f"this project's {self.token!r} (folder {self.folder}, pool {self.pool}, fingerprint "
                f"{self.fingerprint[:10]}…)")


def _foreign(token: str, entries: list[str], origin: Origin) -> str:
    folder, fingerprint = _token_parts(token)
    if fingerprint and origin.fingerprint.startswith(fingerprint):
        pool = "made on the same pool"
    elif fingerprint:
        pool = f"made on another pool, fingerprint {fingerprint}…"
    else:
        pool = "a token robustal did not write"
    made = f"a project in a folder named {folder!r}, {pool}" if folder else pool
    shown = ", ".join(entries[:SHOWN]) + (f" and {len(entries) - SHOWN} more" if len(entries) > SHOWN else "")
    return (f"{len(entries)} answer(s) ({shown}) belong to another labeling project: {PROJECT_FIELD} {token!r} "
            f"({made}), not {origin.describe()}")


def _local_path(url: str) -> Path | None:
    return Path("/" + unquote(url[len(LOCAL_FILES_URL):])) if url.startswith(LOCAL_FILES_URL) else None


def _same_pixels(path: Path, image: torch.Tensor) -> bool | None:
    """Whether the PNG at ``path`` holds ``image`` (None: it cannot be read, so it cannot be checked)."""
    import numpy as np
    from PIL import Image

    try:
        with Image.open(path) as im:
            a = np.asarray(im.convert("L" if image.shape[0] == 1 else "RGB"))
    except (OSError, ValueError):
        return None
    a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
    return tuple(a.shape) == tuple(image.shape) and bool((torch.from_numpy(a.copy()) == image).all())


def _image_problem(sample_id: str, image: str, origin: Origin, index: dict[str, int]) -> str | None:
    """Why the image a task names is not ``sample_id``'s image in this project (None: it is, or it cannot tell)."""
    path = _local_path(image)
    i = index.get(sample_id)
    if path is None or i is None:  # not a local file robustal wrote (uploaded to Label Studio), or an unknown id
        return None
    if origin.image_paths is not None:
        expected = origin.image_paths[i].resolve()
        if path != expected:
            return f"names the image {path}, but id {sample_id!r} of this project is {expected}"
        return None
    if path.is_relative_to(origin.requests.resolve()):
        return None
    if path.is_file() and _same_pixels(path, origin.x[i]) is False:
        return (f"names the image {path}, which is not image {sample_id} of this project's pool {origin.pool} "
                "(its pixels differ)")
    return None


def check_origin(entries: Iterable, origin: Origin | None, problems: list[str], *, asked: Iterable[str] = (),
                 request: str | None = None) -> tuple[list, bool]:
    """Keep the answers that belong to this project; list the others in ``problems``.

    ``entries`` have ``where``, ``sample_id`` and ``tags`` (:class:`Tags`). ``asked``: the ids the awaited
    ``request`` asked for (their tasks must name that request). Returns the kept entries, and whether any answer
    came from another project or names another image (then the asked ids it lacks are not worth listing).
    """
    entries = list(entries)
    if origin is None:
        return entries, False
    asked = set(asked)
    index = {i: k for k, i in enumerate(origin.ids)}
    foreign: dict[str, list[str]] = {}
    kept, other = [], False
    for e in entries:
        tags: Tags = e.tags
        sample_id = e.sample_id.strip()
        if tags.project and tags.project.strip() and origin.token and tags.project.strip() != origin.token:
            foreign.setdefault(tags.project.strip(), []).append(e.where)
            continue
        problem = None
        if tags.request and not (origin.requests / f"{tags.request.strip()}.csv").is_file():
            problem = (f"answers the request {tags.request.strip()!r}, which this project never wrote (no "
                       f"{origin.requests / (tags.request.strip() + '.csv')})")
        elif tags.request and request and sample_id in asked and tags.request.strip() != request:
            problem = f"answers the request {tags.request.strip()!r}, but this project asked for it in {request!r}"
        elif tags.image:
            problem = _image_problem(sample_id, tags.image.strip(), origin, index)
        if problem:
            other = True
            problems.append(f"{e.where} (id {sample_id!r}): {problem}")
            continue
        kept.append(e)
    for token, where in foreign.items():
        problems.append(_foreign(token, where, origin))
    if foreign and origin.token:
        problems.append(f"give this project the answers to its own requests (its request CSVs are in "
                        f"{origin.requests}); from Label Studio, export only the tasks whose {PROJECT_FIELD} is "
                        f"{origin.token!r} (filter on it), or keep one Label Studio project per robustal project")
    return kept, other or bool(foreign)


class Screen:
    """Drops the answers that belong to another project (:func:`check_origin`) before the answers of one id are
    merged, and remembers whether it dropped any; ``notes`` collects what the reader reports without refusing."""

    def __init__(self, origin: Origin | None, problems: list[str], asked: list[str], request: str | None):
        self.origin, self.problems, self.asked, self.request = origin, problems, asked, request
        self.foreign = False
        self.notes: list[str] = []

    def __call__(self, entries: list) -> list:
        kept, foreign = check_origin(entries, self.origin, self.problems, asked=self.asked, request=self.request)
        self.foreign |= foreign
        return kept


__all__ = ["PROJECT_FIELD", "REQUEST_FIELD", "Origin", "Screen", "Tags", "check_origin", "new_token"]
