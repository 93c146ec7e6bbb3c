"""Connecting the Ray executor to a cluster as people start one (``ray start --head``), token authentication included.

Ray 2.60 turns token authentication on for ``ray start --head`` whenever a token exists on that machine
(``~/.ray/auth_token``, which any earlier local ``ray.init()`` writes), but a driver that names the cluster's address
sends no token unless ``RAY_AUTH_MODE=token`` is set: it then prints ``InvalidAuthToken`` for 20 s and ends in a
``ConnectionError``. Before ``ray.init``, robustal asks the cluster's GCS once (one gRPC call, a few seconds at most)
whether it answers and whether it wants a token; it turns token mode on when the cluster wants one and a token is
found here (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH``, or ``~/.ray/auth_token``), and otherwise refuses at once,
saying what to set.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from robustal.errors import ConfigError

#: Seconds the GCS may take to answer the probe.
PROBE_TIMEOUT = 5
#: Ray's variables: the authentication mode, the token itself, a file holding it, and the default address.
AUTH_MODE, TOKEN, TOKEN_PATH, ADDRESS = "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS"

TOKEN_HELP = (f"Set {TOKEN} to the output of `ray get-auth-token` run on the head node (or copy the head's "
              f"~/.ray/auth_token to ~/.ray/auth_token here, or point {TOKEN_PATH} at a copy) and run again")


def import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError("The Ray executor needs Ray: pip install 'robustal[ray]' "
                          "(or use --executor local).") from None
    return ray


def _local_token() -> tuple[str | None, str | None]:
    """The token Ray would send from this machine, and where it comes from (None, None: no token)."""
    try:
        from ray._raylet import AuthenticationTokenLoader
    except ImportError:  # a Ray without token authentication
        return None, None
    loader = AuthenticationTokenLoader.instance()
    loader.reset_cache()  # read now, and leave nothing cached: the environment may change before ray.init
    try:
        if not loader.has_token(ignore_auth_mode=True):
            return None, None
        where = TOKEN if os.environ.get(TOKEN) else os.environ.get(TOKEN_PATH) or "~/.ray/auth_token"
        return loader.get_raw_token(ignore_auth_mode=True), where
    finally:
        loader.reset_cache()


def _probe(address: str, token: str | None):
    """The gRPC status code of asking the GCS at ``address`` for its cluster id (None: it answered)."""
    import grpc
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    with grpc.insecure_channel(address) as channel:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        try:
            stub.GetClusterId(gcs_service_pb2.GetClusterIdRequest(), timeout=PROBE_TIMEOUT, metadata=metadata)
        except grpc.RpcError as e:
            return e.code(), e.details()
    return None, None


def check_cluster(address: str, source: str = "--address") -> bool:
    """Check that the Ray cluster at ``host:port`` answers and that this machine can authenticate to it; returns
    whether the connection needs token mode. ConfigError, at once, with what to do otherwise."""
    try:
        import grpc
    except ImportError:  # cannot ask: leave it to ray.init
        return False
    code, details = _probe(address, None)
    if code is None:
        return False
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        raise ConfigError(f"No Ray cluster answers at {address} (from {source}): {details}. Start one with "
                          "`ray start --head --port PORT` and give the address it prints, or leave --address out "
                          "to start a local Ray instance.")
    if code != grpc.StatusCode.UNAUTHENTICATED:
        return False  # something else: ray.init says what
    token, where = _local_token()
    if token is None:
        raise ConfigError(f"The Ray cluster at {address} (from {source}) uses token authentication and no token was "
                          f"found on this machine. {TOKEN_HELP}.")
    code, details = _probe(address, token)
    if code == grpc.StatusCode.UNAUTHENTICATED:
        raise ConfigError(f"The Ray cluster at {address} (from {source}) refuses the token from {where}: it is not "
                          f"that cluster's. {TOKEN_HELP}.")
    if os.environ.get(AUTH_MODE, "").lower() == "disabled":
        raise ConfigError(f"The Ray cluster at {address} (from {source}) uses token authentication, but "
                          f"{AUTH_MODE}=disabled is set here: unset it (or set {AUTH_MODE}=token) and run again.")
    return True


@contextlib.contextmanager
def _token_mode(on: bool) -> Iterator[None]:
    """``RAY_AUTH_MODE=token`` for this process while connected (what ``ray.init(address="auto")`` does itself)."""
    if not on or os.environ.get(AUTH_MODE, "").lower() == "token":
        yield
        return
    saved = os.environ.get(AUTH_MODE)
    os.environ[AUTH_MODE] = "token"
    _reload_config()
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(AUTH_MODE, None)
        else:
            os.environ[AUTH_MODE] = saved
        _reload_config()


def _reload_config() -> None:
    with contextlib.suppress(ImportError, AttributeError):
        from ray._raylet import Config

        Config.initialize("")  # Ray reads the mode from its cached config, refreshed from the environment


def _resolve(address: str | None) -> tuple[str | None, str]:
    """The cluster address to use (``--address``, else ``RAY_ADDRESS``; None: start a local instance) and its
    source."""
    if address is None and os.environ.get(ADDRESS):
        return os.environ[ADDRESS], ADDRESS
    return address, "--address"


def check_address(address: str | None) -> bool:
    """Everything about connecting to ``address`` that can be checked before any work: Ray installed, and a
    ``host:port`` cluster answering and accepting this machine (see :func:`check_cluster`); returns whether the
    connection needs token mode. ``auto``, ``ray://`` addresses and a local instance are left to ``ray.init``."""
    import_ray()
    address, source = _resolve(address)
    if address is None or address == "auto":
        return False
    _check_port(address, source)
    if address.startswith("ray://"):
        _check_client_server(address, source)
        return False
    if "://" in address:
        return False
    return check_cluster(address, source)


