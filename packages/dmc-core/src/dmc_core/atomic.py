"""Atomic file writes: a reader sees either the old file or the complete new one, never a part.

Every artifact a stage writes goes through `atomic_path`: the bytes go to a temporary file in the
destination folder (same file system, so the final `os.replace` is atomic on POSIX), and only a
fully written, flushed file is renamed onto the destination. A stage killed mid-write leaves at
most a stray temporary file, never a truncated artifact that a later stage would read.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "TEMP_MARKER",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "remove_stale_temporaries",
]

#: Every temporary file name contains this marker, so stray ones are easy to find and ignore.
TEMP_MARKER = ".partial-"


@contextlib.contextmanager
def atomic_path(destination: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `destination` atomically.

    The temporary name keeps the destination's suffix, so writers that infer the format from
    the suffix (matplotlib, h5py, safetensors) behave as with the real name. If the block raises,
    the temporary file is removed and `destination` is left as it was.
    """
    dest = Path(destination)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{dest.stem}{TEMP_MARKER}", suffix=dest.suffix, dir=dest.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(dest.parent)


def atomic_write_bytes(destination: str | os.PathLike[str], data: bytes) -> Path:
    """Write `data` to `destination` atomically and return the destination path."""
    with atomic_path(destination) as tmp:
        tmp.write_bytes(data)
    return Path(destination)


def atomic_write_text(destination: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 `text` to `destination` atomically and return the destination path."""
    return atomic_write_bytes(destination, text.encode("utf-8"))


def _fsync_file(path: Path) -> None:
    # Flush the data to disk before the rename, or a crash could leave a renamed empty file.
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    # Make the rename itself durable; not every platform allows opening a directory.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def remove_stale_temporaries(output: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files a killed writer left of `output` and return them.

    `output` is a stage output: a folder (every temporary file anywhere inside it) or a file
    (its own temporaries and those of the files written beside it under its name, e.g.
    `full.stats.json` beside `full.hdf5`). Call it when the stage starts, when no writer of
    these files can be running.
    """
    path = Path(output)
    if path.is_dir():
        stale = list(path.rglob(f"*{TEMP_MARKER}*"))
    else:
        patterns = (f".{path.stem}{TEMP_MARKER}*", f".{path.stem}.*{TEMP_MARKER}*")
        stale = [p for pattern in patterns for p in path.parent.glob(pattern)]
    for temporary in stale:
        if temporary.is_file():
            temporary.unlink(missing_ok=True)
    return stale
