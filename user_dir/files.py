"""Writing files so that nothing is ever seen half-written, and folders one writer at a time.

Shared by the plugin's patches of fairseq (checkpoint saves and copies, ``--save-dir``) and by
``scripts/`` (every output of ``prepare.py``).
"""
import fcntl
import os
import shutil
import tempfile
from contextlib import contextmanager
from typing import IO, Iterator

_UMASK = os.umask(0)
os.umask(_UMASK)  # read once: mkstemp creates 0600 files, the result should get the usual mode
_HELD: dict = {}  # folder -> open lock file, kept for the life of the process


class FolderBusy(RuntimeError):
    pass


@contextmanager
def atomic_write(path: str, mode: str = "wb", **open_kwargs) -> Iterator[IO]:
    """Yield a new file in ``path``'s folder; when the block ends without error it is flushed to
    disk and renamed over ``path``, otherwise removed. The temporary file is created exclusively
    under a random name, so a file or link planted at a predictable name cannot receive the data."""
    folder, name = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise


def remove_orphans(folder: str) -> list:
    """Remove the temporary files (and folders) named ``.NAME.RANDOM.tmp`` that a killed process
    left in ``folder`` (:func:`atomic_write`, ``tempfile.mkdtemp``); only safe while holding the
    folder's lock, when no other writer can be mid-write. Links are never followed or removed."""
    orphans = [entry for entry in os.scandir(folder)
               if entry.name.startswith(".") and entry.name.endswith(".tmp") and not entry.is_symlink()]
    for entry in orphans:
        shutil.rmtree(entry.path) if entry.is_dir() else os.unlink(entry.path)
    return [entry.path for entry in orphans]


def lock_folder(folder: str, owner: str) -> None:
    """Hold ``folder/.lock`` exclusively until this process ends (the system releases it then,
    even after a kill), creating ``folder`` if needed; raise FolderBusy naming the holder when
    another process holds it. Taking it again in the same process does nothing."""
    folder = os.path.abspath(folder)
    if folder in _HELD:
        return
    os.makedirs(folder, exist_ok=True)
    fd = os.open(os.path.join(folder, ".lock"), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    lock = os.fdopen(fd, "r+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = lock.read().strip() or "another process"
        lock.close()
        raise FolderBusy(f"{folder} is in use by {holder}: wait for it to end, or use another folder") from None
    lock.seek(0)
    lock.truncate()
    lock.write(f"{owner} (pid {os.getpid()})\n")
    lock.flush()
    _HELD[folder] = lock
