"""The reliability mechanisms one by one: outputs never replace inputs, pass-through options,
tokenization tied to the dictionary, empty answers, divergence, load errors, bounded readers."""
import gzip
import math
import os
import random
import re
from argparse import Namespace

import pytest
import sentencepiece as spm
import torch
from fairseq import checkpoint_utils
from fairseq.data import Dictionary
from fairseq.dataclass.configs import CheckpointConfig, GenerationConfig
from fairseq.models import lstm_lm
from fairseq.tasks.language_modeling import LanguageModelingConfig, LanguageModelingTask
from fairseq.tasks.translation import TranslationConfig, TranslationTask
from omegaconf import OmegaConf

from helpers import ROOT, TOY, build, run
from user_dir.checkpoint_files import CheckpointError, check_file, split_ensemble
from user_dir.dictionaries import TokenizationError, check_pieces, piece_vocabulary, unknown_share
from user_dir.files import OutputError, check_distinct, check_output, not_a_file
from user_dir.patches.amp import MAX_SKIPPED, NoScaler
from user_dir.patches.checkpoints import misfit, option_differences
from user_dir.patches.decoding import nothing_to_translate, token_source
from user_dir.patches.divergence import TrainingDiverged
from user_dir.patches.generation import check_generation
from user_dir.text import MAX_LINE_BYTES, TextError, read_lines
from user_dir.workflow import check_pass_through

# A. outputs never overwrite inputs or a live run


@pytest.fixture
def run_files(tmp_path):
    (tmp_path / "ref.txt").write_text("a\nb\n")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "dict.src.txt").write_text("a 1\n")
    (tmp_path / "save").mkdir()
    (tmp_path / "save" / "checkpoint_last.pt").write_bytes(b"live")
    return tmp_path


@pytest.mark.parametrize("name, message", [
    ("ref.txt", r"it is an input of this run"),
    ("bin/dict.src.txt", r"it is inside the input folder"),
    ("save/checkpoint_last.pt", r"one fairseq-train writes"),
    ("save/checkpoint_best.pt", r"one fairseq-train writes"),
    ("bin", r"it is an input of this run"),
    ("save", r"it is a folder, not a regular file"),
    ("notes.txt", r"exists and is not an earlier output"),
    ("nowhere/out.txt", r"folder .*nowhere does not exist"),
])
def test_an_output_that_would_replace_something_is_refused_by_name(run_files, name, message):
    (run_files / "notes.txt").write_text("keep me\n")
    inputs = [run_files / "ref.txt", run_files / "bin"]
    with pytest.raises(OutputError, match=rf"^--out: cannot write {re.escape(str(run_files / name))}: .*({message})"):
        check_output(run_files / name, "--out", inputs, previous=lambda p: False)
    assert (run_files / "notes.txt").read_text() == "keep me\n"


def test_an_earlier_output_of_the_same_kind_may_be_replaced(run_files):
    (run_files / "scores.json").write_text("{}")
    check_output(run_files / "scores.json", "--json", [run_files / "ref.txt"], previous=lambda p: True)
    check_output(run_files / "new.json", "--json", [run_files / "ref.txt"])
    with pytest.raises(OutputError, match="--hyp-out and --json name the same file"):
        check_distinct({"--hyp-out": run_files / "x", "--json": run_files / "x"})


# B. arguments after -- never contradict what a script sets and records

OWNED = {"beam": "use --beam", "post_process": "use --post-process", "source_lang": "DATA_BIN's", "path": "CKPT"}


@pytest.mark.parametrize("extra, named", [
    (["--beam", "3"], "--beam"), (["--beam=3"], "--beam"), (["--remove-bpe", "sentencepiece"], "--remove-bpe"),
    (["-s", "tgt"], "-s"), (["--lenpen", "1", "--path", "x.pt"], "--path"),
])
def test_pass_through_options_that_contradict_the_script_are_named(extra, named):
    with pytest.raises(SystemExit, match=rf"^error: {named} after -- would contradict"):
        check_pass_through(extra, OWNED)


