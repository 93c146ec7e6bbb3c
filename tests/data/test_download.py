"""fetch(): download from a local HTTP server, verify, cache, and fail helpfully."""

from __future__ import annotations

import hashlib
import logging
import os
import sys

import pytest

from robustal.data import download
from robustal.data.download import Resource, fetch
from robustal.errors import ChecksumError, ConfigError, DataError

PAYLOAD = bytes(range(256)) * 4000  # ~1 MB: several read chunks' worth when CHUNK is small
NAME = "blob.bin"
MD5 = hashlib.md5(PAYLOAD).hexdigest()


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    monkeypatch.setattr(download, "CHUNK", 64 * 1024)


@pytest.fixture
def served(server):
    (server.root / NAME).write_bytes(PAYLOAD)
    return server


def res(server, md5=MD5, **kw) -> Resource:
    return Resource(url=server.url + NAME, filename=NAME, md5=md5, **kw)


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "cache"


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_download_cache_then_offline(served, tmp_path, monkeypatch):
    data_dir = tmp_path / "cache" / "sub"  # created on demand
    path = fetch(res(served), data_dir, progress=False)
    assert path == data_dir / NAME and path.read_bytes() == PAYLOAD
    assert leftovers(data_dir) == [NAME, NAME + ".verified"]
    assert served.requests == [NAME]

    served.stop()
    monkeypatch.setattr(download, "_hash_file", lambda *a: pytest.fail("a verified file was hashed again"))
    assert fetch(res(served), data_dir, progress=False) == path
    assert served.requests == [NAME]


def test_downloaded_file_mode_follows_the_umask(served, tmp_path):
    old = os.umask(0o022)
    try:
        path = fetch(res(served), tmp_path / "cache", progress=False)
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644  # readable by the other users of a shared cache


def test_sha256_and_progress_bar(served, tmp_path, capsys, monkeypatch):
    r = Resource(url=served.url + NAME, filename=NAME, sha256=hashlib.sha256(PAYLOAD).hexdigest().upper())
    assert fetch(r, tmp_path / "piped").read_bytes() == PAYLOAD
    assert capsys.readouterr().err == ""  # stderr is no terminal: no bar, no escape codes (issue 27.4)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert fetch(r, tmp_path / "terminal").read_bytes() == PAYLOAD
    assert NAME in capsys.readouterr().err  # on a terminal: tqdm's bar, on stderr


def test_file_placed_by_hand_is_used_offline(tmp_path):
    (tmp_path / NAME).write_bytes(PAYLOAD)
    r = Resource(url="http://127.0.0.1:9/never", filename=NAME, md5=MD5)
    assert fetch(r, tmp_path, progress=False) == tmp_path / NAME
    assert (tmp_path / (NAME + ".verified")).is_file()


def test_wrong_checksum_from_server(served, cache):
    with pytest.raises(ChecksumError) as e:
        fetch(res(served, md5="0" * 32), cache, progress=False)
    msg = str(e.value)
    assert NAME in msg and "0" * 32 in msg and MD5 in msg
    assert "deleted" in msg and "re-run" in msg
    assert leftovers(cache) == []  # neither the file nor its .part


def test_interrupted_download_leaves_nothing_and_retry_succeeds(served, cache):
    served.drop.add(NAME)
    with pytest.raises(DataError, match=r"connection closed after \d+ of \d+ bytes") as e:
        fetch(res(served), cache, progress=False)
    assert served.url + NAME in str(e.value) and str(cache / NAME) in str(e.value)
    assert leftovers(cache) == []

    served.drop.clear()
    assert fetch(res(served), cache, progress=False).read_bytes() == PAYLOAD


def test_stale_part_files(served, cache):
    cache.mkdir()
    old, fresh = cache / (NAME + ".part"), cache / (NAME + ".x1y2.part")
    old.write_bytes(PAYLOAD[:1000])  # left by a process killed long ago: never taken for the file, then removed
    fresh.write_bytes(PAYLOAD[:1000])  # maybe another process's download in progress: left alone
    os.utime(old, (0, 0))
    assert fetch(res(served), cache, progress=False).read_bytes() == PAYLOAD
    assert leftovers(cache) == sorted([NAME, fresh.name, NAME + ".verified"])


def test_mirror_used_when_first_url_fails(served, tmp_path):
    r = Resource(url=served.url + "missing/" + NAME, filename=NAME, md5=MD5,
                 mirrors=(served.url + NAME,))
    assert fetch(r, tmp_path, progress=False).read_bytes() == PAYLOAD
    assert served.requests == ["missing/" + NAME, NAME]


def test_all_urls_fail(served, tmp_path):
    r = res(served, mirrors=(served.url + "elsewhere/" + NAME,))
    served.stop()
    with pytest.raises(DataError) as e:
        fetch(r, tmp_path / "d", progress=False)
    msg = str(e.value)
    assert r.url in msg and r.mirrors[0] in msg
    assert f"place it at {tmp_path / 'd' / NAME}" in msg and r.md5 in msg
    assert leftovers(tmp_path / "d") == []


def test_http_error_is_reported(server, tmp_path):
    with pytest.raises(DataError, match="HTTP 404"):
        fetch(res(server), tmp_path, progress=False)


def test_unwritable_data_dir(served, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")  # even root cannot create a folder below a regular file
    with pytest.raises(DataError) as e:
        fetch(res(served), blocker / "sub", progress=False)
    msg = str(e.value)
    assert str(blocker / "sub") in msg and "--data-dir" in msg and "ROBUSTAL_DATA" in msg
    assert served.requests == []


def test_corrupt_cached_file_is_replaced_by_a_verified_download(served, tmp_path, caplog):
    path = fetch(res(served), tmp_path, progress=False)
    path.write_bytes(b"garbage")  # changes size and mtime: the marker no longer vouches for it
    with caplog.at_level(logging.WARNING, logger="robustal.data.download"):
        assert fetch(res(served), tmp_path, progress=False).read_bytes() == PAYLOAD
    assert "downloading a fresh copy" in caplog.text and str(path) in caplog.text
    assert len(served.requests) == 2


def test_corrupt_cached_file_offline_is_a_checksum_error(served, tmp_path):
    path = fetch(res(served), tmp_path, progress=False)
    data = bytearray(path.read_bytes())
    data[10] ^= 0xFF  # same size ...
    st = path.stat()
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # ... but a new mtime
    served.stop()
    with pytest.raises(ChecksumError) as e:
        fetch(res(served), tmp_path, progress=False)
    msg = str(e.value)
    assert str(path) in msg and MD5 in msg and hashlib.md5(data).hexdigest() in msg
    assert "Delete it and re-run" in msg
    assert path.read_bytes() == data  # the user's file is left alone


def test_marker_does_not_vouch_for_another_checksum(served, tmp_path):
    fetch(res(served), tmp_path, progress=False)
    served.stop()
    with pytest.raises(ChecksumError):  # same file, but a resource that expects something else
        fetch(res(served, md5="f" * 32), tmp_path, progress=False)


def test_resource_needs_a_checksum():
    with pytest.raises(ConfigError, match="checksum"):
        Resource(url="http://x/a", filename="a")
    with pytest.raises(ConfigError, match="plain file name"):
        Resource(url="http://x/a", filename="../a", md5="0" * 32)
