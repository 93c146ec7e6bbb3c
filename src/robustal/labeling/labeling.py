"""Label your own data: a project in which a person labels what the loop asks for, round by round.

A project folder holds the results store (``results.db``), the project settings (``project.json``) and the
requests (``requests/``). The pool is an image folder (flat, or with class sub-folders whose names are ignored) or an
``.npz`` whose ``x_train`` are the images (``y_train``, if any, is not used). Validation and test need labels: a
labeled image folder or the ``x_test``/``y_test`` of the pool's npz (``heldout``), or else a random sample of the
pool that the person labels first (``heldout_size``), split into validation and test as the paper splits a test set.

Every run of :func:`run_project` goes as far as the labels allow and stops at the first request that is not
answered: nothing is recomputed, nothing asked twice (the loop keeps pending picks and given labels in the store).
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path

import torch

from robustal._runtime import make_generator
from robustal.data.dataset import Split, Splits, validation_size
from robustal.errors import ConfigError, DataError, StoreError
from robustal.labeling.label_answers import read_answers
from robustal.storage.outputs import atomic_write_bytes

#: The project's settings file, beside its results.db.
PROJECT_FILE = "project.json"
#: The run's name in the project's store.
RUN_NAME = "label"
#: Where the held-out labels are kept once the person has given them.
HELDOUT_LABELS = "heldout-labels.csv"
#: Each pool image's id and checksum when the project started: a changed pool is refused naming the images.
POOL_INDEX = "pool-index.json"
#: The key of ``project.json`` that holds the project's token (written into every request; not a setting).
TOKEN_KEY = "project_token"


@dataclass(frozen=True)
class Pool:
    """Images to label: a stable id per image, the images, and their files (image folders only)."""

    ids: list[str]
    x: torch.Tensor
    image_paths: list[Path] | None = None


@dataclass(frozen=True)
class ProjectSettings:
    """What a project's results depend on; a project is continued only under the same settings.

    ``heldout`` is the labeled held-out data (a folder or npz), or None when ``heldout_size`` pool images are
    requested from the person first.
    """

    pool: str
    classes: list[str]
    image_size: int
    channels: int
    epsilon: float
    heldout: str | None = None
    heldout_size: int = 200
    seed: int = 0
    pool_fingerprint: str = ""

    @property
    def step_size(self) -> float:
        """The evaluation PGD step: ε/30 for grey images (MNIST's 0.01 at 0.3), ε/4 for colour (CIFAR's 2/255)."""
        return self.epsilon / 30 if self.channels == 1 else self.epsilon / 4


def pool_fingerprint(pool: Pool) -> str:
    """A hash of the pool's ids and images: a project continues only on the pool it started with."""
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    h.update("\n".join(pool.ids).encode())
    h.update(pool.x.contiguous().numpy())
    return h.hexdigest()


def load_pool(path: str | Path, image_size: int | None, channels: int | None) -> Pool:
    """The pool: an image folder (``image_size`` and ``channels`` required) or an npz's ``x_train``."""
    from robustal.data.folders import read_image_folder
    from robustal.data.registry import images_to_tensor, read_npz

    path = Path(path).expanduser()
    if path.is_dir():
        if image_size is None or channels is None:
            raise ConfigError(f"The pool {str(path)!r} is an image folder: give --image-size (the side images are "
                              "resized to) and --channels (1 grey, 3 colour).")
        folder = read_image_folder(path, image_size, channels)
        return Pool(folder.ids, folder.x, [folder.root / i for i in folder.ids])
    if not path.is_file():
        raise DataError(f"The pool {str(path)!r} does not exist; give an image folder or an .npz with x_train.")
    arrays = read_npz(path, ("x_train",), "The pool is an image folder or an .npz with an x_train array of images.")
    x = images_to_tensor(arrays["x_train"], str(path), "x_train")
    if not len(x):
        raise DataError(f"{path}: x_train holds no images.")
    return Pool([str(i) for i in range(len(x))], x)


