"""The plugin's patches of fairseq: allow-list contents, atomic copies, clear load errors,
remote paths, idempotence."""
import os
import zipfile

import pytest
import torch
from fairseq import checkpoint_utils
from fairseq.file_io import PathManager
from iopath.common.file_io import PathHandler

from helpers import DATA, ROOT, python_with_plugin, run
from user_dir.checkpoint_files import CheckpointError, check_file
from user_dir.patches.checkpoints import safe_globals


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
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint1.pt", "checkpoint_last.pt"]


def test_copy_honours_overwrite(tmp_path):
    src, dst = tmp_path / "a.pt", tmp_path / "b.pt"
    src.write_bytes(b"new")
    dst.write_bytes(b"old")
    assert checkpoint_utils.PathManager.copy(str(src), str(dst), overwrite=False) is False
    assert dst.read_bytes() == b"old"
    assert checkpoint_utils.PathManager.copy(str(src), str(tmp_path / "c.pt"), overwrite=False)


@pytest.mark.parametrize("planted", ["link", "file"])
def test_copy_is_not_redirected_by_a_file_at_a_temporary_name(tmp_path, planted):
    """A link (or file) planted where a fixed temporary name would be cannot receive the data."""
    src, dst, victim = tmp_path / "checkpoint1.pt", tmp_path / "checkpoint_last.pt", tmp_path / "victim"
    src.write_bytes(b"checkpoint")
    victim.write_bytes(b"precious")
    for name in ("checkpoint_last.pt.tmp", ".checkpoint_last.pt.tmp"):
        if planted == "link":
            (tmp_path / name).symlink_to(victim)
        else:
            (tmp_path / name).write_bytes(b"planted")
    assert checkpoint_utils.PathManager.copy(str(src), str(dst), overwrite=True)
    assert dst.read_bytes() == b"checkpoint" and not dst.is_symlink()
    assert victim.read_bytes() == b"precious"


class FolderHandler(PathHandler):
    """iopath handler for ``testfs://NAME``: files in one local folder, fetched by copying."""

    def __init__(self, folder):
        super().__init__()
        self.folder = folder

    def _get_supported_prefixes(self):
        return ["testfs://"]

    def _get_local_path(self, path, force=False, **kwargs):
        local = self.folder / "cache" / path[len("testfs://"):]
        local.parent.mkdir(exist_ok=True)
        local.write_bytes((self.folder / path[len("testfs://"):]).read_bytes())
        return str(local)

    def _exists(self, path, **kwargs):
        return (self.folder / path[len("testfs://"):]).exists()


def test_remote_path_loads_through_fairseqs_path_manager(tmp_path):
    """A path that iopath resolves is not a local file: it must not be reported missing."""
    (tmp_path / "remote.pt").write_bytes((DATA / "gru_94176b2.pt").read_bytes())  # a checkpoint, trained by no test
    from fairseq.file_io import IOPathManager
    IOPathManager.register_handler(FolderHandler(tmp_path), allow_override=True)
    assert PathManager.path_requires_pathmanager("testfs://remote.pt")
    state = checkpoint_utils.load_checkpoint_to_cpu("testfs://remote.pt")
    assert state["cfg"]["model"]["_name"] == "rnn_seq2seq"


