"""Unit tests of rnn_seq2seq: exact equalities on tiny hand-built batches."""
import pytest
import torch
from torch.testing import assert_close

from user_dir.models.rnn_seq2seq import RNNSeq2SeqConfig, RNNSeq2SeqModel

VARIANTS = {  # name -> config overrides
    "lstm": {},
    "gru-2layer": {"cell": "gru", "encoder_layers": 2, "decoder_layers": 2},
    "lstm-bidir-deep-tied": {"encoder_bidirectional": True, "decoder_deep_output": True,
                             "decoder_out_embed_dim": 8, "share_decoder_input_output_embed": True},
    "gru-bidir-2layer-shared": {"cell": "gru", "encoder_bidirectional": True, "encoder_layers": 2,
                                "decoder_layers": 2, "share_all_embeddings": True, "encoder_embed_dim": 8},
}


def build(task, **overrides) -> RNNSeq2SeqModel:
    cfg = dict(encoder_embed_dim=6, decoder_embed_dim=8, encoder_hidden_size=10, decoder_hidden_size=12,
               max_source_positions=64, max_target_positions=64, dropout=0.0)
    cfg.update(overrides)
    return RNNSeq2SeqModel.build_model(RNNSeq2SeqConfig(**cfg), task).eval()


def batch(task, lengths):
    """B x S source of random words, left-padded like fairseq's default."""
    d = task.source_dictionary
    src = torch.full((len(lengths), max(lengths)), d.pad())
    for i, n in enumerate(lengths):
        src[i, max(lengths) - n :] = torch.randint(d.nspecial, len(d), (n,))
    return src, torch.tensor(lengths)


def prev_tokens(task, bsz: int, steps: int):
    d = task.target_dictionary
    prev = torch.randint(d.nspecial, len(d), (bsz, steps))
    prev[:, 0] = d.eos()
    return prev


@pytest.mark.parametrize("variant", VARIANTS)
def test_incremental_decoding_equals_full_forward(task, variant):
    model = build(task, **VARIANTS[variant])
    src, lengths = batch(task, [5, 3, 1])
    prev = prev_tokens(task, 3, 6)
    enc = model.encoder(src, lengths)
    full, _ = model.decoder(prev, enc)  # B x T x V
    state = {}
    steps = [model.decoder(prev[:, : t + 1], enc, incremental_state=state)[0] for t in range(prev.size(1))]
    assert_close(torch.cat(steps, dim=1), full)


def test_reorder_mid_decoding_matches_reordered_batch(task):
    """Beam search reorders state; continuing must equal decoding the reordered batch."""
    model = build(task, encoder_bidirectional=True)
    src, lengths = batch(task, [4, 2, 3])
    prev = prev_tokens(task, 3, 5)
    order = torch.tensor([2, 2, 0])
    enc, state = model.encoder(src, lengths), {}
    for t in range(2):
        model.decoder(prev[:, : t + 1], enc, incremental_state=state)
    model.decoder.reorder_incremental_state_scripting(state, order)
    enc = model.encoder.reorder_encoder_out(enc, order)
    prev = prev[order]
    steps = [model.decoder(prev[:, : t + 1], enc, incremental_state=state)[0] for t in range(2, 5)]
    full, _ = model.decoder(prev, enc)
    assert_close(torch.cat(steps, dim=1), full[:, 2:])


@pytest.mark.parametrize("variant", VARIANTS)
def test_encoder_ignores_padding(task, variant):
    """A sentence's encoding is the same alone, left-padded or right-padded in a batch."""
    model = build(task, **VARIANTS[variant])
    src, lengths = batch(task, [6, 2, 4])
    alone = [model.encoder(src[i : i + 1, 6 - n :], lengths[i : i + 1]) for i, n in enumerate([6, 2, 4])]
    right = torch.stack([torch.roll(row, -int((row == task.source_dictionary.pad()).sum())) for row in src])
    for padded in (src, right):
        enc = model.encoder(padded, lengths)
        for i in range(3):
            assert_close(enc["state"][:, :, i], alone[i]["state"][:, :, 0])
            assert_close(enc["context"][i], alone[i]["context"][0])


def test_state_shapes_carry_lstm_cell_and_all_layers(task):
    model = build(task, encoder_layers=3, decoder_layers=3, encoder_bidirectional=True)
    enc = model.encoder(*batch(task, [4, 2]))
    assert enc["state"].shape == (2, 3, 2, 12)  # (h, c) x layers x batch x decoder hidden
    assert enc["context"].shape == (2, 20)      # both directions of the top layer


def test_decoder_reads_context_and_initial_state_at_every_step(task):
    """Changing only the context, or only the initial state, changes every output position."""
    model = build(task)
    enc = model.encoder(*batch(task, [4, 3]))
    prev = prev_tokens(task, 2, 6)
    base, _ = model.decoder(prev, enc)
    for key in ("context", "state"):
        changed = {**enc, key: enc[key] + 0.5}
        out, _ = model.decoder(prev, changed)
        assert ((out - base).abs().amax(dim=-1) > 1e-4).all(), f"some step ignores the {key}"


def test_decoder_output_depends_on_source(task):
    model = build(task)
    prev = prev_tokens(task, 1, 4)
    outs = [model(*batch(task, [5]), prev)[0] for _ in range(2)]
    assert not torch.allclose(outs[0], outs[1])


@pytest.mark.parametrize("overrides, option", [
    ({"encoder_layers": 2, "decoder_layers": 1}, "--encoder-layers"),
    ({"share_decoder_input_output_embed": True}, "--decoder-hidden-size"),
    ({"share_decoder_input_output_embed": True, "decoder_deep_output": True, "decoder_out_embed_dim": 5},
     "--decoder-out-embed-dim"),
    ({"share_all_embeddings": True}, "--encoder-embed-dim"),
    ({"dropout": 1.5}, "--dropout"),
    ({"decoder_hidden_size": 0}, "--decoder-hidden-size"),
])
def test_inconsistent_options_rejected_with_option_named(task, overrides, option):
    with pytest.raises(ValueError, match=option):
        build(task, **overrides)