def load_heldout(path: str | Path, classes: list[str], pool: Pool) -> Split:
    """Labeled held-out data: an image folder with one sub-folder per class, or an npz's ``x_test``/``y_test``."""
    from robustal.data.folders import read_image_folder
    from robustal.data.registry import images_to_tensor, labels_to_tensor, read_npz

    path = Path(path).expanduser()
    c, h, _ = pool.x.shape[1:]
    if path.is_dir():
        folder = read_image_folder(path, h, c, classes=classes)
        if folder.y is None:
            raise DataError(f"The held-out folder {path} has no class sub-folders; validation and test need labels "
                            f"({path}/<class>/*.png, classes {', '.join(classes)}).")
        return Split(folder.x, folder.y)
    arrays = read_npz(path, ("x_test", "y_test"), "Held-out data are a labeled image folder or an .npz with x_test "
                      "and y_test arrays.")
    x = images_to_tensor(arrays["x_test"], str(path), "x_test")
    y = labels_to_tensor(arrays["y_test"], len(x), str(path), "y_test")
    if tuple(x.shape[1:]) != (c, h, h):
        raise DataError(f"{path}: held-out images are {tuple(x.shape[1:])} but the pool's are {(c, h, h)}.")
    if len(y) and int(y.max()) >= len(classes):
        raise DataError(f"{path}: y_test has labels up to {int(y.max())} but there are {len(classes)} classes "
                        f"({', '.join(classes)}).")
    return Split(x, y)


def read_project_file(path: Path) -> dict:
    """A project's settings as stored in ``project.json``; StoreError when the file is damaged or another
    program's."""
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise StoreError(f"{path} cannot be read ({e}); restore it, or start the project in another --out.") from None
    required = {f.name for f in fields(ProjectSettings) if f.default is MISSING}
    if not isinstance(stored, dict) or not required <= set(stored) or not isinstance(stored.get("classes"), list):
        keys = ", ".join(map(str, stored)) if isinstance(stored, dict) else type(stored).__name__
        raise StoreError(f"{path} is not a robustal labeling project's settings file (it has {keys or 'nothing'}; "
                         f"robustal writes {', '.join(sorted(required))}): it belongs to another program. Give "
                         "robustal a folder of its own.")
    return stored


def image_checksums(x: torch.Tensor) -> list[int]:
    """A checksum per image (batched: a weighted sum of its bytes modulo a prime), to say which image changed."""
    flat = x.reshape(len(x), -1).to(torch.int64)
    weights = (torch.arange(flat.shape[1], dtype=torch.int64) * 2_654_435_761 + 97) % 1_000_003
    return ((flat * weights).sum(1) % 2_147_483_647).tolist()


def _pool_changes(out: Path, settings: ProjectSettings, pool: Pool) -> str | None:
    """What changed in the pool since the project started (added, removed, changed images), from its index."""
    try:
        index = json.loads((out / POOL_INDEX).read_text(encoding="utf-8"))
        before = dict(zip(index["ids"], index["sums"], strict=True))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    now = dict(zip(pool.ids, image_checksums(pool.x), strict=True))
    parts = []
    for what, ids in (("added", [i for i in now if i not in before]), ("removed", [i for i in before if i not in now]),
                      ("changed", [i for i in now if i in before and now[i] != before[i]])):
        if ids:
            shown = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
            parts.append(f"{len(ids)} image(s) {what} ({shown})")
    if not parts:
        return None
    return (f"{out}: its pool {settings.pool} changed since the project started: {'; '.join(parts)}. The project's "
            "requests, labels and held-out sample name the pool's images, so it continues only on the pool it "
            "started with: put the pool back as it was (move added images elsewhere, restore the others), or start "
            "a new project in another --out.")


def check_settings(out: Path, settings: ProjectSettings, pool: Pool | None = None) -> None:
    """Refuse to continue a project in ``out`` made under other settings or on another pool (nothing is written: a
    new project's settings are recorded by :meth:`Project.record`, once every check has passed)."""
    from robustal.storage.schema import config_diff

    path = out / PROJECT_FILE
    if not path.is_file():
        return
    stored = {k: v for k, v in read_project_file(path).items() if k != TOKEN_KEY}
    diff = config_diff(stored, json.loads(json.dumps(asdict(settings))))
    if pool is not None and stored.get("pool_fingerprint") not in (None, "", settings.pool_fingerprint):
        changes = _pool_changes(out, settings, pool)
        if changes and len(diff) == 1:
            raise StoreError(changes)
    if diff:
        raise StoreError(f"{out} is a labeling project with other settings ({'; '.join(diff)}). Continue it with "
                         "the settings it was started with, or start a new project in another --out.")