@pytest.mark.parametrize("extra, named", [
    (["--prefix-size", "2"], "--prefix-size"), (["--prefix-size=1"], "--prefix-size"), (["--score-reference"],
     "--score-reference"), (["--bpe", "sentencepiece"], "--bpe"), (["--bpe=subword_nmt"], "--bpe"), (["-h"], "-h"),
    (["--lenpen", "1", "--help"], "--help"),
    (["--skip-invalid-size-inputs-valid-test", "--max-source-positions", "3"], "--skip-invalid-size-inputs-valid-test"),
])
def test_pass_through_options_that_leak_references_decode_twice_or_ask_for_help_are_refused(extra, named):
    """For every script, whatever it owns: the references copied into hypotheses, pieces decoded
    a second time after --post-process, fairseq-generate's help instead of a translation, sentences
    dropped that must be translated."""
    with pytest.raises(SystemExit, match=rf"^error: {named} after -- is not passed to fairseq-generate: "):
        check_pass_through(extra, {})


def test_other_pass_through_options_are_kept():
    extra = ["--lenpen", "1.2", "--nbest", "3", "--unkpen", "0"]
    assert check_pass_through(extra, OWNED) == extra


@pytest.mark.parametrize("args, says", [
    (["--no-such-option"], r"fairseq-generate: error: unrecognized arguments: --no-such-option$"),
    (["--path", "/nonexistent/model.pt"], r"CheckpointError: checkpoint /nonexistent/model.pt does not exist"),
    (["--beam", "0"], r"GenerationOptionError: --beam must be at least 1, got 0$"),
])
def test_fairseq_generate_in_the_scripts_process_fails_as_a_child_would_and_leaves_it_as_it_was(args, says):
    """evaluate.py and distill.py run fairseq-generate's cli_main in their own process: its failure is
    one line from its stderr (argparse's, a refusal's, an exception's last line), and the process's
    argv, logging and streams are as before."""
    import logging
    import sys

    from user_dir.workflow import run_fairseq

    assert "fairseq" in sys.modules  # so run_fairseq runs it in this process, not as a child
    root, argv, streams = logging.getLogger(), sys.argv[:], (sys.stdout, sys.stderr)
    handlers, level = root.handlers[:], root.level
    with pytest.raises(SystemExit, match=rf"^error: fairseq-generate failed: {says}"):
        run_fairseq(["fairseq-generate", TOY, "--user-dir", ROOT / "user_dir", "--path", TOY / "train.src", *args])
    assert (sys.argv, root.handlers, root.level, (sys.stdout, sys.stderr)) == (argv, handlers, level, streams)


def test_in_process_fairseq_preprocess_binarizes_and_closes_its_log(tmp_path):
    """fairseq-preprocess in this process (evaluate.py --src-raw, distill.py): the data as a child makes
    it, and the preprocess.log handler it adds to its logger gone after, twice over."""
    import logging
    import sys

    from user_dir.workflow import preprocess_command, run_fairseq

    assert "fairseq" in sys.modules  # so run_fairseq runs it in this process, not as a child
    before = {x: x.handlers[:] for x in [logging.getLogger(), *map(logging.getLogger, ["fairseq_cli.preprocess"])]}
    for made in ("a", "b"):
        run_fairseq(preprocess_command("src", "tgt", {"train": TOY / "test"}, tmp_path / made))
        assert {p.name for p in (tmp_path / made).glob("train.*")} == {
            f"train.src-tgt.{side}.{ext}" for side in ("src", "tgt") for ext in ("bin", "idx")}
        assert {x: x.handlers for x in before} == before
    with pytest.raises(SystemExit, match=r"^error: fairseq-preprocess failed: FileNotFoundError: .*nowhere"):
        run_fairseq(preprocess_command("src", "tgt", {"train": tmp_path / "nowhere"}, tmp_path / "c"))


