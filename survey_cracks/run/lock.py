"""``OUT/.lock``: one run at a time writes into an OUT folder.

The lock file holds the owner's pid, host and start time. It is written under a temp
name and hard-linked into place, which fails when a lock is already there, so two runs
starting at once cannot both win and a reader never sees half a lock. A lock left by a
process that is gone (same host, pid not running: a kill -9, a reboot) is taken over
with a warning; a lock from another host cannot be checked and is never taken.
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

from survey_cracks.errors import InfrastructureError

LOCK = ".lock"


@dataclass(frozen=True)
class LockOwner:
    pid: int
    host: str
    started_at: str

    def alive(self) -> bool:
        """False only when this host can tell the process is gone."""
        if self.host != socket.gethostname():
            return True
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # a process of another user has this pid
            return True
        return True


def read_owner(path: Path) -> LockOwner | None:
    try:
        return LockOwner(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _try_create(path: Path, owner: LockOwner) -> bool:
    tmp = path.with_name(f"{LOCK}.{owner.pid}.partial")
    tmp.write_text(json.dumps(asdict(owner)) + "\n")
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


def _remove_stale(path: Path, stale: LockOwner | None) -> bool:
    """Move the stale lock aside; if it turns out to be a newer run's (taken over a moment ago), put it back."""
    aside = path.with_name(f"{LOCK}.{os.getpid()}.stale")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return True
    if read_owner(aside) == stale:
        aside.unlink()
        return True
    with contextlib.suppress(OSError):
        os.link(aside, path)
    aside.unlink()
    return False


@contextlib.contextmanager
def out_lock(out: Path, warn: Callable[[str], None]) -> Iterator[LockOwner]:
    """Hold ``OUT/.lock`` for the duration; InfrastructureError when another live run holds it."""
    path = out / LOCK
    me = LockOwner(os.getpid(), socket.gethostname(), datetime.now(timezone.utc).isoformat(timespec="seconds"))
    try:
        created = _try_create(path, me)
        if not created:
            owner = read_owner(path)
            if owner is not None and owner.alive():
                raise InfrastructureError(
                    out, f"another run is writing here (pid {owner.pid} on {owner.host}, started {owner.started_at})",
                    f"wait for it to finish; if it is gone, delete {path}")
            if not _remove_stale(path, owner) or not _try_create(path, me):
                raise InfrastructureError(out, "another run took the lock at the same moment", "run again later")
            warn(f"WARNING took over the lock of a run that is gone "
                 f"({'unreadable lock' if owner is None else f'pid {owner.pid} on {owner.host}, started {owner.started_at}'})")
    except OSError as error:
        raise InfrastructureError(out, f"cannot write the lock file ({error.strerror or error})",
                                  "check that OUT is writable and the disk is not full") from None
    try:
        yield me
    finally:
        if read_owner(path) == me:
            path.unlink(missing_ok=True)
