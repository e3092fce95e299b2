"""Atomic files and content hashes: the one way this project writes a file that another stage reads.

Every such file is written under a unique temporary name in the target's own folder (so two
processes never share one), flushed and fsynced, then renamed over the target: a reader sees the
old file or the new one, never half of one, and a failed or killed write leaves the target as it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CHUNK = 1 << 20


def temporary_sibling(path: Path) -> Path:
    """A unique hidden name beside ``path`` that keeps its suffixes (``.x.<pid>-<token>.tmp.weights.h5``)."""
    suffixes = "".join(path.suffixes)
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp{suffixes}")


def _fsync(path: Path) -> None:
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if path.is_dir() else os.O_RDONLY
    descriptor = os.open(path, flags)
    try:
        os.fsync(descriptor)
    except OSError:  # some file systems cannot fsync a directory; the rename is still atomic
        if not path.is_dir():
            raise
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path to write ``path``'s new content to; renamed over ``path`` when the block succeeds.

    For writers that need a file name (Keras weights, ``savefig``, ``np.savez``): the name keeps the
    target's suffixes. On an exception the temporary file is deleted and ``path`` is left as it was.

    Yields:
        The temporary path (its folder exists).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_sibling(path)
    try:
        yield temporary
        if not temporary.is_file():
            raise FileNotFoundError(f"nothing was written to {temporary} for {path}")
        _fsync(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync(path.parent)


def write_atomically(path: str | os.PathLike, content: str | bytes) -> Path:
    """Write text (UTF-8) or bytes to ``path`` atomically (module docstring); returns ``path``."""
    path = Path(path)
    data = content.encode() if isinstance(content, str) else bytes(content)
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        handle.write(data)
    return path


def json_ready(value: Any) -> Any:
    """``value`` with NaN and infinite floats as None (JSON has no such numbers) and tuples as lists."""
    if isinstance(value, dict):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: str | os.PathLike, value: Any) -> Path:
    """Write ``value`` as indented JSON (NaN as null) atomically."""
    return write_atomically(path, json.dumps(json_ready(value), indent=2) + "\n")


def file_sha256(path: str | os.PathLike) -> str:
    """The hex SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def content_sha256(path: str | os.PathLike) -> str:
    """The hex SHA-256 of a file's bytes, or of a folder's file names and contents (the files directly in it)."""
    path = Path(path)
    if not path.is_dir():
        return file_sha256(path)
    files = sorted(entry.name for entry in os.scandir(path) if entry.is_file())
    return text_sha256("\n".join(f"{name} {file_sha256(path / name)}" for name in files))


def text_sha256(text: str) -> str:
    """The hex SHA-256 of a text's UTF-8 bytes."""
    return hashlib.sha256(text.encode()).hexdigest()


def read_marker(path: str | os.PathLike, generator: str) -> dict | None:
    """The JSON record a generator left in a folder it wrote (e.g. ``.demo.json``), or None when there is
    none, it is unreadable, or another generator wrote it."""
    try:
        marker = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("generator") == generator else None
