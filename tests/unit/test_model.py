"""Unit tests of rnn_seq2seq: exact equalities on tiny hand-built batches."""
import math

import pytest
import torch
from fairseq.dataclass.configs import FairseqConfig
from omegaconf import OmegaConf
from torch import nn
from torch.testing import assert_close

from helpers import USER_DIR, VARIANTS, batch, build, prev_tokens
from user_dir.models.rnn_seq2seq import RNNSeq2SeqModel
from user_dir.modules.recurrence import ContextRNN


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


def right_padded(task, lengths):
    """B x max(lengths) previous target tokens, each row ``[eos, words]`` then padding."""
    prev = prev_tokens(task, len(lengths), max(lengths))
    for i, n in enumerate(lengths):
        prev[i, n:] = task.target_dictionary.pad()
    return prev


TARGET_LENGTHS = {"unsorted": [2, 6, 4, 6], "longest first, one token": [6, 4, 2, 1], "no padding": [5, 5, 5, 5]}


@pytest.mark.parametrize("lengths", TARGET_LENGTHS)
@pytest.mark.parametrize("variant", [*VARIANTS, "fused"])
def test_padded_targets_give_each_sentence_what_it_gets_alone(task, variant, lengths):
    """Teacher forcing over right-padded targets of different lengths: at each sentence's real
    positions, the outputs and the parameters' gradients are those of the sentence decoded
    alone (the loop skips the sentences that have ended; the fused path runs over padding)."""
    from user_dir.modules.lengths import by_length

    overrides = {"decoder_rnn": "fused"} if variant == "fused" else VARIANTS[variant]
    model = build(task, **overrides)
    target_lengths = TARGET_LENGTHS[lengths]
    src, src_lengths = batch(task, [5, 3, 1, 4])
    prev = right_padded(task, target_lengths)
    if len(set(target_lengths)) > 1:  # the loop's skipping is engaged
        assert by_length(prev, task.target_dictionary.pad())[1] is not None
    probe = torch.randn(1, max(target_lengths), len(task.target_dictionary))

    def loss_and_grads(src, src_lengths, prev):
        model.zero_grad()
        out, _ = model(src, src_lengths, prev)
        real = prev.ne(task.target_dictionary.pad()).unsqueeze(2)
        (out * probe[:, : out.size(1)] * real).sum().backward()
        return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    out, grads = loss_and_grads(src, src_lengths, prev)
    with torch.no_grad():  # the path of validation and scoring
        assert_close(model(src, src_lengths, prev)[0], out)
    alone = [loss_and_grads(src[i : i + 1, src.size(1) - s :], src_lengths[i : i + 1], prev[i : i + 1, :t])
             for i, (s, t) in enumerate(zip(src_lengths.tolist(), target_lengths))]
    for i, (t, (out_i, _)) in enumerate(zip(target_lengths, alone)):
        assert_close(out[i, :t], out_i[0])
    for name, grad in grads.items():
        assert_close(grad, sum(g[name] for _, g in alone), msg=name)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_recurrence_keeps_each_ended_rows_last_state_and_outputs_zeros(cell):
    from user_dir.modules.recurrence import CELLS, recur

    step, gates, k = CELLS[cell].step, CELLS[cell].gates, CELLS[cell].state_parts
    hidden_proj, lengths = nn.Linear(5, gates * 5), [4, 3, 3, 1]
    gates_x, state = torch.randn(4, 4, gates * 5), torch.randn(k, 4, 5)
    active = [sum(n > t for n in lengths) for t in range(4)]
    out, final = recur(step, gates_x, state, hidden_proj, active=active)
    for i, n in enumerate(lengths):
        out_i, final_i = recur(step, gates_x[:n, i : i + 1], state[:, i : i + 1], hidden_proj)
        assert_close(out[:n, i], out_i[:, 0])
        assert (out[n:, i] == 0).all()
        assert_close(final[:, i], final_i[:, 0])


