"""A Ray cluster as users start one: ``ray start --head`` in its own process, on localhost, with the token
authentication Ray 2.60 turns on for it, and ``robustal study --executor ray --address`` run against it."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from robustal.errors import ConfigError
from robustal.storage.store import Store

SRC = str(Path(__file__).resolve().parents[2] / "src")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_address_where_no_cluster_answers_is_refused_at_once():
    pytest.importorskip("ray")
    from robustal.studies.ray_cluster import check_cluster

    address = f"127.0.0.1:{_free_port()}"
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=f"No Ray cluster answers at {address} \\(from --address\\).*ray start"):
        check_cluster(address)
    assert time.perf_counter() - started < 10  # ray.init alone waits minutes there


TOKEN = "f" * 32


@pytest.fixture
def token_gcs():
    """A gRPC server answering Ray's ``GetClusterId`` as a token-authenticated GCS does (the real one is started in
    the slow test below): the cluster id for the right token, ``UNAUTHENTICATED`` otherwise."""
    pytest.importorskip("ray")
    from concurrent import futures

    import grpc
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    class Gcs(gcs_service_pb2_grpc.NodeInfoGcsServiceServicer):
        def GetClusterId(self, request, context):  # noqa: N802 - gRPC's name
            if dict(context.invocation_metadata()).get("authorization") != f"Bearer {TOKEN}":
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "InvalidAuthToken: Authentication token is missing "
                                                               "or incorrect")
            return gcs_service_pb2.GetClusterIdReply()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    gcs_service_pb2_grpc.add_NodeInfoGcsServiceServicer_to_server(Gcs(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(None)


@pytest.fixture
def no_token(monkeypatch, tmp_path):
    """No Ray token on this machine: an empty home, no RAY_AUTH_* variables."""
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))


def test_a_token_cluster_without_a_token_here_is_refused_saying_what_to_set(token_gcs, no_token):
    from robustal.studies.ray_cluster import check_cluster

    with pytest.raises(ConfigError, match="uses token authentication and no token was found") as err:
        check_cluster(token_gcs)
    assert "RAY_AUTH_TOKEN" in str(err.value) and "ray get-auth-token" in str(err.value)


def test_a_wrong_token_is_refused_naming_where_it_came_from(token_gcs, no_token, monkeypatch, tmp_path):
    from robustal.studies.ray_cluster import check_cluster

    monkeypatch.setenv("RAY_AUTH_TOKEN", "0" * 32)
    with pytest.raises(ConfigError, match="refuses the token from RAY_AUTH_TOKEN"):
        check_cluster(token_gcs)
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("1" * 32)
    with pytest.raises(ConfigError, match="refuses the token from ~/.ray/auth_token"):
        check_cluster(token_gcs)


def test_the_right_token_turns_token_mode_on_while_connected(token_gcs, no_token, monkeypatch, tmp_path):
    from robustal.studies.ray_cluster import _token_mode, check_cluster

    token_file = tmp_path / "token.txt"
    token_file.write_text(TOKEN)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token_file))
    assert check_cluster(token_gcs) is True
    with _token_mode(True):
        assert os.environ["RAY_AUTH_MODE"] == "token"
    assert "RAY_AUTH_MODE" not in os.environ  # restored afterwards
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    with pytest.raises(ConfigError, match="RAY_AUTH_MODE=disabled is set here"):
        check_cluster(token_gcs)


def _env(home: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    return {**env, "HOME": str(home), "PYTHONPATH": SRC, "RAY_USAGE_STATS_ENABLED": "0", **extra}


@contextlib.contextmanager
def ray_head(home: Path, port: int):
    """``ray start --head --block`` in its own process group (its own temporary folder), stopped on exit by
    terminating that process (and killing its group if it lingers): ``ray stop`` would stop every Ray process of
    this machine, other people's included."""
    ray = str(Path(sys.executable).parent / "ray")
    temp = tempfile.mkdtemp(prefix="rh", dir="/tmp")  # Ray's socket paths must stay short
    log = Path(temp) / "head.log"
    with open(log, "w") as out:
        head = subprocess.Popen([ray, "start", "--head", "--block", "--port", str(port), "--temp-dir", temp,
                                 "--num-cpus", "2", "--include-dashboard=false", "--disable-usage-stats",
                                 "--ray-client-server-port", str(_free_port())],
                                stdout=out, stderr=subprocess.STDOUT, env=_env(home), start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while "Ray runtime started" not in log.read_text():
            if head.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"ray start --head did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield log
    finally:
        head.terminate()  # `ray start --block` stops the processes it started on SIGTERM (about 2 s)
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(head.pid, signal.SIGKILL)
            head.wait(timeout=10)
        _stop_leftovers(temp)
        shutil.rmtree(temp, ignore_errors=True)


def _stop_leftovers(temp: str) -> None:
    """Ray processes of this head that left its process group (they name its temporary folder), by their ids."""
    deadline = time.monotonic() + 20
    while True:
        ps = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout.splitlines()
        left = [int(line.split(None, 1)[0]) for line in ps if temp in line]
        if not left:
            return
        if time.monotonic() > deadline:
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            return
        time.sleep(0.5)


def _study(path: Path, address: str, out: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "robustal.cli", "study", str(path), "--executor", "ray",
                           "--address", address, "--out", str(out), "--no-progress"],
                          capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow
def test_a_study_runs_on_a_token_authenticated_cluster_started_with_ray_start(make_study, tmp_path):
    """The cluster of issue 18: a token exists on the machine (any earlier local ray.init writes one), so
    ``ray start --head`` turns token authentication on; the driver finds the token and connects."""
    pytest.importorskip("ray")
    home, stranger = tmp_path / "home", tmp_path / "stranger"
    home.mkdir()
    stranger.mkdir()
    subprocess.run([str(Path(sys.executable).parent / "ray"), "get-auth-token", "--generate"], env=_env(home),
                   capture_output=True, check=True)
    assert (home / ".ray" / "auth_token").is_file()
    port = _free_port()
    address = f"127.0.0.1:{port}"
    path = make_study(acquisitions=("random", "entropy"))
    with ray_head(home, port) as log:
        assert "Token authentication is enabled" in log.read_text()

        started = time.perf_counter()  # from another account (no token): refused at once, saying what to set
        refused = _study(path, address, tmp_path / "refused", _env(stranger))
        elapsed = time.perf_counter() - started
        assert refused.returncode == 2 and elapsed < 30, refused.stderr
        assert "uses token authentication and no token was found" in refused.stderr
        assert "RAY_AUTH_TOKEN" in refused.stderr and "ray get-auth-token" in refused.stderr
        assert "InvalidAuthToken" not in refused.stderr and "Traceback" not in refused.stderr
        assert not (tmp_path / "refused").exists()

        wrong = _study(path, address, tmp_path / "wrong", _env(stranger, RAY_AUTH_TOKEN="0" * 32))
        assert wrong.returncode == 2 and "refuses the token from RAY_AUTH_TOKEN" in wrong.stderr, wrong.stderr

        done = _study(path, address, tmp_path / "out", _env(home))  # the head's own account: token found
        assert done.returncode == 0, done.stderr
        assert "InvalidAuthToken" not in done.stderr
    store = Store(tmp_path / "out")
    assert {r["name"]: r["status"] for r in store.runs()} == {
        "digits-small-cnn-standard-random-s0": "finished", "digits-small-cnn-standard-entropy-s0": "finished"}
    for name in ("digits-small-cnn-standard-random-s0", "digits-small-cnn-standard-entropy-s0"):
        assert [s.labeled for s in store.stages(name)] == [30, 60, 90]
        assert store.load_checkpoint(name, 2)["labeled"].numel() == 90  # the final checkpoint came back
