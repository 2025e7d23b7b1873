"""fairseq user directory: ``--user-dir user_dir`` registers ``rnn_seq2seq`` and ``masked_ce``.

fairseq auto-imports only ``models/`` and ``tasks/`` of a user dir, so the criterion is
imported here. ``checkpoints`` and ``distributed`` fix fairseq 0.12 behaviour on current
torch (safe checkpoint loading, atomic checkpoint copies, torchrun on CPU).
"""
from . import checkpoints, distributed  # noqa: F401  (before any checkpoint is loaded)
from . import criterions, models  # noqa: F401
