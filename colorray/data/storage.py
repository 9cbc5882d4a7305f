"""Where runs and data live: local paths and ``s3://`` / ``gs://`` URIs, through pyarrow filesystems.

Every place colorray reads or writes a location given by a person (shards,
``run.storage_path``, ``--resume``, ``--model``, Tune's ``storage_path``) goes
through this module, so a URI works wherever a local path does:

- ``filesystem(location)`` is the pyarrow filesystem and path for a location
  (Ray's own convention: ``pyarrow.fs.FileSystem.from_uri``), and
  ``ray_storage`` the ``storage_path`` and ``storage_filesystem`` for Ray's ``RunConfig``;
- ``read_bytes`` / ``write_bytes`` / ``open_input`` / ``exists`` / ``is_dir`` /
  ``list_files`` / ``upload`` / ``download`` work the same on both;
- ``runtime_env()`` is the Ray runtime environment that carries the storage
  settings of this process (endpoint, region, credentials) to Ray's workers.

S3-compatible servers (MinIO, Ceph, moto) are reached through the standard
environment: ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``, with
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` and ``AWS_REGION``. Without an
endpoint, the bucket's region and the credentials are found as the AWS SDK
always does (environment, ``~/.aws``, instance role). Google Cloud Storage
uses Google's default credentials (``GOOGLE_APPLICATION_CREDENTIALS``, the
metadata server); ``STORAGE_EMULATOR_HOST`` points ``gs://`` at an emulator.
``docs/storage.md`` has the details.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pyarrow.fs as pafs

SCHEMES = ("s3", "gs", "gcs")
ENDPOINT_ENV = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
GCS_EMULATOR_ENV = "STORAGE_EMULATOR_HOST"  # Google's own variable for a GCS emulator, e.g. http://127.0.0.1:9023
FORWARDED_ENV = (
    "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
    "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "GOOGLE_APPLICATION_CREDENTIALS", GCS_EMULATOR_ENV,
)


class StorageError(ValueError):
    """A storage location that cannot be reached, read or written; the message names it."""


def is_uri(location: str) -> bool:
    """True for an ``s3://`` or ``gs://`` location (files reached through a pyarrow filesystem)."""
    return str(location).split("://", 1)[0].lower() in SCHEMES and "://" in str(location)


def join(location: str, *names: str) -> str:
    """``location/name/...`` for URIs and local paths alike."""
    if is_uri(location):
        return "/".join([str(location).rstrip("/"), *(name.strip("/") for name in names)])
    return str(Path(location, *names))


def split(location: str) -> tuple[str, str]:
    """(parent, name) of a URI or local path."""
    if is_uri(location):
        parent, _, name = str(location).rstrip("/").rpartition("/")
        return parent, name
    path = Path(location)
    return str(path.parent), path.name


def uri_of(location: str, path: str) -> str:
    """A filesystem path (as Ray reports it, without scheme) as a location like ``location``."""
    if is_uri(location) and "://" not in path:
        return f"{str(location).split('://', 1)[0]}://{path.lstrip('/')}"
    return path


def _endpoint() -> str:
    return next((os.environ[name] for name in ENDPOINT_ENV if os.environ.get(name)), "")


