"""fairseq user directory: ``--user-dir user_dir`` registers ``rnn_seq2seq`` and ``masked_ce``.

fairseq auto-imports only ``models/`` and ``tasks/`` of a user dir, so the criterion is
imported here; importing is all this file does (the decorators register).
"""
from . import checkpoint_safety  # noqa: F401  (before any checkpoint is loaded)
from . import criterions, models  # noqa: F401