def test_in_process_fairseq_generate_gets_the_plugin_as_imported_and_hands_on_every_line(tmp_path):
    """--user-dir through a link to the same folder is spelt as the plugin was imported (fairseq would
    refuse it as another plugin of the same name); a last line without its newline reaches on_line;
    on_line's own error is the script's, not fairseq-generate's."""
    import user_dir
    from user_dir.workflow import LineStream, imported_user_dir

    (tmp_path / "link").symlink_to(ROOT)
    cmd = ["fairseq-generate", "bin", "--user-dir", str(tmp_path / "link" / "user_dir"), "--path", "a.pt"]
    assert imported_user_dir(cmd) == [*cmd[:3], user_dir.__path__[0], *cmd[4:]]
    other = ["fairseq-generate", "bin", "--user-dir", str(tmp_path)]
    assert imported_user_dir(other) == other
    lines = []
    stream = LineStream(lines.append)
    stream.write("S-0\tein\nH-0\t-0.1\tone\nD-0")
    stream.write("\t-0.1\tone")
    assert lines == ["S-0\tein\n", "H-0\t-0.1\tone\n"]
    stream.close_lines()
    assert lines[-1] == "D-0\t-0.1\tone" and stream.getvalue() == "".join(lines)

    def broken(line: str) -> None:
        raise BrokenPipeError("stderr closed")

    stream = LineStream(broken)
    with pytest.raises(BrokenPipeError):
        stream.write("one\n")
    assert isinstance(stream.failed, BrokenPipeError)


# C. a sentencepiece model is checked against the dictionary it made

def spm_and_dictionary(folder, lines, size=40):
    (folder / "text").write_text("".join(line + "\n" for line in lines))
    spm.SentencePieceTrainer.train(input=str(folder / "text"), model_prefix=str(folder / "spm"), vocab_size=size,
                                   model_type="unigram", hard_vocab_limit=False, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=str(folder / "spm.model"))
    d = Dictionary()
    for pieces in sp.encode(lines, out_type=str):
        for piece in pieces:
            d.add_symbol(piece)
    d.finalize(padding_factor=8)  # as fairseq-preprocess: madeupword entries
    return sp, d


def test_sentencepiece_model_is_checked_against_the_dictionary_in_every_direction(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    toy = (TOY / "train.src").read_text().splitlines()[:500]
    sp, pieces_dict = spm_and_dictionary(tmp_path / "a", toy)
    other, _ = spm_and_dictionary(tmp_path / "b", [line.upper() for line in toy])  # same size, other pieces
    check_pieces(pieces_dict, piece_vocabulary(sp), "spm.model", "source")  # its own: accepted
    with pytest.raises(TokenizationError, match=r"^other\.model is not the sentencepiece model that made"):
        check_pieces(pieces_dict, piece_vocabulary(other), "other.model", "source")
    words = Dictionary()
    for w in ("one", "two", "three"):
        words.add_symbol(w)
    with pytest.raises(TokenizationError, match=r"dictionary holds words, not sentencepiece pieces"):
        check_pieces(words, piece_vocabulary(sp), "spm.model", "target")


def test_a_larger_sentencepiece_model_of_the_same_text_shows_in_its_unknown_pieces(tmp_path):
    """Every entry of the small model's dictionary is a piece of the large one too, so the check by
    entries passes it; text encoded with it is mostly <unk> to the model (evaluate.py refuses that)."""
    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9))) for _ in range(400)]
    text = [" ".join(rng.choice(words) for _ in range(8)) for _ in range(3000)]
    (tmp_path / "small").mkdir()
    (tmp_path / "large").mkdir()
    small, small_dict = spm_and_dictionary(tmp_path / "small", text, size=100)
    large, _ = spm_and_dictionary(tmp_path / "large", text, size=400)
    check_pieces(small_dict, piece_vocabulary(large), "large.model", "source")  # passes: the entries are pieces
    assert unknown_share(small, small_dict, text[:200]) == 0
    assert unknown_share(large, small_dict, text[:200]) > 0.5


# D/G. what differs between a checkpoint and a command line is named

def test_option_differences_name_each_option():
    saved = {"_name": "rnn_seq2seq", "encoder_hidden_size": 128, "cell": "lstm", "share_all_embeddings": False}
    now = {"_name": "rnn_seq2seq", "encoder_hidden_size": 64, "cell": "gru", "share_all_embeddings": True}
    assert option_differences(saved, now) == ["--cell lstm (this command: gru)",
                                              "--encoder-hidden-size 128 (this command: 64)",
                                              "no --share-all-embeddings (this command: --share-all-embeddings)"]
    assert option_differences({"amp": None}, {"amp": True}) == ["no --amp (this command: --amp)"]  # unset: off


