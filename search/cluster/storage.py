"""Shared storage: data and checkpoints named by a location every node can read.

A location is a local or shared-mount path (``/mnt/shared/x``, ``file:///mnt/shared/x``) or
anything pyarrow's filesystem layer resolves (``s3://bucket/x``, ``gs://bucket/x``,
``hdfs://...``). :func:`localize` / :func:`localize_paths` turn each into a local path before a
trial opens it (remote objects are copied once per node into a cache); :func:`resolve_uri`,
:func:`read_bytes`, :func:`write_bytes_atomic` and :func:`local_copy` are the pieces.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.errors import UserError

if TYPE_CHECKING:  # pragma: no cover - typing only
    import pyarrow.fs

__all__ = [
    "INPUT_KEYS",
    "resolve_uri",
    "is_remote_uri",
    "read_bytes",
    "write_bytes_atomic",
    "local_copy",
    "localize",
    "localize_paths",
    "default_cache_dir",
    "ensure_dir",
]

# The input locations of a trial spec (models.trial.TrialSpec fields) that may be URIs.
INPUT_KEYS = ("base_checkpoint", "train_json", "train_images", "eval_json", "eval_images")


# --------------------------------------------------------------------------------------------
# Shared storage URIs
# --------------------------------------------------------------------------------------------


def is_remote_uri(uri: str) -> bool:
    """True when ``uri`` has a scheme other than ``file`` (``s3://``, ``gs://``, ``hdfs://`` ...)."""
    scheme, sep, _ = uri.partition("://")
    return bool(sep) and scheme.lower() != "file" and len(scheme) > 1


def resolve_uri(uri: str | os.PathLike[str]) -> tuple[pyarrow.fs.FileSystem, str]:
    """Return ``(filesystem, path_in_filesystem)`` for a local path or a pyarrow-supported URI.

    Local paths (and ``file://`` URIs) are made absolute, so that the same string means the same
    place on every node when it lies on a shared mount. Unknown schemes raise :class:`UserError`.
    """
    import pyarrow.fs as pafs

    text = os.fspath(uri)
    if not is_remote_uri(text):
        local = text.removeprefix("file://")
        return pafs.LocalFileSystem(), str(Path(local).expanduser().resolve())
    try:
        fs, path = pafs.FileSystem.from_uri(text)
    except (ValueError, OSError) as exc:  # pyarrow: unknown scheme / filesystem not built in
        raise UserError(f"storage URI {text!r}: {exc}") from exc
    return fs, path


def read_bytes(uri: str | os.PathLike[str]) -> bytes:
    """Read a whole file given by path or URI. A missing file raises :class:`UserError`."""
    import pyarrow.fs as pafs

    fs, path = resolve_uri(uri)
    if fs.get_file_info(path).type != pafs.FileType.File:
        raise UserError(f"storage URI {os.fspath(uri)!r}: no such file")
    with fs.open_input_stream(path) as fh:
        return bytes(fh.read())


def write_bytes_atomic(uri: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to a path or URI so that readers never see a half-written file.

    Local: temp file in the same folder, then ``os.replace``. Object stores (S3/GCS) publish an
    object only when its upload completes, so a single ``open_output_stream`` is already atomic.
    """
    import pyarrow.fs as pafs

    fs, path = resolve_uri(uri)
    if isinstance(fs, pafs.LocalFileSystem):
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return
    parent = path.rsplit("/", 1)[0]
    if parent and parent != path:
        fs.create_dir(parent, recursive=True)
    with fs.open_output_stream(path) as fh:
        fh.write(data)


def local_copy(uri: str | os.PathLike[str], cache_dir: str | os.PathLike[str]) -> Path:
    """Return a local path holding the file or folder at ``uri``; remote data is copied once.

    Local paths are returned as they are (no copy). A remote file/folder is copied to
    ``cache_dir/<scheme>/<path>`` unless already there (a marker file records a finished copy,
    so an interrupted copy is redone, never used half-done). Remote inputs are taken to be
    immutable: a finished copy is reused without asking the store again (publish new data or
    checkpoints under a new name). Missing sources raise :class:`UserError`.
    """
    import pyarrow.fs as pafs

    fs, path = resolve_uri(uri)
    if not isinstance(fs, pafs.LocalFileSystem):
        scheme = os.fspath(uri).split("://", 1)[0]
        dest = Path(cache_dir) / scheme / path.lstrip("/")
        done = dest.parent / f".{dest.name}.complete"
        if done.exists():  # remote inputs are treated as immutable: no request per trial
            return dest
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise UserError(f"storage URI {os.fspath(uri)!r}: not found")
    if isinstance(fs, pafs.LocalFileSystem):
        return Path(path)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=ensure_dir(dest.parent)))
    try:
        # Streams (a checkpoint need not fit in memory); a folder is copied recursively.
        pafs.copy_files(
            path,
            str(staging / dest.name),
            source_filesystem=fs,
            destination_filesystem=pafs.LocalFileSystem(),
        )
        if dest.exists():  # a concurrent copier finished first; theirs is complete
            shutil.rmtree(staging, ignore_errors=True)
        else:
            os.replace(staging / dest.name, dest)
        done.touch()
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def default_cache_dir() -> Path:
    """Where :func:`localize` copies remote inputs: ``$PEFTSWEEP_CACHE_DIR`` or ~/.cache/peftsweep/storage."""
    env = os.environ.get("PEFTSWEEP_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "peftsweep" / "storage"


def localize(
    uri: str | os.PathLike[str] | None, cache_dir: str | os.PathLike[str] | None = None
) -> str | None:
    """A local path for a data / checkpoint location given as path or URI (None stays None).

    What a trial calls on every input location before opening it: local and shared-mount paths
    come back unchanged (``file://`` stripped), ``s3://`` / ``gs://`` / ... are copied once per node into
    ``cache_dir`` (default :func:`default_cache_dir`) by :func:`local_copy`.
    """
    if uri is None:
        return None
    text = os.fspath(uri)
    if not is_remote_uri(text):
        # Unchanged (a relative path stays relative: it is the config's job to make paths absolute,
        # since a Ray worker's working directory is not the driver's).
        return text.removeprefix("file://")
    return str(local_copy(uri, cache_dir if cache_dir is not None else default_cache_dir()))


def localize_paths(
    spec: Mapping[str, Any],
    keys: tuple[str, ...] = INPUT_KEYS,
    cache_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Copy of ``spec`` with the values under ``keys`` passed through :func:`localize`."""
    out = dict(spec)
    for key in keys:
        if out.get(key) is not None:
            out[key] = localize(out[key], cache_dir)
    return out


def ensure_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
