"""``rnn_seq2seq``: the RNN encoder-decoder of Cho et al. (2014), as taught in Dive into Deep
Learning ch. 10.7, with attention as an option (D2L ch. 11.4): its config, the model fairseq
registers, and the presets.

Encoder: embedding + multi-layer RNN. Decoder: embedding + multi-layer RNN whose input at
every step is ``[target embedding ; context]``, and whose initial state is the encoder's final
state (every layer, and for an LSTM the cell state too); then a linear projection to the
vocabulary, optionally after Cho et al.'s "deep output" ``tanh(W [s_t ; e(y_{t-1}) ; c])``.
The context ``c`` is the encoder's final top-layer hidden state (``--decoder-attention none``),
or at step t the attention over the encoder's outputs with the first decoder layer's previous
state as query; it enters the same two places either way. The pieces live in ``user_dir/modules``.
"""
import argparse
import contextlib
import json
import os
import tempfile
from dataclasses import MISSING, dataclass, field, fields
from typing import Optional

from fairseq import hub_utils
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.models import FairseqEncoderDecoderModel, register_model, register_model_architecture
from fairseq.tasks import FairseqTask
from omegaconf import II, OmegaConf, open_dict

from ..checkpoint_files import checked_ensemble, fairseq_ensemble, named_file
from ..dictionaries import (
    DIRECTION_KEY,
    TokenizationError,
    as_direction,
    as_hex,
    check_bpe_model,
    check_post_process,
    direction_record,
    directions_differ,
    fingerprint,
    uses_sentencepiece,
)
from ..errors import OptionError, Refusal
from ..files import not_a_file
from ..hub import RNNSeq2SeqHub
from ..modules.attention import ATTENTIONS, attention_help
from ..modules.decoder import RNNDecoder, ties_output
from ..modules.embeddings import embedding
from ..modules.encoder import RNNEncoder
from ..modules.recurrence import CELLS

INITS = ("uniform", "torch")
DECODER_RNN = ("auto", "loop", "fused")
DECODER_GRAPHS = ("auto", "on", "off")