ENCODER_LENGTHS = {"one length": [3, 3, 3], "two, longest first": [4, 4, 2, 2, 2], "unsorted": [2, 4, 1, 4, 2, 1],
                   "one sentence": [3], "each its own": [1, 2, 3, 4]}


@pytest.mark.parametrize("lengths", ENCODER_LENGTHS)
@pytest.mark.parametrize("cell,bidirectional,layers", [("lstm", False, 1), ("lstm", True, 2), ("gru", True, 1)])
def test_rnn_per_length_equals_one_packed_call(cell, bidirectional, layers, lengths):
    """The encoder's dense call per length gives the packed call's outputs (zero at padding),
    last-step states and gradients."""
    from user_dir.modules.lengths import rnn_by_length
    from user_dir.modules.recurrence import RNN

    lengths = torch.tensor(ENCODER_LENGTHS[lengths])
    rnn = RNN(cell, 6, 5, layers, 0.0, "uniform", bidirectional)
    x = torch.randn(int(lengths.max()), len(lengths), 6, requires_grad=True)
    probe = torch.randn(x.size(0), len(lengths), 5 * (1 + bidirectional))

    def outputs_and_grads(run):
        out, state = run()
        grads = torch.autograd.grad((out * probe).sum() + state.pow(2).sum(), [x, *rnn.parameters()])
        return out, state, grads

    def packed():
        out, state = rnn(nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False))
        return nn.utils.rnn.pad_packed_sequence(out, total_length=x.size(0))[0], state

    expected = outputs_and_grads(packed)
    assert_close(outputs_and_grads(lambda: rnn_by_length(rnn, x, lengths, min_rows=1)), expected)
    for min_rows in (1, len(lengths) + 1):  # dense calls, and the packed call unless one length
        out, state = rnn_by_length(rnn, x, lengths, outputs=False, min_rows=min_rows)
        assert out is None
        assert_close(state, expected[1])


@pytest.mark.parametrize("variant", ["lstm-bidir-deep-tied", "gru-bidir-attention-deep"])
def test_encoder_runs_dense_calls_where_lengths_repeat(task, variant):
    """Sixteen sentences of two lengths: dense calls (no packed sequence), each sentence's
    encoding as alone (one dense call); four sentences of four lengths, and any batch without
    gradients (validation, decoding) or under bfloat16 autocast (--amp): one packed call."""
    model = build(task, **VARIANTS[variant])
    packed = []
    model.encoder.rnn.rnn.register_forward_pre_hook(
        lambda module, args: packed.append(isinstance(args[0], nn.utils.rnn.PackedSequence)))
    src, lengths = batch(task, [5, 3] * 8)
    enc = model.encoder(src, lengths)
    assert packed == [False, False]
    for i, n in enumerate(lengths.tolist()):
        alone = model.encoder(src[i : i + 1, src.size(1) - n :], lengths[i : i + 1])
        assert_close(enc["state"][:, :, i], alone["state"][:, :, 0])
        if "outputs" in enc:
            assert_close(enc["per_sentence"]["outputs"][i, src.size(1) - n :], alone["per_sentence"]["outputs"][0])
    assert packed == [False] * 18
    packed.clear()
    model.encoder(*batch(task, [5, 3, 1, 4]))
    with torch.no_grad():
        model.encoder(src, lengths)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model.encoder(src, lengths)
    assert packed == [True, True, True]


