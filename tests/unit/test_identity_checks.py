"""What ties a model to its data beyond the weights: its direction (SRC-TGT), recorded beside the
dictionary fingerprints, refused the other way round even with one joined dictionary, older states
loaded; and the one sentencepiece check every path runs, on the dictionaries of the text it encodes."""
from argparse import Namespace
from pathlib import Path

import pytest
import sentencepiece as spm
from fairseq.data import Dictionary
from fairseq.tasks.translation import TranslationConfig, TranslationTask

from helpers import TOY, build
from user_dir.dictionaries import DIRECTION_KEY, TokenizationError, as_direction, check_spm_model


def with_languages(task, src, tgt) -> TranslationTask:
    return TranslationTask(TranslationConfig(source_lang=src, target_lang=tgt), task.src_dict, task.tgt_dict)


def test_the_direction_is_a_buffer_and_the_other_one_is_refused(task):
    de_en = build(with_languages(task, "de", "en"))
    assert as_direction(de_en.state_dict()[DIRECTION_KEY]) == "de-en"
    en_de = build(with_languages(task, "en", "de"))
    with pytest.raises(ValueError, match=r"translates de-en \(source-target\), but the data is read as en-de"):
        en_de.load_state_dict(de_en.state_dict())
    build(with_languages(task, "de", "en")).load_state_dict(de_en.state_dict())


@pytest.mark.parametrize("saved, loading", [("older state", ("en", "de")), ("de-en", (None, None))])
def test_an_unknown_direction_on_either_side_loads(task, saved, loading):
    state = build(with_languages(task, "de", "en")).state_dict()
    if saved == "older state":
        del state[DIRECTION_KEY]
    model = build(with_languages(task, *loading))
    model.load_state_dict(state)
    assert as_direction(model.state_dict()[DIRECTION_KEY]) == ("-".join(loading) if loading[0] else "")


def test_averaging_compares_directions_as_loading_does(task):
    """scripts/average_checkpoints.py: an unknown direction (empty, or absent from an older
    checkpoint) mixes with a known one, which the average keeps; two known ones that differ are
    refused, whichever state comes first."""
    from scripts.average_checkpoints import identities, same_identity

    unknown, de_en, en_de = (build(with_languages(task, *pair)).state_dict()
                             for pair in ((None, None), ("de", "en"), ("en", "de")))
    same_identity([("a.pt", unknown), ("b.pt", de_en)])
    assert as_direction(identities([unknown, de_en])[DIRECTION_KEY]) == "de-en"
    older = {k: v for k, v in unknown.items() if k != DIRECTION_KEY}  # before direction records
    assert as_direction(identities([older, de_en])[DIRECTION_KEY]) == "de-en"
    assert as_direction(identities([older, unknown])[DIRECTION_KEY]) == ""
    with pytest.raises(SystemExit, match=r"^error: c.pt translates en-de but b.pt de-en: checkpoints of different"):
        same_identity([("a.pt", unknown), ("b.pt", de_en), ("c.pt", en_de)])


def spm_of(lines: list[str], path: Path) -> tuple[spm.SentencePieceProcessor, Dictionary]:
    """A 30-piece sentencepiece model of LINES and the dictionary of the pieces it makes of them."""
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_prefix=str(path), vocab_size=30,
                                   minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=f"{path}.model")
    dictionary = Dictionary()
    for piece in sorted({p for ps in sp.encode(lines, out_type=str) for p in ps}):
        dictionary.add_symbol(piece)
    return sp, dictionary


@pytest.fixture
def two_sides(tmp_path):
    """A sentencepiece model and dictionary for each side of the toy data: (source, target)."""
    return [spm_of((TOY / f"train.{side}").read_text().splitlines()[:500], tmp_path / side) for side in ("src", "tgt")]


def test_the_sentencepiece_check_covers_the_sides_it_is_given_and_skips_added_tags(two_sides):
    (sp, pieces), (_, other) = two_sides
    words = Dictionary()
    for word in ("one", "two", "three"):
        words.add_symbol(word)
    check_spm_model({"source": pieces, "target": pieces}, sp, "m.model")
    with pytest.raises(TokenizationError, match=r"^m\.model: the model's target dictionary holds words"):
        check_spm_model({"source": pieces, "target": words}, sp, "m.model")
    with pytest.raises(TokenizationError, match=r"^m\.model is not the sentencepiece model that made the model's "
                                                r"target dictionary"):
        check_spm_model({"source": pieces, "target": other}, sp, "m.model")
    for tag in ("<2en>", "[en_XX]", "__de__", "<mask>"):
        pieces.add_symbol(tag)
    check_spm_model({"source": pieces}, sp, "m.model")  # tags are not pieces, and not counted
    pieces.add_symbol("\u2581zzzq")
    with pytest.raises(TokenizationError, match=r"1 of its \d+ entries are not pieces of it \(e\.g\. '\u2581zzzq'\)"):
        check_spm_model({"source": pieces}, sp, "m.model")


def test_fairseqs_sentencepiece_is_checked_against_the_source_it_encodes(two_sides, tmp_path):
    """fairseq encodes only the source with --sentencepiece-model (and decodes pieces without it): a
    target of its own sentencepiece model passes, a source of another model is refused."""
    (_, source), (_, target) = two_sides
    options = Namespace(bpe="sentencepiece", sentencepiece_model=str(tmp_path / "src.model"))
    assert TranslationTask(TranslationConfig(), source, target).build_bpe(options) is not None
    with pytest.raises(TokenizationError, match=r"src\.model is not the sentencepiece model that made the model's "
                                                r"source dictionary"):
        TranslationTask(TranslationConfig(), target, source).build_bpe(options)