@dataclass
class RNNSeq2SeqConfig(FairseqDataclass):
    cell: ChoiceEnum(list(CELLS)) = field(  # type: ignore[valid-type]
        default="lstm", metadata={"help": "recurrent cell of both encoder and decoder"}
    )
    init: ChoiceEnum(INITS) = field(  # type: ignore[valid-type]
        default="uniform", metadata={"help": "uniform: embeddings and RNN weights U(-0.1, 0.1), RNN biases 0, "
                                             "attention parameters U(-0.1, 0.1); the bridge, deep output and output "
                                             "projection keep torch's nn.Linear initialisation (fairseq's lstm draws "
                                             "those from U(-0.1, 0.1) too); torch: the textbook's, torch's defaults "
                                             "(embeddings N(0, 1), N(0, 1/dim) when also the output projection; RNN "
                                             "parameters U(-1/sqrt(H), 1/sqrt(H)))"}
    )
    encoder_embed_dim: int = field(default=256, metadata={"help": "encoder embedding dimension"})
    encoder_hidden_size: int = field(default=512, metadata={"help": "encoder hidden size (per direction)"})
    encoder_layers: int = field(default=1, metadata={"help": "number of encoder layers"})
    encoder_bidirectional: bool = field(
        default=False,
        metadata={"help": "bidirectional encoder; a learned linear bridge maps its states to the decoder's size"}
    )
    decoder_embed_dim: int = field(default=256, metadata={"help": "decoder embedding dimension"})
    decoder_hidden_size: int = field(default=512, metadata={"help": "decoder hidden size"})
    decoder_layers: int = field(
        default=1, metadata={"help": "number of decoder layers (must equal encoder layers: the encoder state "
                                     "initialises every decoder layer)"}
    )
    decoder_deep_output: bool = field(
        default=False, metadata={"help": "Cho et al. (2014) output layer: tanh(W [state; target embedding; "
                                         "context]) before the vocabulary projection"}
    )
    decoder_out_embed_dim: int = field(
        default=256, metadata={"help": "size of the deep output layer (must equal decoder-embed-dim when "
                                       "embeddings are shared)"}
    )
    decoder_attention: ChoiceEnum(["none", *ATTENTIONS]) = field(  # type: ignore[valid-type]
        default="none", metadata={"help": attention_help()}
    )
    decoder_attention_dim: int = field(
        default=256, metadata={"help": "size of the attention's hidden layer, where its type has one"}
    )
    decoder_rnn: ChoiceEnum(DECODER_RNN) = field(  # type: ignore[valid-type]
        default="auto", metadata={"help": "teacher-forced decoder without attention: loop (the context's term "
                                          "cached, a Python loop over steps; fastest on CPU), fused (one cuDNN/oneDNN "
                                          "RNN call over [e; c]; fastest on GPU), auto: fused on a GPU, else loop. "
                                          "Equal results"}
    )
    decoder_graphs: ChoiceEnum(DECODER_GRAPHS) = field(  # type: ignore[valid-type]
        default="auto", metadata={"help": "on a GPU, run the decoder (training forward and backward, and each "
                                          "decoding step) as CUDA graphs, one per bucket of batch shapes: on; off: "
                                          "kernel by kernel; auto: off until lab/gpu_check.sh has shown them equal "
                                          "and faster. The same parameters; the value is saved in checkpoints "
                                          "(decoding: --model-overrides \"{'decoder_graphs': 'off'}\"); never used on "
                                          "a CPU"}
    )
    dropout: float = field(
        default=0.1,
        metadata={"help": "dropout between stacked RNN layers, and the default of --dropout-in and --dropout-out"}
    )
    dropout_in: Optional[float] = field(
        default=None, metadata={"help": "dropout on the encoder's and decoder's embeddings (default: --dropout)"}
    )
    dropout_out: Optional[float] = field(
        default=None, metadata={"help": "dropout on the decoder's RNN output and deep output, and with attention on "
                                        "the encoder's outputs (default: --dropout)"}
    )
    word_dropout: float = field(
        default=0.0, metadata={"help": "in training, drop each source and target token's whole embedding with this "
                                       "probability (the others scaled by 1/(1-p)), before --dropout-in"}
    )
    share_decoder_input_output_embed: bool = field(
        default=False, metadata={"help": "tie the decoder's input embedding and output projection"}
    )
    share_all_embeddings: bool = field(
        default=False, metadata={"help": "share encoder and decoder embeddings and the output projection, as fairseq's "
                                 "lstm and transformer do (needs --joined-dictionary data)"}
    )
    max_source_positions: int = II("task.max_source_positions")
    max_target_positions: int = II("task.max_target_positions")


class DataMismatch(Refusal, ValueError):
    """A checkpoint's weights made for other data: another dictionary, or the other direction."""


class WeightsMismatch(Refusal, RuntimeError):
    """A checkpoint's weights that do not fit the model its options build now (--model-overrides of a
    size, the cell, the attention...); a RuntimeError, as torch's own, so that a resume names the options."""


def weights_misfit(model: dict, saved: dict) -> str:
    """The parameters in which MODEL's state dict and a checkpoint's (SAVED) differ: missing,
    unexpected, or of another shape, the first of each named."""
    def named(kind: str, keys: list[str]) -> list[str]:
        return [f"{len(keys)} {kind} ({keys[0]}{', ...' * (len(keys) > 1)})"] if keys else []

    def shape(value) -> str:
        return str(tuple(value.shape)) if hasattr(value, "shape") else f"a {type(value).__name__}"

    shapes = [f"{k} {shape(saved[k])} in the checkpoint, {shape(model[k])} here"
              for k in model.keys() & saved.keys() if getattr(saved[k], "shape", None) != model[k].shape]
    return ", ".join(named("missing", sorted(model.keys() - saved.keys()))
                     + named("unexpected", sorted(saved.keys() - model.keys())) + sorted(shapes)[:1])


def fill_defaults(cfg, dataclass: type) -> None:
    """Give ``cfg`` the default of every field of ``dataclass`` that it lacks: fairseq 0.12 merges the
    defaults into the config of the base architecture only, so a preset's config (``--arch
    rnn_seq2seq_multi30k``) or a checkpoint's written before an option existed lacks them."""
    missing = [f for f in fields(dataclass) if not hasattr(cfg, f.name) and f.default is not MISSING]
    with open_dict(cfg) if OmegaConf.is_config(cfg) else contextlib.nullcontext():
        for f in missing:
            setattr(cfg, f.name, f.default)


