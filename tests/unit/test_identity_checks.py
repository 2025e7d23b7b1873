"""What ties a model to its data beyond the weights: its direction (SRC-TGT), recorded beside the
dictionary fingerprints, refused the other way round even with one joined dictionary, older states
loaded; and the one sentencepiece check every path runs, on both dictionaries."""
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
    with pytest.raises(ValueError, match=r"the checkpoint translates de-en \(source-target\), but the data is en-de"):
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


def test_the_sentencepiece_check_covers_both_dictionaries_of_a_task_or_a_mapping(tmp_path):
    lines = (TOY / "train.src").read_text().splitlines()[:500]
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_prefix=str(tmp_path / "m"), vocab_size=30,
                                   minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "m.model"))
    pieces, words = Dictionary(), Dictionary()
    for piece in {p for ps in sp.encode(lines, out_type=str) for p in ps}:
        pieces.add_symbol(piece)
    for word in ("one", "two", "three"):
        words.add_symbol(word)
    check_spm_model({"source": pieces, "target": pieces}, sp, "m.model")
    for dictionaries in ({"source": pieces, "target": words}, TranslationTask(TranslationConfig(), pieces, words)):
        with pytest.raises(TokenizationError, match=r"^m\.model: the model's target dictionary holds words"):
            check_spm_model(dictionaries, sp, "m.model")
