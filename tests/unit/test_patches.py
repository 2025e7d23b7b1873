"""The patch levels (RNN_SEQ2SEQ_PATCHES), the generation-option rules, the --post-process check
and which option differences a resume refusal names."""
import json
from argparse import Namespace

import numpy as np
import pytest
import torch
from fairseq.data import Dictionary
from fairseq.dataclass.configs import GenerationConfig
from omegaconf import OmegaConf

from helpers import ROOT, build, python_with_plugin, run
from user_dir import patches
from user_dir.dictionaries import TokenizationError, check_post_process
from user_dir.models.rnn_seq2seq import RNNSeq2SeqConfig
from user_dir.patches.checkpoints import model_changing
from user_dir.patches.generation import check_generation

# every replacement of a fairseq function or attribute before levels existed, in the order applied
ALL = ["AMPOptimizer.__init__", "FairseqTask.train_step", "Trainer.valid_step",
       "BaseFairseqModel.prepare_for_inference_", "FairseqTask.inference_step", "data.data_utils.batch_by_size",
       "checkpoint_utils.load_checkpoint_to_cpu", "checkpoint_utils.PathManager",
       "checkpoint_utils.torch_persistent_save", "checkpoint_utils.verify_checkpoint_directory",
       "Trainer.load_checkpoint", "distributed.utils.call_main", "FairseqTask.build_generator",
       "fairseq_cli.generate.main", "fairseq_cli.interactive.main", "FairseqTask.build_bpe",
       "utils.post_process_prediction", "FairseqTask.get_interactive_tokens_and_lengths",
       "fairseq_cli.interactive.make_batches", "DiverseBeamSearch.step", "NGramRepeatBlock._no_repeat_ngram",
       "TranslationTask.build_dataset_for_inference", "FairseqTask.filter_indices_by_size",
       "SequenceGenerator.generate", "SequenceGeneratorWithAlignment.generate",
       "distributed.utils._infer_torch_distributed_launch_init", "distributed.utils._broadcast_object_slow",
       "Trainer.train_step", "checkpoint_utils.save_checkpoint", "TranslationTask.reduce_metrics",
       "BackgroundConsumer.__init__"]
MINIMAL = ["distributed.utils._infer_torch_distributed_launch_init", "distributed.utils._broadcast_object_slow",
           "BackgroundConsumer.__init__"]

# import the plugin (at the level of the environment), then reload every patch module at LEVEL;
# print which of fairseq's attributes are replacements, the registry, and the log lines
LEVELS = """
import importlib, json, logging, os, sys
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(name)s %(message)s")
sys.path.insert(0, sys.argv[1])
import user_dir
from user_dir import patches
entries = list(patches.APPLIED.values())
os.environ["RNN_SEQ2SEQ_PATCHES"] = sys.argv[2]
for module in (patches, patches.amp, patches.batching, patches.checkpoints, patches.refusals, patches.generation,
               patches.decoding, patches.distributed, patches.divergence, patches.shutdown):
    importlib.reload(module)
entries += patches.APPLIED.values()
replaced = {patches._label(o, n) for o, n, _ in entries if patches.original(getattr(o, n)) is not getattr(o, n)}
print(json.dumps({"replaced": sorted(replaced), "applied": list(patches.APPLIED)}))
"""


def levels(first: str, then: str) -> tuple[dict, list[str]]:
    out = run("python", "-c", LEVELS, ROOT, then, env={"RNN_SEQ2SEQ_PATCHES": first}).stdout.splitlines()
    return json.loads(out[-1]), [line for line in out if line.startswith("user_dir.patches ")]


def test_all_is_every_replacement_made_before_levels_existed():
    assert list(patches.APPLIED) == ALL  # this process: RNN_SEQ2SEQ_PATCHES unset
    assert patches.summary() == f"rnn_seq2seq patches: all (31 replacements of fairseq: {', '.join(ALL)})"


def test_minimal_keeps_at_most_three_replacements_and_a_reload_puts_fairseqs_own_back():
    state, logged = levels("all", "minimal")
    assert len(MINIMAL) <= 3 and state["applied"] == MINIMAL and state["replaced"] == sorted(MINIMAL)
    assert logged == [f"user_dir.patches rnn_seq2seq patches: all (31 replacements of fairseq: {', '.join(ALL)})",
                      f"user_dir.patches rnn_seq2seq patches: minimal (3 replacements of fairseq: "
                      f"{', '.join(MINIMAL)})"]
    state, logged = levels("minimal", "all")  # and back: every replacement, once
    assert state["applied"] == MINIMAL + [e for e in ALL if e not in MINIMAL] and len(state["replaced"]) == len(ALL)
    assert len(logged) == 2 and "minimal (3 replacements" in logged[0]