REORDERS = {  # name -> (orders applied one after another to 3 sentences, sentences kept after each)
    "arbitrary": ([[2, 2, 0]], [3]),
    "beam: expand, then within each sentence's rows": ([[0, 0, 1, 1, 2, 2], [1, 0, 2, 2, 5, 4]], [3, 3]),
    "beam: drop a finished sentence": ([[0, 0, 1, 1, 2, 2], [0, 1, 5, 4]], [3, 2]),
    "beam: one row left per sentence, reordered": ([[0, 0, 1, 1, 2, 2], [3, 0, 5]], [3, 3]),
    "beam: one sentence's rows only": ([[0, 0, 1, 1, 2, 2], [2, 3, 2, 3]], [3, 1]),
    "uneven rows per sentence": ([[0, 0, 1, 1, 2, 2], [0, 1, 2, 4, 5]], [3, 5]),
    "rows of a sentence apart": ([[0, 0, 1, 1, 2, 2], [0, 2, 0, 2]], [3, 4]),
}


@pytest.mark.parametrize("reorders", REORDERS)
@pytest.mark.parametrize("variant", ["lstm-bidir-deep-tied", "gru-bidir-attention-deep", "lstm-2layer-attention",
                                     "gru-bidir-multiplicative-deep"])
def test_reorder_mid_decoding_matches_reordered_batch(task, variant, reorders):
    """Beam search reorders state; continuing must equal decoding the reordered batch. The
    source's per-position tensors stay one per sentence where the rows of each sentence stay
    together in equal numbers (beam search's orders), else one per row."""
    model = build(task, **VARIANTS[variant])
    src, lengths = batch(task, [4, 2, 3])
    prev = prev_tokens(task, 3, 6)
    rows = torch.arange(3)  # each row's sentence in the original batch
    enc, state, t = model.encoder(src, lengths), {}, 0
    for order, kept in zip(*REORDERS[reorders]):
        for _ in range(2 if t else 1):
            model.decoder(prev[rows, : t + 1], enc, incremental_state=state)
            t += 1
        order = torch.tensor(order)
        model.decoder.reorder_incremental_state_scripting(state, order)
        enc = model.encoder.reorder_encoder_out(enc, order)
        rows = rows[order]
        cache = model.decoder.get_incremental_state(state, "rnn")
        per_sentence = {**enc.get("per_sentence", {}), **cache.get("per_sentence", {})}
        attends = VARIANTS[variant].get("decoder_attention", "none") != "none"
        assert len(per_sentence) == (4 if attends else 0)  # outputs, padding_mask, keys, gate_terms
        for name, tensor in per_sentence.items():
            assert tensor.size(0) == kept, name
    steps = [model.decoder(prev[rows, : u + 1], enc, incremental_state=state)[0] for u in range(t, 6)]
    full, _ = model.decoder(prev[rows], model.encoder(src[rows], lengths[rows]))
    assert_close(torch.cat(steps, dim=1), full[:, t:])


def test_outputs_move_to_left_padded_rows_only():
    """unpad_like's gather (always taken on a GPU, which reads no lengths): a right-padded or full row
    stays where it is, a left-padded one moves right by its padding."""
    from user_dir.modules.lengths import unpad_like

    outputs = torch.arange(1.0, 10.0).view(3, 3, 1)  # rows [1 2 3], [4 5 6], [7 8 9], right-padded as computed
    mask = torch.tensor([[True, False, False], [False, False, True], [False, False, False]])
    moved = unpad_like(outputs, mask).squeeze(2)
    assert moved[0, 1:].tolist() == [1.0, 2.0]  # left-padded by 1: its two outputs after the pad
    assert moved[1].tolist() == [4.0, 5.0, 6.0] and moved[2].tolist() == [7.0, 8.0, 9.0]


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
            if "outputs" in enc:  # attention reads the outputs at the source's own positions
                source, source_alone = enc["per_sentence"], alone[i]["per_sentence"]
                assert_close(source["outputs"][i][~source["padding_mask"][i]], source_alone["outputs"][0])
                assert_close(source["padding_mask"][i], padded[i].eq(task.source_dictionary.pad()))


@pytest.mark.parametrize("variant", ["gru-bidir-attention-deep", "lstm-2layer-attention",
                                     "gru-bidir-multiplicative-deep"])
