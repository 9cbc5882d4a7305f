"""Reading WebDataset tar shards sample by sample, so that nothing unreadable is lost without being counted.

``read_samples(url)`` yields a shard's samples in order (``{"__key__": key,
suffix: bytes, ...}``, as webdataset groups them). Where part of a shard cannot
be read it yields a *placeholder* ``{"__key__": ..., CORRUPT: reason}`` in the
sample's place instead of failing or going silent: the loaders count each
placeholder they are given as one skipped corrupt sample. So every reader that
splits a shard sees the same sequence, and each corrupt sample is counted once.

- A garbled tar header: Python's ``tarfile`` (and so webdataset) ends a stream
  at the first bad header without an error, dropping every good sample after
  it. Here the stream is read with ``ignore_zeros``, which steps block by block
  to the next valid header; each garbled stretch gives one placeholder, and a
  sample cut in two by it, or left without its image, is dropped with it.
- A truncated shard, or one that cannot be opened or fetched: one placeholder.
- A sample without any image file: one placeholder.
"""

from __future__ import annotations

import logging
import re
import tarfile
from typing import Any, Callable, Iterator

import webdataset as wds

CORRUPT = "__corrupt__"
IMAGE_FIELDS = ("jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff")
_KEY_AND_SUFFIX = re.compile(r"^((?:.*/|)[^./]+)[.]([^/]*)$")  # webdataset's base_plus_ext

log = logging.getLogger(__name__)


class _GapNotingTarFile(tarfile.TarFile):
    """A stream-mode TarFile that counts the stretches of garbled header blocks it steps over.

    With ``ignore_zeros`` tarfile skips a block whose header is invalid and tries
    the next one, reporting each skip only to its ``_dbg`` hook; zero blocks
    (end-of-archive padding) are reported there too and are not counted.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        self.gaps = 0
        self.in_gap = False
        super().__init__(*args, **kwargs)

    def _dbg(self, level: int, msg: str) -> None:
        if not msg.endswith("end of file header") and not self.in_gap:
            self.gaps += 1
            self.in_gap = True


READ_ERRORS = (tarfile.TarError, OSError, EOFError)


def _entries(stream) -> Iterator[tuple[str | None, bytes | Exception | None, bool]]:
    """``(name, data, after_gap)`` of each regular file, then ``(None, None, trailing_gap)``.

    A file whose data cannot be read (the shard is cut short) comes as ``(name, error, after_gap)``, last.
    """
    tar = _GapNotingTarFile.open(fileobj=stream, mode="r|*", ignore_zeros=True)
    seen_gaps = 0
    for info in tar:
        after_gap, seen_gaps = tar.gaps > seen_gaps, tar.gaps
        tar.in_gap = False
        if info.isreg() and not info.name.split("/")[-1].startswith("__"):
            try:
                data = tar.extractfile(info).read()
            except READ_ERRORS as error:
                yield info.name, error, after_gap
                return
            yield info.name, data, after_gap
        elif after_gap:
            yield "", b"", True  # a gap before a member we skip: still a gap
        tar.members = []
    yield None, None, tar.gaps > seen_gaps


def _placeholder(key: str, reason: str) -> dict[str, Any]:
    log.warning("skipping corrupt shard data: %s", reason)
    return {"__key__": key, CORRUPT: reason}


class _Sample:
    def __init__(self, key: str, gap_before: bool):
        self.fields: dict[str, Any] = {"__key__": key}
        self.gap_before = gap_before
        self.split = False  # a garbled stretch lies between two of its files

    def finish(self, url: str, gap_after: bool) -> dict[str, Any] | None:
        """The sample, a placeholder for it, or None when a neighbouring garbled stretch already stands for it."""
        key = self.fields["__key__"]
        if self.split:
            return None
        if not any(field in self.fields for field in IMAGE_FIELDS):
            if self.gap_before or gap_after:
                return None
            return _placeholder(key, f"{url}: sample {key} holds no image file")
        return self.fields


def _samples(url: str, entries: Iterator[tuple[str | None, bytes | Exception | None, bool]]) -> Iterator[dict]:
    current: _Sample | None = None
    try:
        for name, data, gap in entries:
            if gap:
                yield _placeholder(f"{url}:garbled", f"{url}: garbled tar header; reading resumed at the next valid one")
            match = _KEY_AND_SUFFIX.match(name) if name else None
            key = match.group(1) if match else None
            if current is not None and (key != current.fields["__key__"] or name is None):
                finished, current = current.finish(url, gap), None
                if finished is not None:
                    yield finished
            elif current is not None and gap:
                current.split = True
            if isinstance(data, Exception):  # the shard ends inside this file: its sample is the corrupt one
                yield _placeholder(key or url, f"{url}: cut short in {name} ({data})")
                return
            if match is None:
                continue
            if current is None:
                current = _Sample(key, gap)
            suffix = match.group(2).lower()
            if suffix in current.fields:
                current.split = True
                yield _placeholder(key, f"{url}: sample {key} holds two '{suffix}' files")
            current.fields[suffix] = data
    except READ_ERRORS as error:  # the shard ends inside a tar header: the samples read so far stand
        finished = current.finish(url, False) if current is not None else None
        if finished is not None:
            yield finished
        yield _placeholder(url, f"{url}: unreadable from here on ({error})")


def read_samples(url: str, open_stream: Callable[[str], Any] = wds.gopen) -> Iterator[dict[str, Any]]:
    """The samples of the shard at ``url``, placeholders included; ``open_stream(url)`` gives its bytes
    (default: webdataset's ``gopen``, for paths, ``http(s)://`` and ``pipe:`` commands)."""
    try:
        stream = open_stream(url)
    except Exception as error:  # noqa: BLE001 - any failure to open a shard is counted, never fatal
        yield _placeholder(url, f"{url}: cannot open the shard: {error}")
        return
    try:
        yield from _samples(url, _entries(stream))
    finally:
        try:
            stream.close()
        except Exception as error:  # noqa: BLE001 - e.g. curl's exit status for a failed download
            log.warning("closing shard %s: %s", url, error)