def test_a_checkpoint_of_another_model_is_named_by_its_model(task):
    """Not by the other model's options (stock lstm's --decoder-attention 1 is no option of ours)."""
    saved = Namespace(_name="lstm", arch="lstm", decoder_attention="1", encoder_embed_dim=16)
    now = {"_name": "rnn_seq2seq", "decoder_attention": "none", "encoder_embed_dim": 16}
    assert str(misfit("c.pt", Exception("architectures differ"), now, task, saved)) == (
        "checkpoint c.pt does not fit the model of this command: it holds a lstm model (this command: rnn_seq2seq); "
        "use the checkpoint's options, or another --save-dir (train.sh: SAVE_DIR) for a new model")


def test_two_presets_of_the_model_are_told_apart_by_their_options(task):
    """A config's _name is the --arch preset: presets of one model differ in options, named as such."""
    saved = OmegaConf.create({"_name": "rnn_seq2seq_multi30k", "decoder_attention": "none", "encoder_embed_dim": 8})
    now = OmegaConf.create({"_name": "rnn_seq2seq_attention_multi30k", "decoder_attention": "additive",
                            "encoder_embed_dim": 8})
    message = str(misfit("c.pt", Exception("architectures differ"), now, task, saved))
    assert "--decoder-attention none (this command: additive)" in message and "holds a" not in message, message


def test_a_refusal_that_names_the_file_is_not_named_again(task):
    """The model names the checkpoint in its refusal (an ensemble's member): the resume's words keep one name."""
    from user_dir.models.rnn_seq2seq import WeightsMismatch

    cfg = OmegaConf.create({"_name": "rnn_seq2seq", "decoder_attention": "none", "encoder_embed_dim": 8})
    said = "checkpoint ck.pt: the checkpoint's weights do not fit the model its options build here: 1 missing (x)"
    message = str(misfit("ck.pt", WeightsMismatch(said), cfg, task, cfg))
    assert message.count("ck.pt") == 1 and "does not fit the model of this command: the checkpoint's weights" in message


# F. divergence ends a run

def test_a_non_finite_validation_metric_is_never_saved(tmp_path):
    class Trainer:  # only what the check reads before anything is saved
        def get_num_updates(self):
            return 7

    cfg = CheckpointConfig(save_dir=str(tmp_path))
    for value in (math.nan, math.inf):
        with pytest.raises(TrainingDiverged, match=rf"by update 7: validation loss is {value}; nothing was saved"):
            checkpoint_utils.save_checkpoint(cfg, Trainer(), None, value)
    assert not list(tmp_path.iterdir())


def bleu_log(counts: list[int], totals: list[int], sys_len: int, ref_len: int) -> dict:
    """One validation batch's logging output as fairseq's translation task and masked_ce write it."""
    return {"loss": 1.0, "nll_loss": 1.0, "ntokens": ref_len, "nsentences": 2, "sample_size": ref_len,
            "_bleu_sys_len": sys_len, "_bleu_ref_len": ref_len,
            **{f"_bleu_counts_{i}": c for i, c in enumerate(counts)},
            **{f"_bleu_totals_{i}": t for i, t in enumerate(totals)}}


@pytest.mark.parametrize("batches, expected", [
    ([([0] * 4, [0] * 4, 0, 12)], 0.0),  # every hypothesis empty: fairseq logged no BLEU at all
    ([([5, 3, 2, 1], [6, 4, 2, 1], 6, 7), ([0] * 4, [0] * 4, 0, 5)], "sacrebleu"),  # an empty batch among others
    ([([0] * 4, [0] * 4, 0, 5), ([5, 3, 2, 1], [6, 4, 2, 1], 6, 7)], "sacrebleu"),  # ... first
])
def test_validation_bleu_is_logged_when_hypotheses_are_empty(task, batches, expected):
    """--best-checkpoint-metric bleu reads it after every validation: a validation of empty
    hypotheses (a model that learned nothing yet) ended fairseq-train in KeyError: 'bleu'."""
    from fairseq.logging import metrics
    from sacrebleu.metrics import BLEU

    from user_dir.criterions.masked_ce import MaskedCrossEntropyCriterion

    task.cfg.eval_bleu = True
    with metrics.aggregate(new_root=True) as agg:
        for batch in batches:
            task.reduce_metrics([bleu_log(*batch)], MaskedCrossEntropyCriterion(task, False))
        bleu = agg.get_smoothed_values()["bleu"]
    if expected == "sacrebleu":  # the counts of all batches, the empty one's reference words too
        expected = round(BLEU.compute_bleu(correct=[5, 3, 2, 1], total=[6, 4, 2, 1], sys_len=6, ref_len=12,
                                           smooth_method="exp").score, 2)
    assert bleu == expected