def test_attention_weights_cover_the_source_only_and_padding_changes_nothing(task, variant):
    """B x T x S weights in the source's own positions: they sum to 1 and are 0 on padding, and
    each sentence decodes in a left-padded batch exactly as alone."""
    model = build(task, **VARIANTS[variant])
    lengths = [6, 2, 4]
    src, lens = batch(task, lengths)
    prev = prev_tokens(task, 3, 5)
    out, extra = model(src, lens, prev)
    attn = extra["attn"][0]
    assert attn.shape == (3, 5, 6)
    assert_close(attn.sum(dim=2), torch.ones(3, 5))
    assert (attn[src.eq(task.source_dictionary.pad()).unsqueeze(1).expand_as(attn)] == 0).all()
    for i, n in enumerate(lengths):
        alone, alone_extra = model(src[i : i + 1, 6 - n :], lens[i : i + 1], prev[i : i + 1])
        assert_close(out[i : i + 1], alone)
        assert_close(attn[i : i + 1, :, 6 - n :], alone_extra["attn"][0])


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
    ({"share_decoder_input_output_embed": True}, r"needs --decoder-hidden-size \(\d+\) == --decoder-embed-dim "
                                                 r"\(\d+\), or --decoder-deep-output with --decoder-out-embed-dim"),
    ({"share_decoder_input_output_embed": True, "decoder_deep_output": True, "decoder_out_embed_dim": 5},
     "--decoder-out-embed-dim"),
    ({"share_all_embeddings": True}, r"--encoder-embed-dim \(\d+\) == --decoder-embed-dim \(\d+\)"),
    ({"share_all_embeddings": True, "encoder_embed_dim": 8}, "--share-all-embeddings ties the output projection"),
    ({"dropout": 1.5}, "--dropout"),
    ({"dropout_in": -0.1}, "--dropout-in"),
    ({"word_dropout": 1.0}, "--word-dropout"),
    ({"decoder_hidden_size": 0}, "--decoder-hidden-size"),
])
def test_inconsistent_options_rejected_with_option_named(task, overrides, option):
    with pytest.raises(ValueError, match=option):
        build(task, **overrides)


def test_share_all_embeddings_ties_encoder_decoder_and_output_like_fairseq(task):
    model = build(task, share_all_embeddings=True, encoder_embed_dim=8, decoder_embed_dim=8,
                  decoder_deep_output=True, decoder_out_embed_dim=8)
    assert model.encoder.embed_tokens.weight is model.decoder.embed_tokens.weight
    assert model.decoder.fc_out is None
    features = torch.randn(2, 3, 8)
    assert_close(model.decoder.output_layer(features), features @ model.encoder.embed_tokens.weight.T)


def fused_copy(rnn: ContextRNN, cell: str, input_size: int, context_size: int, hidden: int, layers: int) -> nn.RNNBase:
    """The textbook's decoder RNN (one fused nn.LSTM/nn.GRU over [x ; c]) holding ``rnn``'s weights."""
    fused = (nn.LSTM if cell == "lstm" else nn.GRU)(input_size + context_size, hidden, layers)
    with torch.no_grad():
        fused.weight_ih_l0.copy_(rnn.input_proj.weight)  # columns: x first, then c
        fused.bias_ih_l0.copy_(rnn.input_proj.bias)
        fused.weight_hh_l0.copy_(rnn.hidden_proj.weight)
        fused.bias_hh_l0.copy_(rnn.hidden_proj.bias)
        for layer in range(1, layers):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(fused, f"{name}_l{layer}").copy_(getattr(rnn.upper.rnn, f"{name}_l{layer - 1}"))
    return fused


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("layers", [1, 2])
def test_context_rnn_equals_fused_rnn_over_input_and_context(cell, layers):
    """ContextRNN splits the first layer's input gates into a per-step and a per-sentence term;
    with the same weights it computes what nn.LSTM/nn.GRU over [x_t ; c] computes."""
    steps, bsz, emb, ctx, hidden = 5, 3, 6, 7, 8
    rnn = ContextRNN(cell, emb, ctx, hidden, layers, dropout=0.0)
    fused = fused_copy(rnn, cell, emb, ctx, hidden, layers)
    x, c = torch.randn(steps, bsz, emb), torch.randn(bsz, ctx)         # T x B x E, B x C
    state = torch.randn(2 if cell == "lstm" else 1, layers, bsz, hidden)  # K x L x B x H
    fused_in = torch.cat([x, c.expand(steps, -1, -1)], dim=-1)            # T x B x (E + C)
    fused_out, fused_state = fused(fused_in, (state[0], state[1]) if cell == "lstm" else state[0])
    # the fixed context's term once per sentence, or the same term from attend at every step
    for out, new_state in (rnn(x, state, context_term=rnn.context_term(c)),
                           rnn(x, state, attend=lambda h: rnn.context_term(c)),
                           rnn.fused(x, state, c)):
        assert_close(out, fused_out)
        assert_close(new_state, torch.stack(fused_state) if cell == "lstm" else fused_state.unsqueeze(0))


