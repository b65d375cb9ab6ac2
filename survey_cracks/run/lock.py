"""``OUT/.lock``: one run at a time writes into an OUT folder.

The lock is a kernel file lock (``flock`` through :mod:`filelock`), so it belongs to the
process that holds it and is dropped by the kernel when that process ends, however it
ends (a kill -9, a crash): no pid has to be probed and no stale lock has to be broken.
The locked file also holds the owner's pid, host and start time, only so that a second
run can say who is writing. The file is emptied and removed on a clean release, so a
file that still holds an owner when we take the lock was left by a run that is gone:
that is reported as a warning. (On network filesystems ``flock`` is as good as the
server's lock support.)
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

from filelock import FileLock, Timeout

from survey_cracks.errors import InfrastructureError

LOCK = ".lock"


@dataclass(frozen=True)
class LockOwner:
    pid: int
    host: str
    started_at: str


def read_owner(path: Path) -> LockOwner | None:
    """The owner written in a lock file; None when it is missing, empty or unreadable."""
    try:
        return _parse_owner(path.read_bytes())
    except OSError:
        return None


def _parse_owner(text: bytes) -> LockOwner | None:
    try:
        return LockOwner(**json.loads(text))
    except (ValueError, TypeError):
        return None


class _Replaced(Exception):
    """The lock file was removed or replaced between our open and our lock: we hold an orphaned inode."""


def _describe(owner: LockOwner | None) -> str:
    return "unreadable lock" if owner is None else f"pid {owner.pid} on {owner.host}, started {owner.started_at}"


@contextlib.contextmanager
def out_lock(out: Path, warn: Callable[[str], None]) -> Iterator[LockOwner]:
    """Hold ``OUT/.lock`` for the duration; InfrastructureError when another live run holds it."""
    path = out / LOCK
    me = LockOwner(os.getpid(), socket.gethostname(), datetime.now(timezone.utc).isoformat(timespec="seconds"))
    left_behind: list[bytes] = []

    def claim(fd: int) -> None:
        # A run releasing removes the path before it unlocks; a run that opened the old inode
        # just before would otherwise lock a file nobody else can see.
        if not os.path.samestat(os.fstat(fd), os.stat(path)):
            raise _Replaced
        previous = os.pread(fd, 1 << 16, 0)
        if previous.strip():
            left_behind.append(previous)
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(asdict(me)) + "\n").encode(), 0)

    lock = FileLock(path, timeout=0, on_acquired=claim)
    try:
        lock.acquire()
    except Timeout:
        owner = read_owner(path)
        who = "" if owner is None else f" ({_describe(owner)})"
        raise InfrastructureError(out, f"another run is writing here{who}",
                                  "wait for it to finish (the lock frees itself when that process ends)") from None
    except (_Replaced, FileNotFoundError):
        raise InfrastructureError(out, "another run took the lock at the same moment", "run again later") from None
    except OSError as error:
        raise InfrastructureError(out, f"cannot write the lock file ({error.strerror or error})",
                                  "check that OUT is writable and the disk is not full") from None
    if left_behind:
        warn(f"WARNING took over the lock of a run that is gone ({_describe(_parse_owner(left_behind[0]))})")
    try:
        yield me
    finally:
        # Emptied and removed while still locked, so the next run sees a clean release.
        with contextlib.suppress(OSError):
            os.truncate(path, 0)
            path.unlink()
        lock.release()
