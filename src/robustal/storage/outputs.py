"""Writing results safely: atomic writes with the permissions a plain ``open`` would give, output paths checked
before any work starts, one robustal process at a time per results folder, and torch files read back without
running code.

A result that is computed and then cannot be written is lost work, so every command checks its outputs first
(:func:`check_output_file`, :func:`check_output_dir`); a crash never leaves a half-written file
(:func:`atomic_write_bytes`); and two processes never compute the same results into one folder (:func:`folder_lock`).
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from robustal.errors import ConfigError, StoreError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and an atomic rename.

    The file gets the mode a plain ``open(path, "wb")`` would give (0666 minus the umask), not the 0600 of a
    temporary file: results are shared on clusters.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), 0o666 & ~_umask())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_torch_save(obj: object, path: Path) -> None:
    """``torch.save`` through a temporary file and an atomic rename."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def safe_torch_load(path: Path) -> object:
    """``torch.load(path, weights_only=True)`` on the CPU; a ValueError with a one-line reason when it fails.

    The reason never suggests ``weights_only=False``: a file that needs it holds pickled code, which robustal does
    not run.
    """
    import pickle
    import warnings

    import torch

    if path.is_dir():
        raise ValueError("it is a directory, not a file")
    try:
        with warnings.catch_warnings():  # torch's advice on foreign pickles is not the user's to act on
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "GLOBAL" in str(e) or _imports_objects(path):  # it names classes or functions to import: pickled code
            raise ValueError("it holds pickled Python objects, not only tensors and plain values; robustal does not "
                             "run code from files") from None
        raise ValueError("it is damaged or not a torch file (it cannot be unpickled)") from None
    except Exception as e:  # noqa: BLE001 - truncated (EOFError, RuntimeError, OSError), wrong format: "unusable"
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        first = first.split(". ")[0][:120]  # torch's messages run on: their first sentence says enough
        raise ValueError(f"it is truncated, damaged or not a torch file ({type(e).__name__}"
                         f"{': ' + first if first else ''})") from None


def _imports_objects(path: Path) -> bool:
    """Whether ``path`` is a plain pickle that imports classes or functions (parsed with pickletools, never run)."""
    import pickletools

    try:
        with path.open("rb") as f:
            return any(op.name in ("GLOBAL", "STACK_GLOBAL", "INST", "OBJ") for op, _, _ in pickletools.genops(f))
    except Exception:  # noqa: BLE001 - not a pickle stream at all
        return False


def _writable_dir(folder: Path, flag: str) -> None:
    """``folder`` exists (or can be made) and accepts new files; else a ConfigError naming ``flag``."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".robustal-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ConfigError(f"{flag} {str(folder)!r}: cannot write there ({e.strerror or e}). Choose a writable "
                          "location.") from None


def check_output_file(path: str | Path | None, flag: str, example: str = "model.pt") -> Path | None:
    """Check, before any work, that a result file can be written at ``path`` (None: nothing to check).

    Refuses an empty path, a directory, and a folder that does not accept new files (``/proc``, read-only disks).
    """
    if path is None:
        return None
    if str(path).strip() == "":
        raise ConfigError(f"{flag} is empty; give a file name.")
    path = Path(path).expanduser()
    if path.is_dir():
        raise ConfigError(f"{flag} {str(path)!r} is a directory; give a file name (e.g. {path / example}).")
    _writable_dir(path.parent, flag)
    return path


def check_output_dir(path: str | Path | None, flag: str) -> Path | None:
    """Check, before any work, that ``path`` is (or can become) a writable folder (None: nothing to check)."""
    if path is None:
        return None
    if str(path).strip() == "":
        raise ConfigError(f"{flag} is empty; give a folder.")
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {str(path)!r} is a file, not a folder; give a folder (it is created if needed).")
    _writable_dir(path, flag)
    return path


#: The lock file of a results folder.
LOCK_FILE = ".robustal.lock"


@contextlib.contextmanager
def folder_lock(folder: str | Path, what: str) -> Iterator[None]:
    """Hold ``folder``'s lock while the block runs: a second robustal process writing there is refused at once.

    An OS-level lock (``flock``), so it is released when the process ends, even by SIGKILL. ``what`` (the command)
    is written into the lock file, so that the refusal can say who holds it. Where ``fcntl`` does not exist
    (Windows) the block runs unlocked.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on POSIX
        yield
        return
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    f = open(path, "a+")  # noqa: SIM115 - held for the whole block
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(f)
            raise StoreError(f"{folder} is in use by another robustal process ({holder}). Wait for it to finish, "
                             "or write to another --out folder.") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}, {what}, since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        f.flush()
        yield
    finally:
        f.close()  # closing releases the lock