@dataclass
class Project:
    """An open labeling project: its folder, settings, pool and the requests' oracle."""

    out: Path
    settings: ProjectSettings
    pool: Pool

    @property
    def requests(self) -> Path:
        return self.out / "requests"

    @property
    def is_new(self) -> bool:
        """Nothing recorded yet: no settings file."""
        return not (self.out / PROJECT_FILE).is_file()

    def record(self) -> None:
        """Write ``project.json`` for a new project (with the project's token, :mod:`robustal.labeling.label_origin`),
        or add the token to a project made before tokens; called once every check has passed, so that a refused first
        call leaves nothing behind that a corrected call would be refused for."""
        from robustal.labeling.label_origin import new_token

        stored = asdict(self.settings) if self.is_new else read_project_file(self.out / PROJECT_FILE)
        if not (self.out / POOL_INDEX).is_file():  # the pool as it is now: checked to be the project's own
            index = {"ids": self.pool.ids, "sums": image_checksums(self.pool.x)}
            atomic_write_bytes(self.out / POOL_INDEX, json.dumps(index).encode())
        if not stored.get(TOKEN_KEY):
            stored[TOKEN_KEY] = new_token(self.out, self.settings.pool_fingerprint)
            atomic_write_bytes(self.out / PROJECT_FILE, (json.dumps(stored, indent=1) + "\n").encode())

    def origin(self):
        """The project as answers are checked against it (:class:`robustal.labeling.label_origin.Origin`)."""
        from robustal.labeling.label_origin import Origin

        path = self.out / PROJECT_FILE
        token = read_project_file(path).get(TOKEN_KEY) if path.is_file() else None
        s, pool = self.settings, self.pool
        return Origin(token if isinstance(token, str) and token else None, self.out, s.pool, s.pool_fingerprint,
                      pool.ids, pool.x, pool.image_paths)

    def heldout_indices(self) -> torch.Tensor:
        """The pool images asked for as validation and test (a seeded random sample), when none are given."""
        gen = make_generator(self.settings.seed, "heldout")
        return torch.randperm(len(self.pool.ids), generator=gen)[:self.settings.heldout_size].sort().values

    def oracle(self, ids: list[str], x: torch.Tensor, paths: list[Path] | None, answers: Path | None,
               known: dict[str, tuple[int, str]] | None = None):
        from robustal.labeling.oracle import FileOracle

        return FileOracle(self.requests, ids, x, self.settings.classes, paths, answers, known or {},
                          origin=self.origin())


def open_project(out: str | Path, settings: ProjectSettings, pool: Pool) -> Project:
    """A project in ``out``: a new one, or one made under the same settings (checked; nothing is written)."""
    out = Path(out)
    if len(settings.classes) < 2 or len(set(settings.classes)) != len(settings.classes):
        raise ConfigError(f"--classes must name at least 2 distinct classes; got {', '.join(settings.classes)}.")
    if settings.heldout is None and not 4 <= settings.heldout_size <= len(pool.ids) // 2:
        raise ConfigError(f"--heldout-size {settings.heldout_size}: the held-out sample must have at least 4 images "
                          f"and leave at least half of the {len(pool.ids)} pool images to choose from.")
    check_settings(out, settings, pool)
    return Project(out, settings, pool)


@dataclass(frozen=True)
class ProjectState:
    """Where a project stands after :func:`project_splits`: its splits and oracle, or the held-out request."""

    splits: Splits | None
    oracle: object | None
    ids: list[str]
    heldout_request: Path | None = None
    heldout_n: int = 0


