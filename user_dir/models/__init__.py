from . import rnn_seq2seq  # noqa: F401