def filesystem(location: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem holding ``location`` and the location's path inside it."""
    location = str(location)
    if not is_uri(location):
        return pafs.LocalFileSystem(), str(Path(location).expanduser().absolute())
    scheme, rest = location.split("://", 1)
    endpoint = _endpoint() if scheme.lower() == "s3" else ""
    if endpoint:  # an S3-compatible server: explicit options, so the pickled filesystem carries them to Ray
        env = os.environ
        fs = pafs.S3FileSystem(
            endpoint_override=endpoint,
            access_key=env.get("AWS_ACCESS_KEY_ID"),
            secret_key=env.get("AWS_SECRET_ACCESS_KEY"),
            session_token=env.get("AWS_SESSION_TOKEN"),
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
        )
        return fs, rest.rstrip("/")
    emulator = os.environ.get(GCS_EMULATOR_ENV, "") if scheme.lower() in ("gs", "gcs") else ""
    if emulator:  # a GCS emulator: anonymous, over its own scheme
        protocol, _, host = emulator.rpartition("://")
        return pafs.GcsFileSystem(anonymous=True, scheme=protocol or "http", endpoint_override=host), rest.rstrip("/")
    try:
        return pafs.FileSystem.from_uri(location)
    except (OSError, ValueError) as error:
        raise StorageError(f"cannot open {location}: {first_line(error)}") from None


def ray_storage(location: str) -> tuple[str, pafs.FileSystem | None]:
    """``(storage_path, storage_filesystem)`` for Ray's ``RunConfig``: local folders as they are, URIs as
    the bucket path and its filesystem (which carries a custom endpoint to every Ray process)."""
    if not is_uri(location):
        return location, None
    fs, path = filesystem(location)
    return path, fs


def runtime_env() -> dict:
    """Ray ``runtime_env`` passing this process's storage settings (endpoint, region, credentials) to workers."""
    forwarded = {name: os.environ[name] for name in FORWARDED_ENV if os.environ.get(name)}
    return {"env_vars": forwarded} if forwarded else {}


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _info(location: str) -> pafs.FileInfo:
    fs, path = filesystem(location)
    try:
        return fs.get_file_info(path)
    except OSError as error:
        raise StorageError(f"cannot reach {location}: {first_line(error)}") from None


def exists(location: str) -> bool:
    return _info(location).type != pafs.FileType.NotFound


def is_file(location: str) -> bool:
    return _info(location).type == pafs.FileType.File


def is_dir(location: str) -> bool:
    """A folder, or (object stores) a prefix that holds objects."""
    if not is_uri(location):
        return Path(location).expanduser().is_dir()
    return _info(location).type == pafs.FileType.Directory


def list_files(location: str, recursive: bool = True, by_time: bool = False) -> list[str]:
    """The files under a folder or prefix, as paths relative to it, sorted by name (or modification time);
    empty when there is none."""
    fs, path = filesystem(location)
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True, recursive=recursive))
    except OSError as error:
        raise StorageError(f"cannot list {location}: {first_line(error)}") from None
    prefix = path.rstrip("/") + "/"
    files = sorted((info for info in infos if info.type == pafs.FileType.File),
                   key=lambda info: (info.mtime_ns or 0, info.path) if by_time else info.path)
    return [info.path.removeprefix(prefix) for info in files]


def open_input(location: str):
    """A readable binary stream of a file (streamed, not downloaded first)."""
    fs, path = filesystem(location)
    try:
        return fs.open_input_stream(path)
    except (OSError, FileNotFoundError) as error:
        raise StorageError(f"cannot read {location}: {first_line(error)}") from None


def read_bytes(location: str) -> bytes:
    with open_input(location) as stream:
        return stream.read()


def read_text(location: str) -> str:
    return read_bytes(location).decode()


def write_bytes(location: str, data: bytes) -> None:
    """Write a whole file: local files through a temporary name and a rename, objects in one PUT."""
    if not is_uri(location):
        path = Path(location).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
        return
    fs, path = filesystem(location)
    try:
        with fs.open_output_stream(path) as stream:
            stream.write(data)
    except OSError as error:
        raise StorageError(f"cannot write {location}: {first_line(error)}") from None


def write_text(location: str, text: str) -> None:
    write_bytes(location, text.encode())


def upload(local: str | Path, location: str) -> None:
    """Copy a local file or folder (recursively, overwriting) to ``location``."""
    fs, path = filesystem(location)
    if not is_uri(location):
        fs.create_dir(path if Path(local).is_dir() else str(Path(path).parent), recursive=True)
    try:
        pafs.copy_files(str(Path(local).absolute()), path, source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=fs)
    except OSError as error:
        raise StorageError(f"cannot copy {local} to {location}: {first_line(error)}") from None


def download(location: str, local: str | Path) -> Path:
    """Copy a file or folder at ``location`` to the local path ``local``."""
    fs, path = filesystem(location)
    local = Path(local).absolute()
    local.parent.mkdir(parents=True, exist_ok=True)
    try:
        pafs.copy_files(path, str(local), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
    except OSError as error:
        raise StorageError(f"cannot copy {location} to {local}: {first_line(error)}") from None
    return local


def copy(source: str, target: str) -> None:
    """Copy a file or folder between any two locations."""
    (source_fs, source_path), (target_fs, target_path) = filesystem(source), filesystem(target)
    if not is_uri(target):
        Path(target_path).parent.mkdir(parents=True, exist_ok=True)
    try:
        pafs.copy_files(source_path, target_path, source_filesystem=source_fs, destination_filesystem=target_fs)
    except OSError as error:
        raise StorageError(f"cannot copy {source} to {target}: {first_line(error)}") from None