TEXTBOOK_SCORES = {  # attention type -> score(s, h) for queries B x H and values B x S x C -> B x S
    "additive": lambda a, s, h: a.score(torch.tanh(a.query_proj(s).unsqueeze(1) + a.key_proj(h))).squeeze(2),
    "multiplicative": lambda a, s, h: torch.einsum("bq,qc,bsc->bs", s, a.key_proj.weight, h),
}


@pytest.mark.parametrize("kind", TEXTBOOK_SCORES)
@pytest.mark.parametrize("init", ["torch", "uniform"])
def test_attention_weights_are_the_textbooks(kind, init):
    """softmax of the textbook score (additive: v^T tanh(W_q s + W_k h); multiplicative: s^T W h)
    over the non-padding positions, for one query per sentence and for k = 2 (beam hypotheses
    reading their sentence's precomputed keys)."""
    from user_dir.modules.attention import ATTENTIONS

    attention = ATTENTIONS[kind](query_dim=5, value_dim=6, attention_dim=4, init=init)
    values, padding_mask = torch.randn(3, 7, 6), torch.arange(7) >= torch.tensor([[7], [4], [1]])
    for k in (1, 2):
        query = torch.randn(3 * k, 5)
        per_row = lambda x: x.repeat_interleave(k, dim=0)  # noqa: E731
        scores = TEXTBOOK_SCORES[kind](attention, query, per_row(values)).masked_fill(per_row(padding_mask), -math.inf)
        assert_close(attention(query, attention.precompute(values), padding_mask), torch.softmax(scores, dim=1))


def test_a_checkpoint_naming_the_upper_layers_rest_loads(task):
    """Checkpoints written before ContextRNN's layers 2..L were named ``upper`` call them ``rest``."""
    model = build(task, cell="gru", encoder_layers=2, decoder_layers=2)
    old = {k.replace(".upper.", ".rest."): v for k, v in model.state_dict().items()}
    assert any(".rest." in k for k in old)
    loaded = build(task, cell="gru", encoder_layers=2, decoder_layers=2)
    loaded.load_state_dict(old)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_torch_init_embeddings_have_unit_scale_and_tied_ones_unit_logits(task):
    """--init torch: N(0, 1) input embeddings (the textbook's); a table that is also the output
    projection N(0, 1/dim), so the first logits have unit scale (README, "Initialisation")."""
    dim = 64
    untied = build(task, init="torch", encoder_embed_dim=dim, decoder_embed_dim=dim)
    tied = build(task, init="torch", encoder_embed_dim=dim, decoder_embed_dim=dim, decoder_deep_output=True,
                 decoder_out_embed_dim=dim, share_decoder_input_output_embed=True)
    pad = task.source_dictionary.pad()
    for embed, std in ((untied.encoder.embed_tokens, 1.0), (untied.decoder.embed_tokens, 1.0),
                       (tied.encoder.embed_tokens, 1.0), (tied.decoder.embed_tokens, dim ** -0.5)):
        rows = torch.cat([embed.weight[:pad], embed.weight[pad + 1 :]])
        assert rows.std().item() == pytest.approx(std, rel=0.15)
        assert (embed.weight[pad] == 0).all()


