"""Options missing from a model's config get their dataclass defaults.

fairseq 0.12 merges a model dataclass's defaults into the config of the base architecture
(``--arch rnn_seq2seq``) only; the config of a preset (``rnn_seq2seq_multi30k``), or of a
checkpoint written before an option existed, lacks them. Called from ``build_model``.
"""
import contextlib
from dataclasses import MISSING, fields

from omegaconf import OmegaConf, open_dict


def fill_defaults(cfg, dataclass: type) -> None:
    """Give ``cfg`` the default of every field of ``dataclass`` that it lacks."""
    missing = [f for f in fields(dataclass) if not hasattr(cfg, f.name) and f.default is not MISSING]
    with open_dict(cfg) if OmegaConf.is_config(cfg) else contextlib.nullcontext():
        for f in missing:
            setattr(cfg, f.name, f.default)