def _first_missing(path: Path) -> Path | None:
    """The topmost folder of ``path`` that does not exist yet (None: ``path`` exists)."""
    path = Path(path).absolute()
    if path.exists():
        return None
    while not path.parent.exists():
        path = path.parent
    return path


def _remove_if_bare(folder: Path, top: Path) -> None:
    """Remove ``folder`` when it holds nothing but its lock file (and empty folders), and every empty folder up to
    ``top``, the first one this process created: a refused command leaves no folder behind."""
    import shutil

    folder = Path(folder).absolute()
    if not folder.is_dir() or any(p.is_file() or p.is_symlink() for p in folder.rglob("*") if p.name != LOCK_FILE):
        return
    shutil.rmtree(folder, ignore_errors=True)
    while folder != top and folder.parent != folder:
        folder = folder.parent
        try:
            folder.rmdir()  # only while empty
        except OSError:
            return


@contextlib.contextmanager
def claimed_folder(path: str | Path, flag: str, what: str) -> Iterator[Path]:
    """:func:`check_output_dir` and :func:`folder_lock` together; when the block fails and the folder was created
    here and holds nothing but the lock file, the folder is removed again (a refused command leaves no trace)."""
    top = _first_missing(Path(path).expanduser())
    folder = check_output_dir(path, flag)
    try:
        with folder_lock(folder, what):
            yield folder
    except BaseException:
        if top is not None:
            _remove_if_bare(folder, top)
        raise


@contextlib.contextmanager
def undone_on_failure(folder: str | Path, names: tuple[str, ...], progress) -> Iterator[None]:
    """Put ``folder``'s entries ``names`` back as they were when the block fails before ``progress()`` changed
    (e.g. before any result was stored): a file that existed gets its bytes back, an entry that did not is removed.
    Entries that were folders are left alone."""
    import shutil

    folder = Path(folder)
    saved = {}
    for name in names:
        p = folder / name
        if not p.exists() and not p.is_symlink():
            saved[name] = None
        elif p.is_file():
            saved[name] = p.read_bytes()
    start = progress()
    try:
        yield
    except BaseException:
        if progress() == start:
            for name, data in saved.items():
                p = folder / name
                if data is not None:
                    if not p.is_file() or p.read_bytes() != data:
                        atomic_write_bytes(p, data)
                elif p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
        raise


#: Seconds to wait for a lock's holder to write who it is: it takes the lock first and writes just after, so a
#: process refused in between would otherwise find the file empty (seen on a loaded machine).
HOLDER_WAIT = 2.0


def _read_holder(f) -> str:
    """What the holder of ``f``'s lock wrote (pid, command, start), waiting up to :data:`HOLDER_WAIT` seconds for it."""
    deadline = time.monotonic() + HOLDER_WAIT
    while True:
        f.seek(0)
        holder = f.read().strip()
        if holder or time.monotonic() >= deadline:
            return holder or "another process"
        time.sleep(0.02)


def lock_holder(folder: str | Path) -> str | None:
    """Who holds ``folder``'s lock now (what :func:`folder_lock` wrote: pid, command, start), or None when no
    process does: a run recorded as ``running`` in a folder nobody holds was stopped without finishing (killed).

    Reads only: the lock file is neither created nor changed. Where ``fcntl`` does not exist, None.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on POSIX
        return None
    path = Path(folder) / LOCK_FILE
    try:
        f = open(path)  # noqa: SIM115 - closed below
    except OSError:
        return None
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(f)
        except OSError:  # a file system that cannot lock: nobody can be known to hold it
            return None
        fcntl.flock(f, fcntl.LOCK_UN)
        return None