def heldout_split(project: Project) -> Split | None:
    """The labeled held-out data given with the project (None: a sample of the pool is asked for), checked."""
    s = project.settings
    if s.heldout is None:
        return None
    heldout = load_heldout(s.heldout, s.classes, project.pool)
    k = validation_size(len(heldout))
    if k == 0 or len(heldout) - k == 0:
        raise DataError(f"The held-out data {s.heldout} have {len(heldout)} labeled images: too few to split into "
                        "validation and test.")
    return heldout


def project_splits(project: Project, answers: Path | None = None, heldout: Split | None = None) -> ProjectState:
    """The pool to select from (minus a requested held-out sample), validation and test, and the file oracle; or,
    while the person has not labeled the held-out sample, the request to answer first.

    ``heldout``: the project's labeled held-out data when it has some (:func:`heldout_split`).
    """
    s, pool = project.settings, project.pool
    if s.heldout is not None:
        heldout = heldout if heldout is not None else heldout_split(project)
        keep = torch.arange(len(pool.ids))
    else:
        idx = project.heldout_indices()
        fresh = not (project.out / HELDOUT_LABELS).is_file()
        labels = _heldout_labels(project, idx, answers)
        if labels is None:
            csv = project.oracle([], pool.x, None, None).request_csv("heldout")
            return ProjectState(None, None, pool.ids, heldout_request=csv, heldout_n=len(idx))
        heldout = Split(pool.x[idx], labels)
        mask = torch.ones(len(pool.ids), dtype=torch.bool)
        mask[idx] = False
        keep = mask.nonzero().squeeze(1)
        if fresh:
            answers = None  # the answers given were the held-out's
    ids = [pool.ids[i] for i in keep.tolist()]
    paths = [pool.image_paths[i] for i in keep.tolist()] if pool.image_paths is not None else None
    x = pool.x[keep]
    k = validation_size(len(heldout))
    order = torch.arange(len(heldout))
    splits = Splits(pool=Split(x, torch.full((len(x),), -1, dtype=torch.int64)), val=heldout.subset(order[:k]),
                    test=heldout.subset(order[k:]))
    return ProjectState(splits, project.oracle(ids, x, paths, answers, imported_labels(project, ids)), ids)


def imported_labels(project: Project, ids: list[str]) -> dict[str, tuple[int, str]]:
    """Every label imported so far, ``{id: (class index, request name)}``: the held-out sample's and each stage's
    (``ids``: the loop's pool, whose indices the store keeps)."""
    from robustal.storage.store import Store

    known: dict[str, tuple[int, str]] = {}
    kept = project.out / HELDOUT_LABELS
    if project.settings.heldout is None and kept.is_file():
        heldout_ids = [project.pool.ids[i] for i in project.heldout_indices().tolist()]
        known.update((i, (k, "heldout")) for i, k in read_answers(kept, heldout_ids, project.settings.classes).items())
    if (project.out / "results.db").is_file():
        store = Store(project.out, create=False)
        stage_of = {i: stage for stage, picks in store.selections(RUN_NAME).items() for i in picks}
        for stage in store.pending_stages(RUN_NAME):
            picks = store.pending(RUN_NAME, stage)
            stage_of.update((i, stage) for i in (picks[0].tolist() if picks is not None else []))
        known.update((ids[i], (y, f"stage-{stage_of.get(i, 0):03d}")) for i, y in store.labels(RUN_NAME).items()
                     if 0 <= i < len(ids))
    return known


def check_answers(project: Project, state: ProjectState) -> str | None:
    """Before the loop writes anything: refuse request CSVs edited after their labels were imported, and read the
    answers to the awaited stage (refused, with every problem listed, when wrong). Returns a note when ``--answers``
    has nothing to answer (every answer in it was imported already)."""
    from robustal.labeling.label_answers import check_imported, filled_in
    from robustal.storage.store import Store

    oracle = state.oracle
    by_request: dict[str, dict[str, tuple[int, str]]] = {}
    for sample_id, (label, request) in oracle.known.items():
        by_request.setdefault(request, {})[sample_id] = (label, request)
    for request, known in sorted(by_request.items()):
        csv = oracle.request_csv(request)
        if csv.is_file() and filled_in(csv):
            check_imported(csv, project.settings.classes, known, oracle.origin)
    awaited = False
    if (project.out / "results.db").is_file():
        store = Store(project.out, create=False)
        labeled = store.labels(RUN_NAME)
        for stage in store.pending_stages(RUN_NAME):
            picks = store.pending(RUN_NAME, stage)
            missing = [i for i in (picks[0].tolist() if picks is not None else []) if i not in labeled]
            if missing:
                awaited = True
                oracle.read(f"stage-{stage:03d}", torch.tensor(missing, dtype=torch.int64))
    if oracle.answers is not None and not awaited:
        read_answers(oracle.answers, [], project.settings.classes, known=oracle.known, origin=oracle.origin)
        return (f"--answers {oracle.answers}: no request is awaited that it could answer; its answers agree with the "
                "labels imported.")
    return None


