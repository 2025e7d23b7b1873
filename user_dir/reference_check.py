"""Whether a raw reference is the target side of what evaluate.py scores, line for line.

The targets come from binarized data (fairseq's ``Dictionary.string``: tokenized, <unk> for words
the dictionary lacks); the reference is raw text. Lines are compared by their letter trigrams,
which both forms share: lower-cased, without white space, pieces' marks, '@@', and none across an
<unk>. A target with more than a quarter <unk> leaves too little to tell its line from another
one, and is not judged. Margins: docs/troubleshooting.md.
"""
import functools
import re

from .dictionaries import PIECE_START

UNKNOWN = re.compile(r"<?<unk>>?")  # <unk>, and fairseq-generate's T- lines' escaped <<unk>>
RESEMBLE = 0.3  # share of letter trigrams from which a reference line resembles a target
MISPLACED = 0.2  # by this much more like a neighbour's target than its own, a line is out of place


@functools.lru_cache(maxsize=4096)  # a line is compared with its neighbours' targets too: a window is enough
def trigrams(text: str) -> frozenset[str]:
    """The letter trigrams of TEXT, lower-cased, without white space, pieces' marks or '@@', none
    across an <unk> (its word is not seen)."""
    found: set[str] = set()
    for part in UNKNOWN.split(text.lower().replace(PIECE_START, " ").replace("@@", "")):
        part = "".join(part.split())
        found |= {part[i:i + 3] for i in range(max(1, len(part) - 2))} if part else set()
    return frozenset(found)


def likeness(a: str, b: str) -> float:
    """The share of letter trigrams texts A and B have in common, of those either has."""
    ours, theirs = trigrams(a), trigrams(b)
    return len(ours & theirs) / max(1, len(ours | theirs))


def judged(target: str) -> bool:
    """Whether at most a quarter of TARGET's words are <unk>: only then does a reference line show
    enough of its letters to be told from another one (a small dictionary leaves some lines too little)."""
    return len(UNKNOWN.findall(target)) * 4 <= len(target.split())


def resembling(texts: dict[int, str], targets: dict[int, str], every: bool = False) -> tuple[int, int]:
    """(how many of TEXTS resemble their sentence's target, of how many compared): the judged lines,
    or EVERY line (texts that are themselves targets: an equal line resembles)."""
    ids = [i for i in texts if i in targets and (every or judged(targets[i]))]
    return sum(UNKNOWN.sub("<unk>", texts[i]) == targets[i] or likeness(texts[i], targets[i]) >= RESEMBLE
               for i in ids), len(ids)


def out_of_place(ref: str, own: str, neighbours: list[str]) -> bool:
    """Whether reference line REF resembles a neighbour's target more (by MISPLACED) than its OWN."""
    return any(likeness(ref, other) >= RESEMBLE and likeness(ref, other) > likeness(ref, own) + MISPLACED
               for other in neighbours)


def check_reference(refs: list[str], sentences: dict[int, str], what: str) -> None:
    """Refuse a reference that is not the target side of WHAT, line for line: at least half its
    judged lines must share RESEMBLE of their letter trigrams with their sentence's target (another
    split or language of the same length fails), and no two neighbouring judged lines may resemble a
    neighbour's target more (by MISPLACED) than their own (a line added, removed or moved)."""
    present = {i: refs[i] for i in range(len(refs)) if i in sentences}  # a sentence a log lacks is named later
    same, compared = resembling(present, sentences)
    if not compared:  # a split without a target side, or targets of <unk>: nothing to compare with
        return
    ids = [i for i in present if judged(sentences[i])]
    if same < compared / 2:
        lines = f"its {compared} lines" + (" judged (targets of at most a quarter <unk>)" * (compared < len(present)))
        raise SystemExit(f"error: the reference does not match {what}: {same} of {lines} resemble their "
                         f"sentence's target (line {ids[0] + 1}: {refs[ids[0]][:50]!r} against "
                         f"{sentences[ids[0]][:50]!r}); give the reference of the sentences scored")
    before, after = dict(zip(ids[1:], ids)), dict(zip(ids, ids[1:]))  # the neighbouring judged lines
    neighbours = {i: [sentences[j] for j in (before.get(i), after.get(i)) if j is not None] for i in ids}
    misplaced = {i for i in ids if out_of_place(refs[i], sentences[i], neighbours[i])}
    runs = [i for i, j in zip(ids, ids[1:]) if i in misplaced and j in misplaced]  # a shift or a swap
    if runs:
        i = runs[0]
        raise SystemExit(f"error: the reference is out of line with {what}: {len(misplaced)} of its lines resemble "
                         f"a neighbouring sentence's target more than their own (line {i + 1}: {refs[i][:50]!r} "
                         f"against {sentences[i][:50]!r}): a line added, removed or moved? give the reference of "
                         "the sentences scored, line for line")