def test_d2l_preset_drops_out_between_layers_only(task):
    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    args = options.parse_args_and_arch(options.get_training_parser(), [
        "data", "--arch", "rnn_seq2seq_d2l", "--task", "translation", "--source-lang", "src", "--target-lang", "tgt",
        "--user-dir", USER_DIR])
    cfg = convert_namespace_to_omegaconf(args).model
    model = RNNSeq2SeqModel.build_model(cfg, task)
    assert (cfg.init, cfg.dropout, cfg.dropout_in, cfg.dropout_out) == ("torch", 0.1, 0.0, 0.0)
    assert model.encoder.rnn.rnn.dropout == 0.1 and model.decoder.rnn.dropout.p == 0.1
    assert model.encoder.dropout_in.p == model.decoder.dropout_in.p == model.decoder.dropout_out.p == 0.0


@pytest.mark.parametrize("variant", ["lstm", "gru-bidir-attention-deep"])
def test_word_dropout_drops_whole_token_embeddings_in_training_only(task, variant):
    """--word-dropout p: in training each source and target token's embedding is either zero or
    scaled by 1/(1-p), about p of them zero; in evaluation the model is the one without it."""
    from user_dir.modules.embeddings import embed_words

    torch.manual_seed(0)
    model = build(task, word_dropout=0.25, **VARIANTS[variant])
    plain = build(task, **VARIANTS[variant])
    plain.load_state_dict(model.state_dict())
    src, lengths = batch(task, [5, 3, 1])
    prev = prev_tokens(task, 3, 6)
    assert_close(model(src, lengths, prev)[0], plain(src, lengths, prev)[0])

    for embed, tokens in ((model.encoder.embed_tokens, src), (model.decoder.embed_tokens, prev)):
        tokens = tokens.repeat(400, 1)  # 1200 rows of the same tokens
        dropout = nn.Dropout(0.0).train()
        x, full = embed_words(tokens, embed, 0.25, dropout), embed(tokens)
        dropped = (x == 0).all(dim=2) & (full != 0).any(dim=2)
        kept = ~dropped & (full != 0).any(dim=2)
        assert_close(x[kept], full[kept] / 0.75)
        assert dropped.sum() / (dropped.sum() + kept.sum()) == pytest.approx(0.25, abs=0.02)
        assert_close(embed_words(tokens, embed, 0.25, dropout.eval()), full)

    model.train()
    first, second = model(src, lengths, prev)[0], model(src, lengths, prev)[0]
    assert not torch.equal(first, second)  # dropout is on (the model's other dropouts are 0)


@pytest.mark.parametrize("init, bound, zero_bias", [("uniform", 0.1, True), ("torch", 12 ** -0.5, False)])
def test_rnn_parameters_are_drawn_within_the_init_bound(task, init, bound, zero_bias):
    model = build(task, init=init, decoder_layers=2, encoder_layers=2)  # decoder hidden size 12
    params = dict(model.decoder.rnn.named_parameters())
    assert all(p.abs().max() <= bound for p in params.values())
    assert all(p.abs().max() > 0.8 * bound for name, p in params.items() if "weight" in name)
    assert all((p == 0).all() == zero_bias for name, p in params.items() if "bias" in name)


