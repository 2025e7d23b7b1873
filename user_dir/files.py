"""Writing files so that nothing is ever seen half-written, folders one writer at a time, and
outputs that never replace an input or a training run's checkpoint.

Shared by the plugin's patches of fairseq (checkpoint saves and copies, ``--save-dir``) and by
``scripts/`` (every output of ``prepare.py``, ``evaluate.py``, ``average_checkpoints.py``,
``distill.py``).

Nothing is deleted by its name's pattern: a temporary that a locked folder's writer makes is
recorded in the folder's lock file before it is made, and only what that record names is removed
after an interrupted run (:func:`remove_orphans`).
"""
import errno
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Callable, Iterable, Iterator, Optional

from .errors import Refusal

_UMASK = os.umask(0)
os.umask(_UMASK)  # read once: temporaries are made 0600, the result should get the usual mode
_HELD: dict = {}  # folder -> its held lock (_Lock), kept for the life of the process


class FolderBusy(Refusal, RuntimeError):
    """A folder another process holds the lock of; the message names the holder."""


class OutputError(Refusal, ValueError):
    """An output path that must not be written; the message names the option and the path."""


class WriteError(Refusal, OSError):
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


def same_file(a: Path, b: Path) -> bool:
    """Whether A and B are one file (links, hard links and other spellings of its path included)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def output_record(path: Path, kind: str) -> Path:
    """Where a script keeps the SHA-256 of the output of KIND it wrote at PATH: how it knows its own
    outputs again (one changed since, or made by something else, is not replaced)."""
    return Path(path).parent / f".{Path(path).name}.{kind}.sha256"


def written_before(path: Path, kind: str) -> bool:
    """Whether PATH is an output of KIND that a script wrote and nobody changed since (its record)."""
    try:
        return output_record(path, kind).read_text().strip() == hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return False


def write_recorded(path: Path, kind: str, data: bytes) -> None:
    """Write DATA to PATH and its :func:`output_record`, each whole or not at all (WriteError)."""
    with atomic_write(path) as f:
        f.write(data)
    with atomic_write(output_record(path, kind)) as f:
        f.write(hashlib.sha256(data).hexdigest().encode() + b"\n")


def check_output(path: Path, option: str, inputs: Iterable[Path] = (),
                 previous: Optional[Callable[[Path], bool]] = None) -> None:
    """Refuse, before any work, an output that would replace one of ``inputs`` (or a file inside
    an input folder), a training run's checkpoint, a folder or special file, an existing file that
    ``previous`` does not recognise as an earlier output of this kind (with ``previous`` None, any
    existing path), or that lies in a folder that is missing or not writable."""
    path = Path(path)
    problem = None
    for given in map(Path, inputs) if path.exists() else ():
        if same_file(path, given):
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


class _Lock:
    """A held ``folder/.lock`` and its record: the holder's name (first line), then one JSON string
    per temporary path (relative to the folder) that a holder made and has not removed yet."""

    def __init__(self, file: IO, owner: str):
        self.file, self.owner = file, owner
        self.mine: set = set()  # this process's temporaries, recorded before they are made
        self.left = set()  # recorded by an earlier holder that was interrupted
        for line in file.read().splitlines()[1:]:
            try:
                self.left.add(json.loads(line))
            except ValueError:
                continue  # an unreadable entry names nothing to remove

    def save(self) -> None:
        self.file.seek(0)
        self.file.truncate()
        self.file.write("".join([f"{self.owner}\n", *(json.dumps(p) + "\n" for p in sorted(self.mine | self.left))]))
        self.file.flush()
        os.fsync(self.file.fileno())


def _held(path: str) -> Optional[tuple]:
    """(folder, lock) of the folder locked by this process that holds ``path``, or None."""
    for folder, lock in _HELD.items():
        if Path(path).is_relative_to(folder):
            return folder, lock
    return None


def _record(path: str, made: bool) -> None:
    """Add ``path`` to (or drop it from) the record of the lock held on a folder above it."""
    held = _held(path)
    if held is not None:
        folder, lock = held
        (lock.mine.add if made else lock.mine.discard)(os.path.relpath(path, folder))
        lock.save()


def _create(folder: str, name: str, make: Callable[[str], object]) -> tuple:
    """A new ``folder/.NAME.RANDOM.tmp`` made by ``make`` (exclusively: an existing path is never
    taken over); inside a locked folder it is recorded *before* it is made, so that an
    interrupted run's leftovers are known to be its own. Returns (path, what make returned)."""
    while True:
        path = os.path.join(folder, f".{name}.{secrets.token_hex(4)}.tmp")
        _record(path, True)
        try:
            return path, make(path)
        except FileExistsError:
            _record(path, False)
        except BaseException:
            _record(path, False)
            raise


