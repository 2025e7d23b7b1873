"""Writing files so that nothing is ever seen half-written, folders one writer at a time, and
outputs that never replace an input or a training run's checkpoint.

Shared by the plugin's patches of fairseq (checkpoint saves and copies, ``--save-dir``) and by
``scripts/`` (every output of ``prepare.py``, ``evaluate.py``, ``average_checkpoints.py``,
``distill.py``).
"""
import errno
import fcntl
import os
import re
import shutil
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Callable, Iterable, Iterator, Optional

_UMASK = os.umask(0)
os.umask(_UMASK)  # read once: mkstemp creates 0600 files, the result should get the usual mode
_HELD: dict = {}  # folder -> open lock file, kept for the life of the process


class FolderBusy(RuntimeError):
    pass


class OutputError(ValueError):
    """An output path that must not be written; the message names the option and the path."""


class WriteError(OSError):
    """A write that failed (full disk, quota, size limit); the message names the path."""

    def __str__(self) -> str:
        return str(self.strerror)


# what fairseq-train writes into --save-dir: a running or resumable run reads them back
TRAINING_CHECKPOINT = re.compile(r"checkpoint(_last|_best|\d+|_\d+_\d+|\.best_.*|_ema)?\.pt|crash\.pt")
KINDS = {stat.S_IFDIR: "a folder", stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFCHR: "a character device",
         stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket"}


def not_a_file(path: "str | Path") -> Optional[str]:
    """Why ``path`` cannot be read as a regular file ("does not exist", "is a folder", "is a FIFO
    ...") or None; checked before opening, since opening a FIFO or a device can block forever."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "does not exist"
    except OSError as e:
        return f"cannot be read ({e.strerror})"
    if stat.S_ISREG(mode):
        return None
    return f"is {KINDS.get(stat.S_IFMT(mode), 'not a regular file')}, not a regular file"


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def check_output(path: Path, option: str, inputs: Iterable[Path] = (),
                 previous: Optional[Callable[[Path], bool]] = None) -> None:
    """Refuse, before any work, an output that would replace one of ``inputs`` (or a file inside
    an input folder), a training run's checkpoint, a folder or special file, an existing file that
    ``previous`` does not recognise as an earlier output of this kind (with ``previous`` None, any
    existing path), or that lies in a folder that is missing or not writable."""
    path = Path(path)
    problem = None
    for given in map(Path, inputs) if path.exists() else ():
        if _same(path, given):
            problem = f"it is an input of this run ({given})"
        elif given.is_dir() and path.resolve().is_relative_to(given.resolve()):
            problem = f"it is inside the input folder {given}"
    if problem is None and TRAINING_CHECKPOINT.fullmatch(path.name):
        problem = "the name is one fairseq-train writes and resumes from (choose another name)"
    elif problem is None and os.path.lexists(path):
        kind = not_a_file(path)
        if kind is not None and kind != "does not exist":
            problem = f"it {kind}"
        elif previous is None or not previous(path):
            problem = "it exists and is not an earlier output of this kind (remove it or choose another path)"
    if problem is None and (not path.parent.is_dir() or not os.access(path.parent, os.W_OK)):
        problem = f"folder {path.parent} does not exist or is not writable"
    if problem:
        raise OutputError(f"{option}: cannot write {path}: {problem}")


def check_distinct(outputs: dict) -> None:
    """Refuse two options naming one output path (``outputs``: option -> path or None)."""
    seen: dict = {}
    for option, path in outputs.items():
        if path is None:
            continue
        key = Path(path).resolve()
        if key in seen:
            raise OutputError(f"{seen[key]} and {option} name the same file {path}")
        seen[key] = option


WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO}


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
    except BaseException as e:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and not isinstance(e, WriteError) and e.errno in WRITE_ERRNOS:
            raise WriteError(e.errno, f"cannot write {path}: {e.strerror} (the old file, if any, is "
                                      "unchanged; free space or choose another folder)") from None
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
