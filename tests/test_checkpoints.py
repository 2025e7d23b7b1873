"""The plugin's checkpoint handling: allow-list contents, atomic copies, clear load errors."""
import os

import pytest
import torch
from fairseq import checkpoint_utils

from user_dir.checkpoints import CheckpointError, check_file, safe_globals


def test_allow_list_is_only_data_types():
    names = {f"{g.__module__}.{g.__qualname__}" for g in safe_globals()}
    assert "argparse.Namespace" in names and "numpy.ndarray" in names
    assert not any(n.startswith(("builtins.", "os.", "subprocess.", "posix.")) for n in names), names


def test_checkpoint_copies_replace_the_file_atomically(tmp_path):
    """fairseq copies checkpoint_N.pt to checkpoint_last.pt; the copy must never be seen half-written:
    a new file is renamed over the old one (new inode) instead of overwriting it in place."""
    src, dst = tmp_path / "checkpoint1.pt", tmp_path / "checkpoint_last.pt"
    src.write_bytes(b"new" * 1000)
    dst.write_bytes(b"old")
    inode = os.stat(dst).st_ino
    assert checkpoint_utils.PathManager.copy(str(src), str(dst), overwrite=True)
    assert dst.read_bytes() == src.read_bytes()
    assert os.stat(dst).st_ino != inode
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_checkpoint_is_named(tmp_path, damage):
    path = tmp_path / "model.pt"
    torch.save({"model": {"w": torch.randn(64, 64)}}, path)
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 3] ^= 0xFF  # inside the tensor bytes: only the CRC notices
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=rf"checkpoint {path} is (truncated or )?corrupted"):
        check_file(str(path))


def test_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        checkpoint_utils.load_checkpoint_to_cpu(str(tmp_path / "nope.pt"))