def check_not_a_hydra_preset(cfg: RNNSeq2SeqConfig) -> None:
    """fairseq-hydra-train's ``model._name=PRESET``: its add_defaults reads a preset as its model and
    fills every field with the dataclass default, so the preset would be ignored without a word:
    refused. fairseq-train's --arch PRESET is applied before that merge, and a checkpoint's config of
    a preset (another Hydra job, or the same job loading one) is never merged so."""
    from hydra.core.hydra_config import HydraConfig

    name = getattr(cfg, "_name", None)
    if (OmegaConf.is_config(cfg) and OmegaConf.get_type(cfg) is RNNSeq2SeqConfig and name != "rnn_seq2seq"
            and HydraConfig.initialized() and HydraConfig.get().job.name == "hydra_train"):
        raise OptionError(f"model._name={name}: fairseq-hydra-train gives a model's fields its dataclass defaults, "
                          f"not those of an --arch preset, so this would train rnn_seq2seq's defaults: give "
                          f"model._name=rnn_seq2seq and the preset's fields (configs/multi30k.yaml and "
                          f"configs/multi30k_attention.yaml spell out the Multi30k presets)")


def check_config(cfg: RNNSeq2SeqConfig) -> None:
    """Reject option combinations that cannot build a model, naming the option."""
    if cfg.encoder_layers != cfg.decoder_layers:
        raise OptionError(
            f"--encoder-layers ({cfg.encoder_layers}) must equal --decoder-layers ({cfg.decoder_layers}): "
            "the encoder's final state initialises every decoder layer"
        )
    for name in ("encoder_embed_dim", "encoder_hidden_size", "encoder_layers", "decoder_embed_dim",
                 "decoder_hidden_size", "decoder_out_embed_dim", "decoder_attention_dim"):
        if getattr(cfg, name) < 1:
            raise OptionError(f"--{name.replace('_', '-')} must be positive, got {getattr(cfg, name)}")
    for name in ("dropout", "dropout_in", "dropout_out", "word_dropout"):
        value = getattr(cfg, name)
        if value is not None and not 0.0 <= value < 1.0:
            raise OptionError(f"--{name.replace('_', '-')} must be in [0, 1), got {value}")
    preset = getattr(cfg, "_name", None) or getattr(cfg, "arch", None)
    given = f" (--arch {preset} sets some of these)" if preset not in (None, "rnn_seq2seq") else ""
    if cfg.share_all_embeddings and cfg.encoder_embed_dim != cfg.decoder_embed_dim:
        raise OptionError(f"--share-all-embeddings needs --encoder-embed-dim ({cfg.encoder_embed_dim}) == "
                          f"--decoder-embed-dim ({cfg.decoder_embed_dim}){given}")
    out_dim = cfg.decoder_out_embed_dim if cfg.decoder_deep_output else cfg.decoder_hidden_size
    if ties_output(cfg) and out_dim != cfg.decoder_embed_dim:
        flag = "--share-all-embeddings" if cfg.share_all_embeddings else "--share-decoder-input-output-embed"
        which = "--decoder-out-embed-dim" if cfg.decoder_deep_output else "--decoder-hidden-size"
        deep = "" if cfg.decoder_deep_output else ", or --decoder-deep-output with --decoder-out-embed-dim equal to it"
        raise OptionError(f"{flag} ties the output projection to the decoder embedding: it needs {which} ({out_dim}) "
                          f"== --decoder-embed-dim ({cfg.decoder_embed_dim}){deep}{given}")


EVAL_BLEU_ARGS_EXAMPLE = """'{"beam": 4}'"""  # --eval-bleu-args as a shell takes it


def check_eval_bleu_args(text: Optional[str]) -> None:
    """--eval-bleu-args as fairseq's translation task reads it (a JSON object of generation options),
    checked by the generation rules under its own name: fairseq fails on it after the model is built."""
    from ..patches.generation import GenerationOptionError, check_generation

    try:
        options = json.loads(text or "{}")
    except ValueError as e:
        raise OptionError(f"--eval-bleu-args {text} is not JSON ({e}): give an object, e.g. "
                          f"{EVAL_BLEU_ARGS_EXAMPLE}") from None
    if not isinstance(options, dict):
        raise OptionError(f"--eval-bleu-args {text} is not a JSON object of generation options, e.g. "
                          f"{EVAL_BLEU_ARGS_EXAMPLE}")
    try:
        check_generation(argparse.Namespace(**options), [])
    except GenerationOptionError as e:
        raise OptionError(f"--eval-bleu-args {text}: {e}") from None


