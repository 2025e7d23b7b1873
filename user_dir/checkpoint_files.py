"""Checks of a checkpoint file before torch reads it, shared by the loading patch and the scripts.

A local checkpoint is refused, with a :class:`CheckpointError` naming the file and the reason,
when it is missing, truncated, corrupted (a member's checksum) or could not have been written
by ``torch.save`` (compressed or linked members, names outside one top-level folder, sizes
beyond the file's own). Nothing is inflated: a crafted archive costs no more than reading it.
The scripts check every checkpoint before they start a decoding; the patch in
:mod:`user_dir.patches.checkpoints` checks each one fairseq loads.
"""
import os
import pickle
import pickletools
import stat
import zipfile
from collections import OrderedDict
from typing import Iterable

from .errors import Refusal
from .files import not_a_file

ENSEMBLE_SEPARATOR = os.pathsep  # fairseq's --path and from_pretrained split a.pt:b.pt into an ensemble


class CheckpointError(Refusal, RuntimeError):
    """A checkpoint that cannot or must not be loaded; the message names the file."""


FILE_ATTRIBUTE = "checkpoint_file"  # set on loaded weights (an OrderedDict), as torch sets ``_metadata`` there
LINKS = "rnn_seq2seq-links"  # the folder of fairseq_ensemble's links to checkpoints whose names hold ENSEMBLE_SEPARATOR


def note_file(state: dict, path: str) -> None:
    """Note on the weights of a loaded checkpoint ``state`` the file they came from, so that a model
    refusing them names it (which member of an ensemble); a plain dict of them (an averaged
    checkpoint's) becomes an OrderedDict, as torch's own state_dict is, to hold the note."""
    if type(state.get("model")) is dict:
        state["model"] = OrderedDict(state["model"])
    if hasattr(state.get("model"), "__dict__"):
        setattr(state["model"], FILE_ATTRIBUTE, shown(path))


def named_file(weights: object) -> str:
    """``checkpoint PATH: `` for weights :func:`note_file` marked, else nothing: a refusal's opening."""
    path = getattr(weights, FILE_ATTRIBUTE, None)
    return f"checkpoint {path}: " if path else ""


def check_archive(path: str, z: zipfile.ZipFile) -> None:
    """Refuse a torch zip whose members could not have been written by ``torch.save``."""
    size = os.path.getsize(path)
    infos = z.infolist()
    tops = sorted({info.filename.split("/", 1)[0] for info in infos})
    if len(tops) > 1:  # torch.save writes every member under one folder
        raise CheckpointError(f"checkpoint {path} has an unexpected member name {tops[1]!r} beside {tops[0]!r}")
    for info in infos:
        name = info.filename
        if name.startswith(("/", "\\")) or "\\" in name or ".." in name.split("/"):
            raise CheckpointError(f"checkpoint {path} has an unexpected member name {name!r}")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise CheckpointError(f"checkpoint {path} has a link member {name!r}")
        if info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size:
            raise CheckpointError(f"checkpoint {path} has a compressed member {name!r} (torch.save stores members)")
    if sum(info.file_size for info in infos) > size:
        raise CheckpointError(f"checkpoint {path} claims more data than its {size} bytes hold (crafted or corrupted)")


def check_file(path: str, contents: bool = True) -> None:
    """Raise CheckpointError naming ``path`` if it is missing, not a regular file (a folder, a
    FIFO), or (CONTENTS: every byte read) truncated, corrupted or crafted."""
    why = not_a_file(path)
    if why is not None:
        raise CheckpointError(f"checkpoint {path} {why}")
    if not contents:
        return
    with open(path, "rb") as f:
        is_zip = f.read(4) == b"PK\x03\x04"  # torch's format since 1.6; older files are plain pickles
    if not is_zip:
        return
    try:
        with zipfile.ZipFile(path) as z:
            check_archive(path, z)
            bad = z.testzip()  # reads every (stored) member and checks its CRC
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path} is truncated or corrupted ({e})") from None
    if bad is not None:
        raise CheckpointError(f"checkpoint {path} is corrupted (bad checksum in {bad})")


STRINGS = {"SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"}
MEMO_PUTS, MEMO_GETS = {"BINPUT", "LONG_BINPUT", "PUT"}, {"BINGET", "LONG_BINGET", "GET"}


