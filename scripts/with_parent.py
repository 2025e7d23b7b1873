"""Run a command (fairseq-train, torchrun) in a session of its own, dying with the process that started it.

Usage (scripts/train.sh runs it): python scripts/with_parent.py COMMAND [ARGS...]
On Linux the parent-death signal (prctl PR_SET_PDEATHSIG, kept across exec) sends SIGKILL when the
parent ends, even by SIGKILL, which cannot be trapped: nothing trains on in the background after
train.sh or torchrun is gone (torchrun's workers run this script too). The own session keeps
Ctrl-C at train.sh, which stops the whole group and says so in one line, instead of each process
printing a traceback. Checkpoints are written atomically (user_dir/patches/checkpoints.py), so a
kill never leaves half a file.
"""
import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
PARENT = "WITH_PARENT_PID"  # the pid the parent-death signal is tied to (set for the next level)


def die_with_parent() -> None:
    """SIGKILL this process when its parent ends; ends now if the parent has already gone."""
    parent = int(os.environ.get(PARENT, os.getppid()))
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent ended before the signal was set
        os._exit(128 + signal.SIGKILL)
    os.environ[PARENT] = str(os.getpid())  # the command's own children check against it


def main() -> None:
    try:
        os.setsid()
    except PermissionError:  # already a session leader (torchrun starts its workers so)
        pass
    die_with_parent()
    os.execvp(sys.argv[1], sys.argv[1:])


if __name__ == "__main__":
    main()