def check_dictionaries(cfg: RNNSeq2SeqConfig, src_dict, tgt_dict) -> None:
    """Reject options the data's dictionaries cannot serve: one embedding for two vocabularies."""
    if cfg.share_all_embeddings and src_dict != tgt_dict:
        raise OptionError("--share-all-embeddings requires a joined dictionary "
                          "(fairseq-preprocess --joined-dictionary)")


def load_hub(model_dir: str, paths: list[str], data_name_or_path: str, kwargs: dict) -> RNNSeq2SeqHub:
    """fairseq's ``hub_utils.from_pretrained`` of the checkpoints PATHS (a name holding ':', which
    fairseq would split, through a link) and its hub interface (which loads the sentencepiece
    model: one that is not one, or is missing, named)."""
    with tempfile.TemporaryDirectory() as links:
        try:
            loaded = hub_utils.from_pretrained(model_dir, fairseq_ensemble(paths, links), data_name_or_path, **kwargs)
            return RNNSeq2SeqHub(loaded["args"], loaded["task"], loaded["models"])  # its arguments checked
        except RuntimeError as e:  # sentencepiece's own words: "INTERNAL: could not parse ModelProto"
            if "ModelProto" not in str(e):
                raise
            named = kwargs.get("sentencepiece_model", "the checkpoint's --sentencepiece-model")
            raise TokenizationError(f"{named} is not a sentencepiece model") from None
        except OSError as e:  # fairseq's words for a --sentencepiece-model the checkpoint names, not here
            if not str(e).startswith("file ") or "sentencepiece_model" in kwargs:
                raise
            raise FileNotFoundError(f"from_pretrained: the checkpoint's --sentencepiece-model: {e}: copy spm.model "
                                    f"into {model_dir}, or pass sentencepiece_model=PATH") from None


