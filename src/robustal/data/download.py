"""Download, checksum and cache of the public datasets' files.

:func:`fetch` returns the path of a file in the cache folder, downloading it first when it is missing. Every file is
checked against its published checksum before it is used. A download lands in ``<file>.<random>.part`` (fsynced,
then verified) before an atomic ``os.replace`` gives it its real name, so an interrupted download never leaves a file
that passes as complete, and processes that download the same file at once (a study's workers) never write into each
other's copy; a ``.part`` file left by a killed process is never read, and is removed by the next successful
download of that file once it is an hour old (younger ones may belong to a download in progress). A verified file gets a
small ``<file>.verified`` marker (its size, mtime and digest), so later loads skip re-hashing 150 MB; touching or
replacing the file invalidates the marker.

A cached file that fails its checksum (a corrupt or foreign file at the cache path) is not trusted: one fresh copy is
downloaded beside it, and only once that copy verifies does it replace the bad file (with a logged warning). When no
fresh copy can be had (offline), :class:`~robustal.errors.ChecksumError` says which file to delete or replace.
There is no "skip the checksum" switch: a file placed by hand must be the published one.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import http.client
import json
import logging
import os
import secrets
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

from robustal.errors import ChecksumError, ConfigError, DataError

logger = logging.getLogger(__name__)

#: Bytes read from the network (and from disk when hashing) at a time.
CHUNK = 1 << 20
#: Seconds to wait on a silent connection before giving up on a URL.
TIMEOUT = 60
#: Seconds after which another process's unfinished ``.part`` file is taken as abandoned.
STALE_PART_AGE = 3600
_USER_AGENT = "robustal (https://pypi.org/project/robustal)"


@dataclass(frozen=True)
class Resource:
    """One downloadable file and its published checksum.

    Attributes:
        url: Where to download it from.
        filename: The name it gets in the cache folder.
        md5, sha256: Its published hex digest (at least one; sha256 is checked when both are given).
        mirrors: Further URLs tried in order when ``url`` fails.
    """

    url: str
    filename: str
    md5: str | None = None
    sha256: str | None = None
    mirrors: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not (self.md5 or self.sha256):
            raise ConfigError(f"Resource {self.filename!r} needs a published checksum: give md5= or sha256=.")
        if not self.filename or Path(self.filename).name != self.filename:
            raise ConfigError(f"Resource filename must be a plain file name; got {self.filename!r}.")

    @property
    def urls(self) -> tuple[str, ...]:
        """``url`` followed by the mirrors."""
        return (self.url, *self.mirrors)

    @property
    def checksum(self) -> tuple[str, str]:
        """``(algorithm, expected lower-case hex digest)``; sha256 when given, else md5."""
        if self.sha256:
            return "sha256", self.sha256.lower()
        return "md5", str(self.md5).lower()


def fetch(resource: Resource, data_dir: str | Path, *, progress: bool = True) -> Path:
    """The verified local copy of ``resource`` in ``data_dir``, downloaded first if needed.

    Args:
        resource: What to fetch.
        data_dir: The folder the file is cached in (created if missing).
        progress: Show a progress bar on stderr while downloading.

    Returns:
        ``data_dir / resource.filename``, whose checksum matches the published one.

    Raises:
        DataError: ``data_dir`` cannot be written, or every URL failed (the message names the URLs and where to put
            the file by hand).
        ChecksumError: The downloaded file, or a cached file that could not be replaced, has the wrong checksum.
    """
    data_dir = Path(data_dir).expanduser()
    path = data_dir / resource.filename
    algo, expected = resource.checksum
    bad_cached: str | None = None
    if path.is_file():
        if _marker_ok(path, algo, expected):
            return path
        actual = _hash_file(path, algo)
        if actual == expected:
            _write_marker(path, algo, actual)
            return path
        bad_cached = actual
        logger.warning("%s has %s %s, not the published %s; downloading a fresh copy.", path, algo, actual, expected)

    try:
        path = _download(resource, data_dir, progress)
    except DataError as e:
        if bad_cached is None:
            raise
        raise ChecksumError(
            f"{path} has {algo} {bad_cached}, but the published {algo} is {expected}: the file is corrupt, truncated "
            f"or not the published one. Delete it and re-run to download it again (a fresh download failed too: {e})"
        ) from None
    _write_marker(path, algo, expected)
    return path


def _download(resource: Resource, data_dir: Path, progress: bool) -> Path:
    """Download to ``<file>.<random>.part``, verify, and move into place; try each URL in turn."""
    path = data_dir / resource.filename
    algo, expected = resource.checksum
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        part = data_dir / f"{resource.filename}.{os.getpid()}-{secrets.token_hex(4)}.part"
        out = open(part, "xb")  # closed below, on every path; the umask sets its mode
    except OSError as e:
        raise DataError(f"Cannot write to the data folder {data_dir} ({e.strerror or e}). Choose a writable folder "
                        f"with --data-dir or the ROBUSTAL_DATA environment variable.") from None
    failures: list[str] = []
    mismatch: ChecksumError | None = None
    try:
        for url in resource.urls:
            out.seek(0)
            out.truncate()
            try:
                actual = _stream(url, out, part, resource.filename, algo, progress)
            except _NetworkError as e:
                failures.append(f"{url}: {e}")
                logger.warning("Download of %s failed: %s", url, e)
                continue
            if actual != expected:
                mismatch = ChecksumError(
                    f"Downloaded {url} to {part}, but its {algo} is {actual} and the published {algo} is {expected}: "
                    f"the download is corrupt or the server sent another file. The bad file {part} was deleted; "
                    f"re-run to download it again, or place the published file at {path} yourself.")
                failures.append(f"{url}: wrong {algo} {actual}")
                logger.warning("%s", mismatch)
                continue
            out.flush()
            os.fsync(out.fileno())
            out.close()
            os.replace(part, path)
            _fsync_dir(data_dir)
            _remove_stale_parts(path)
            logger.info("Downloaded %s to %s (%s verified).", url, path, algo)
            return path
    except OSError as e:  # fsync or rename of the .part failed
        raise _write_error(part, e) from None
    finally:
        if not out.closed:
            out.close()
        part.unlink(missing_ok=True)
    if mismatch is not None:
        raise mismatch
    tried = "\n  ".join(failures)
    raise DataError(f"Could not download {resource.filename}; tried:\n  {tried}\n"
                    f"Check the network connection, or download the file yourself and place it at {path} "
                    f"(its {algo} must be {expected}).")


class _NetworkError(Exception):
    """A URL could not be downloaded completely (reported with the URL, then the next mirror is tried)."""


def _write_error(part: Path, e: OSError) -> DataError:
    return DataError(f"Could not write {part} ({e.strerror or e}). Free some space, or choose another folder "
                     "with --data-dir or the ROBUSTAL_DATA environment variable.")


def _stream(url: str, out: BinaryIO, part: Path, name: str, algo: str, progress: bool) -> str:
    """Copy ``url`` into the open file ``out``, hashing as it goes; the hex digest of what was received.

    Raises:
        _NetworkError: The URL failed or the connection closed early.
        DataError: Writing to ``out`` failed.
    """
    digest = hashlib.new(algo)
    received = 0
    try:
        request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            logger.info("Downloading %s to %s", url, part)
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=name,
                      file=sys.stderr, disable=None if progress else True, leave=False) as bar:
                while chunk := response.read(CHUNK):
                    try:
                        out.write(chunk)
                    except OSError as e:
                        raise _write_error(part, e) from None
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as e:
        raise _NetworkError(f"HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        raise _NetworkError(str(e.reason)) from None
    except (http.client.HTTPException, OSError) as e:  # resets, timeouts, TLS errors, IncompleteRead
        raise _NetworkError(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__) from None
    except ValueError as e:  # a malformed URL
        raise _NetworkError(str(e)) from None
    # http.client does not raise when the server closes the connection early, so compare with Content-Length.
    if total is not None and received != total:
        raise _NetworkError(f"connection closed after {received} of {total} bytes")
    return digest.hexdigest()


def _hash_file(path: Path, algo: str) -> str:
    try:
        digest = hashlib.new(algo)
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                digest.update(chunk)
        return digest.hexdigest()
    except OSError as e:
        raise DataError(f"Cannot read {path} ({e.strerror or e}). Check its permissions, or delete it and re-run "
                        "to download it again.") from None


def _marker(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _marker_ok(path: Path, algo: str, expected: str) -> bool:
    """Whether ``path`` was verified against ``expected`` and has not changed (size and mtime) since."""
    try:
        st = path.stat()
        record = json.loads(_marker(path).read_text())
        return (record.get(algo) == expected and record.get("size") == st.st_size
                and record.get("mtime_ns") == st.st_mtime_ns)
    except (OSError, ValueError, AttributeError):
        return False


def _write_marker(path: Path, algo: str, digest: str) -> None:
    """Record that ``path`` has ``digest``; best effort (a read-only cache just re-hashes next time)."""
    marker = _marker(path)
    tmp = marker.with_name(f"{marker.name}.{os.getpid()}.tmp")
    try:
        st = path.stat()
        tmp.write_text(json.dumps({"size": st.st_size, "mtime_ns": st.st_mtime_ns, algo: digest}))
        os.replace(tmp, marker)
    except OSError:
        logger.debug("Could not write %s; %s will be re-hashed next time.", marker, path)
        with contextlib.suppress(OSError):
            tmp.unlink()


def _remove_stale_parts(path: Path) -> None:
    """Delete ``.part`` files of ``path`` left by killed downloads (untouched for :data:`STALE_PART_AGE` s)."""
    now = time.time()
    for part in path.parent.glob(glob.escape(path.name) + "*.part"):
        with contextlib.suppress(OSError):
            if now - part.stat().st_mtime > STALE_PART_AGE:
                part.unlink()


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
