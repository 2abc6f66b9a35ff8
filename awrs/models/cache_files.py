"""Writing derived files into the awrs cache safely when several processes share it.

Two processes that need the same conversion at once (two ``awrs eval`` runs started together,
a server and a test) must not both spend a minute on it, and a conversion killed half way
must leave nothing that a later run would trust. So every cached file or folder is

* made under an exclusive lock on a sibling ``.NAME.lock`` file: the second process waits,
  then finds the finished target and uses it;
* written under a temporary name beginning ``.NAME.`` and moved into place by one rename
  (atomic on one file system), so the target is either absent or complete;
* cleared of temporaries that a killed earlier attempt left behind, once the lock is held
  (no other process can be writing them then).

The lock is an advisory ``flock``, released by the kernel when its holder dies, so a killed
conversion never leaves a stale lock behind. The empty lock file itself stays: removing it
would let a process still waiting on it and a newcomer that creates a fresh one both in. Where ``fcntl`` does not exist (Windows) the
lock is skipped: the renames alone still keep the cache consistent, at the cost of a
conversion possibly done twice.
"""

from __future__ import annotations

import glob
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None


def work_prefix(target: Path) -> str:
    """The name prefix of ``target``'s temporaries (and of nothing else in its folder)."""
    return f".{target.name}."


@contextmanager
def exclusive(target: Path) -> Iterator[None]:
    """Hold the lock for making ``target``; on entry, remove temporaries of dead attempts."""
    target.parent.mkdir(parents=True, exist_ok=True)
    lock_path = target.with_name(f"{work_prefix(target)}lock")
    with open(lock_path, "a+b") as handle:
        if fcntl is not None:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            _remove_leftovers(target, keep=lock_path)
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def work_path(target: Path, kind: str = "part") -> Path:
    """A temporary name beside ``target`` for this process, removed by a later lock holder if
    this process dies before renaming it into place."""
    return target.with_name(f"{work_prefix(target)}{os.getpid()}.{kind}")


def _remove_leftovers(target: Path, *, keep: Path) -> None:
    if fcntl is None:  # without the lock another process may be writing them right now
        return
    prefix = work_prefix(target)
    for path in target.parent.glob(f"{glob.escape(prefix)}*"):
        if path == keep:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