@register_model("rnn_seq2seq", dataclass=RNNSeq2SeqConfig)
class RNNSeq2SeqModel(FairseqEncoderDecoderModel):
    """Context-concat RNN encoder-decoder; the dataclass defaults are the ``rnn_seq2seq`` arch.

    The model keeps a fingerprint of each dictionary it was built with and its direction
    (``SRC-TGT``; buffers saved in every checkpoint), so a checkpoint loaded over data with other
    dictionaries or the other direction is refused by name.
    """

    def __init__(self, encoder: RNNEncoder, decoder: RNNDecoder, languages: tuple = (None, None)):
        super().__init__(encoder, decoder)
        for side, dictionary in (("source", encoder.dictionary), ("target", decoder.dictionary)):
            self.register_buffer(f"{side}_dictionary_fingerprint", fingerprint(dictionary))
        self.register_buffer(DIRECTION_KEY, direction_record(*languages))

    @classmethod
    def build_model(cls, cfg: RNNSeq2SeqConfig, task: FairseqTask) -> "RNNSeq2SeqModel":
        check_not_a_hydra_preset(cfg)
        fill_defaults(cfg, RNNSeq2SeqConfig)
        check_config(cfg)
        src_dict, tgt_dict = task.source_dictionary, task.target_dictionary
        check_dictionaries(cfg, src_dict, tgt_dict)
        task_cfg = getattr(task, "cfg", None)  # its languages: given, or inferred from the data's file names
        if getattr(task_cfg, "eval_bleu", False):  # validation BLEU on words joined wrongly picks the wrong best
            check_post_process(tgt_dict, task_cfg.eval_bleu_remove_bpe, "--eval-bleu-remove-bpe")
            check_eval_bleu_args(task_cfg.eval_bleu_args)
        encoder_embed = embedding(len(src_dict), cfg.encoder_embed_dim, src_dict.pad(), cfg.init,
                                  output=cfg.share_all_embeddings)
        if cfg.share_all_embeddings:
            decoder_embed = encoder_embed
        else:
            decoder_embed = embedding(len(tgt_dict), cfg.decoder_embed_dim, tgt_dict.pad(), cfg.init,
                                      output=ties_output(cfg))
        encoder = RNNEncoder(cfg, src_dict, encoder_embed)
        decoder = RNNDecoder(cfg, tgt_dict, decoder_embed, encoder.output_dim)
        return cls(encoder, decoder, (getattr(task_cfg, "source_lang", None), getattr(task_cfg, "target_lang", None)))

    @classmethod
    def from_pretrained(cls, model_dir: str, checkpoint_file: str = "ckpt/checkpoint_best.pt",
                        data_name_or_path: str = "./bin", **kwargs) -> RNNSeq2SeqHub:
        """A fairseq hub interface over a model directory laid out by scripts/prepare.py and
        scripts/train.sh (``spm.model``, ``bin/``, ``ckpt/``)::

            model = RNNSeq2SeqModel.from_pretrained("runs/multi30k/de-en")
            model.translate(["Ein Hund läuft."], beam=5)

        ``checkpoint_file="a.pt:b.pt"`` decodes with the ensemble of both. The sentencepiece model
        must be the one that made the source dictionary (checked entry by entry), and none is taken
        for a word-level model. ``translate``/``sample`` name a bad argument (user_dir/hub.py).
        """
        if not os.path.isdir(model_dir):
            why = "does not exist" if not os.path.lexists(model_dir) else not_a_file(model_dir) or "is a file"
            raise FileNotFoundError(f"from_pretrained: model folder {model_dir} {why}")
        data = os.path.join(model_dir, data_name_or_path)
        if not os.path.isdir(data):
            raise FileNotFoundError(f"from_pretrained: data folder {data} (dict.*.txt) does not exist: "
                                    "pass data_name_or_path=")
        paths = [os.path.abspath(p) for p in checked_ensemble(checkpoint_file, model_dir, contents=False)]
        spm_model = kwargs.get("sentencepiece_model") or os.path.join(model_dir, "spm.model")
        if "sentencepiece_model" in kwargs and not_a_file(spm_model):
            raise FileNotFoundError(f"from_pretrained: sentencepiece_model {spm_model} {not_a_file(spm_model)}")
        if "bpe" not in kwargs and ("sentencepiece_model" in kwargs or os.path.exists(spm_model)):
            kwargs.update(bpe="sentencepiece", sentencepiece_model=spm_model)
        kwargs.setdefault("eval_bleu", False)  # a training option: no validation BLEU decoder to build here
        hub = load_hub(model_dir, paths, data_name_or_path, kwargs)
        check_bpe_model(hub.bpe, hub.task.source_dictionary, hub.cfg.bpe)  # also one the checkpoint names
        if hub.bpe is None and uses_sentencepiece(hub.task.target_dictionary):
            raise FileNotFoundError(
                f"{model_dir} holds a model trained on sentencepiece pieces but no spm.model: copy the "
                "sentencepiece model there (or pass sentencepiece_model=PATH), else text goes in and out as pieces"
            )
        return hub

    def load_state_dict(self, state_dict, strict=True, model_cfg=None, args=None):
        """Name a dictionary mismatch (size or entries) or the other direction instead of loading
        weights over it, and the checkpoint file where the loading noted it (an ensemble's member)."""
        where = named_file(state_dict)
        state_dict = dict(state_dict)
        self.check_direction(state_dict.get(DIRECTION_KEY), where)
        state_dict[DIRECTION_KEY] = getattr(self, DIRECTION_KEY)  # an identity, checked: never loaded over ours
        for side, name in (("source", "encoder"), ("target", "decoder")):
            key, ours = f"{side}_dictionary_fingerprint", getattr(self, f"{side}_dictionary_fingerprint")
            weight = state_dict.get(f"{name}.embed_tokens.weight")
            if weight is None:  # torch's load_state_dict below names the missing key
                continue
            saved_size = weight.size(0)
            saved = state_dict.setdefault(key, ours)  # checkpoints before fingerprints: size check only
            if saved_size != len(getattr(self, name).dictionary) or as_hex(saved) != as_hex(ours):
                raise DataMismatch(
                    f"{where}the checkpoint was trained with a {side} dictionary of {saved_size} entries (fingerprint "
                    f"{as_hex(saved)}), but the data's dictionary has {len(getattr(self, name).dictionary)} "
                    f"(fingerprint {as_hex(ours)}): use the data folder (dict.*.txt) the model was trained with"
                )
        try:
            return super().load_state_dict(state_dict, strict=strict, model_cfg=model_cfg, args=args)
        except RuntimeError:  # torch's "Error(s) in loading state_dict": pages of keys
            misfit = weights_misfit(self.state_dict(), state_dict)  # as fairseq upgraded it, in place
            if not misfit:
                raise
            raise WeightsMismatch(f"{where}the checkpoint's weights do not fit the model its options build here: "
                                  f"{misfit}; the options that shape the model (sizes, cell, layers, attention, "
                                  "tying) must be the checkpoint's; only others, e.g. dropout, may differ (also in "
                                  "--model-overrides)") from None

    def check_direction(self, saved, where: str = "") -> None:
        """Refuse a checkpoint of another direction (de-en over en-de data: with joint dictionaries
        the fingerprints agree); one without the record (older) or data without languages passes."""
        ours = getattr(self, DIRECTION_KEY)
        if directions_differ(saved, ours):
            raise DataMismatch(f"{where}the checkpoint translates {as_direction(saved)} (source-target), but the data "
                             f"is read as {as_direction(ours)} (--source-lang/--target-lang, else the data's file "
                             f"names): give -s/-t of the model's direction, or the checkpoint of {as_direction(ours)}")