def pickled_globals(path: str) -> list[str]:
    """The ``module.name`` of every global (class or function) the checkpoint's pickle refers to,
    read from its opcodes (nothing is unpickled, no message of torch's is parsed); [] when the
    file cannot be parsed."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                data = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
        else:  # torch's legacy format: a magic number, then pickles; the first global is enough to see
            with open(path, "rb") as f:
                data = f.read()
        names: list[str] = []
        pushed: list = []  # the values opcodes pushed, strings as such, anything else as None
        memo: dict = {}
        for op, arg, _ in pickletools.genops(data):
            if op.name in STRINGS:
                pushed.append(arg)
            elif op.name in MEMO_PUTS or op.name == "MEMOIZE":
                memo[arg if op.name in MEMO_PUTS else len(memo)] = pushed[-1] if pushed else None
            elif op.name in MEMO_GETS:
                pushed.append(memo.get(arg))
            elif op.name == "GLOBAL":
                names.append(arg.replace(" ", "."))
                pushed.append(None)
            elif op.name == "STACK_GLOBAL":
                names.append(f"{pushed[-2]}.{pushed[-1]}" if len(pushed) > 1 else "?")
                pushed.append(None)
            else:
                pushed.append(None)
        return [n.replace("__builtin__.", "builtins.", 1) for n in names]  # protocol 2's name of builtins
    except (OSError, StopIteration, ValueError, zipfile.BadZipFile, pickle.UnpicklingError):
        return []


def refused_globals(names: Iterable[str], allowed: Iterable[str]) -> list[str]:
    """The entries of ``names`` that are neither torch's own weights-only globals nor ``allowed``."""
    try:
        from torch._weights_only_unpickler import _get_allowed_globals
        known = set(_get_allowed_globals()) | set(allowed)
    except ImportError:  # a torch without that list: its own module's names
        known = {n for n in names if n.startswith("torch.")} | {"collections.OrderedDict"} | set(allowed)
    return sorted(set(names) - known)


def split_ensemble(spec: str, folder: str = "") -> list[str]:
    """The checkpoints of ``a.pt:b.pt`` (fairseq's ensemble syntax), each relative to ``folder``; a
    path that exists as given is one checkpoint even when it holds ``:``. A missing or empty part is
    named, saying what ``:`` means."""
    if ENSEMBLE_SEPARATOR not in spec or os.path.lexists(os.path.join(folder, spec)):
        return [os.path.join(folder, spec)]
    parts = spec.split(ENSEMBLE_SEPARATOR)
    if not all(parts):
        raise CheckpointError(f"checkpoint {spec} has an empty name before or after '{ENSEMBLE_SEPARATOR}' (it "
                              "separates the checkpoints of an ensemble)")
    paths = [os.path.join(folder, part) for part in parts]
    missing = [p for p in paths if not os.path.lexists(p)]
    if missing:
        raise CheckpointError(f"checkpoint {missing[0]} does not exist ('{ENSEMBLE_SEPARATOR}' in {spec} separates the "
                              "checkpoints of an ensemble; a file whose name holds it must be given alone)")
    return paths


def checked_ensemble(spec: str, folder: str = "", contents: bool = True) -> list[str]:
    """The checkpoints of ``spec`` (:func:`split_ensemble`), each checked with :func:`check_file`."""
    paths = split_ensemble(spec, folder)
    for path in paths:
        check_file(path, contents)
    return paths


def absolute_ensemble(spec: str) -> str:
    """``spec`` with each checkpoint's absolute path: the same ensemble from any folder."""
    return ENSEMBLE_SEPARATOR.join(os.path.abspath(path) for path in split_ensemble(spec))


def fairseq_ensemble(paths: list[str], folder) -> str:
    """``paths`` as one fairseq ``--path`` value: a path holding ``:`` (which fairseq would split) is
    replaced by a link to it in ``folder``/:data:`LINKS` (messages name the file it stands for: :func:`shown`)."""
    safe = []
    for i, path in enumerate(paths):
        if ENSEMBLE_SEPARATOR in path:
            os.makedirs(os.path.join(folder, LINKS), exist_ok=True)
            link = os.path.join(folder, LINKS, f"checkpoint{i}.pt")
            os.symlink(os.path.abspath(path), link)
            path = link
        safe.append(path)
    return ENSEMBLE_SEPARATOR.join(safe)


def shown(path: str) -> str:
    """PATH as a message names it: for a link :func:`fairseq_ensemble` made, the checkpoint it stands for."""
    if os.path.basename(os.path.dirname(path)) == LINKS and os.path.islink(path):
        return os.readlink(path)
    return path


def essence(error: Exception) -> str:
    """The line of a (often multi-line) torch error that says what is wrong."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    detail = [line for line in lines if line.startswith(("Unsupported", "Expected", "PytorchStreamReader"))]
    return (detail or lines or [repr(error)])[0]