def discard(path: "str | Path") -> None:
    """Remove a file, link or folder tree that this package made and recorded (the one place
    where the scripts delete); a link is removed itself, never followed."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


@contextmanager
def atomic_write(path: str, mode: str = "wb") -> Iterator[IO]:
    """Yield a new file in ``path``'s folder (text modes in UTF-8, whatever the locale); when the block
    ends without error it is flushed to disk and renamed over ``path``, otherwise removed. The
    temporary file is created exclusively under a random name, so a file or link planted at a
    predictable name cannot receive the data."""
    folder, name = os.path.split(os.path.abspath(path))
    tmp, fd = _create(folder, name, lambda p: os.open(p, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        discard(tmp)
        if isinstance(e, OSError) and not isinstance(e, WriteError) and e.errno in WRITE_ERRNOS:
            raise WriteError(e.errno, f"cannot write {path}: {e.strerror} (the old file, if any, is "
                                      "unchanged; free space or choose another folder)") from None
        raise
    finally:
        _record(tmp, False)


@contextmanager
def temporary_folder(parent: "str | Path", name: str) -> Iterator[Path]:
    """A new folder ``PARENT/.NAME.RANDOM.tmp`` for work that is renamed into place when complete
    (or read from); whatever is still there when the block ends is removed."""
    tmp, _ = _create(os.path.abspath(parent), name, lambda p: os.mkdir(p, 0o700))
    try:
        yield Path(tmp)
    finally:
        discard(tmp)
        _record(tmp, False)


def _inside(folder: str, relative: str) -> bool:
    """Whether ``folder/relative`` lies in ``folder`` without passing through a link."""
    parts = Path(relative).parts
    if Path(relative).is_absolute() or ".." in parts or not parts:
        return False
    parent = os.path.join(folder, *parts[:-1])
    return os.path.realpath(parent) == os.path.join(os.path.realpath(folder), *parts[:-1])


def remove_orphans(folder: str) -> list:
    """Remove the temporary files and folders that an interrupted earlier holder of ``folder``'s
    lock recorded as its own and left behind (a killed :func:`atomic_write` or
    :func:`temporary_folder`); nothing else, whatever its name. Needs the lock (:func:`lock_folder`),
    so that no other writer can be mid-write."""
    folder = os.path.abspath(folder)
    lock = _HELD[folder]
    removed = [os.path.join(folder, p) for p in sorted(lock.left) if _inside(folder, p)]
    for path in removed:
        discard(path)
    lock.left.clear()
    lock.save()
    return removed


def _not_writable(folder: "str | Path", error: OSError, option: str) -> OutputError:
    """The one message for a folder that cannot be made or written: OPTION, FOLDER, why, what to do."""
    why = "it is not a folder" if os.path.lexists(folder) and not os.path.isdir(folder) else error.strerror
    return OutputError(f"{option + ': ' if option else ''}cannot write in {folder}: {why}: choose another folder")


def make_folder(folder: "str | Path", option: str = "") -> None:
    """FOLDER made (with its parents) and writable; else OutputError naming ``option``, FOLDER and why."""
    try:
        os.makedirs(folder, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as e:
        raise _not_writable(folder, e, option) from None


def lock_folder(folder: str, owner: str) -> None:
    """Hold ``folder/.lock`` exclusively until this process ends (the system releases it then,
    even after a kill), creating ``folder`` if needed; raise FolderBusy naming the holder when
    another process holds it, OutputError when the folder cannot be made or written. Taking it
    again in the same process does nothing."""
    folder = os.path.abspath(folder)
    if folder in _HELD:
        return
    make_folder(folder)
    try:
        fd = os.open(os.path.join(folder, ".lock"), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    except OSError as e:
        raise _not_writable(folder, e, "") from None
    lock = os.fdopen(fd, "r+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = lock.readline().strip() or "another process"
        lock.close()
        raise FolderBusy(f"{folder} is in use by {holder}: wait for it to end, or use another folder") from None
    record = _Lock(lock, f"{owner} (pid {os.getpid()})")
    record.save()
    _HELD[folder] = record


def release_folder(folder: str) -> None:
    """Give up this process's lock of ``folder`` (:func:`lock_folder`), for another process of the same run."""
    lock = _HELD.pop(os.path.abspath(folder), None)
    if lock is not None:
        lock.file.close()