def _host_port(address: str) -> tuple[str, str]:
    host, _, port = address.split("://", 1)[-1].rstrip("/").rpartition(":")
    return host.strip("[]"), port


def _check_port(address: str, source: str) -> None:
    """A port outside 1-65535 is refused as typed (gRPC would wrap it around and name another port)."""
    host, port = _host_port(address)
    if host and port and (not port.isdigit() or not 1 <= int(port) <= 65535):
        raise ConfigError(f"{source} {address}: the port {port!r} is not a port number (1-65535). "
                          "Give the address `ray start --head` printed, e.g. 192.168.1.10:6379 or ray://HOST:10001.")


def _check_client_server(address: str, source: str) -> None:
    """A ``ray://`` address must have a Ray client server listening (one TCP connection, PROBE_TIMEOUT seconds at
    most): Ray itself would retry for half a minute and then fail with gRPC's words."""
    import socket

    host, port = _host_port(address)
    try:
        with socket.create_connection((host or "127.0.0.1", int(port or 10001)), timeout=PROBE_TIMEOUT):
            pass
    except OSError as e:
        raise ConfigError(f"No Ray client server answers at {address} (from {source}): {e.strerror or e}. Start the "
                          "cluster with `ray start --head` (its client server listens on port 10001), check the "
                          "host and port, or leave --address out to start a local Ray instance.") from None


@contextlib.contextmanager
def ray_session(address: str | None, num_cpus: int | None = None) -> Iterator[None]:
    """Ray connected for the executor: to the cluster at ``address`` (else ``RAY_ADDRESS``), checked first
    (:func:`check_address`), or to a new local instance of ``num_cpus`` CPUs (no dashboard, no worker logs on the
    console); shut down on exit when this call connected. Inside an existing ``ray.init`` (the caller's), nothing
    is done."""
    ray = import_ray()
    if ray.is_initialized():
        yield
        return
    token = check_address(address)
    address, source = _resolve(address)
    kwargs = {"include_dashboard": False, "log_to_driver": False}
    if address is None:
        kwargs["num_cpus"] = num_cpus or os.cpu_count() or 1
    with _token_mode(token):
        try:
            ray.init(address=address, **kwargs)
        except (ConnectionError, RuntimeError, ray.exceptions.RayError) as e:
            where = f" at {address} (from {source})" if address else ""
            raise ConfigError(f"Cannot connect to Ray{where}: {str(e).strip().splitlines()[0]}. Check the address "
                              "(`ray status` on the head node prints it).") from e
        try:
            yield
        finally:
            ray.shutdown()


__all__ = ["check_address", "check_cluster", "import_ray", "ray_session"]