RELOAD_TWICE = """
import importlib, sys
sys.path.insert(0, sys.argv[1])
import user_dir, user_dir.patches as patches
from fairseq import checkpoint_utils
from fairseq.data import data_utils
from fairseq.distributed import utils as distributed_utils
from fairseq.file_io import PathManager
from fairseq.models import BaseFairseqModel
from fairseq.optim.amp_optimizer import AMPOptimizer
from fairseq.tasks import FairseqTask
from fairseq.data import iterators
from fairseq.trainer import Trainer
consumers = patches.shutdown._CONSUMERS
for module in (patches.amp, patches.batching, patches.checkpoints, patches.generation, patches.decoding,
               patches.distributed, patches.divergence, patches.shutdown, patches, user_dir):
    importlib.reload(module)
    importlib.reload(module)
assert patches.shutdown._CONSUMERS is consumers  # prefetching threads made before a reload are still joined at exit
load = checkpoint_utils.load_checkpoint_to_cpu
assert load.__wrapped__ is patches.original(load)
assert load.__wrapped__.__module__ == "fairseq.checkpoint_utils" and not hasattr(load.__wrapped__, "__wrapped__")
assert checkpoint_utils.PathManager.__mro__[1] is PathManager
for owner, name in ((data_utils, "batch_by_size"), (distributed_utils, "_infer_torch_distributed_launch_init"),
                    (AMPOptimizer, "__init__"), (FairseqTask, "train_step"), (FairseqTask, "inference_step"),
                    (Trainer, "valid_step"), (BaseFairseqModel, "prepare_for_inference_"),
                    (iterators.BackgroundConsumer, "__init__")):
    home = owner.__module__ if isinstance(owner, type) else owner.__name__
    assert patches.original(getattr(owner, name)).__module__ == home
try:  # one layer still does its work: a missing file is named once, not wrapped in itself
    load(sys.argv[2])
except patches.checkpoints.CheckpointError as e:
    print(e)
"""


def test_patches_are_applied_once_however_often_imported(tmp_path):
    """Reloading every patch module (as a second --user-dir import or a notebook reload would)
    leaves one layer of patching over fairseq's own functions (in a process of its own: a reload
    redefines CheckpointError for everyone)."""
    missing = tmp_path / "nope.pt"
    out = run("python", "-c", RELOAD_TWICE, ROOT, missing).stdout
    assert out == f"checkpoint {missing} does not exist\n"


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


def crafted(path, members: dict, compression=zipfile.ZIP_STORED) -> str:
    with zipfile.ZipFile(path, "w", compression=compression) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return str(path)


def link_member(path) -> str:
    with zipfile.ZipFile(path, "w") as z:
        info = zipfile.ZipInfo("archive/data.pkl")
        info.external_attr = (0o120777 << 16)  # a symbolic link
        z.writestr(info, "/etc/passwd")
    return str(path)


@pytest.mark.parametrize("make, message", [
    (lambda p: crafted(p, {"archive/data.pkl": b"\0" * 10_000_000}, zipfile.ZIP_DEFLATED), "compressed member"),
    (lambda p: crafted(p, {"../evil/data.pkl": b"x"}), "unexpected member name"),
    (lambda p: crafted(p, {"/abs/data.pkl": b"x"}), "unexpected member name"),
    (lambda p: crafted(p, {"a/data.pkl": b"x", "b/data.pkl": b"y"}), "unexpected member name"),
    (link_member, "link member"),
    (lambda p: crafted(p, {"archive/data.pkl": b"not a pickle", "archive/version": b"3\n"}),
     r"could not be loaded \(\w+Error"),
    (lambda p: crafted(p, {"archive/other": b"x"}), r"could not be loaded \(RuntimeError"),
])
def test_crafted_archives_are_refused_with_the_file_named(tmp_path, make, message):
    path = make(tmp_path / "crafted.pt")
    with pytest.raises(CheckpointError, match=rf"checkpoint {path} .*{message}"):
        checkpoint_utils.load_checkpoint_to_cpu(path)


def test_member_sizes_beyond_the_file_are_refused_without_reading(tmp_path):
    """A member whose header claims gigabytes (size fields edited, no data behind them)."""
    path = crafted(tmp_path / "big.pt", {"archive/data.pkl": b"x" * 100})
    data = bytearray(open(path, "rb").read())
    central = data.rfind(b"PK\x01\x02")
    data[central + 20 : central + 28] = (3 << 30).to_bytes(4, "little") * 2  # compressed and file size
    open(path, "wb").write(bytes(data))
    with pytest.raises(CheckpointError, match=rf"checkpoint {path} .*(claims more data|truncated or corrupted)"):
        checkpoint_utils.load_checkpoint_to_cpu(path)


def test_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        checkpoint_utils.load_checkpoint_to_cpu(str(tmp_path / "nope.pt"))


