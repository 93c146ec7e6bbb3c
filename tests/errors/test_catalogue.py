"""The error catalogue of issue 10: bad inputs to all eight commands, each refused with a non-zero exit, no traceback,
a message that names the problem and the flag or file the user typed, and no file created, changed or lost.

Every case runs ``robustal.cli.main(argv)`` in-process in its own folder (the working folder too, so a default
output such as ``runs/demo`` would land there). The snapshot covers that folder and the shared artefacts.
"""

from __future__ import annotations

import os
import pickle
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from errors_conftest import (
    RS_ARGS,
    RUN_ARGS,
    TRAIN_SIZE,
    Artefacts,
    call,
    copy_tree,
    small_arrays,
    snapshot,
    snapshot_diff,
    tiny_study_text,
    write_npz,
)

from robustal.storage.store import Store

pytestmark = pytest.mark.filterwarnings("ignore::robustal.errors.ChanceLevelWarning")

DIGITS_POOL = 1297  # digits' training set: the pool
MAX_SEED = 2**32 - 1


class Ctx:
    """What a case's setup may use: its own folder, the shared artefacts, and small builders."""

    def __init__(self, tmp: Path, art: Artefacts, request: pytest.FixtureRequest):
        self.tmp, self.art, self.request = tmp, art, request

    def path(self, name: str) -> Path:
        return self.tmp / name

    def dir(self, name: str) -> Path:
        p = self.tmp / name
        p.mkdir(parents=True, exist_ok=True)
        return p

    def file(self, name: str, data: bytes | str = b"not what it should be\n") -> Path:
        p = self.tmp / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data.encode() if isinstance(data, str) else data)
        return p

    def npz(self, name: str = "data.npz", **changes) -> Path:
        arrays = {**small_arrays(), **changes}
        return write_npz(self.tmp / name, **{k: v for k, v in arrays.items() if v is not None})

    def copy(self, src: Path, name: str | None = None) -> Path:
        return copy_tree(src, self.tmp / (name or Path(src).name))

    def mnist(self) -> Path:
        return self.request.getfixturevalue("mnist_npz")

    def ckpt_with(self, name: str = "edited.pt", **changes) -> Path:
        """The shared checkpoint with metadata replaced (``None`` values are set, not removed)."""
        obj = torch.load(self.art.ckpt, weights_only=True)
        obj.update(changes)
        torch.save(obj, self.tmp / name)
        return self.tmp / name

    def study(self, text: str, name: str = "s.toml") -> Path:
        return self.file(name, text)

    def damaged_run(self, how: str) -> Path:
        """A copy of the finished run, set back to ``interrupted``, its last checkpoint damaged as ``how`` says."""
        out = self.copy(self.art.run_dir, "run")
        Store(out).set_status("run", "interrupted")
        ckpt = sorted((out / "checkpoints" / "run").glob("stage-*.pt"))[-1]
        data = ckpt.read_bytes()
        if how == "truncated":
            ckpt.write_bytes(data[: len(data) // 3])
        elif how == "garbage":
            ckpt.write_bytes(GARBAGE)
        elif how == "missing":
            ckpt.unlink()
        elif how == "tensor":
            torch.save(torch.zeros(3), ckpt)
        else:
            raise ValueError(how)
        return out


@dataclass
class Case:
    id: str
    argv: Callable[[Ctx], list]
    expect: tuple[str, ...]  # fragments that must all be in stderr (case-sensitive)
    forbid: tuple[str, ...] = ()  # fragments that must not be in stderr
    after: Callable[[Ctx], None] | None = None  # an extra check after the call


# --- command lines that succeed quickly; a case changes one thing ---------------------------------------------------
def TRAIN(*extra) -> list:
    return ["train", "--dataset", "digits", "--training", "standard", "--epochs", "1", "--eval-steps", "0",
            "--no-progress", *extra]


def RUN(c: Ctx, *extra, out: Path | str | None = None) -> list:
    return [*RUN_ARGS, "--out", c.path("out") if out is None else out, *extra]


def DEMO(c: Ctx, *extra) -> list:
    return ["demo", "--out", c.path("demo"), "--initial", "30", "--per-stage", "30", "--budget", "60", "--epochs",
            "1", "--eval-steps", "0", "--workers", "1", "--no-progress", *extra]


def GOOD_STUDY(acquisitions=("random",)) -> str:
    return tiny_study_text(acquisitions, epochs=1)


def STUDY(c: Ctx, file: Path | str, *extra) -> list:
    return ["study", file, "--out", c.path("study-out"), "--workers", "1", "--no-progress", *extra]


def SELECT(c: Ctx, *extra, model: Path | None = None) -> list:
    return ["select", "--model", model or c.art.ckpt, "--metric", "random", "--n", "10", "--out", c.path("picks.csv"),
            "--no-progress", *extra]


def RETRAIN(c: Ctx, *extra, model: Path | None = None, selected: Path | None = None) -> list:
    return ["retrain", "--model", model or c.art.ckpt, "--selected", selected or c.art.selection, "--training",
            "standard", "--epochs", "1", "--eval-steps", "0", "--no-progress", *extra]


def RS(c: Ctx, *extra, out: Path | None = None, model: Path | None = None) -> list:
    return [*RS_ARGS, "--model", model or c.art.ckpt, "--out", out or c.path("rs"), *extra]


def REPORT(c: Ctx, folder: Path, *extra) -> list:
    return ["report", folder, "--no-entropy", *extra]


def ARG(flag: str, must: str) -> tuple[str, ...]:
    """argparse's message for a bad number: it names the flag."""
    return (f"argument {flag}: must be {must}",)


INT1, INT0, POS, UNIT = "an integer >= 1", "an integer >= 0", "a number > 0", "a number in [0, 1]"
SEED = f"an integer in [0, {MAX_SEED}]"


class Evil:
    """Unpickling this runs a shell command that creates a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def evil_torch(c: Ctx) -> Path:
    obj = torch.load(c.art.ckpt, weights_only=True)
    obj["model_name"] = Evil(c.path("PWNED"))
    torch.save(obj, c.path("evil.pt"))
    return c.path("evil.pt")


def evil_pickle(c: Ctx) -> Path:
    c.path("evil.pkl").write_bytes(pickle.dumps(Evil(c.path("PWNED"))))
    return c.path("evil.pkl")


def no_marker(c: Ctx) -> None:
    assert not c.path("PWNED").exists(), "loading the checkpoint ran the pickled os.system call"


def _run_status(db: Path, name: str) -> str:
    """The status stored for run ``name`` in the results database ``db``."""
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT status FROM runs WHERE name = ?", (name,)).fetchone()[0]
    finally:
        con.close()


def still_interrupted(c: Ctx) -> None:
    """The damaged run keeps the status it had: a refused resume did not start it."""
    status = _run_status(c.path("run") / "results.db", "run")
    assert status == "interrupted", f"the refused resume left the run's status {status!r} (it was 'interrupted')"


def foreign_db(c: Ctx, folder: str = "foreign") -> Path:
    d = c.dir(folder)
    con = sqlite3.connect(d / "results.db")
    con.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    con.execute("INSERT INTO users (name) VALUES ('ada'), ('grace')")
    con.commit()
    con.close()
    return d


def nothing_at(*paths: str) -> Callable[[Ctx], None]:
    def check(c: Ctx) -> None:
        for p in paths:
            assert not Path(p).exists(), f"{p} was created"

    return check


def pngs(c: Ctx, name: str = "pool", n: int = 40, corrupt: str | None = None) -> Path:
    """A flat folder of ``n`` real digit images as PNG files (plus one file of garbage named ``corrupt``)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    folder = c.dir(name)
    images = np.round(load_digits().images[:n] * (255 / 16)).astype(np.uint8)
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"d{i:03d}.png")
    if corrupt:
        (folder / corrupt).write_bytes(GARBAGE)
    return folder


def LABEL(c: Ctx, *extra, pool: Path | None = None) -> list:
    return ["label", "--pool", pool or pngs(c), "--classes", "0,1,2,3,4,5,6,7,8,9", "--image-size", "8",
            "--channels", "1", "--epsilon", "0.2", "--heldout-size", "10", "--initial", "10", "--per-stage", "10",
            "--budget", "20", "--epochs", "1", "--min-steps", "0", "--eval-steps", "0", "--out", c.path("project"),
            "--no-progress", *extra]


def awaited_heldout(c: Ctx, rows: Callable[[list[str]], list[str]]) -> list:
    """A project waiting for its held-out labels, whose request CSV is then filled by ``rows(ids)``."""
    from robustal.cli import main

    argv = LABEL(c)
    assert main([str(a) for a in argv]) == 0
    request = c.path("project") / "requests" / "heldout.csv"
    ids = [line.split(",")[0] for line in request.read_text().splitlines()[1:]]
    request.write_text("id,label\n" + "\n".join(rows(ids)) + "\n")
    return argv


def awaited_stage0(c: Ctx) -> list:
    """A project whose held-out labels (all '1') are imported and whose stage 0 is awaited (its run is 'waiting')."""
    from robustal.cli import main

    argv = awaited_heldout(c, lambda ids: [f"{i},1" for i in ids])
    assert main([str(a) for a in argv]) == 0
    assert (c.path("project") / "requests" / "stage-000.csv").is_file()
    return argv


def request_ids(c: Ctx, name: str) -> list[str]:
    request = c.path("project") / "requests" / f"{name}.csv"
    return [line.split(",")[0] for line in request.read_text().splitlines()[1:]]


def edited_heldout(c: Ctx) -> list:
    """A project awaiting stage 0 whose imported held-out request is then edited: its first label 1 becomes 7."""
    argv = awaited_stage0(c)
    request = c.path("project") / "requests" / "heldout.csv"
    request.write_text(request.read_text().replace(",1\n", ",7\n", 1))
    return argv


def label_studio_export(c: Ctx, labels: dict[str, str]) -> Path:
    """A Label Studio JSON export of a project holding the tasks ``{robustal id: choice}``."""
    import json

    pool = c.path("pool").resolve()
    tasks = [{"id": k, "data": {"image": f"/data/local-files/?d={(pool / i).as_posix().lstrip('/')}",
                                "robustal_id": i},
              "annotations": [{"id": k, "was_cancelled": False, "result": [
                  {"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [y]}}]}]}
             for k, (i, y) in enumerate(labels.items(), start=1)]
    return c.file("export.json", json.dumps(tasks))


def other_project(c: Ctx, kind: str) -> tuple[list, list]:
    """Projects A (``project``) and B (``project-b``) waiting for their held-out labels, on pools with the same ids
    and other images (``kind``: image folders with the same file names, or npz pools): their argvs."""
    from PIL import Image
    from sklearn.datasets import load_digits

    from robustal.cli import main

    images = np.round(load_digits().images[40:80] * (255 / 16)).astype(np.uint8)
    if kind == "folder":
        pool_a, pool_b = pngs(c), c.dir("pool-b")
        for i, image in enumerate(images):
            Image.fromarray(image).save(pool_b / f"d{i:03d}.png")
    else:
        pool_a, pool_b = c.npz("a.npz", x_train=images[::-1].copy()), c.npz("b.npz", x_train=images)
    argv_a, argv_b = LABEL(c, pool=pool_a), LABEL(c, "--out", c.path("project-b"), pool=pool_b)
    for argv in (argv_a, argv_b):
        assert main([str(a) for a in argv]) == 0
    return argv_a, argv_b


def answers_of(c: Ctx, project: str, label: bool = True) -> list[dict]:
    """The held-out request's Label Studio tasks of ``project``, each annotated '1' (or not annotated)."""
    import json

    tasks = json.loads((c.path(project) / "requests" / "heldout-label-studio.json").read_text())
    choice = [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": ["1"]}}]
    return [{"id": k, "data": t["data"], "annotations": [{"id": k, "result": choice}] if label else []}
            for k, t in enumerate(tasks, start=1 if project == "project" else 100)]


def another_projects_csv(c: Ctx) -> list:
    """A is given B's held-out request CSV, filled in (its robustal_project column kept)."""
    argv_a, _ = other_project(c, "folder")
    text = (c.path("project-b") / "requests" / "heldout.csv").read_text()
    return argv_a + ["--answers", c.file("b.csv", text.replace(",,", ",1,"))]


def another_projects_export(c: Ctx) -> list:
    """A (npz pool) is given B's Label Studio export: the ids (0..N-1) are the same, the images are not."""
    import json

    argv_a, _ = other_project(c, "npz")
    return argv_a + ["--answers", c.file("b-export.json", json.dumps(answers_of(c, "project-b")))]


def shared_label_studio_project(c: Ctx) -> list:
    """Both projects' tasks in one Label Studio project, only A's annotated: B is given its export."""
    import json

    _, argv_b = other_project(c, "folder")
    tasks = answers_of(c, "project") + answers_of(c, "project-b", label=False)
    return argv_b + ["--answers", c.file("shared.json", json.dumps(tasks))]


def another_projects_old_tasks(c: Ctx) -> list:
    """B's export of tasks written before tokens existed: their images are B's, not A's."""
    import json

    argv_a, _ = other_project(c, "folder")
    tasks = answers_of(c, "project-b")
    for t in tasks:
        del t["data"]["robustal_project"]
    return argv_a + ["--answers", c.file("b-old.json", json.dumps(tasks))]


def web_server(c: Ctx) -> str:
    """The address of a web server that answers 404 to everything (not an MLflow server), for this case only."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class NotFound(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's names
            self.send_error(404)

        do_POST = do_GET

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    c.request.addfinalizer(server.shutdown)
    return f"http://127.0.0.1:{server.server_port}"


def cp1252_heldout(c: Ctx) -> list:
    """A project waiting for its held-out labels, whose request CSV was filled and saved as cp1252 (a note with é)."""
    argv = awaited_heldout(c, lambda ids: [f"{i},1" for i in ids])
    request = c.path("project") / "requests" / "heldout.csv"
    request.write_bytes((request.read_text() + "note: caf\xe9,\n").encode("cp1252"))
    return argv


def damaged_label_stage(c: Ctx) -> list:
    """A project whose stage 0 is trained (its labels all '1'), then its stage checkpoint truncated."""
    from robustal.cli import main

    argv = awaited_stage0(c)
    request = c.path("project") / "requests" / "stage-000.csv"
    request.write_text(request.read_text().replace(",,", ",1,"))
    assert main([str(a) for a in argv]) == 0
    ckpt = c.path("project") / "checkpoints" / "label" / "stage-000.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:200])
    return argv


def still_waiting(c: Ctx) -> None:
    """The project's run keeps the status it had: refused answers did not mark it interrupted."""
    status = _run_status(c.path("project") / "results.db", "label")
    assert status == "waiting", f"the refused answers left the run's status {status!r} (it was 'waiting')"


def labeled_pngs(c: Ctx, classes: tuple[str, ...]) -> Path:
    """A labeled folder (one sub-folder per class) of real digit images."""
    from PIL import Image
    from sklearn.datasets import load_digits

    images = np.round(load_digits().images[:4 * len(classes)] * (255 / 16)).astype(np.uint8)
    for k, image in enumerate(images):
        folder = c.dir(f"heldout/{classes[k % len(classes)]}")
        Image.fromarray(image).save(folder / f"h{k:03d}.png")
    return c.path("heldout")


#: A module that leaves a marker file when it is imported: a checkpoint naming it must never make robustal import it.
EVIL_MODULE = ("import pathlib\npathlib.Path(__file__).with_name('PWNED').touch()\n"
               "def factory(num_classes, in_channels, image_size):\n    raise ValueError('imported')\n")


def evil_factory_ckpt(c: Ctx, by_path: bool = False) -> Path:
    """The shared checkpoint, recorded as made by a user's factory in a module that sits in the working folder."""
    c.file("evilmod.py", EVIL_MODULE)
    return c.ckpt_with("factory.pt", model_name=f"{c.path('evilmod.py')}:factory" if by_path else "evilmod:factory")


def user_module(c: Ctx) -> None:
    c.file("catalogue_nets.py",
           "import torch\ndef broken(num_classes, in_channels, image_size):\n    raise ValueError('no')\n")


FOLDER_FLAGS = ("--image-size", "8", "--channels", "1", "--epsilon", "0.2")


def digit_folders(c: Ctx, empty_train: str | None = None, test_only: str | None = None) -> Path:
    """An image-folder dataset of real digits (DIR/train/<digit>/*.png, DIR/test/<digit>/*.png, digits 0-2), with an
    empty class folder in train/ or a class only in test/."""
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.round(d.images * (255 / 16)).astype(np.uint8)
    root = c.dir("digits-dir")
    for i in range(90):
        if d.target[i] < 3:
            part = "train" if i < 60 else "test"
            c.dir(f"digits-dir/{part}/{d.target[i]}")
            Image.fromarray(images[i]).save(root / part / str(d.target[i]) / f"{i:03d}.png")
    if empty_train:
        c.dir(f"digits-dir/train/{empty_train}")
    if test_only:
        c.dir(f"digits-dir/test/{test_only}")
        Image.fromarray(images[9]).save(root / "test" / test_only / "009.png")
    return root


#: Factories whose models cannot be trained as they are: robustal checks a user's model on one batch before training.
BAD_NETS = """\
from torch import nn


def seven_outputs(num_classes, in_channels, image_size):
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size * image_size, 7))


def rgb_only(num_classes, in_channels, image_size):
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(),
                         nn.Linear(4 * image_size * image_size, num_classes))


class TupleOut(nn.Module):
    def __init__(self, num_classes, in_channels, image_size):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size * image_size, num_classes))

    def forward(self, x):
        return self.net(x), x


def tuple_output(num_classes, in_channels, image_size):
    return TupleOut(num_classes, in_channels, image_size)


class Unregistered(nn.Module):
    def __init__(self, num_classes, in_channels, image_size):
        super().__init__()
        self.layers = [nn.Linear(in_channels * image_size * image_size, num_classes)]  # not registered

    def forward(self, x):
        return self.layers[0](x.flatten(1))


def no_parameters(num_classes, in_channels, image_size):
    return Unregistered(num_classes, in_channels, image_size)
"""


def bad_nets(c: Ctx) -> None:
    c.file("catalogue_bad_nets.py", BAD_NETS)


def study_copy_unchanged(c: Ctx) -> None:
    """The results folder's copy of its study file is the one that made its results."""
    copy = (c.path("study") / "study.toml").read_bytes()
    assert copy == (c.art.study_dir / "study.toml").read_bytes(), "the refused study rewrote DIR/study.toml"


CSV_HEAD = "rank,index,score\n"
#: Reproducible garbage: 4 KiB of random bytes.
GARBAGE = np.random.default_rng(0).bytes(4096)

# --- the catalogue --------------------------------------------------------------------------------------------------
CASES: list[Case] = [
    # outputs checked before any work
    Case("train --save is a directory", lambda c: TRAIN("--save", c.dir("models")), ("--save", "is a directory")),
    Case("train --save /proc/x.pt is unwritable", lambda c: TRAIN("--save", "/proc/x.pt"),
         ("--save", "/proc", "cannot write there"), after=nothing_at("/proc/x.pt")),
    Case("train --save is empty", lambda c: TRAIN("--save", ""), ("--save is empty",)),
    Case("train --save in a folder under a file", lambda c: TRAIN("--save", c.file("afile") / "m.pt"),
         ("--save", "afile", "cannot write there")),
    Case("retrain --save is a directory", lambda c: RETRAIN(c, "--save", c.dir("models")),
         ("--save", "is a directory")),
    Case("retrain --save /proc/x.pt is unwritable", lambda c: RETRAIN(c, "--save", "/proc/x.pt"),
         ("--save", "/proc", "cannot write there"), after=nothing_at("/proc/x.pt")),
    Case("select --out is a directory", lambda c: SELECT(c, "--out", c.dir("picks")), ("--out", "is a directory"),
         forbid=("model.pt",)),  # the suggested file name must fit a CSV, not a checkpoint
    Case("select --out /proc/picks.csv is unwritable", lambda c: SELECT(c, "--out", "/proc/picks.csv"),
         ("--out", "/proc", "cannot write there"), after=nothing_at("/proc/picks.csv")),
    Case("retrain-study --out is an existing file", lambda c: RS(c, out=c.file("rs-file")),
         ("--out", "rs-file", "is a file")),
    Case("retrain-study --out under /proc is unwritable", lambda c: RS(c, out=Path("/proc/rs")),
         ("--out", "/proc/rs", "cannot write there"), after=nothing_at("/proc/rs")),
    Case("run --out is a file", lambda c: RUN(c, out=c.file("out-file")), ("--out", "out-file", "is a file")),
    Case("run --out is empty", lambda c: RUN(c, out=""), ("--out", "empty")),
    Case("study --out is a file", lambda c: STUDY(c, c.study(GOOD_STUDY()), "--out", c.file("study-file")),
         ("--out", "study-file", "is a file")),
    Case("report --out is a file", lambda c: REPORT(c, c.art.study_dir, "--out", c.file("report-file")),
         ("--out", "report-file", "is a file")),
    Case("report --header is missing", lambda c: REPORT(c, c.art.study_dir, "--header", c.path("nope.md")),
         ("--header", "nope.md", "not found")),
    Case("report --header is a directory", lambda c: REPORT(c, c.art.study_dir, "--header", c.dir("hdr")),
         ("--header", "hdr", "is a directory")),
    Case("report --header is not UTF-8", lambda c: REPORT(c, c.art.study_dir, "--header",
                                                          c.file("h.md", b"# caf\xe9 \xff\xfe\n")),
         ("--header", "h.md", "not UTF-8")),
    Case("demo --out is a file", lambda c: DEMO(c, "--out", c.file("demo-file")), ("--out", "demo-file", "is a file")),
    Case("demo --out is empty", lambda c: DEMO(c, "--out", ""), ("--out", "empty")),

    # numbers, with the flag named by argparse
    Case("train --epochs 0", lambda c: TRAIN("--epochs", "0"), ARG("--epochs", INT1)),
    Case("run --batch-size 0", lambda c: RUN(c, "--batch-size", "0"), ARG("--batch-size", INT1)),
    Case("train --lr 0", lambda c: TRAIN("--lr", "0"), ARG("--lr", POS)),
    Case("retrain --lr -1", lambda c: RETRAIN(c, "--lr", "-1"), ARG("--lr", POS)),
    Case("train --epsilon 1.5", lambda c: TRAIN("--epsilon", "1.5"), ARG("--epsilon", UNIT)),
    Case("run --epsilon nan", lambda c: RUN(c, "--epsilon", "nan"), ARG("--epsilon", UNIT)),
    Case("train --attack-steps 0", lambda c: TRAIN("--attack-steps", "0"), ARG("--attack-steps", INT1)),
    Case("train --eval-steps -1", lambda c: TRAIN("--eval-steps", "-1"), ARG("--eval-steps", INT0)),
    Case("retrain-study --eval-steps -1", lambda c: RS(c, "--eval-steps", "-1"), ARG("--eval-steps", INT0)),
    Case("train --seed -1", lambda c: TRAIN("--seed", "-1"), ARG("--seed", SEED)),
    Case("run --seed -1", lambda c: RUN(c, "--seed", "-1"), ARG("--seed", SEED)),
    Case("select --seed -1", lambda c: SELECT(c, "--seed", "-1"), ARG("--seed", SEED)),
    Case("retrain-study --seeds -1", lambda c: RS(c, "--seeds", "-1"), ("--seeds", "[0, 4294967295]", "-1")),
    Case("train --seed 2**40", lambda c: TRAIN("--seed", str(2**40)), ARG("--seed", SEED)),
    Case("demo --seed 2**40", lambda c: DEMO(c, "--seed", str(2**40)), ARG("--seed", SEED)),
    Case("retrain-study --seeds 0,0", lambda c: RS(c, "--seeds", "0,0"), ("--seeds", "twice")),
    Case("study --workers 0", lambda c: STUDY(c, c.study(GOOD_STUDY()), "--workers", "0"), ARG("--workers", INT1)),
    Case("demo --workers -2", lambda c: DEMO(c, "--workers", "-2"), ARG("--workers", INT1)),
    Case("run --initial 0", lambda c: RUN(c, "--initial", "0"), ARG("--initial", INT1)),
    Case("run --budget 0", lambda c: RUN(c, "--budget", "0"), ARG("--budget", INT1)),
    Case("demo --budget 0", lambda c: DEMO(c, "--budget", "0"), ARG("--budget", INT1)),
    Case("run --per-stage 0", lambda c: RUN(c, "--per-stage", "0"), ARG("--per-stage", INT1)),
    Case("demo --epochs 0", lambda c: DEMO(c, "--epochs", "0"), ARG("--epochs", INT1)),
    Case("select --n 0", lambda c: SELECT(c, "--n", "0"), ARG("--n", INT1)),
    Case("retrain --n 0", lambda c: RETRAIN(c, "--n", "0"), ARG("--n", INT1)),
    Case("train --train-size 0", lambda c: TRAIN("--train-size", "0"), ARG("--train-size", INT1)),
    Case("select --train-size 0", lambda c: SELECT(c, "--train-size", "0"), ARG("--train-size", INT1)),
    Case("run --dre-bins 0", lambda c: RUN(c, "--acquisition", "dre", "--dre-bins", "0"), ARG("--dre-bins", INT1)),
    Case("train --min-steps -1", lambda c: TRAIN("--min-steps", "-1"), ARG("--min-steps", INT0)),
    Case("train --trades-beta -1", lambda c: TRAIN("--training", "trades", "--trades-beta", "-1"),
         ARG("--trades-beta", "a number >= 0")),
    Case("retrain-study --batch-size 0", lambda c: RS(c, "--batch-size", "0"), ARG("--batch-size", INT1)),
    Case("train --epochs x", lambda c: TRAIN("--epochs", "x"), ARG("--epochs", INT1)),
    Case("train --train-size larger than the pool", lambda c: TRAIN("--train-size", "5000"),
         ("--train-size", "5000", str(DIGITS_POOL))),
    Case("select --train-size larger than the pool", lambda c: SELECT(c, "--train-size", "5000"),
         ("--train-size", "5000", str(DIGITS_POOL))),

    # names
    Case("train --dataset mnistt (did you mean)", lambda c: TRAIN("--dataset", "mnistt"),
         ("'mnistt'", "Did you mean 'mnist'")),
    Case("train --model resnet-18 (did you mean)", lambda c: TRAIN("--model", "resnet-18"),
         ("'resnet-18'", "Did you mean 'resnet18'")),
    Case("run --acquisition DRE (did you mean dre)", lambda c: RUN(c, "--acquisition", "DRE"),
         ("'DRE'", "Did you mean 'dre'")),
    Case("run --acquisition entropyy (did you mean)", lambda c: RUN(c, "--acquisition", "entropyy"),
         ("'entropyy'", "Did you mean 'entropy'")),
    Case("select --metric Entropy (did you mean entropy)", lambda c: SELECT(c, "--metric", "Entropy"),
         ("'Entropy'", "Did you mean 'entropy'")),
    Case("retrain-study --metrics dre,Entropy (did you mean)", lambda c: RS(c, "--metrics", "dre,Entropy"),
         ("--metrics", "'Entropy'", "Did you mean 'entropy'")),
    Case("retrain-study --metrics , (empty)", lambda c: RS(c, "--metrics", ","), ("--metrics", "empty")),
    Case("retrain-study --metrics dre,dre (twice)", lambda c: RS(c, "--metrics", "dre,dre"), ("--metrics", "twice")),
    Case("retrain-study --sizes 0", lambda c: RS(c, "--sizes", "0"), ("--sizes", "[1, inf]", "0")),
    Case("retrain-study --sizes x", lambda c: RS(c, "--sizes", "x"), ("--sizes", "integers", "'x'")),
    Case("retrain-study --sizes larger than the new unlabeled set", lambda c: RS(c, "--sizes", "20,5000"),
         ("--sizes", "5000", str(DIGITS_POOL - TRAIN_SIZE))),
    Case("select --n larger than the new unlabeled set", lambda c: SELECT(c, "--n", "5000"),
         ("--n", "5000", str(DIGITS_POOL - TRAIN_SIZE)), forbid=("--per-stage", "--budget")),
    Case("run --initial larger than --budget", lambda c: RUN(c, "--initial", "90", "--budget", "60"),
         ("--initial", "--budget", "90", "60")),
    Case("demo --initial larger than --budget", lambda c: DEMO(c, "--initial", "90", "--budget", "60"),
         ("--initial", "--budget", "90", "60")),
    Case("run --budget larger than the pool", lambda c: RUN(c, "--budget", "5000"),
         ("--budget", "5000", str(DIGITS_POOL))),
    Case("run --name is empty", lambda c: RUN(c, "--name", " "), ("--name is empty",)),
    Case("run --chance-recovery bogus", lambda c: RUN(c, "--chance-recovery", "bogus"),
         ("argument --chance-recovery", "'bogus'")),
    Case("demo --eval-steps -1", lambda c: DEMO(c, "--eval-steps", "-1"), ARG("--eval-steps", INT0)),
    Case("report --out under /proc is unwritable", lambda c: REPORT(c, c.art.study_dir, "--out", "/proc/report"),
         ("--out", "/proc/report", "cannot write there"), after=nothing_at("/proc/report")),
    Case("run --training bogus", lambda c: RUN(c, "--training", "bogus"), ("argument --training", "'bogus'")),
    Case("train --device tpu", lambda c: TRAIN("--device", "tpu"), ("device", "'tpu'")),
    Case("retrain --metric is not an option", lambda c: RETRAIN(c, "--metric", "dre"),
         ("unrecognized arguments", "--metric")),

    # data
    Case("train --dataset npz missing arrays", lambda c: TRAIN("--dataset", c.npz("m.npz", y_test=None)),
         ("m.npz", "lacks y_test")),
    Case("train --dataset npz with an object array",
         lambda c: TRAIN("--dataset", c.npz("obj.npz", y_train=np.array([object()] * 60, dtype=object))),
         ("obj.npz", "object arrays"), forbid=("allow_pickle",)),
    Case("train --dataset npz with zero training samples",
         lambda c: TRAIN("--dataset", c.npz("empty.npz", x_train=np.zeros((0, 8, 8), np.uint8),
                                            y_train=np.zeros(0, np.int64))),
         ("empty.npz", "training set is empty")),
    Case("train --dataset npz with one test sample",
         lambda c: TRAIN("--dataset", c.npz("one.npz", x_test=np.zeros((1, 8, 8), np.uint8),
                                            y_test=np.zeros(1, np.int64))),
         ("one.npz", "test set has 1 sample")),
    Case("train --dataset npz with a single class",
         lambda c: TRAIN("--dataset", c.npz("single.npz", y_train=np.zeros(60, np.int64),
                                            y_test=np.zeros(20, np.int64))),
         ("single.npz", "same class")),
    Case("train --dataset npz with label 1000 beside 0..9 (gaps)",
         lambda c: TRAIN("--dataset", c.npz("gap.npz", y_train=np.r_[np.arange(59) % 10, 1000])),
         ("gap.npz", "up to 1000", "never occur")),
    Case("run --dataset npz with float images outside [0, 1]",
         lambda c: RUN(c, "--dataset", c.npz("float.npz", x_train=np.full((60, 8, 8), 2.0, np.float32))),
         ("float.npz", "[0, 1]", "x_train")),
    Case("train --dataset is a directory", lambda c: TRAIN("--dataset", c.dir("data.npz")),
         ("data.npz", "is a directory")),
    Case("train --dataset missing file", lambda c: TRAIN("--dataset", c.path("nope.npz")),
         ("nope.npz", "does not exist")),
    Case("train --dataset garbage bytes as npz", lambda c: TRAIN("--dataset", c.file("junk.npz", GARBAGE[:300])),
         ("junk.npz", "not a readable .npz"), forbid=("object arrays",)),  # garbage is not an object array
    Case("train --dataset a text file as npz", lambda c: TRAIN("--dataset", c.file("text.npz", "x,y\n1,2\n" * 30)),
         ("text.npz", "not a readable .npz"), forbid=("object arrays",)),
    Case("train --dataset truncated real npz",
         lambda c: TRAIN("--dataset", c.file("cut.npz", c.npz("full.npz").read_bytes()[:900])),
         ("cut.npz", "not a readable .npz")),
    Case("select --data missing file", lambda c: SELECT(c, "--data", c.path("nope.npz")),
         ("nope.npz", "does not exist")),
    Case("run --dataset npz with labels not matching the images",
         lambda c: RUN(c, "--dataset", c.npz("short.npz", y_train=np.arange(10))),
         ("short.npz", "y_train", "60 labels")),

    # checkpoints
    Case("select --model missing file", lambda c: SELECT(c, model=c.path("none.pt")), ("none.pt", "not found")),
    Case("retrain --model is a directory", lambda c: RETRAIN(c, model=c.dir("m.pt")), ("m.pt", "is a directory")),
    Case("select --model garbage bytes", lambda c: SELECT(c, model=c.file("junk.pt", GARBAGE)),
         ("junk.pt", "cannot be read"), forbid=("pickled Python objects",)),  # random bytes are not a pickle
    Case("retrain --model a text file", lambda c: RETRAIN(c, model=c.file("notes.pt", "my model, v2\n" * 50)),
         ("notes.pt", "cannot be read")),
    Case("retrain --model truncated checkpoint",
         lambda c: RETRAIN(c, model=c.file("cut.pt", c.art.ckpt.read_bytes()[:50_000])), ("cut.pt", "cannot be read")),
    Case("select --model a torch file of a plain tensor",
         lambda c: SELECT(c, model=(torch.save(torch.zeros(3), c.path("t.pt")), c.path("t.pt"))[1]),
         ("t.pt", "not a robustal model checkpoint")),
    Case("select --model num_classes='ten'", lambda c: SELECT(c, model=c.ckpt_with(num_classes="ten")),
         ("edited.pt", "num_classes", "'ten'")),
    Case("retrain --model image_shape=None", lambda c: RETRAIN(c, model=c.ckpt_with(image_shape=None)),
         ("edited.pt", "image_shape", "None")),
    Case("select --model train_size=-3", lambda c: SELECT(c, model=c.ckpt_with(train_size=-3)),
         ("edited.pt", "train_size", "-3")),
    Case("retrain-study --model model_name=''", lambda c: RS(c, model=c.ckpt_with(model_name="")),
         ("edited.pt", "model_name")),
    Case("select --model pickled os.system in a torch file", lambda c: SELECT(c, model=evil_torch(c)),
         ("evil.pt", "does not run code"), forbid=("weights_only=False", "weights_only"), after=no_marker),
    Case("retrain --model a plain pickle running os.system", lambda c: RETRAIN(c, model=evil_pickle(c)),
         ("evil.pkl", "does not run code"), forbid=("weights_only=False", "weights_only"), after=no_marker),
    Case("select --model digits model with the MNIST npz", lambda c: SELECT(c, "--data", c.mnist()),
         ("model.pt", "mnist-8k.npz", "(1, 8, 8)")),
    Case("retrain-study --model a checkpoint for the whole training set",
         lambda c: RS(c, model=c.ckpt_with(train_size=None)), ("whole training set", "--train-size")),

    # selection CSVs
    Case("retrain --selected missing", lambda c: RETRAIN(c, selected=c.path("picks.csv")),
         ("picks.csv", "not found")),
    Case("retrain --selected without an index column",
         lambda c: RETRAIN(c, selected=c.file("s.csv", "rank,id\n1,700\n")),
         ("s.csv", "'index' column")),
    Case("retrain --selected with a non-integer index",
         lambda c: RETRAIN(c, selected=c.file("s.csv", CSV_HEAD + "1,700,\n2,seven,\n")), ("s.csv", "integers")),
    Case("retrain --selected with a repeated index",
         lambda c: RETRAIN(c, selected=c.file("s.csv", CSV_HEAD + "1,700,\n2,700,\n")), ("s.csv", "repeat")),
    Case("retrain --selected index inside the original training data",
         lambda c: RETRAIN(c, selected=c.file("s.csv", CSV_HEAD + "1,700,\n2,5,\n")),
         ("s.csv", "outside the new unlabeled set", "5")),
    Case("retrain --selected index beyond the training set",
         lambda c: RETRAIN(c, selected=c.file("s.csv", CSV_HEAD + "1,700,\n2,99999,\n")),
         ("s.csv", "outside the new unlabeled set", "99999")),
    Case("retrain --n larger than the selection file",
         lambda c: RETRAIN(c, "--n", "50", selected=c.file("s.csv", CSV_HEAD + "1,700,\n2,701,\n3,702,\n")),
         ("--n", "50", "3 picks")),
    Case("retrain --selected empty file", lambda c: RETRAIN(c, selected=c.file("s.csv", b"")), ("s.csv", "index")),
    Case("retrain --selected not UTF-8", lambda c: RETRAIN(c, selected=c.file("s.csv", b"rank,index\n\xff\xfe,1\n")),
         ("s.csv", "CSV")),
    Case("retrain --selected is a directory", lambda c: RETRAIN(c, selected=c.dir("sel.csv")),
         ("sel.csv", "is a directory")),

    # study files
    Case("study file missing", lambda c: STUDY(c, c.path("none.toml")), ("none.toml", "not found")),
    Case("study file is a directory", lambda c: STUDY(c, c.dir("d.toml")), ("d.toml", "is a directory")),
    Case("study file not UTF-8", lambda c: STUDY(c, c.file("s.toml", b"[study]\nname = \"caf\xe9\"\n")),
         ("s.toml", "not UTF-8")),
    Case("study file invalid TOML", lambda c: STUDY(c, c.study("[study\nname = 'x'\n")), ("s.toml", "not valid TOML")),
    Case("study file unknown section [trian]", lambda c: STUDY(c, c.study(GOOD_STUDY() + "\n[trian]\nepochs = 2\n")),
         ("s.toml", "'trian'", "Did you mean 'train'")),
    Case("study file unknown key epoch (did you mean)",
         lambda c: STUDY(c, c.study(GOOD_STUDY().replace("epochs = 1", "epoch = 1"))),
         ("s.toml", "'epoch'", "Did you mean 'epochs'")),
    Case("study file augment = 5", lambda c: STUDY(c, c.study(GOOD_STUDY() + "augment = 5\n")),
         ("s.toml", "augment", "5")),
    Case("study file [acquisition.dre] binz = 3",
         lambda c: STUDY(c, c.study(GOOD_STUDY(("dre",)) + "\n[acquisition.dre]\nbinz = 3\n")),
         ("s.toml", "binz", "'bins'")),
    Case("study file seeds = [-1]", lambda c: STUDY(c, c.study(GOOD_STUDY().replace("seeds = [0]", "seeds = [-1]"))),
         ("s.toml", "seeds", "-1")),
    Case("study file seeds beyond 32 bits",
         lambda c: STUDY(c, c.study(GOOD_STUDY().replace("seeds = [0]", f"seeds = [{2**40}]"))),
         ("s.toml", "seeds", str(2**40))),
    Case("study file empty [[grid]]",
         lambda c: STUDY(c, c.study("grid = []\n" + GOOD_STUDY().split("[grid]")[0] + "[loop]"
                                    + GOOD_STUDY().split("[loop]")[1])),
         ("s.toml", "[[grid]] is empty")),
    Case("study file dataset .npz that does not exist",
         lambda c: STUDY(c, c.study(GOOD_STUDY().replace('["digits"]', '["missing.npz"]'))),
         ("missing.npz", "not found")),
    Case("study file unknown acquisition (did you mean)",
         lambda c: STUDY(c, c.study(GOOD_STUDY(("random", "entropyy")))),
         ("s.toml", "'entropyy'", "Did you mean 'entropy'")),
    Case("study file eval_steps = -1", lambda c: STUDY(c, c.study(GOOD_STUDY().replace("eval_steps = 0",
                                                                                       "eval_steps = -1"))),
         ("s.toml", "eval_steps", "-1")),
    Case("study file initial larger than budget",
         lambda c: STUDY(c, c.study(GOOD_STUDY().replace("initial = 30", "initial = 90"))),
         ("s.toml", "initial", "budget", "90", "60")),
    Case("study file budget larger than the pool",
         lambda c: STUDY(c, c.study(GOOD_STUDY().replace("budget = 60", "budget = 5000"))),
         ("s.toml", "budget", "5000", str(DIGITS_POOL))),
    Case("study --tracking-uri of a server that is not running",
         lambda c: STUDY(c, c.study(GOOD_STUDY()), "--tracking-uri", "http://127.0.0.1:1"),
         ("http://127.0.0.1:1", "(from --tracking-uri)", "connection refused", "mlflow server")),
    Case("study file [tracking] uri is a folder",
         lambda c: STUDY(c, c.study(GOOD_STUDY() + f'\n[tracking]\nuri = "sqlite:///{c.dir("runs.db")}"\n')),
         ("[tracking] table of", "s.toml", "is a folder")),
    Case("study file [tracking] uri = 5", lambda c: STUDY(c, c.study(GOOD_STUDY() + "\n[tracking]\nuri = 5\n")),
         ("s.toml", "[tracking] uri must be a non-empty string", "5")),
    Case("study file [tracking] log_model = 'no'",
         lambda c: STUDY(c, c.study(GOOD_STUDY() + '\n[tracking]\nlog_model = "no"\n')),
         ("s.toml", "log_model must be true or false")),
    Case("study --tracking-uri of a web server that is not MLflow's",
         lambda c: STUDY(c, c.study(GOOD_STUDY()), "--tracking-uri", web_server(c)),
         ("not an MLflow tracking server", "HTTP 404", "mlflow server"), forbid=("Start the server",)),
    Case("study --tracking-uri file: that is a file",
         lambda c: STUDY(c, c.study(GOOD_STUDY()), "--tracking-uri", c.file("runs.txt").as_uri()),
         ("runs.txt is a file", "a file: store is a folder", "sqlite:///"), forbid=("See htt",)),
    Case("train --attack autoattack --eval-steps 0", lambda c: TRAIN("--attack", "autoattack", "--eval-steps", "0"),
         ("--attack autoattack with --eval-steps 0", "would never run", "Leave --eval-steps out")),
    Case("run --attack square --eval-steps 0", lambda c: RUN(c, "--attack", "square", "--eval-steps", "0"),
         ("--attack square with --eval-steps 0", "would never run")),
    Case("label --attack autoattack --eval-steps 0", lambda c: LABEL(c, "--attack", "autoattack"),
         ("--attack autoattack with --eval-steps 0",)),
    Case("study --track none with --tracking-uri",
         lambda c: STUDY(c, c.study(GOOD_STUDY()), "--track", "none", "--tracking-uri", "sqlite:///m.db"),
         ("--tracking-uri has no effect with --track none",)),
    Case("study --gpus-per-run with the local executor",
         lambda c: STUDY(c, c.study(GOOD_STUDY()), "--gpus-per-run", "0.5"), ("--gpus-per-run", "--executor ray")),
    Case("study --gpus-per-run with Ray on the CPU",
         lambda c: STUDY(c, c.study(GOOD_STUDY()), "--executor", "ray", "--gpus-per-run", "0.5", "--device", "cpu"),
         ("--gpus-per-run 0.5", "--device cpu", "--device cuda")),
    Case("study --address with the local executor",
         lambda c: STUDY(c, c.study(GOOD_STUDY()), "--address", "127.0.0.1:6379"), ("--address", "--executor ray")),
    Case("study --address where no Ray cluster runs",
         lambda c: STUDY(c, c.study(GOOD_STUDY()), "--executor", "ray", "--address", "127.0.0.1:1"),
         ("No Ray cluster answers at 127.0.0.1:1", "(from --address)", "ray start --head")),
    # issue 28: the executor and every setting are checked before the folder is touched
    Case("study --address ray:// that nobody answers, into a finished study's folder",
         lambda c: STUDY(c, c.study(GOOD_STUDY(("random", "entropy", "margin"))), "--executor", "ray",
                         "--address", "ray://127.0.0.1:9", "--out", c.copy(c.art.study_dir)),
         ("No Ray client server answers at ray://127.0.0.1:9", "ray start --head"),
         after=lambda c: study_copy_unchanged(c)),
    Case("study --address with a port out of range",
         lambda c: STUDY(c, c.study(GOOD_STUDY()), "--executor", "ray", "--address", "127.0.0.1:99999"),
         ("--address 127.0.0.1:99999", "'99999' is not a port number"), forbid=("34463",)),
    Case("study file with an unknown eval_attack leaves no folder",
         lambda c: STUDY(c, c.study(GOOD_STUDY().replace("eval_steps = 0", 'eval_steps = 2\neval_attack = "pgdd"'))),
         ("s.toml", "eval_attack", "Unknown attack 'pgdd'", "pgd"), after=nothing_at("study-out")),

    # results folders
    Case("report on a folder without results.db", lambda c: REPORT(c, c.dir("empty")), ("empty", "no results.db")),
    Case("report on another program's SQLite results.db", lambda c: REPORT(c, foreign_db(c)),
         ("results.db", "not a robustal results store", "users")),
    Case("report on a results.db that is not SQLite",
         lambda c: REPORT(c, c.file("notdb/results.db", b"hello, world\n" * 200).parent),
         ("results.db", "not a robustal results database")),
    Case("report on a folder with a damaged study.toml",
         lambda c: REPORT(c, (lambda d: (d / "study.toml").write_text("[grid\n") and d)(c.copy(c.art.study_dir))),
         ("study.toml", "not valid TOML")),
    Case("run --out holds another program's SQLite results.db", lambda c: RUN(c, out=foreign_db(c)),
         ("results.db", "not a robustal results store")),
    Case("study --out holds another program's SQLite results.db",
         lambda c: STUDY(c, c.study(GOOD_STUDY()), "--out", foreign_db(c)),
         ("results.db", "not a robustal results store")),
    Case("run --out DIR where DIR/checkpoints is a file",
         lambda c: RUN(c, out=c.file("out/checkpoints", b"x").parent), ("checkpoints", "is a file")),
    Case("run --out DIR where DIR/results.db is a directory",
         lambda c: RUN(c, out=c.dir("out/results.db").parent), ("results.db", "is a directory")),
    Case("run resume with a truncated stage checkpoint", lambda c: RUN(c, out=c.damaged_run("truncated")),
         ("stage-001.pt", "cannot be read"), after=still_interrupted),
    Case("run resume with a garbage stage checkpoint", lambda c: RUN(c, out=c.damaged_run("garbage")),
         ("stage-001.pt", "cannot be read"), forbid=("pickled Python objects",), after=still_interrupted),
    Case("run resume with a missing stage checkpoint", lambda c: RUN(c, out=c.damaged_run("missing")),
         ("stage-001.pt", "missing"), after=still_interrupted),
    Case("run resume with a tensor as stage checkpoint", lambda c: RUN(c, out=c.damaged_run("tensor")),
         ("stage-001.pt", "not a robustal stage checkpoint"), after=still_interrupted),
    Case("run into a stored run with other --epochs", lambda c: RUN(c, "--epochs", "2", out=c.copy(c.art.run_dir)),
         ("different configuration", "epochs")),
    Case("retrain-study into a folder with other --epochs", lambda c: RS(c, "--epochs", "2", out=c.copy(c.art.rs_dir)),
         ("other settings", "epochs")),
    Case("retrain-study --out with a damaged settings.json",
         lambda c: RS(c, out=(lambda d: (d / "settings.json").write_text("{not json") and d)(c.copy(c.art.rs_dir))),
         ("settings.json", "cannot be read")),
    Case("retrain-study --out with results.csv but no settings.json",
         lambda c: RS(c, out=(lambda d: (d / "settings.json").unlink() or d)(c.copy(c.art.rs_dir))),
         ("results.csv", "settings.json")),
    Case("retrain-study --out with a results.csv of another program",
         lambda c: RS(c, out=(lambda d: (d / "results.csv").write_text("a,b\n1,2\n") and d)(c.copy(c.art.rs_dir))),
         ("results.csv", "lacks the column")),
    # --- label: bad pools, bad settings, bad answers (nothing imported) --------------------------------------------
    Case("label --pool does not exist", lambda c: LABEL(c, pool=c.path("nowhere")), ("nowhere", "does not exist")),
    Case("label --pool holds a corrupt image", lambda c: LABEL(c, pool=pngs(c, corrupt="broken.png")),
         ("broken.png", "cannot be read", "Remove or replace")),
    Case("label --pool is a folder but --image-size is missing",
         lambda c: [a for a in LABEL(c) if a not in ("--image-size", "8")], ("--image-size", "image folder")),
    Case("label without --classes", lambda c: [a for a in LABEL(c) if a not in ("--classes", "0,1,2,3,4,5,6,7,8,9")],
         ("--classes",)),
    Case("label --classes names one class", lambda c: LABEL(c, "--classes", "cat"),
         ("--classes must name at least 2 distinct classes",)),
    Case("label --heldout-size larger than half the pool", lambda c: LABEL(c, "--heldout-size", "39"),
         ("--heldout-size 39", "at least half")),
    Case("label --answers does not exist", lambda c: LABEL(c, "--answers", c.path("export.json")),
         ("--answers", "export.json", "not found")),
    Case("label answers with an unknown class and a missing label",
         lambda c: awaited_heldout(c, lambda ids: [f"{ids[0]},eleven", f"{ids[1]},"] + [f"{i},1" for i in ids[2:]]),
         ("heldout.csv", "row 2", "'eleven'", "row 3", "none were used")),
    Case("label answers with a duplicate and an id not asked for",
         lambda c: awaited_heldout(c, lambda ids: [f"{i},1" for i in ids] + [f"{ids[0]},1", "d999.png,2"]),
         ("heldout.csv", "appears again", "d999.png", "not asked for")),
    Case("label continued with another --epsilon",
         lambda c: awaited_heldout(c, lambda ids: [f"{i},1" for i in ids]) and LABEL(c, "--epsilon", "0.1"),
         ("other settings", "epsilon: stored 0.2, now 0.1")),
    Case("label --image-size 2", lambda c: LABEL(c, "--image-size", "2"), ARG("--image-size", "an integer >= 4")),
    Case("label --budget larger than the pool leaves no project behind", lambda c: LABEL(c, "--budget", "100"),
         ("--budget", "100", "30 samples")),
    Case("label --heldout with a class not in --classes leaves no project behind",
         lambda c: LABEL(c, "--heldout", labeled_pngs(c, ("0", "1", "cat"))), ("cat/", "not among the classes")),
    Case("label --answers on a new project", lambda c: LABEL(c, "--answers", c.file("a.csv", "id,label\n")),
         ("--answers", "new project", "without --answers")),
    Case("label --answers with an unknown class keeps the run waiting",
         lambda c: awaited_stage0(c) + ["--answers", c.file("a.csv", "id,label\n" + "".join(
             f"{i},{'eleven' if k == 0 else 1}\n" for k, i in enumerate(request_ids(c, "stage-000"))))],
         ("a.csv", "row 2", "unknown class 'eleven'", "none were used"), after=still_waiting),
    Case("label --answers of an already imported request",
         lambda c: awaited_stage0(c) + ["--answers", c.path("project") / "requests" / "heldout.csv"],
         ("heldout.csv", "none of the 10 ids of stage-000", "already imported (heldout: 10 labels)"),
         after=still_waiting),
    Case("label --answers: a Label Studio export that disagrees with imported labels",
         lambda c: awaited_stage0(c) + ["--answers", label_studio_export(c, {
             **{i: "2" if k < 2 else "1" for k, i in enumerate(request_ids(c, "heldout"))},
             **dict.fromkeys(request_ids(c, "stage-000"), "3")})],
         ("export.json", "2 problem(s)", "'2' here, but '1' was imported from heldout"), after=still_waiting),
    Case("label --answers: another project's request CSV (same file names, other images)", another_projects_csv,
         ("b.csv", "belong to another labeling project", "'project-b:", "this project's 'project:", "another pool",
          "none were used")),
    Case("label --answers: another npz project's Label Studio export (same ids 0..N-1)", another_projects_export,
         ("b-export.json", "belong to another labeling project", "'project-b:", "a.npz")),
    Case("label --answers: one Label Studio project holding both projects' tasks", shared_label_studio_project,
         ("shared.json", "belong to another labeling project", "'project:", "this project's 'project-b:",
          "export only the tasks whose robustal_project is")),
    Case("label --answers: another project's tasks written before tokens", another_projects_old_tasks,
         ("b-old.json", "names the image", "pool-b/d0", "none were used")),
    Case("label with a damaged stage checkpoint is told to restore it or redo the stage", damaged_label_stage,
         ("stage-000.pt", "labels are safe", "--redo-stage 0"), forbid=("delete", "remove", "Delete")),
    Case("label --redo-stage of a stage that is not the last", lambda c: damaged_label_stage(c) + ["--redo-stage", "3"],
         ("--redo-stage 3", "only the last finished stage, 0")),
    Case("label with a request CSV a spreadsheet saved as cp1252",
         lambda c: cp1252_heldout(c), ("heldout.csv", "not UTF-8", "CSV UTF-8", "labels typed in it are kept"),
         forbid=("delete", "Delete")),
    Case("label --answers: a Label Studio JSON export that is not UTF-8",
         lambda c: awaited_heldout(c, lambda ids: [f"{i}," for i in ids]) + [
             "--answers", c.file("export.json", '[{"data": {"robustal_id": "caf\xe9"}}]'.encode("cp1252"))],
         ("export.json", "not UTF-8", "Export it again from Label Studio"), forbid=("CSV UTF-8",)),
    Case("label --answers: a JSON-MIN export whose choice control is not named 'label'",
         lambda c: awaited_heldout(c, lambda ids: [f"{i}," for i in ids]) + [
             "--answers", c.file("export-min.json", __import__("json").dumps(
                 [{"robustal_id": i, "id": k, "digit": "1"} for k, i in enumerate(request_ids(c, "heldout"))]))],
         ("export-min.json", "without a 'label' field (it has 'digit')", "<Choices name=\"label\"")),
    Case("label continued after an image was added to the pool",
         lambda c: (lambda argv: __import__("shutil").copy(c.path("pool") / "d003.png", c.path("pool") / "zz.png")
                    and argv)(awaited_heldout(c, lambda ids: [f"{i}," for i in ids])),
         ("its pool", "changed since the project started", "1 image(s) added (zz.png)", "put the pool back")),
    Case("label a request CSV edited after its labels were imported", edited_heldout,
         ("heldout.csv", "changed after its labels were imported", "'7' here, but '1' was imported from heldout")),
    Case("label continued with another --epochs (a run option)", lambda c: awaited_stage0(c) + ["--epochs", "2"],
         ("other options", "epochs: stored 1, now 2"), forbid=("--name",), after=still_waiting),
    Case("status of a folder with another program's project.json",
         lambda c: ["status", c.file("app/project.json", '{"name": "my-app", "version": 2}').parent],
         ("project.json", "not a robustal labeling project", "another program")),
    Case("status of a folder with a truncated project.json",
         lambda c: ["status", c.file("cut/project.json", '{"pool": "/data/pool", "classes": ["a", "b"').parent],
         ("project.json", "cannot be read")),
    # --- evaluate and status -------------------------------------------------------------------------------------
    Case("evaluate --model does not exist", lambda c: ["evaluate", "--model", c.path("nope.pt")],
         ("nope.pt", "not found")),
    Case("evaluate --model is garbage", lambda c: ["evaluate", "--model", c.file("junk.pt", GARBAGE)],
         ("junk.pt", "damaged or not a torch file")),
    Case("evaluate --n larger than the split", lambda c: ["evaluate", "--model", c.art.ckpt, "--n", "100000",
                                                        "--eval-steps", "0"], ("--n 100000", "test split")),
    Case("evaluate --split is unknown", lambda c: ["evaluate", "--model", c.art.ckpt, "--split", "train"],
         ("--split", "invalid choice")),
    Case("status of a folder without results", lambda c: ["status", c.dir("empty")], ("holds no results.db",)),
    # stored models and a person's labels out (issue 27)
    Case("evaluate both --model and a results folder",
         lambda c: ["evaluate", c.art.run_dir, "--run", "run", "--model", c.art.ckpt],
         ("either with --model", "DIR --run NAME")),
    Case("evaluate a run the results folder does not hold",
         lambda c: ["evaluate", c.art.run_dir, "--run", "rnu", "--eval-steps", "0"],
         ("--run 'rnu'", "no such run", "did you mean 'run'")),
    Case("export a stage the run did not keep",
         lambda c: ["export", c.art.run_dir, "--run", "run", "--stage", "0", "--out", c.path("m.pt")],
         ("--stage 0", "keeps only its last stage's checkpoint (stage 1)")),
    Case("export of a folder without results", lambda c: ["export", c.dir("empty"), "--out", c.path("m.pt")],
         ("holds no results.db",)),
    Case("labels of a folder that is no labeling project",
         lambda c: ["labels", c.art.run_dir, "--out", c.path("labels.csv")],
         ("not a labeling project", "project.json", "robustal label")),
    # checkpoints that work anywhere, the picks CSV, checks before any work (issues 18 and 19.8)
    Case("retrain --selected with only a header", lambda c: RETRAIN(c, selected=c.file("s.csv", CSV_HEAD)),
         ("s.csv", "holds no picks, only its header")),
    Case("retrain --selected with an open quote",
         lambda c: RETRAIN(c, selected=c.file("s.csv", CSV_HEAD + '1,"700,\n2,701,\n')),
         ("s.csv", "line 2", "never closed")),
    Case("retrain --selected with a short row",
         lambda c: RETRAIN(c, selected=c.file("s.csv", CSV_HEAD + "1,700,\n2\n")), ("s.csv", "line 3", "no index")),
    Case("retrain --selected with a row longer than the header",
         lambda c: RETRAIN(c, selected=c.file("s.csv", CSV_HEAD + "1,700,0.5,x,y\n")),
         ("s.csv", "line 2", "5 values", "3 columns")),
    Case("retrain --selected labeled for some picks only",
         lambda c: RETRAIN(c, selected=c.file("s.csv", "rank,index,label\n1,700,3\n2,701,\n")),
         ("s.csv", "filled for 1 of 2 picks", "3")),
    Case("retrain --selected with an unknown class label",
         lambda c: RETRAIN(c, selected=c.file("s.csv", "rank,index,label\n1,700,3\n2,701,eleven\n")),
         ("s.csv", "unknown class", "line 3", "'eleven'", "0..9")),
    Case("select --train-size other than the recorded one", lambda c: SELECT(c, "--train-size", "500"),
         ("--train-size 500", f"first {TRAIN_SIZE} training samples", "Leave --train-size out")),
    Case("select --train-size for a checkpoint that lists its samples",
         lambda c: SELECT(c, "--train-size", "100", model=c.ckpt_with(train_size=None, selected=list(range(50)))),
         ("--train-size 100", "50 training samples it lists")),
    Case("select --data other than the checkpoint's, without --train-size", lambda c: SELECT(c, "--data", c.npz()),
         ("other data", "--train-size K")),
    Case("evaluate a checkpoint whose data are gone",
         lambda c: ["evaluate", "--model", c.ckpt_with(dataset=str(c.path("gone.npz"))), "--eval-steps", "0"],
         ("edited.pt", "gone.npz", "not there", "--data")),
    Case("evaluate a checkpoint whose registered data changed",
         lambda c: ["evaluate", "--model", c.ckpt_with(data_fingerprint="0" * 32), "--eval-steps", "0"],
         ("edited.pt", "'digits'", "other data", "--data")),
    Case("evaluate a checkpoint with a damaged data fingerprint",
         lambda c: ["evaluate", "--model", c.ckpt_with(data_fingerprint=7), "--eval-steps", "0"],
         ("edited.pt", "data_fingerprint", "7")),
    Case("evaluate --data an image folder with a class the model does not know",
         lambda c: ["evaluate", "--model", c.ckpt_with(classes=[str(d) for d in range(10)]), "--data",
                    [c.file(f"imgs/{part}/{k}/a.png") for part in ("train", "test") for k in ("1", "cat")][0]
                    .parents[2], "--eval-steps", "0"],
         ("imgs", "class folder(s) cat", "not among the 10 classes", "edited.pt")),
    Case("evaluate a checkpoint of a project whose held-out labels are not given",
         lambda c: ["evaluate", "--model", c.ckpt_with(dataset=str(c.dir("proj"))), "--data",
                    c.file("proj/project.json", '{"pool": "' + str(pngs(c, n=20)) + '", "classes": ["0", "1", '
                           '"2", "3", "4", "5", "6", "7", "8", "9"], "image_size": 8, "channels": 1, "epsilon": 0.2, '
                           '"heldout": null, "heldout_size": 4, "seed": 0}').parent, "--eval-steps", "0"],
         ("proj", "held-out labels have not been given yet", "robustal label")),
    Case("run --acquisition bald with a model without MC dropout",
         lambda c: RUN(c, "--acquisition", "bald", "--model", str(c.file(
             "plain_nets.py", "from torch import nn\ndef plain(num_classes, in_channels, image_size):\n    return "
             "nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size ** 2, num_classes))\n")) + ":plain"),
         ("'bald' needs MC dropout",), after=nothing_at("out/results.db")),
    Case("select --bogus prints select's usage", lambda c: SELECT(c, "--bogus"),
         ("usage: robustal select", "robustal select: error: unrecognized arguments: --bogus")),
    Case("label --attack bogus", lambda c: LABEL(c, "--attack", "bogus"), ("argument --attack", "'bogus'")),
    # --- a user's model on the command line ---------------------------------------------------------------------
    Case("train --model names a module that does not exist", lambda c: TRAIN("--model", "nowhere_xyz:net"),
         ("--model", "cannot import 'nowhere_xyz'")),
    Case("train --model names a file that does not exist", lambda c: TRAIN("--model", str(c.path("nets.py")) + ":net"),
         ("--model", "nets.py")),
    Case("train --model factory raises", lambda c: user_module(c) or TRAIN("--model", "catalogue_nets:broken"),
         ("--model", "the factory raised ValueError: no")),
    Case("train --model names a file without :factory",
         lambda c: user_module(c) or TRAIN("--model", "catalogue_nets.py"),
         ("'catalogue_nets.py' (--model) names a file", "catalogue_nets.py:FACTORY", "Registered models: ")),
    Case("evaluate --factory whose factory raises names --factory, not --model",
         lambda c: user_module(c) or ["evaluate", "--model", c.ckpt_with("u.pt", model_name="catalogue_nets:other"),
                                      "--factory", "catalogue_nets:broken", "--eval-steps", "0"],
         ("'catalogue_nets:broken' (--factory)", "the factory raised ValueError: no"), forbid=("(--model)",)),
    Case("train --model has no factory name", lambda c: TRAIN("--model", "catalogue_nets:"),
         ("--model", "package.module:factory")),
    Case("train --model whose model has the wrong number of outputs",
         lambda c: bad_nets(c) or TRAIN("--model", "catalogue_bad_nets:seven_outputs"),
         ("'catalogue_bad_nets:seven_outputs' (--model)", "shape (2, 7), expected (2, 10)", "num_classes=10")),
    Case("run --model whose model hard-codes 3 input channels",
         lambda c: bad_nets(c) or RUN(c, "--model", "catalogue_bad_nets:rgb_only"),
         ("'catalogue_bad_nets:rgb_only' (--model)", "fails on a batch of 1×8×8 images", "in_channels=1")),
    Case("train --model whose model has no parameters",
         lambda c: bad_nets(c) or TRAIN("--model", "catalogue_bad_nets:no_parameters"),
         ("'catalogue_bad_nets:no_parameters' (--model)", "no trainable parameters")),
    Case("study of a model returning a tuple leaves DIR/study.toml as it was",
         lambda c: bad_nets(c) or STUDY(c, c.study(GOOD_STUDY().replace('["small-cnn"]',
                                                                        '["catalogue_bad_nets:tuple_output"]')),
                                        "--out", c.copy(c.art.study_dir)),
         ("'catalogue_bad_nets:tuple_output' (models in ", "s.toml", "returns a tuple of 2, not a tensor of logits"),
         after=lambda c: study_copy_unchanged(c)),
    Case("train --dataset image folder with an empty class folder in train/",
         lambda c: TRAIN("--dataset", digit_folders(c, empty_train="seven"), *FOLDER_FLAGS),
         ("digits-dir/train", "seven/", "hold no")),
    Case("train --dataset image folder with a test class absent from train/",
         lambda c: TRAIN("--dataset", digit_folders(c, test_only="nine"), *FOLDER_FLAGS),
         ("digits-dir/test", "nine/", "no counterpart in", "could never learn")),
    Case("train --image-size 2 for an image folder",
         lambda c: TRAIN("--dataset", c.dir("imgs"), "--image-size", "2", "--channels", "1", "--epsilon", "0.1"),
         ARG("--image-size", "an integer >= 4 (pixels)")),
    # --- a checkpoint never makes robustal import code (issue 19.1) -------------------------------------------------
    Case("evaluate a checkpoint that names a module's factory",
         lambda c: ["evaluate", "--model", evil_factory_ckpt(c), "--eval-steps", "0"],
         ("factory.pt", "'evilmod:factory'", "--factory evilmod:factory"), after=no_marker),
    Case("evaluate a checkpoint that names a file's factory",
         lambda c: ["evaluate", "--model", evil_factory_ckpt(c, by_path=True), "--eval-steps", "0"],
         ("factory.pt", "evilmod.py:factory", "--factory"), after=no_marker),
    Case("select with a checkpoint that names a module's factory",
         lambda c: SELECT(c, model=evil_factory_ckpt(c)), ("'evilmod:factory'", "--factory"), after=no_marker),
    Case("retrain with a checkpoint that names a module's factory",
         lambda c: RETRAIN(c, model=evil_factory_ckpt(c)), ("'evilmod:factory'", "--factory"), after=no_marker),
    Case("retrain-study with a checkpoint that names a module's factory",
         lambda c: RS(c, model=evil_factory_ckpt(c)), ("'evilmod:factory'", "--factory"), after=no_marker),
    Case("evaluate --factory for a checkpoint of a registered model",
         lambda c: ["evaluate", "--model", c.art.ckpt, "--factory", "mynets:plain", "--eval-steps", "0"],
         ("--factory mynets:plain", "'small-cnn'", "leave --factory out")),
]

if not torch.cuda.is_available():  # where a GPU exists, --device cuda is valid
    CASES.append(Case("train --device cuda without a GPU", lambda c: TRAIN("--device", "cuda"),
                      ("CUDA", "--device cpu")))

COMMANDS = ("train", "run", "demo", "study", "report", "select", "retrain", "retrain-study", "label", "evaluate",
            "status", "export", "labels")


def test_the_catalogue_covers_every_command():
    assert len(CASES) >= 60
    assert len({c.id for c in CASES}) == len(CASES), "case ids must be unique"
    covered = {c.id.split()[0] for c in CASES}
    assert set(COMMANDS) <= covered, f"commands without a case: {set(COMMANDS) - covered}"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_with_a_clear_message_and_nothing_changed(case: Case, artefacts: Artefacts, tmp_path,
                                                                       monkeypatch, capsys, request):
    home = tmp_path / "case"
    home.mkdir()
    monkeypatch.chdir(home)  # a default output folder (runs/...) would land here, inside the snapshot
    ctx = Ctx(home, artefacts, request)
    argv = case.argv(ctx)
    watched = (tmp_path, artefacts.root)
    before = snapshot(*watched)

    result = call(argv, capsys)

    after = snapshot(*watched)  # before the case's own check, which may open files

    command = "robustal " + " ".join(map(str, argv))
    assert result.code != 0, f"{command} exited 0; stdout:\n{result.out}\nstderr:\n{result.err}"
    problems = []  # every problem of the case, so that one failure reports them all
    if "Traceback" in result.err + result.out:
        problems.append("printed a traceback")
    if "error" not in result.err:
        problems.append("no error message on stderr")
    missing = [f for f in case.expect if f not in result.err]
    if missing:
        problems.append(f"the message lacks {missing}")
    present = [f for f in case.forbid if f in result.err]
    if present:
        problems.append(f"the message should not mention {present}")
    foreign = result.foreign_warnings()
    if foreign:
        problems.append("other libraries' warnings reach the terminal:\n  " + "\n  ".join(foreign))
    diff = snapshot_diff(before, after)
    if diff:
        problems.append("files were created, changed or lost:\n  " + "\n  ".join(diff))
    if case.after is not None:
        try:
            case.after(ctx)
        except AssertionError as e:
            problems.append(str(e).split("\nassert")[0])
    assert not problems, f"{command} (exit {result.code}):\n- " + "\n- ".join(problems) + f"\nstderr:\n{result.err}"


def test_the_shared_artefacts_are_intact(artefacts: Artefacts):
    """The artefacts the catalogue reads are what it expects (a broken fixture would make every case pass)."""
    obj = torch.load(artefacts.ckpt, weights_only=True)
    assert obj["train_size"] == TRAIN_SIZE
    assert Store(artefacts.run_dir).status("run") == "finished"
    assert len(Store(artefacts.study_dir).runs()) == 2
    assert (artefacts.rs_dir / "results.csv").is_file() and (artefacts.rs_dir / "settings.json").is_file()
    assert artefacts.selection.read_text().startswith("rank,index,score")
    assert shutil.which("touch"), "the malicious-pickle cases need touch(1)"
