"""prepare.py's held-out split and train_settings.py's option handling, in process (no CLI)."""
import io

import pytest
import torch
from omegaconf import OmegaConf

from scripts.prepare import hold_out
from scripts.train_settings import components, given
from user_dir.patches.checkpoints import safe_globals
from user_dir.patches.distributed import CONFIG_GLOBALS


def corpus(n: int, copies: int = 1) -> tuple[list[str], list[str]]:
    src = [f"s{i}" for i in range(n)] * copies
    return src, [f"t{i}" for i in range(n)] * copies


def test_hold_out_is_deterministic_disjoint_and_drops_copies_of_held_out_pairs():
    data = corpus(100, copies=2)  # every pair twice
    a, b = hold_out(data, 5, 7, seed=3), hold_out(data, 5, 7, seed=3)
    assert a == b and a != hold_out(data, 5, 7, seed=4)
    pairs = {split: set(zip(*sides)) for split, sides in a.items()}
    assert len(a["valid"][0]) == 5 and len(a["test"][0]) == 7
    assert not pairs["train"] & pairs["valid"] and not pairs["train"] & pairs["test"]
    assert not pairs["valid"] & pairs["test"]
    assert len(a["train"][0]) == 2 * (100 - 12)  # both copies of the 12 held-out pairs left train


def test_hold_out_defaults_and_refusals():
    assert {k: len(v[0]) for k, v in hold_out(corpus(1000), None, None, 1).items()} == {
        "train": 900, "valid": 50, "test": 50}
    assert "test" not in hold_out(corpus(100), 10, 0, 1)
    with pytest.raises(SystemExit, match="fewer than half of the 100 distinct pairs"):
        hold_out(corpus(100), 30, 30, 1)


def test_given_reads_both_spellings_and_the_last_wins():
    assert given(["--max-update", "5", "--max-update=7"], "--max-update") == "7"
    assert given(["--max-epoch", "2"], "--max-update") is None


def test_components_keep_only_the_options_a_chosen_component_defines():
    ours = components([], lr_patience=1, warmup=10)
    assert ours[ours.index("--lr-patience") + 1] == "1" and ours[ours.index("--warmup-updates") + 1] == "10"
    cosine = components(["--lr-scheduler", "cosine"], lr_patience=0, warmup=10)
    assert "--lr-patience" not in cosine and "--warmup-updates" in cosine


def test_a_training_state_with_its_config_loads_weights_only_with_the_broadcast_allow_list():
    """What rank 0 sends on resume: a state with an omegaconf config (fairseq's _broadcast_object_slow)."""
    state = {"cfg": OmegaConf.create({"common": {"seed": 1, "amp": False}, "lr": [0.002]}), "model": {}}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with pytest.raises(Exception, match="DictConfig"):
        torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    with torch.serialization.safe_globals(safe_globals() + CONFIG_GLOBALS):
        loaded = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    assert loaded["cfg"].common.seed == 1 and list(loaded["cfg"].lr) == [0.002]
