"""fairseq user directory: ``--user-dir user_dir`` registers ``rnn_seq2seq`` and ``masked_ce``.

fairseq auto-imports only ``models/`` and ``tasks/`` of a user dir, so the criterion is
imported here. ``patches`` repairs fairseq 0.12 where it breaks on current torch or loses data
(checkpoint loading and copies, the last batch of a split, torchrun on CPU); importing the
package applies them, before any checkpoint is loaded or batch is made
(``RNN_SEQ2SEQ_PATCHES=minimal``: only those fairseq 0.12 needs to run on current torch).
"""
from . import criterions, models, patches  # noqa: F401