def test_bfloat16_path_stops_after_a_run_of_non_finite_updates():
    param = torch.nn.Parameter(torch.ones(2))

    class Optimizer:
        params = [param]
        steps = 0

        def step(self):
            self.steps += 1

    scaler, optimizer = NoScaler(), Optimizer()
    param.grad = torch.tensor([1.0, math.nan])
    for _ in range(MAX_SKIPPED - 1):
        scaler.step(optimizer)
    param.grad = torch.ones(2)
    scaler.step(optimizer)  # a finite update resets the count
    param.grad = torch.tensor([math.inf, 1.0])
    for _ in range(MAX_SKIPPED - 1):
        scaler.step(optimizer)
    with pytest.raises(FloatingPointError, match=rf"{MAX_SKIPPED} updates in a row"):
        scaler.step(optimizer)
    assert optimizer.steps == 1


# H. decode paths: no made-up sentence, beam below 1 refused

def test_sources_without_a_known_word_get_an_empty_translation(task):
    model = build(task)
    d = task.source_dictionary
    src = torch.tensor([[d.pad(), d.pad(), d.eos()], [d.unk(), d.bos(), d.eos()], [d.index("w3"), d.unk(), d.eos()]])
    assert nothing_to_translate(src, [d.pad(), d.eos(), d.unk(), d.bos()]).tolist() == [True, True, False]
    generator = task.build_generator([model], GenerationConfig(beam=2, max_len_b=5))
    sample = {"id": torch.arange(3), "net_input": {"src_tokens": src, "src_lengths": torch.tensor([1, 3, 3])}}
    hypos = task.inference_step(generator, [model], sample)
    assert [h[0]["tokens"].tolist() for h in hypos[:2]] == [[d.eos()], [d.eos()]]
    assert len(hypos[2]) == 2  # the sentence with a known word is translated as before


def test_a_batch_too_narrow_for_min_len_is_refused_by_name(task):
    """With --max-len-a, fairseq's limit is a batch's: it asserted --min-len below it; named instead."""
    model, d = build(task), task.source_dictionary
    generator = task.build_generator([model], GenerationConfig(min_len=3, max_len_a=0.5, max_len_b=0))
    wide = {"id": torch.tensor([0]), "net_input": {"src_tokens": torch.tensor([[d.index("w3")] * 7 + [d.eos()]]),
                                                   "src_lengths": torch.tensor([8])}}
    assert len(task.inference_step(generator, [model], wide)[0][0]["tokens"]) >= 3
    narrow = {"id": torch.tensor([0]), "net_input": {"src_tokens": torch.tensor([[d.index("w3"), d.eos()]]),
                                                     "src_lengths": torch.tensor([2])}}
    with pytest.raises(ValueError, match=r"^--min-len 3 is above the longest translation allowed for a batch of "
                                         r"sources 2 tokens wide \(1: --max-len-a 0.5 x 2 \+ --max-len-b 0\)"):
        task.inference_step(generator, [model], narrow)