def test_minimal_loads_checkpoints_holding_fairseqs_non_tensor_objects_under_weights_only(tmp_path):
    """fairseq 0.12's own checkpoints hold argparse.Namespace (legacy args) and numpy scalars
    (validation metrics), which torch >= 2.6 refuses unless allow-listed: minimal keeps that."""
    torch.save({"args": Namespace(arch="lstm"), "model": {"w": torch.ones(2)},
                "extra_state": {"best": np.float64(3.5), "counts": np.arange(3)}}, tmp_path / "c.pt")
    load = "import user_dir, fairseq, torch; print(torch.load(sys.argv[2], weights_only=True)['extra_state']['best'])"
    assert python_with_plugin(load, tmp_path / "c.pt", env={"RNN_SEQ2SEQ_PATCHES": "minimal"}).stdout == "3.5\n"


def test_the_summary_is_logged_once_per_process_however_often_reloaded():
    state, logged = levels("all", "all")
    assert len(logged) == 1 and state["applied"] == ALL


def test_an_unknown_level_is_one_line_naming_the_variable_and_the_values():
    proc = python_with_plugin("import fairseq, user_dir", env={"RNN_SEQ2SEQ_PATCHES": "some"}, check=False)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.splitlines()[-1] == ("error: RNN_SEQ2SEQ_PATCHES='some': allowed "
                                            "values are 'all' (the default: every repair) and 'minimal' (only those "
                                            "fairseq 0.12 needs to run on current torch)")


# H. generation options fairseq asserts on, one line each

@pytest.mark.parametrize("options, message", [
    ({"beam": 0}, r"^--beam must be at least 1, got 0$"),
    ({"beam": 2, "nbest": 3}, r"^--nbest 3 is above --beam 2: the beam holds only 2 hypotheses"),
    ({"sampling_topk": 5}, r"^--sampling-topk needs --sampling$"),
    ({"sampling_topp": 0.9}, r"^--sampling-topp needs --sampling$"),
    ({"temperature": 0.0}, r"^--temperature must be greater than 0, got 0.0$"),
    ({"max_len_a": -1.0}, r"^--max-len-a \(-1.0\), --max-len-b \(200\) and --min-len \(1\) must not be negative$"),
    ({"min_len": 6, "max_len_b": 5}, r"^--min-len 6 is above the longest translation allowed \(5:"),
    ({"min_len": 64, "max_len_a": 1.0}, r"^--min-len 64 is above the longest translation allowed \(63:"),
    ({"diverse_beam_groups": 2, "diversity_rate": 0.5, "beam": 4}, r"^--sampling, --diverse-beam-groups, --match"),
    ({"sampling": True, "match_source_len": True}, r"are searches of their own: give one of them$"),
    ({"diverse_beam_groups": 2, "beam": 5}, r"^--beam 5 must be a multiple of --diverse-beam-groups 2$"),
])
def test_generation_options_fairseq_asserts_on_are_refused_by_name(task, options, message):
    with pytest.raises(ValueError, match=message):
        task.build_generator([build(task)], GenerationConfig(**options))  # the model takes 64 positions


def test_sampling_needs_nbest_equal_to_beam_on_the_clis_only(task):
    """fairseq-generate and -interactive assert it in their main; the hub's translate() and --eval-bleu
    take the best of the samples the generator returns, as stock fairseq does."""
    options = Namespace(sampling=True, beam=4)
    with pytest.raises(ValueError, match=r"^--sampling returns every one of --beam samples: .*got --nbest 1, --beam 4"):
        check_generation(options, [build(task)], cli=True)
    check_generation(options, [build(task)])
    task.build_generator([build(task)], GenerationConfig(sampling=True, beam=4))


@pytest.mark.parametrize("options", [{}, {"beam": 3, "nbest": 3}, {"sampling": True, "beam": 2, "nbest": 2},
                                     {"sampling": True, "sampling_topk": 3, "beam": 1}, {"min_len": 5, "max_len_b": 5},
                                     {"min_len": 63, "max_len_a": 1.0, "max_len_b": 0},
                                     {"min_len": 3, "max_len_a": 0.5, "max_len_b": 0},
                                     {"diverse_beam_groups": 2, "beam": 4}, {"diversity_rate": 0.5}])
def test_generation_options_fairseq_accepts_pass(task, options):
    check_generation(Namespace(**options), [build(task)])


# J2. --post-process schemes against the target dictionary

def dictionary(words) -> Dictionary:
    d = Dictionary()
    for w in words:
        d.add_symbol(w)
    return d


WORDS = dictionary(["one", "two", "three", "snake_case"])
PIECES = dictionary(["\u2581one", "\u2581tw", "o", "\u2581three"])
SUBWORDS = dictionary(["one", "tw@@", "o", "th@@", "ree"])
LETTERS = dictionary(["o", "n", "e", "|", "t", "w"])
EOW = dictionary(["one_EOW", "tw", "o_EOW"])


