"""Exclusive locks on what a stage writes (a fold folder, thresholds.json, a submission).

A lock is a small JSON file ``<folder>/.locks/<name>.lock`` naming the process that holds it (pid,
host, command, since when). It is created atomically (written under a temporary name, then
hard-linked into place, which fails when the lock exists), so a second process on the same target
fails at once with a message naming the holder. The lock file is removed when the stage ends. A
lock left by a killed process on this host (its pid is gone, or now belongs to a process started
later) is broken by the next run; a lock held on another host (a shared file system) is never
broken automatically: the message says how to remove it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from .errors import UserError
from .files import temporary_sibling


class LockError(UserError):
    """The target is locked by another process."""


@dataclass(frozen=True)
class Holder:
    """Who holds a lock."""

    pid: int
    host: str
    command: str
    since: str  # local time, ISO format
    started: int | None  # the process's start time in clock ticks since boot (Linux), to detect pid reuse


def process_start(pid: int) -> int | None:
    """A process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat); None where unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[19]) if len(fields) > 19 and fields[19].isdigit() else None


def current_holder() -> Holder:
    """This process as a lock holder (its command line as the user typed it, as near as can be told)."""
    program = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    command = " ".join(["severstal", *sys.argv[1:]]) if program in ("severstal", "__main__.py") else " ".join(
        [program, *sys.argv[1:]])
    return Holder(os.getpid(), socket.gethostname(), command, datetime.now().isoformat(timespec="seconds"),
                  process_start(os.getpid()))


def is_running(holder: Holder) -> bool:
    """Whether the holder (on this host) still runs: its pid exists and was started when the lock was taken."""
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    started = process_start(holder.pid)
    return holder.started is None or started is None or started == holder.started


def read_holder(path: Path) -> Holder | None:
    """The holder recorded in a lock file; None when it vanished or cannot be read."""
    try:
        values = json.loads(path.read_text())
        return Holder(**{key: values[key] for key in Holder.__dataclass_fields__})
    except (OSError, ValueError, KeyError, TypeError):
        return None


def locked_message(what: str, path: Path, holder: Holder | None) -> str:
    """The error for a target another process holds."""
    if holder is None:
        return (f"{what} is locked ({path} exists but cannot be read); if no severstal command is running on it, "
                f"delete {path}")
    since = holder.since.replace("T", " ")
    where = f"pid {holder.pid} on {holder.host} ({holder.command}, since {since})"
    if holder.host == socket.gethostname():
        return f"{what} is locked by {where}; wait for it or stop it (kill {holder.pid})"
    return (f"{what} is locked by {where}. That host shares this file system, so whether the process still runs "
            f"cannot be seen from here and the lock is never broken automatically: wait for it, or, if no severstal "
            f"command runs there any more, delete {path}")


@contextlib.contextmanager
def _guard(directory: Path) -> Iterator[None]:
    """Serialise the acquire step of the locks in ``directory`` among this host's processes (a flock on it)."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # releases the flock


def _try_acquire(directory: Path, path: Path, what: str, me: Holder) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    temporary = temporary_sibling(path)
    try:
        with _guard(directory):
            temporary.write_text(json.dumps(asdict(me)) + "\n")
            for _ in range(2):
                try:
                    os.link(temporary, path)
                    return
                except FileExistsError:
                    holder = read_holder(path)
                    if holder is not None and holder.host == me.host and not is_running(holder):
                        path.unlink(missing_ok=True)  # left by a killed process of this host
                        continue
                    raise LockError(locked_message(what, path, holder)) from None
            raise LockError(locked_message(what, path, read_holder(path)))
    finally:
        temporary.unlink(missing_ok=True)


def acquire(directory: Path, name: str, what: str) -> Path:
    """Take the lock ``directory/<name>.lock`` or raise :class:`LockError` at once.

    Args:
        directory: the ``.locks`` folder (created when missing, removed again when no lock is left in it).
        name: the lock's name, e.g. ``seg-fold0``.
        what: the target for messages, e.g. ``seg fold 0 of demo``.

    Returns:
        The lock file's path (for :func:`release`).
    """
    directory = Path(directory)
    path = directory / f"{name}.lock"
    me = current_holder()
    for _ in range(2):
        try:
            _try_acquire(directory, path, what, me)
            return path
        except FileNotFoundError:  # another process removed the empty folder meanwhile: try again
            pass
    _try_acquire(directory, path, what, me)
    return path


def release(path: Path) -> None:
    """Remove a lock this process holds (one another process took over is left alone), and the folder if empty."""
    holder = read_holder(path)
    if holder is not None and holder.pid == os.getpid() and holder.host == socket.gethostname():
        path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # not empty: other locks are held
        path.parent.rmdir()


@contextlib.contextmanager
def hold(directory: Path, name: str, what: str) -> Iterator[Path]:
    """Hold a lock while the block runs (see :func:`acquire`); it is removed when the block ends, however.

    Folders created for the lock that are still empty then (the stage failed before writing) are removed too.
    """
    directory = Path(directory)
    created = [folder for folder in (directory, *directory.parents) if not folder.exists()]
    path = acquire(directory, name, what)
    try:
        yield path
    finally:
        release(path)
        for folder in created:  # deepest first
            with contextlib.suppress(OSError):
                folder.rmdir()