def test_checkpoint_save_is_not_redirected_by_a_planted_link(tmp_path):
    """fairseq's own save went through FILE.tmp; a link planted there received the checkpoint."""
    victim, dst = tmp_path / "victim", tmp_path / "checkpoint_last.pt"
    victim.write_bytes(b"precious")
    (tmp_path / "checkpoint_last.pt.tmp").symlink_to(victim)
    checkpoint_utils.torch_persistent_save({"w": torch.ones(3)}, str(dst))
    assert victim.read_bytes() == b"precious"
    assert torch.equal(torch.load(dst, weights_only=True)["w"], torch.ones(3))
    assert oct(dst.stat().st_mode & 0o777) == oct(0o666 & ~current_umask())


class FailsOnce:
    """Pickled as 5, except the first time, which fails as a write to a flaky disk would, midway."""
    tries = 0

    def __reduce__(self):
        FailsOnce.tries += 1
        if FailsOnce.tries == 1:
            raise OSError("the disk failed once")
        return int, (5,)


def test_a_save_that_succeeds_on_a_later_try_is_one_readable_checkpoint(tmp_path):
    """fairseq tries torch.save three times on the same file: a try after a failed one wrote a second
    archive after the first's part, and the checkpoint published could not be read."""
    dst = tmp_path / "checkpoint_last.pt"
    checkpoint_utils.torch_persistent_save({"w": torch.ones(1000), "n": FailsOnce()}, str(dst))
    assert FailsOnce.tries == 2
    saved = torch.load(dst, weights_only=False)
    assert torch.equal(saved["w"], torch.ones(1000)) and saved["n"] == 5


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_second_writer_of_a_save_dir_is_refused_and_orphans_removed(tmp_path):
    """The master rank's check of --save-dir takes its lock; another process is refused, naming the holder."""
    (tmp_path / ".checkpoint_last.pt.abc123.tmp").write_bytes(b"half")  # a killed save's leftover, as it records it:
    (tmp_path / ".lock").write_text('fairseq-train (pid 1)\n".checkpoint_last.pt.abc123.tmp"\n')
    (tmp_path / ".notes.abc123.tmp").write_text("mine")  # not recorded: not the run's, whatever its name
    checkpoint_utils.verify_checkpoint_directory(str(tmp_path))
    assert not (tmp_path / ".checkpoint_last.pt.abc123.tmp").exists() and not (tmp_path / "dummy").exists()
    assert (tmp_path / ".notes.abc123.tmp").read_text() == "mine"
    probe = ("import user_dir; from fairseq import checkpoint_utils; "
             "checkpoint_utils.verify_checkpoint_directory(sys.argv[2])")
    second = python_with_plugin(probe, tmp_path, check=False)
    assert second.returncode != 0
    assert f"FolderBusy: --save-dir {tmp_path} is in use by fairseq-train (pid {os.getpid()})" in second.stderr
    assert python_with_plugin(probe, tmp_path / "other").returncode == 0


def test_model_overrides_reach_options_newer_than_the_checkpoint():
    """fairseq overrides only the keys a checkpoint's config holds: gru_94176b2.pt predates --decoder-graphs."""
    path = str(DATA / "gru_94176b2.pt")
    assert "decoder_graphs" not in checkpoint_utils.load_checkpoint_to_cpu(path)["cfg"]["model"]
    model = checkpoint_utils.load_checkpoint_to_cpu(path, {"decoder_graphs": "off", "beam": 3})["cfg"]["model"]
    assert model["decoder_graphs"] == "off" and "beam" not in model  # a generation option is not the model's


@pytest.mark.parametrize("saved", [{"encoder.embed_tokens.weight": torch.zeros(2, 2)}, {"a": 1}, {"model": {}}])
def test_a_file_torch_saved_but_not_by_fairseq_is_named_as_such(tmp_path, saved):
    """A bare state_dict (or any dict) that torch loads: fairseq's upgrade ended in KeyError: 'best_loss'."""
    path = tmp_path / "weights.pt"
    torch.save(saved, path)
    with pytest.raises(CheckpointError, match=rf"^checkpoint {path} is not a fairseq checkpoint: it has no 'best_loss' "
                                              r"entry \(fairseq-train's hold 'model', 'cfg' and 'optimizer_history'"):
        checkpoint_utils.load_checkpoint_to_cpu(str(path))