@pytest.mark.parametrize("variant", ["lstm", "gru-2layer", "gru-bidir-2layer-shared"])
def test_fused_decoder_path_equals_the_loop_in_outputs_and_gradients(task, variant):
    """--decoder-rnn fused (the GPU path: one RNN call over [e; c]) and loop (the CPU path)
    compute the same function; both run here on CPU."""
    results = []
    for path in ("loop", "fused"):
        torch.manual_seed(0)
        model = build(task, decoder_rnn=path, **VARIANTS[variant])
        src, lengths = batch(task, [5, 3, 1])
        out, _ = model(src, lengths, prev_tokens(task, 3, 6))
        out.square().sum().backward()
        results.append((out.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}))
    (loop_out, loop_grads), (fused_out, fused_grads) = results
    assert_close(fused_out, loop_out)
    assert loop_grads.keys() == fused_grads.keys()
    for name in loop_grads:
        assert_close(fused_grads[name], loop_grads[name], msg=name)


@pytest.mark.parametrize("overrides", [{"decoder_rnn": "loop"}, {"decoder_rnn": "fused"},
                                       VARIANTS["gru-bidir-attention-deep"]])
def test_a_half_precision_model_trains_in_its_own_dtype(task, overrides):
    """What --fp16 does on a GPU (the whole model in 16 bits), in bfloat16 on CPU: nothing in
    the model forces float32 (or a device), the loss is finite, every gradient has the model's dtype."""
    from user_dir.criterions.masked_ce import MaskedCrossEntropyCriterion

    model = build(task, **overrides).to(torch.bfloat16).train()
    src, lengths = batch(task, [5, 3, 2])
    target = prev_tokens(task, 3, 4)
    sample = {"net_input": {"src_tokens": src, "src_lengths": lengths, "prev_output_tokens": prev_tokens(task, 3, 4)},
              "target": target, "ntokens": target.numel()}
    loss, _, _ = MaskedCrossEntropyCriterion(task, sentence_avg=False, label_smoothing=0.1)(model, sample)
    loss.backward()
    assert torch.isfinite(loss)
    assert {p.grad.dtype for p in model.parameters() if p.grad is not None} == {torch.bfloat16}


@pytest.mark.parametrize("autocast", [False, True], ids=["float32", "bfloat16-autocast"])
def test_step_sums_equal_a_bmm_per_step_in_values_and_gradients(autocast):
    """StepSums forms the terms' gradient once after the loop: same values and gradients as
    bmm(w_t, G) at every step of a recurrence whose weights depend on the previous step."""
    from user_dir.modules.step_sums import StepSums

    bsz, src_len, width, steps = 3, 5, 8, 4
    terms = torch.randn(bsz, src_len, width, requires_grad=True)
    scorer = torch.randn(width, src_len, requires_grad=True)

    def run(step_sum):
        h, outs = torch.zeros(bsz, width), []
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            g = terms * 1.0  # a non-leaf, as the model's terms are
            step_sum = step_sum(g)
            for _ in range(steps):
                w = torch.softmax((h @ scorer).float(), dim=1)
                h = torch.tanh(step_sum(w).float() + h)
                outs.append(h)
        torch.stack(outs).square().sum().backward()
        grads = terms.grad.clone(), scorer.grad.clone()
        terms.grad = scorer.grad = None
        return torch.stack(outs).detach(), grads

    plain = run(lambda g: lambda w: torch.bmm(w.to(g.dtype).unsqueeze(1), g).squeeze(1))
    deferred = run(StepSums)
    tol = {"rtol": 2e-2, "atol": 2e-2} if autocast else {}
    assert_close(deferred[0], plain[0], **tol)
    for got, want in zip(deferred[1], plain[1]):
        assert_close(got, want, **tol)


@pytest.mark.parametrize("modules, changed", [(None, {"encoder", "decoder"}), (["RNNDecoder"], {"decoder"}),
                                               (["RNNEncoder"], {"encoder", "decoder"}), ([], set())])
