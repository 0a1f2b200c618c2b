"""Connecting a driver to a Ray cluster: ``--address`` and Ray token authentication.

:func:`resolve_address` / :func:`auth_env` turn the ``--address`` / ``--token-file`` options of
``peftsweep launch`` into what ``ray.init`` expects; :func:`write_token_file` makes a fresh token
that a cluster's head, workers and drivers share (``RAY_AUTH_MODE=token`` + ``RAY_AUTH_TOKEN_PATH``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

from models.errors import UserError

__all__ = [
    "AUTH_MODE_ENV",
    "AUTH_TOKEN_PATH_ENV",
    "write_token_file",
    "auth_env",
    "use_token_file",
    "token_auth",
    "resolve_address",
    "check_reachable",
]

AUTH_MODE_ENV = "RAY_AUTH_MODE"
AUTH_TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"


# --------------------------------------------------------------------------------------------
# Token authentication
# --------------------------------------------------------------------------------------------


def write_token_file(path: str | os.PathLike[str]) -> Path:
    """Write a new random Ray auth token (256 bits, hex) to ``path`` with mode 0600; return it.

    An existing file is kept (so restarting a cluster keeps its drivers' token valid).
    """
    path = Path(path)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32))
    os.replace(tmp, path)
    return path


def auth_env(token_file: str | os.PathLike[str] | None) -> dict[str, str]:
    """Environment that makes a Ray process (node or driver) use token auth with ``token_file``.

    ``None`` returns ``{}``: Ray then uses ``RAY_AUTH_TOKEN`` / ``~/.ray/auth_token`` if present.
    A missing or empty file is a :class:`UserError` naming it.
    """
    if token_file is None:
        return {}
    path = Path(token_file).expanduser()
    if not path.is_file() or not path.read_text().strip():
        raise UserError(f"--token-file: {path} is missing or empty")
    return {AUTH_MODE_ENV: "token", AUTH_TOKEN_PATH_ENV: str(path.resolve())}


def use_token_file(token_file: str | os.PathLike[str] | None) -> dict[str, str]:
    """Make THIS process use token auth with ``token_file`` (see :func:`auth_env`); return the env set.

    Ray reads the auth mode when ``ray`` is imported; if it already was, its cached config is
    refreshed the way Ray itself does when it turns token auth on.
    """
    env = auth_env(token_file)
    os.environ.update(env)
    if env:
        _refresh_ray_auth()
    return env


def _refresh_ray_auth() -> None:
    """Make an imported Ray re-read its auth settings from the environment: its config, then
    its cached token (the order Ray's own test helpers use)."""
    if "ray._raylet" not in sys.modules:
        return  # read at import
    import ray._raylet as raylet

    raylet.Config.initialize("")  # type: ignore[attr-defined]
    loader = getattr(raylet, "AuthenticationTokenLoader", None)
    if loader is not None:
        loader.instance().reset_cache()


@contextlib.contextmanager
def token_auth(token_file: str | os.PathLike[str] | None) -> Iterator[dict[str, str]]:
    """:func:`use_token_file` for the duration of the block, then the auth environment as it was.

    A driver that connects to a token-auth cluster and later starts a local Ray in the same process
    (a library caller, a test session) would otherwise hand the local GCS a token file that may be
    gone by then, and the GCS dies at start.
    """
    before = {k: os.environ.get(k) for k in (AUTH_MODE_ENV, AUTH_TOKEN_PATH_ENV)}
    env = use_token_file(token_file)
    try:
        yield env
    finally:
        if env:
            for k, v in before.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            _refresh_ray_auth()


def resolve_address(address: str) -> str:
    """Validate a ``--address`` value and return what ``ray.init(address=...)`` takes.

    Accepted: ``auto`` (the cluster this machine belongs to), ``ray://HOST:PORT`` (Ray Client,
    the driver may be outside the cluster), ``HOST:PORT`` (the head's GCS port, the driver
    runs on a cluster node). Anything else raises :class:`UserError`.
    """
    address = address.strip()
    if address == "auto":
        return address
    rest = address.removeprefix("ray://")
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536 or "/" in rest:
        raise UserError(f"--address: expected 'auto', 'ray://HOST:PORT' or 'HOST:PORT', got {address!r}")
    return address


# How long a driver waits for the cluster's port to accept a connection before giving up.
REACH_TIMEOUT_S = 5.0


def check_reachable(address: str, timeout: float = REACH_TIMEOUT_S) -> str:
    """:func:`resolve_address`, then a UserError naming ``--address`` when nothing accepts a TCP
    connection at its HOST:PORT; returns the address.

    ``ray.init`` waits minutes for a GCS that is not there (a mistyped host or port, a head that
    is down) before failing with a multi-line trace; this answers within ``timeout`` seconds.
    ``auto`` is not checked (Ray looks the address up itself and says so when there is none)."""
    address = resolve_address(address)
    if address == "auto":
        return address
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except socket.gaierror:
        raise UserError(f"--address {address}: unknown host {host!r}") from None
    except TimeoutError:
        raise UserError(
            f"--address {address}: no answer within {timeout:g} s (is the Ray head up, the port open?)"
        ) from None
    except OSError as exc:
        why = "connection refused" if isinstance(exc, ConnectionRefusedError) else (exc.strerror or str(exc))
        raise UserError(f"--address {address}: no Ray cluster answers there ({why})") from None
    return address