def _heldout_labels(project: Project, idx: torch.Tensor, answers: Path | None) -> torch.Tensor | None:
    """The held-out sample's labels: kept from an earlier answer, or read from the person's answer, or None."""
    pool, classes = project.pool, project.settings.classes
    ids = [pool.ids[i] for i in idx.tolist()]
    kept = project.out / HELDOUT_LABELS
    if kept.is_file():
        given = read_answers(kept, ids, classes)
    else:
        oracle = project.oracle(pool.ids, pool.x, pool.image_paths, answers)
        labels = oracle.ask("heldout", idx)
        if labels is None:
            return None
        given = dict(zip(ids, labels.tolist(), strict=True))
        rows = "id,label\n" + "".join(f"{_csv_cell(i)},{classes[given[i]]}\n" for i in ids)
        atomic_write_bytes(kept, rows.encode())
    return torch.tensor([given[i] for i in ids], dtype=torch.int64)


def _csv_cell(text: str) -> str:
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n') else text


def read_project(out: Path, why: str) -> tuple[ProjectSettings, Pool]:
    """A project's settings and pool, read without changing anything; DataError when ``out`` is no project, its
    settings cannot be read, or its pool changed since it started (``why``: what that prevents)."""
    path = out / PROJECT_FILE
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
        settings = ProjectSettings(**{f.name: stored[f.name] for f in fields(ProjectSettings) if f.name in stored})
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError) as e:
        raise DataError(f"{path} cannot be read as a labeling project's settings ({type(e).__name__}: {e}).") from None
    pool = load_pool(settings.pool, settings.image_size, settings.channels)
    if settings.pool_fingerprint and pool_fingerprint(pool) != settings.pool_fingerprint:
        raise DataError(f"{out}: the pool {settings.pool} changed since the project started, so {why}.")
    return settings, pool


def read_heldout(out: str | Path) -> tuple[ProjectSettings, Split]:
    """A project's settings and its labeled held-out data (validation then test, as :func:`project_splits` splits
    them), read without changing anything: for ``robustal evaluate`` of a project's model.

    Raises:
        DataError: ``out`` is not a project, its settings cannot be read, its pool changed, or the held-out labels
            have not been given yet.
    """
    out = Path(out).expanduser()
    settings, pool = read_project(out, "its held-out sample cannot be found again")
    if settings.heldout is not None:
        return settings, load_heldout(settings.heldout, settings.classes, pool)
    kept = out / HELDOUT_LABELS
    if not kept.is_file():
        raise DataError(f"{out}: the held-out labels have not been given yet ({out / 'requests' / 'heldout.csv'}); "
                        "answer that request with robustal label first.")
    idx = Project(out, settings, pool).heldout_indices()
    ids = [pool.ids[i] for i in idx.tolist()]
    given = read_answers(kept, ids, settings.classes)
    return settings, Split(pool.x[idx], torch.tensor([given[i] for i in ids], dtype=torch.int64))


__all__ = ["HELDOUT_LABELS", "POOL_INDEX", "PROJECT_FILE", "RUN_NAME", "TOKEN_KEY", "Pool", "Project",
           "ProjectSettings", "ProjectState", "check_answers", "check_settings", "heldout_split", "image_checksums",
           "imported_labels", "load_heldout", "load_pool", "open_project", "pool_fingerprint", "project_splits",
           "read_project", "read_project_file"]
