"""The README cannot drift (issue 30): its quick-start, own-data and Python blocks (the fenced
blocks after ``<!-- test: NAME -->``) run as written, in a temporary copy of the checkout, on the
shipped toy corpus; and every repository path the README names exists.

What the test changes, and only this: the own-data corpus is ``data/toy/train.{src,tgt}``
copied to ``path/to/corpus.{de,en}`` (the README's placeholder); ``prepare.py --corpus`` gets
``--vocab-size 60`` (the toy task has a few dozen words); ``train.sh`` gets a tiny model and
``--max-update`` (extra arguments win, as the README says); ``test.sh`` gets ``--collect-only``
(the suite runs in CI already; running it from here would run this test again). The environment:
``VENV=0`` (this interpreter's packages, no second ``.venv``) and ``AMP=0`` (no precision probe).
"""
import os
import re
import shutil
import sys
from pathlib import Path

import pytest

from helpers import ROOT, run

README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCK = re.compile(r"<!-- test: ([\w-]+) -->\s*\n```(\w+)\n(.*?)\n```", re.S)
TINY_TRAINING = ["--arch", "rnn_seq2seq", "--encoder-embed-dim", "32", "--decoder-embed-dim", "32",
                 "--encoder-hidden-size", "48", "--decoder-hidden-size", "48", "--dropout", "0",
                 "--label-smoothing", "0", "--lr", "5e-3", "--max-tokens", "600", "--max-update", "60"]
EXTRA = {  # a command of the README -> what the test appends to it
    "scripts/prepare.py --corpus": ["--vocab-size", "60"],
    "scripts/train.sh": TINY_TRAINING,
    "scripts/test.sh": ["--collect-only", "-q"],
}
NOT_COPIED = {".git", ".venv", "runs", "checkpoints", "__pycache__", ".pytest_cache", ".ruff_cache"}


def blocks(name: str) -> list[tuple[str, str]]:
    """(language, text) of every fenced block the README marks ``<!-- test: name -->``, in order."""
    found = [(lang, body) for marker, lang, body in BLOCK.findall(README) if marker == name]
    assert found, f"README.md has no block marked <!-- test: {name} -->"
    return found


def without_comment(line: str) -> str:
    """The line up to a ``#`` that starts a shell comment (outside quotes, after a space)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def shell_lines(body: str) -> list[str]:
    """A bash block's commands, one per logical line (continuations joined, comments dropped),
    each with the test's extra arguments appended."""
    lines = []
    for line in body.replace("\\\n", " ").splitlines():
        line = without_comment(line)
        if not line:
            continue
        for command, extra in EXTRA.items():
            if command in line:
                line += " " + " ".join(extra)
        lines.append(line)
    return lines


def run_bash(checkout: Path, body: str, env: dict) -> str:
    script = "set -euo pipefail\n" + "\n".join(shell_lines(body)) + "\n"
    return run("bash", "-c", script, cwd=checkout, env=env, timeout=600).stdout


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """A copy of the checkout (sources, data, docs, tests; no .venv, runs or git), as a new user has it."""
    copy = tmp_path_factory.mktemp("readme") / "repo"
    shutil.copytree(ROOT, copy, ignore=lambda folder, names: [
        n for n in names if n in NOT_COPIED or n.endswith(".egg-info")])
    return copy


@pytest.fixture(scope="module")
def env() -> dict:
    bin_dir = str(Path(sys.executable).parent)  # python3 there imports fairseq (what VENV=0 asks for)
    return {"VENV": "0", "AMP": "0", "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}


def test_quick_start_runs(checkout, env):
    (lang, body), = blocks("quick-start")
    assert lang == "bash" and "scripts/demo.sh" in body and "scripts/test.sh" in body
    out = run_bash(checkout, body, env)
    bleu = re.search(r"BLEU = ([\d.]+)", out)
    assert bleu and float(bleu.group(1)) > 70, out[-3000:]  # the README: "a BLEU around 80"
    assert re.search(r"\d+ tests? collected", out), out[-3000:]
    demo_out = re.search(r"It writes `(runs/[\w-]+)/`", README)  # where the README says the demo writes
    assert demo_out and (checkout / demo_out.group(1) / "ckpt" / "checkpoint_best.pt").is_file()


def test_own_data_and_python_api_run(checkout, env):
    corpus = re.search(r"--corpus (\S+)", README).group(1)  # the README's placeholder for the user's pair
    (checkout / corpus).parent.mkdir(parents=True, exist_ok=True)
    for side, lang in (("src", "de"), ("tgt", "en")):
        shutil.copyfile(ROOT / "data" / "toy" / f"train.{side}", checkout / f"{corpus}.{lang}")
    outputs = []
    for lang, body in blocks("own-data"):
        assert lang == "bash"
        outputs.append(run_bash(checkout, body, env))
    out = "\n".join(outputs)
    mine = checkout / "runs" / "mine" / "de-en"
    assert (mine / "prepare.json").is_file() and (mine / "ckpt" / "checkpoint_best.pt").is_file()
    assert re.search(r"BLEU = [\d.]+", out), out[-3000:]  # evaluate.py scored the held-out test split
    assert re.search(r"^H-0\t", out, re.M), out[-3000:]  # fairseq-interactive translated the sentence

    (lang, code), = blocks("python-api")
    assert lang == "python"
    translations = run(sys.executable, "-c", code, cwd=checkout, env=env, timeout=300).stdout
    assert translations.count("[") >= 2, translations  # two printed lists of translations


# Paths in the README: with a slash (``scripts/train.sh``, ``docs/results/``) relative to the checkout;
# bare file names of the code-layout table (``recurrence.py``) anywhere in it. Not paths of the repo:
# what the user makes or supplies (runs/..., path/to/corpus), URLs.
PATH = re.compile(r"(?<![\w./:-])((?:\.ci|user_dir|scripts|lab|configs|tests|docs|data)/[\w./-]*"
                  r"|[\w-]+\.(?:py|sh|yaml|md|txt|cfg|toml))(?![\w/-])")


def named_paths() -> set[str]:
    text = re.sub(r"https?://\S+", "", README)
    return {m.rstrip(".") for m in PATH.findall(text)}


def test_every_path_the_readme_names_exists():
    files = set()
    for folder, dirs, names in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in NOT_COPIED]
        files.update(names)
    names = named_paths()
    assert "scripts/train.sh" in names and "recurrence.py" in names  # the pattern finds both kinds
    missing = sorted(n for n in names if not ((ROOT / n).exists() if "/" in n else n in files))
    assert not missing, f"README.md names paths that do not exist: {missing}"


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_link_into_docs_resolves():
    for target, anchor in re.findall(r"\]\(((?:docs|tests|user_dir|scripts|lab)/[^)#]*)(?:#([^)]*))?\)", README):
        path = ROOT / target
        assert path.exists(), f"README.md links to {target}, which does not exist"
        if anchor:
            headings = re.findall(r"^#+ (.+)$", path.read_text(encoding="utf-8"), re.M)
            assert anchor in {slug(h) for h in headings}, f"README.md links to {target}#{anchor}: no such heading"