def test_diverse_beam_search_decodes_each_sentence_of_a_batch_as_alone(task):
    """fairseq indexed DiverseBeamSearch's per-sentence overlap by dataset id: an IndexError for ids
    past the batch's size (every batch after the first); by row, each sentence decodes as alone."""
    model, d = build(task, decoder_attention="additive"), task.source_dictionary
    generator = task.build_generator([model], GenerationConfig(beam=4, diverse_beam_groups=2, max_len_b=6))
    src = torch.tensor([[d.index("w3"), d.index("w5"), d.eos()], [d.pad(), d.index("w7"), d.eos()],
                        [d.index("w9"), d.index("w4"), d.eos()]])
    batch = {"id": torch.tensor([17, 4, 9]), "net_input": {"src_tokens": src, "src_lengths": torch.tensor([3, 2, 3])}}
    together = task.inference_step(generator, [model], batch)
    for row, length in enumerate((3, 2, 3)):
        alone = {"id": torch.tensor([0]), "net_input": {"src_tokens": src[row:row + 1, 3 - length:],
                                                        "src_lengths": torch.tensor([length])}}
        hypotheses = task.inference_step(generator, [model], alone)[0]
        assert [h["tokens"].tolist() for h in together[row]] == [h["tokens"].tolist() for h in hypotheses]


def test_a_language_models_empty_prompt_is_left_to_it(task):
    """No encoder, no source to be empty: fairseq's LM samples from an empty prompt as without the plugin."""
    d = task.source_dictionary
    lm_task = LanguageModelingTask(LanguageModelingConfig(), d, d)
    options = Namespace(decoder_embed_dim=8, decoder_hidden_size=8, decoder_out_embed_dim=8, decoder_layers=1,
                        max_target_positions=50, criterion="cross_entropy")
    lstm_lm.base_architecture(options)
    model = lstm_lm.LSTMLanguageModel.build_model(options, lm_task)
    generator = lm_task.build_generator([model], GenerationConfig(beam=2, max_len_b=5))
    empty = {"id": torch.arange(1), "net_input": {"src_tokens": torch.tensor([[d.eos()]]),
                                                  "src_lengths": torch.tensor([1])}}
    hypos = lm_task.inference_step(generator, [model], empty)
    assert len(hypos[0]) == 2 and all(len(h["tokens"]) > 1 for h in hypos[0])


@pytest.mark.parametrize("net_input, is_source", [
    ({"src_tokens": torch.tensor([[4, 2]])}, True),
    ({"src_tokens": torch.zeros(1, 7, 80)}, False),  # speech_to_text: features under the same name
    ({"source": torch.zeros(1, 16000)}, False),  # wav2vec seq2seq
])
def test_only_token_ids_are_sources_that_can_be_empty(task, net_input, is_source):
    generator = task.build_generator([build(task)], GenerationConfig(beam=2))
    assert (token_source(generator, {"net_input": net_input}) is not None) == is_source


@pytest.mark.parametrize("typed, encoded", [
    ("\u2581w3 w4", True), ("<2en> \u2581w3", True), ("[en_XX] __de__ \u2581w3", True), ("", True),
    ("w3 w4", True),  # pieces of a model without the dummy prefix: every one known
    ("ein hund", False), ("<2en> ein hund", False),
])
def test_typed_text_must_be_pieces_where_the_model_reads_pieces(typed, encoded):
    d = Dictionary()
    for piece in ("\u2581w3", "w3", "w4", "<2en>"):
        d.add_symbol(piece)
    task = TranslationTask(TranslationConfig(), d, d)
    if encoded:
        task.get_interactive_tokens_and_lengths([typed], lambda line: line)
    else:
        with pytest.raises(TokenizationError, match="the model reads sentencepiece pieces but the input is not"):
            task.get_interactive_tokens_and_lengths([typed], lambda line: line)


def test_score_reference_takes_no_generation_option_but_the_one_fairseqs_clis_assert(task):
    """fairseq scores the references with --score-reference and uses none of the generation options;
    fairseq-generate's main still asserts --sampling with --nbest other than --beam: named first."""
    scorer = task.build_generator([build(task)], GenerationConfig(score_reference=True, beam=5, nbest=6, min_len=999))
    assert type(scorer).__name__ == "SequenceScorer"
    with pytest.raises(ValueError, match=r"^--sampling returns every one of --beam samples"):
        check_generation(GenerationConfig(score_reference=True, sampling=True, beam=3, nbest=2), [], cli=True)


