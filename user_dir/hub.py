"""The Python API (``RNNSeq2SeqModel.from_pretrained(...).translate()``): fairseq's hub interface,
with its arguments checked first, so that a wrong one is named instead of failing deep inside the
tokenizer or the beam search."""
import difflib
from typing import Any, Union

from fairseq.dataclass.configs import GenerationConfig
from fairseq.hub_utils import GeneratorHubInterface


def checked_sentences(sentences: Any, method: str) -> Union[str, list]:
    """``sentences`` as fairseq's hub takes them (a str, or a list of str), or TypeError naming the
    argument or the first element that is not text."""
    if isinstance(sentences, str):
        return sentences
    if isinstance(sentences, (bytes, bytearray)) or not hasattr(sentences, "__iter__"):
        raise TypeError(f"{method}: sentences is {type(sentences).__name__}, expected str or a list of str")
    sentences = list(sentences)
    for i, sentence in enumerate(sentences):
        if not isinstance(sentence, str):
            raise TypeError(f"{method}: element {i} is {type(sentence).__name__}, expected str"
                            + (" (decode bytes first, e.g. .decode('utf-8'))" if isinstance(sentence, bytes) else ""))
    return sentences


def checked_beam(beam: Any, method: str) -> int:
    """``beam`` if it is a whole number, else TypeError naming it (a value below 1 is refused by
    the generation rules, :data:`user_dir.patches.decoding.GENERATION_RULES`, as on the CLIs)."""
    if isinstance(beam, bool) or not isinstance(beam, int):
        raise TypeError(f"{method}: beam is {type(beam).__name__} {beam!r}, expected a whole number >= 1")
    return beam


# generate()'s own keywords beside the generation options (fairseq's GeneratorHubInterface.generate)
GENERATE_KEYWORDS = {"skip_invalid_size_inputs", "inference_step_args", "prefix_allowed_tokens_fn"}


def checked_options(options: dict, method: str) -> dict:
    """``options`` if each names a generation option (fairseq's GenerationConfig) or a keyword of
    generate(), else TypeError naming the first other one: fairseq would set it and use it nowhere."""
    known = set(GenerationConfig.__dataclass_fields__) | GENERATE_KEYWORDS
    for name in options:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else " (fairseq's generation options: GenerationConfig)"
            raise TypeError(f"{method}: unknown argument {name!r}{hint}")
    return options


class RNNSeq2SeqHub(GeneratorHubInterface):
    """fairseq's GeneratorHubInterface whose translate() and sample() check their arguments."""

    def translate(self, sentences, beam: int = 5, verbose: bool = False, **kwargs):
        return super().translate(checked_sentences(sentences, "translate"), checked_beam(beam, "translate"),
                                 verbose, **checked_options(kwargs, "translate"))

    def sample(self, sentences, beam: int = 1, verbose: bool = False, **kwargs):
        return super().sample(checked_sentences(sentences, "sample"), checked_beam(beam, "sample"), verbose,
                              **checked_options(kwargs, "sample"))
