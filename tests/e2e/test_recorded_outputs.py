"""Outputs recorded from older code (tests/data/README.md), which today's code must reproduce: what is
discrete exactly, float scores and losses to float32 rounding on any CPU (kernels round differently from
one CPU to another: an Intel Xeon moved a recorded score in its 7th digit)."""
import json

import pytest

from helpers import DATA, assert_floats_close, generate_lines, train_losses

# A float32 value holds ~7 significant digits; another CPU's kernels move a score summed over a sentence by
# tens of ulps (1e-7 relative) at most, so 1e-5 relative (~100 ulps) plus 1e-5 absolute (scores near 0).
SCORE_REL = SCORE_ABS = 1e-5
# fairseq-generate prints P- (per-token) scores rounded to 4 decimals: a float32 difference across a
# rounding boundary flips the last digit, so allow one unit there.
PRINTED_4_DECIMALS = 1e-4 * (1 + 1e-6)


def parse(lines: list[str]) -> tuple[list[tuple[str, str]], list[float]]:
    """(sentence key and hypothesis words for H-, key for P-) exactly, and every score as a float."""
    exact, scores = [], []
    for line in lines:
        key, *fields = line.split("\t")
        if key.startswith("H-"):
            exact.append((key, fields[1]))
            scores.append(float(fields[0]))
        else:
            exact.append((key, str(len(fields[0].split()))))
    return exact, scores


def token_scores(lines: list[str]) -> list[float]:
    return [float(x) for line in lines if line.startswith("P-") for x in line.split("\t")[1].split()]


def test_checkpoint_of_the_code_before_attention_decodes_the_same_hypotheses_and_scores(toy_bin):
    """--decoder-attention none is the model as it was: a checkpoint written by commit 94176b2 loads and
    gives that code's hypotheses exactly, and its sentence and per-token scores to float32 rounding."""
    got = generate_lines(toy_bin, DATA / "gru_94176b2.pt", "--beam", "3", "--batch-size", "64", "--gen-subset", "valid")
    want = (DATA / "gru_94176b2.valid.txt").read_text().splitlines()
    (got_exact, got_scores), (want_exact, want_scores) = parse(got), parse(want)
    assert got_exact == want_exact  # the same sentences, hypotheses and hypothesis lengths
    assert_floats_close(got_scores, want_scores, rel=SCORE_REL, abs=SCORE_ABS, what="H- score")
    assert_floats_close(token_scores(got), token_scores(want), rel=0, abs=PRINTED_4_DECIMALS, what="P- token score")


RECORDED_TRAINING = json.loads((DATA / "training_losses_fd61f48.json").read_text())
# Update k's loss is computed with weights that carry k-1 updates' rounding, which Adam (dividing by the
# gradient's running RMS) amplifies: the first updates within 1e-5 relative, the rest within 1e-4. With
# torch's other CPU kernels (ATEN_CPU_CAPABILITY=default instead of AVX512) the 30 losses moved by at most
# 1.6e-6 relative (none in the first 5); a changed model (init, gate order, masking) moves them by 1e-3 or more.
FIRST_UPDATES, FIRST_REL, LATER_REL = 5, 1e-5, 1e-4


@pytest.mark.parametrize("attention", sorted(RECORDED_TRAINING["losses"]))
def test_seeded_training_gives_the_recorded_losses(toy_bin, attention):
    """30 float32 updates on CPU of the tests' tiny model give the per-update losses the code of
    commit fd61f48 gave (tests/data/README.md)."""
    got = train_losses(toy_bin, *RECORDED_TRAINING["args"], *RECORDED_TRAINING["variant_args"][attention])
    want = RECORDED_TRAINING["losses"][attention]
    assert len(got) == len(want) == 30
    assert_floats_close(got[:FIRST_UPDATES], want[:FIRST_UPDATES], rel=FIRST_REL, abs=0, what="loss of update")
    assert_floats_close(got, want, rel=LATER_REL, abs=0, what="loss of update")
