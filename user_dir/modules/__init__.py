"""The layers of ``rnn_seq2seq``, one concern per module (imported by ``models/rnn_seq2seq.py``)."""