@register_model_architecture("rnn_seq2seq", "rnn_seq2seq_d2l")
def rnn_seq2seq_d2l(args):
    """The sizes of Dive into Deep Learning 0.17, section 9.7 "Sequence to Sequence Learning":
    GRU, embedding 32, hidden 32, 2 layers, dropout 0.1 between the layers only, initialised as
    torch does, as in the textbook (the 1.0 edition's section 10.7 trains 256/256, 2 layers,
    dropout 0.2)."""
    args.cell = getattr(args, "cell", "gru")
    args.init = getattr(args, "init", "torch")
    args.encoder_embed_dim = getattr(args, "encoder_embed_dim", 32)
    args.encoder_hidden_size = getattr(args, "encoder_hidden_size", 32)
    args.encoder_layers = getattr(args, "encoder_layers", 2)
    args.decoder_embed_dim = getattr(args, "decoder_embed_dim", 32)
    args.decoder_hidden_size = getattr(args, "decoder_hidden_size", 32)
    args.decoder_layers = getattr(args, "decoder_layers", 2)
    args.dropout = getattr(args, "dropout", 0.1)
    args.dropout_in = getattr(args, "dropout_in", 0.0)
    args.dropout_out = getattr(args, "dropout_out", 0.0)


@register_model_architecture("rnn_seq2seq", "rnn_seq2seq_multi30k")
def rnn_seq2seq_multi30k(args):
    """Multi30k-scale, without attention: bidirectional GRU encoder, deep output, tied decoder
    embeddings, all 512 wide (the sizes chosen on Multi30k's validation set: docs/results.md)."""
    args.cell = getattr(args, "cell", "gru")
    args.encoder_bidirectional = getattr(args, "encoder_bidirectional", True)
    args.encoder_embed_dim = getattr(args, "encoder_embed_dim", 512)
    args.encoder_hidden_size = getattr(args, "encoder_hidden_size", 512)
    args.decoder_embed_dim = getattr(args, "decoder_embed_dim", 512)
    args.decoder_hidden_size = getattr(args, "decoder_hidden_size", 512)
    args.decoder_deep_output = getattr(args, "decoder_deep_output", True)
    args.decoder_out_embed_dim = getattr(args, "decoder_out_embed_dim", 512)
    args.share_decoder_input_output_embed = getattr(args, "share_decoder_input_output_embed", True)
    args.dropout = getattr(args, "dropout", 0.3)


@register_model_architecture("rnn_seq2seq", "rnn_seq2seq_attention_multi30k")
def rnn_seq2seq_attention_multi30k(args):
    """``rnn_seq2seq_multi30k`` with additive attention (256 wide), 256-wide embeddings and deep
    output, and a 2 x 256 encoder: the best attention configuration measured (docs/results.md)."""
    args.decoder_attention = getattr(args, "decoder_attention", "additive")
    for name in ("encoder_embed_dim", "encoder_hidden_size", "decoder_embed_dim", "decoder_out_embed_dim"):
        setattr(args, name, getattr(args, name, 256))
    rnn_seq2seq_multi30k(args)