@pytest.mark.parametrize("units, scheme", [
    (WORDS, None), (WORDS, "none"), (PIECES, "sentencepiece"), (SUBWORDS, "subword_nmt"), (SUBWORDS, "@@ "),
    (SUBWORDS, "@@"), (LETTERS, "letter"), (EOW, "_EOW"), (dictionary(["a", "<SIL>", "b"]), "silence"),
    (dictionary(["_one", "_tw", "o"]), "wordpiece"), (WORDS, "subword_nmt"), (WORDS, "@@ "), (WORDS, "silence"),
])
def test_a_post_process_scheme_that_fits_the_dictionary_or_changes_nothing_passes(units, scheme):
    """Words and a scheme that only removes marks they never hold (fairseq-generate --remove-bpe on
    word-level data): the text stays as it is."""
    check_post_process(units, scheme)


@pytest.mark.parametrize("units, scheme, message", [
    (WORDS, "sentencepiece", "--post-process sentencepiece: the model's target dictionary holds words, not "
                             "sentencepiece pieces; leave it out, or the words are joined wrongly"),
    (WORDS, "wordpiece", "--post-process wordpiece: the model's target dictionary holds words, not wordpiece "
                         "units (entries starting with '_'); leave it out"),
    (PIECES, "@@ ", "--post-process @@ : the model's target dictionary holds sentencepiece pieces, not subword-nmt "
                    "units (entries ending in '@@'); use --post-process sentencepiece"),
    (SUBWORDS, "sentencepiece", "holds subword-nmt units (entries ending in '@@'), not sentencepiece pieces; use "
                                "--post-process subword_nmt"),
    (PIECES, "letter", "holds sentencepiece pieces, not letters (with the word boundary '|')"),
    (SUBWORDS, "silence", "holds subword-nmt units (entries ending in '@@'), not units with the silence token"),
    (LETTERS, "_EOW", "holds letters (with the word boundary '|'), not units ending words with '_EOW'"),
    (WORDS, "bpe", "--post-process 'bpe' is not a scheme fairseq knows: use one of 'sentencepiece', "),
])
def test_a_post_process_scheme_that_cannot_apply_is_refused_in_one_line(units, scheme, message):
    with pytest.raises(TokenizationError) as e:
        check_post_process(units, scheme)
    assert message in str(e.value) and "\n" not in str(e.value)


# J1. a resume refusal names only the options that change the model

def saved_config(**changes):
    cfg = OmegaConf.structured(RNNSeq2SeqConfig(encoder_embed_dim=6, decoder_embed_dim=8, encoder_hidden_size=10,
                                                decoder_hidden_size=12,
                                                max_source_positions=64, max_target_positions=64))
    cfg = OmegaConf.merge(cfg, {"_name": "rnn_seq2seq", **changes})
    return OmegaConf.create(OmegaConf.to_container(cfg))


@pytest.mark.parametrize("changes, named", [
    ({"dropout": 0.3}, []),
    ({"dropout": 0.3, "encoder_hidden_size": 16}, ["encoder_hidden_size"]),
    ({"cell": "gru", "dropout": 0.5, "decoder_attention": "additive"}, ["cell", "decoder_attention"]),
    ({"encoder_bidirectional": True, "share_decoder_input_output_embed": True, "decoder_embed_dim": 12},
     ["decoder_embed_dim", "encoder_bidirectional", "share_decoder_input_output_embed"]),
])
def test_only_options_that_change_the_parameters_are_named(task, changes, named):
    assert model_changing(saved_config(), saved_config(**changes), task) == named


@pytest.mark.parametrize("n, banned", [(1, {5, 6}), (2, {6}), (3, set()), (4, set())])
def test_the_cpu_ngram_ban_forbids_the_ngrams_a_hypothesis_holds(n, banned):
    """After 2 (begin), 5 6 5 and padding: N = 1 bans 5 and 6, N = 2 bans 6 (5 6 again), longer N nothing."""
    from fairseq.ngram_repeat_block import NGramRepeatBlock

    tokens = torch.tensor([[2, 5, 6, 5, 1, 1, 1], [2, 7, 7, 7, 1, 1, 1]])
    lprobs = torch.zeros(2, 9)
    NGramRepeatBlock(n, use_extension=False)(tokens, lprobs, bsz=1, beam_size=2, step=3)
    assert set(torch.isinf(lprobs[0]).nonzero().flatten().tolist()) == banned
    assert set(torch.isinf(lprobs[1]).nonzero().flatten().tolist()) == ({7} if n <= 3 else set())
