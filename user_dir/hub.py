"""The Python API (``RNNSeq2SeqModel.from_pretrained(...).translate()``): fairseq's hub interface,
with its arguments checked first, so that a wrong one is named instead of failing deep inside the
tokenizer or the beam search."""
import difflib
import numbers
from typing import Any, Union

import torch
from fairseq.dataclass.configs import GenerationConfig
from fairseq.hub_utils import GeneratorHubInterface
from torch import Tensor


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


def checked_value(name: str, value: Any, method: str) -> Any:
    """``value`` if it has the type of generation option NAME (fairseq's GenerationConfig: a whole
    number, a number or a bool), else TypeError naming it: fairseq would fail deep inside the beam
    search, or truncate it. Values out of range are refused by the generation rules
    (:data:`user_dir.patches.generation.GENERATION_RULES`), as on the CLIs."""
    kind = GenerationConfig.__dataclass_fields__[name].type if name in GenerationConfig.__dataclass_fields__ else None
    expected = {int: "a whole number", float: "a number", bool: "True or False"}.get(kind)
    fits = {int: lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool),  # numpy's ints too
            float: lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool),
            bool: lambda v: isinstance(v, bool)}.get(kind, lambda v: True)
    if not fits(value):
        raise TypeError(f"{method}: {name} is {type(value).__name__} {value!r}, expected {expected}")
    return value


# generate()'s own keywords beside the generation options (fairseq's GeneratorHubInterface.generate)
GENERATE_KEYWORDS = {"skip_invalid_size_inputs", "inference_step_args", "prefix_allowed_tokens_fn"}


def checked_options(options: dict, method: str) -> dict:
    """``options`` if each names a generation option (fairseq's GenerationConfig) or a keyword of
    generate(), else TypeError naming the first other one: fairseq would set it and use it nowhere."""
    known = set(GenerationConfig.__dataclass_fields__) | GENERATE_KEYWORDS
    for name, value in options.items():
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else " (fairseq's generation options: GenerationConfig)"
            raise TypeError(f"{method}: unknown argument {name!r}{hint}")
        checked_value(name, value, method)
    if method != "generate" and options.get("nbest", 1) != 1:
        raise TypeError(f"{method}: returns the best translation of each sentence; nbest={options['nbest']!r} "
                        "needs generate() (its list of hypotheses per sentence)")
    return options


class RNNSeq2SeqHub(GeneratorHubInterface):
    """fairseq's GeneratorHubInterface whose translate(), sample() and generate() check their
    arguments: names, types, what each method returns."""

    def translate(self, sentences, beam: int = 5, verbose: bool = False, **kwargs):
        return super().translate(checked_sentences(sentences, "translate"), checked_value("beam", beam, "translate"),
                                 verbose, **checked_options(kwargs, "translate"))

    def sample(self, sentences, beam: int = 1, verbose: bool = False, **kwargs):
        return super().sample(checked_sentences(sentences, "sample"), checked_value("beam", beam, "sample"), verbose,
                              **checked_options(kwargs, "sample"))

    def generate(self, tokenized_sentences: Union[Tensor, list], beam: int = 5, verbose: bool = False,
                 **kwargs) -> list:
        """fairseq's generate() on token tensors (:meth:`encode` makes them from text): each sentence's
        hypotheses, best first, the whole beam unless ``nbest`` is given (fairseq's returns it whatever
        ``nbest`` says; fairseq-generate prints ``nbest``)."""
        if not torch.is_tensor(tokenized_sentences) and (
                isinstance(tokenized_sentences, str) or not all(map(torch.is_tensor, tokenized_sentences))):
            raise TypeError("generate: takes token tensors (encode() the text first); translate() takes text")
        hypos = super().generate(tokenized_sentences, checked_value("beam", beam, "generate"), verbose,
                                 **checked_options(kwargs, "generate"))
        if "nbest" not in kwargs or (torch.is_tensor(tokenized_sentences) and tokenized_sentences.dim() == 1):
            return hypos  # one sentence: fairseq's own call with the batch of it trims its hypotheses
        return [sentence[:kwargs["nbest"]] for sentence in hypos]