def test_retain_dropout_keeps_the_dropouts_of_the_modules_it_names_when_decoding(task, modules, changed):
    """fairseq-generate --retain-dropout [--retain-dropout-modules ...]: prepare_for_inference_
    switches fairseq's dropout modules on in evaluation mode (Monte Carlo dropout); the rest stays
    deterministic. (Encoder dropout changes the decoder's input too.)"""
    model = build(task, dropout=0.3, decoder_attention="additive", encoder_layers=2, decoder_layers=2).eval()
    retain = bool(modules is None or modules)
    cfg = OmegaConf.structured(FairseqConfig())
    cfg.generation.retain_dropout, cfg.generation.retain_dropout_modules = retain, modules
    model.prepare_for_inference_(cfg)
    src, lengths = batch(task, [5, 3, 1])
    prev = prev_tokens(task, 3, 6)
    with torch.no_grad():
        runs = [(model.encoder(src, lengths), model(src, lengths, prev)[0]) for _ in range(2)]
    differ = {"encoder": not torch.equal(runs[0][0]["state"], runs[1][0]["state"]),
              "decoder": not torch.equal(runs[0][1], runs[1][1])}
    assert {part for part, d in differ.items() if d} == changed


@pytest.mark.parametrize("text, message", [
    ('{"beam": 2, "nbest": 3}', r'^--eval-bleu-args \{"beam": 2, "nbest": 3\}: --nbest 3 is above --beam 2'),
    ("{beam: 2}", r"^--eval-bleu-args \{beam: 2\} is not JSON \(Expecting property name"),
    ("[4]", r"^--eval-bleu-args \[4\] is not a JSON object of generation options"),
])
def test_eval_bleu_args_fairseq_would_fail_on_are_named_as_that_option(text, message):
    """fairseq parses --eval-bleu-args after building the model (a JSONDecodeError or an assertion):
    the same rules as on the command line, under the option's own name."""
    from user_dir.errors import OptionError
    from user_dir.models.rnn_seq2seq import check_eval_bleu_args

    with pytest.raises(OptionError, match=message):
        check_eval_bleu_args(text)
    check_eval_bleu_args('{"beam": 4, "lenpen": 0.6}')


def test_only_a_preset_name_over_the_dataclass_defaults_is_refused():
    """fairseq-hydra-train merges rnn_seq2seq's defaults under model._name=PRESET (the preset is lost):
    refused there. fairseq-train's --arch PRESET (merged after the preset applied), a checkpoint's
    config of a preset (a plain config), a Namespace, and other Hydra jobs build."""
    from argparse import Namespace

    from fairseq.dataclass.utils import merge_with_parent
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from user_dir.errors import OptionError
    from user_dir.models.rnn_seq2seq import RNNSeq2SeqConfig, check_not_a_hydra_preset

    merged = merge_with_parent(RNNSeq2SeqConfig(), OmegaConf.create({"_name": "rnn_seq2seq_d2l", "cell": "gru"}))
    check_not_a_hydra_preset(merged)  # fairseq-train: no Hydra job
    saved = HydraConfig.instance().cfg
    try:
        for job in ("hydra_train", "my_app"):
            HydraConfig.instance().cfg = OmegaConf.create({"hydra": {"job": {"name": job}}})  # what a job sets
            if job == "hydra_train":
                with pytest.raises(OptionError, match=r"^model._name=rnn_seq2seq_d2l: fairseq-hydra-train gives"):
                    check_not_a_hydra_preset(merged)
            else:
                check_not_a_hydra_preset(merged)
            check_not_a_hydra_preset(merge_with_parent(RNNSeq2SeqConfig(), OmegaConf.create({"_name": "rnn_seq2seq"})))
            check_not_a_hydra_preset(OmegaConf.create({"_name": "rnn_seq2seq_d2l", "cell": "gru"}))  # a checkpoint's
            check_not_a_hydra_preset(Namespace(_name="rnn_seq2seq_d2l", arch="rnn_seq2seq_d2l", cell="gru"))
    finally:
        HydraConfig.instance().cfg = saved