def test_alignments_are_refused_for_a_model_without_attention(task):
    """--print-alignment reads the decoder's attention: without one fairseq ends in an IndexError, and
    in a TypeError with --score-reference (its scorer reads the attention too)."""
    for scoring in (False, True):
        with pytest.raises(ValueError, match=r"^--print-alignment reads the alignment from the model's attention, "
                                             r"and the model has none \(--decoder-attention none\): leave it out$"):
            task.build_generator([build(task)], GenerationConfig(print_alignment="hard", score_reference=scoring))
    task.build_generator([build(task, decoder_attention="additive")], GenerationConfig(print_alignment="soft"))


@pytest.mark.parametrize("option", ["beam", "nbest"])
def test_a_beam_or_nbest_below_one_is_refused(task, option):
    with pytest.raises(ValueError, match=rf"--{option} must be at least 1, got 0"):
        task.build_generator([build(task)], GenerationConfig(**{option: 0}))


# I. error text from what the file is, not from torch's wording

def test_a_checkpoint_that_is_not_a_regular_file_is_named_as_such(tmp_path):
    os.mkfifo(tmp_path / "pipe.pt")
    (tmp_path / "folder.pt").mkdir()
    with pytest.raises(CheckpointError, match=r"pipe\.pt is a FIFO \(named pipe\), not a regular file"):
        check_file(str(tmp_path / "pipe.pt"))  # returns at once: never opened
    with pytest.raises(CheckpointError, match=r"folder\.pt is a folder, not a regular file"):
        check_file(str(tmp_path / "folder.pt"))
    assert not_a_file("/dev/null") == "is a character device, not a regular file"


class Exploit:
    def __reduce__(self):
        return (os.system, ("true",))


@pytest.mark.parametrize("protocol", [2, 4])
def test_pickled_code_is_recognised_from_the_archive(tmp_path, protocol):
    path = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.ones(2)}, "x": Exploit()}, path, pickle_protocol=protocol)
    with pytest.raises(CheckpointError, match=r"not allowed .*Unsupported global\(s\) (posix|os)\.system$") as e:
        checkpoint_utils.load_checkpoint_to_cpu(str(path))
    assert "weights_only" not in str(e.value)


def test_a_colon_in_a_checkpoint_path_is_one_file_when_it_exists(tmp_path):
    path = tmp_path / "run:1.pt"
    path.write_bytes(b"x")
    assert split_ensemble(str(path)) == [str(path)]
    with pytest.raises(CheckpointError, match=r"does not exist \(':' in .* separates the checkpoints of an ensemble"):
        split_ensemble(str(tmp_path / "run:2.pt"))


FULL_DISK = """
import resource, signal, sys
sys.path.insert(0, sys.argv[1])
import torch, user_dir
from fairseq import checkpoint_utils
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
checkpoint_utils.torch_persistent_save({"w": torch.randn(100, 100)}, sys.argv[2])
"""


def test_a_write_that_fails_names_the_path_and_keeps_the_old_file(tmp_path):
    """A size limit (RLIMIT_FSIZE) fails writes as a full disk does; the checkpoint save names the path."""
    target = tmp_path / "checkpoint_last.pt"
    target.write_bytes(b"old")
    proc = run("python", "-c", FULL_DISK, ROOT, target, check=False)
    assert proc.returncode != 0
    assert f"WriteError: cannot write {target}: File too large" in proc.stderr
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_last.pt"]


# J. text readers are bounded

def test_special_files_are_refused_without_reading(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(TextError, match=r"fifo is a FIFO \(named pipe\), not a regular file"):
        read_lines(tmp_path / "fifo")
    with pytest.raises(TextError, match=r"/dev/zero is a character device"):
        read_lines("/dev/zero")
    with pytest.raises(TextError, match=r"is a folder"):
        read_lines(tmp_path)


@pytest.mark.parametrize("name", ["long.txt", "long.txt.gz"])
def test_an_unbounded_line_is_refused(tmp_path, name):
    data = b"ein hund\n" + b"\0" * (MAX_LINE_BYTES + 10)
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    with pytest.raises(TextError, match=rf"{name} line 2: longer than {MAX_LINE_BYTES} bytes"):
        read_lines(path)
