"""--decoder-graphs' bucketing on a CPU: a batch padded to its bucket (run_bucketed below, what
every CUDA graph runs) gives the decoder's outputs and gradients unpadded, and the padding gets
no gradient; a graph's inputs hold what padding gives, and a tensor already there unchanged is
not copied again; which calls get a graph (a cap per mode, past it the plain unpadded call;
cuDNN's RNN dropout kept out). The graphs themselves need CUDA (test_gpu.py)."""
import copy
import logging

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from helpers import batch, build, prev_tokens
from user_dir.modules.beam import reorder
from user_dir.modules.buckets import (
    EMBEDDINGS,
    OUTPUTS,
    PADDING_MASK,
    PER_SENTENCE_TENSOR,
    STATE,
    WEIGHTS,
    Shape,
    bucket,
    bucket_shape,
    call_shape,
    pads_of,
    tensors_of,
)
from user_dir.modules.graphs import DecoderGraphs, Slots, StaticInputs, choose, mode_of


def run_bucketed(fn, emb, encoder_out, cache=None, call=None):
    """``fn(emb, encoder_out[, cache])`` on the call padded to its bucket, its outputs cut back: what
    a graph computes, kernel by kernel (``call(fn, *padded)``, when given, runs ``fn``)."""
    args = [emb, encoder_out] if cache is None else [emb, encoder_out, cache]
    actual = call_shape(emb, encoder_out)
    shape = bucket_shape(actual, teacher_forcing=cache is None)
    tensors, rebuild = tensors_of(args)
    padded = rebuild([pad.grow(x, shape) for x, pad in zip(tensors, pads_of(args))])
    outputs = fn(*padded) if call is None else call(fn, *padded)
    return tuple(None if o is None else pad.block(o, actual) for pad, o in zip(OUTPUTS, outputs))


CELLS_ATTENTION_LAYERS = [(cell, attention, layers) for cell in ("lstm", "gru")
                          for attention in ("none", "additive", "multiplicative") for layers in (1, 2)]
TARGET_LENGTHS = [[6, 4, 1], [3, 3, 3, 3, 3, 3, 3, 3, 3]]  # ragged, and rows (9) one past a bucket


def test_buckets_are_few_and_pad_by_at_most_half():
    sizes = [bucket(n) for n in range(1, 1025)]
    assert sizes[:9] == [8] * 8 + [12] and sorted(set(sizes)) == [8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384,
                                                                  512, 768, 1024]
    assert all(n <= b <= max(8, 1.5 * n) for n, b in zip(range(1, 1025), sizes))


def model_and_batch(task, cell, attention, layers, lengths):
    model = build(task, cell=cell, decoder_attention=attention, encoder_layers=layers, decoder_layers=layers,
                  decoder_deep_output=True, decoder_out_embed_dim=8, encoder_bidirectional=True).train()
    src, src_lengths = batch(task, [7, 2, 5, 1, 4, 3, 6, 2, 5][: len(lengths)])
    prev = prev_tokens(task, len(lengths), max(lengths))
    for row, n in enumerate(lengths):
        prev[row, n:] = task.target_dictionary.pad()  # right-padded, as fairseq's prev_output_tokens
    return model, src, src_lengths, prev


def outputs_and_gradients(model, src, src_lengths, prev, padded: bool, retained: list):
    """The teacher-forced decoder's features and weights with a loss over them, and every gradient;
    ``retained`` gets (unpadded, padded) pairs of the decoder's inputs, their gradients kept."""
    model.zero_grad()
    encoder_out = model.encoder(src, src_lengths)
    emb = model.decoder.embed(prev)

    def call(fn, *args):
        for original, grown in zip(tensors_of([emb, encoder_out])[0], tensors_of(args)[0]):
            if grown.requires_grad:
                grown.retain_grad()
                retained.append((original, grown))
        return fn(*args)

    fn = model.decoder.teacher_forced
    x, attn = run_bucketed(fn, emb, encoder_out, call=call) if padded else fn(emb, encoder_out)
    generator = torch.Generator().manual_seed(1)
    loss = (x * torch.randn(x.shape, generator=generator)).sum()
    if attn is not None:
        loss = loss + (attn * torch.randn(attn.shape, generator=generator)).sum()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return x.detach(), None if attn is None else attn.detach(), loss.detach(), grads


@pytest.mark.parametrize("lengths", TARGET_LENGTHS, ids=["ragged", "rows-past-bucket"])
@pytest.mark.parametrize("cell, attention, layers", CELLS_ATTENTION_LAYERS)
def test_teacher_forcing_padded_to_its_bucket_equals_unpadded(task, cell, attention, layers, lengths):
    model, src, src_lengths, prev = model_and_batch(task, cell, attention, layers, lengths)
    x, attn, loss, grads = outputs_and_gradients(model, src, src_lengths, prev, padded=False, retained=[])
    retained = []
    px, pattn, ploss, pgrads = outputs_and_gradients(model, src, src_lengths, prev, padded=True, retained=retained)
    assert px.shape == x.shape and (attn is None) == (pattn is None)
    assert_close(px, x, rtol=1e-5, atol=1e-6)
    if attn is not None:
        assert pattn.shape == attn.shape
        assert_close(pattn, attn, rtol=1e-5, atol=1e-6)
    assert_close(ploss, loss, rtol=1e-5, atol=1e-5)
    assert pgrads.keys() == grads.keys()
    for name in grads:
        assert_close(pgrads[name], grads[name], rtol=1e-5, atol=1e-6, msg=name)
    read = [(original, grown) for original, grown in retained if grown.grad is not None]
    assert len(read) >= 3  # embeddings, state, and the context or attention's outputs
    for original, grown in read:  # the padding's share of every padded input: no gradient
        assert grown.shape != original.shape
        outside = grown.grad.clone()
        outside[tuple(slice(0, n) for n in original.shape)] = 0
        assert not outside.any(), f"padding of a {tuple(original.shape)} input got a gradient"


@pytest.mark.parametrize("cell, attention", [("lstm", "additive"), ("gru", "multiplicative"), ("gru", "none")])
def test_beam_steps_padded_to_their_bucket_equal_unpadded(task, cell, attention):
    """Decoding steps over hypotheses that share their sentence's tensors (3 per sentence), also
    after a sentence leaves the batch: features, weights and state as unpadded."""
    model, src, src_lengths, _ = model_and_batch(task, cell, attention, 2, [4, 2, 3])
    model.eval()
    beam, vocab = 3, len(task.target_dictionary)
    with torch.no_grad():
        encoder_out = reorder(model.encoder(src, src_lengths), torch.arange(3).repeat_interleave(beam))
        cache = model.decoder.initial_cache(encoder_out)
        for step in range(4):
            if step == 2:  # the second sentence finishes: its hypotheses leave the batch
                keep = torch.tensor([0, 1, 2, 6, 7, 8])
                encoder_out, cache = reorder(encoder_out, keep), reorder(cache, keep)
            emb = model.decoder.embed(torch.randint(4, vocab, (cache["state"].size(2), 1)))
            want = model.decoder.step(emb, encoder_out, cache)
            got = run_bucketed(model.decoder.step, emb, encoder_out, cache)
            for g, w in zip(got, want):
                assert (g is None) == (w is None)
                if w is not None:
                    assert g.shape == w.shape
                    assert_close(g, w, rtol=1e-5, atol=1e-6)
            cache = {**cache, "state": want[2]}


@pytest.mark.skipif(torch.cuda.is_available(), reason="the warning is for machines without CUDA")
def test_graphs_on_without_cuda_warn_and_change_nothing(task, caplog):
    """A checkpoint trained with --decoder-graphs on decodes on a CPU as the same model."""
    off = build(task, decoder_attention="additive", decoder_graphs="off")
    with caplog.at_level(logging.WARNING):
        on = build(task, decoder_attention="additive", decoder_graphs="on")
    assert "no CUDA here" in caplog.text
    on.load_state_dict(copy.deepcopy(off.state_dict()))
    src, src_lengths = batch(task, [5, 3])
    prev = prev_tokens(task, 2, 4)
    assert torch.equal(on(src, src_lengths, prev)[0], off(src, src_lengths, prev)[0])


@pytest.mark.parametrize("choice, graphs", [("auto", False), ("off", False), ("on", True)])
def test_auto_leaves_graphs_off_until_the_gpu_check_turns_it_on(task, choice, graphs):
    assert (build(task, decoder_graphs=choice).decoder.graphs is not None) == graphs


def test_each_mode_has_its_own_cap_and_past_it_calls_run_plain():
    """Graphs of one mode (training buckets) never take another's (beam steps) share."""
    graphs = {("train", 8): object()}
    assert choose(("train", 8), graphs, cap=1) == "replay"
    assert choose(("train", 12), graphs, cap=1) == "plain"
    assert choose(("step", 8), graphs, cap=1) == choose(("forward", 8), graphs, cap=1) == "capture"
    assert choose(("train", 12), graphs, cap=2) == "capture"
    assert choose((None, 8), {}, cap=1) == "plain"  # decoding steps with gradients: never a graph


def test_modes():
    assert [mode_of(step, grad) for step in (False, True) for grad in (True, False)] == \
        ["train", "forward", None, "step"]


def test_past_the_cap_the_call_runs_unpadded_and_warns_once_per_mode(task, caplog):
    """No graph left: the plain call on the batch as it is (not padded to a bucket), its outputs
    and gradients the decoder's own; the warning once per mode, again after the graphs are dropped."""
    model, src, src_lengths, prev = model_and_batch(task, "lstm", "additive", 2, [6, 4, 1])
    graphs, seen = DecoderGraphs(cap=0), []

    def fn(*args):
        seen.append(args[0].shape)
        return model.decoder.teacher_forced(*args)

    encoder_out = model.encoder(src, src_lengths)
    emb = model.decoder.embed(prev)
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            x, attn = graphs(model.decoder, fn, emb, encoder_out)
        assert caplog.text.count("train graphs captured") == 1
        with torch.no_grad():
            graphs(model.decoder, fn, emb, encoder_out)
        assert caplog.text.count("forward graphs captured") == 1
        weight = next(model.decoder.parameters())
        weight.data = weight.data.clone()  # moved: graphs dropped
        graphs(model.decoder, fn, emb, encoder_out)
        assert caplog.text.count("train graphs captured") == 2
    assert seen == [emb.shape] * 4 and not graphs.graphs
    want_x, want_attn = model.decoder.teacher_forced(emb, encoder_out)
    assert torch.equal(x, want_x) and torch.equal(attn, want_attn) and x.requires_grad


@pytest.mark.parametrize("layers, dropout, training, plain", [(3, 0.3, True, True), (3, 0.3, False, False),
                                                              (2, 0.3, True, False), (3, 0.0, True, False)])
def test_cudnn_rnn_dropout_keeps_training_out_of_graphs(task, layers, dropout, training, plain):
    """Only the upper layers' cuDNN dropout (3+ decoder layers, training) runs kernel by kernel."""
    model = build(task, encoder_layers=layers, decoder_layers=layers, dropout=dropout).train(training)
    assert model.decoder.cudnn_dropout() == plain


BUCKET = Shape(rows=12, sentences=4, target=8, source=12)


@pytest.mark.parametrize("pad, sizes", [
    (EMBEDDINGS, [(9, 5, 3), (12, 8, 3), (2, 1, 3)]),
    (STATE, [(2, 1, 9, 3), (2, 1, 12, 3), (2, 1, 2, 3)]),
    (PER_SENTENCE_TENSOR, [(3, 7, 2), (4, 12, 2), (1, 2, 2)]),
    (WEIGHTS, [(9, 5, 7), (12, 8, 12), (2, 1, 1)]),
])
def test_writing_into_a_bucket_tensor_gives_what_padding_gives(pad, sizes):
    """Also after a larger call left its values in what is now padding."""
    static = torch.full(pad.grow(torch.zeros(sizes[1]), BUCKET).shape, 7.0)
    for size in sizes:
        x = torch.randn(size)
        pad.load(static, x)
        assert torch.equal(static, pad.grow(x, BUCKET))
        actual = Shape(**{"rows": 0, "sentences": 0, "target": 0, "source": 0,
                          **{name: x.size(dim) for dim, name, _ in pad.steps}})
        assert torch.equal(pad.block(static, actual), x)  # what a call reads back


def test_a_padding_mask_written_into_its_bucket_marks_the_new_positions():
    static = torch.ones(4, 12, dtype=torch.bool)
    mask = torch.tensor([[False, False, True], [False, False, False]])
    PADDING_MASK.load(static, mask)
    assert torch.equal(static, PADDING_MASK.grow(mask, BUCKET))
    assert static[:, 3:].all() and not static[2:, :3].any()  # new sentences read 3 positions: finite attention


def test_a_graph_input_is_copied_again_only_when_its_tensor_changed():
    """A sentence's encoder outputs, read at every decoding step, are written into the graph once;
    a new tensor, or the same one changed in place, is written again."""
    held = torch.randn(3, 7, 2)
    inputs = StaticInputs([held], [PER_SENTENCE_TENSOR], BUCKET, Slots())
    static = inputs.tensors[0]
    assert torch.equal(static, PER_SENTENCE_TENSOR.grow(held, BUCKET))  # the capturing call's, written at once

    def copied(x) -> bool:
        static.fill_(-1.0)
        inputs.load([x])
        return bool(torch.equal(static, PER_SENTENCE_TENSOR.grow(x, BUCKET)))

    assert not copied(held)  # nor again at its first replay
    assert copied(torch.zeros(3, 7, 2)) and copied(held)
    assert not copied(held)  # the same tensor, unchanged: left as it was
    held.mul_(2)
    assert copied(held)
    same_values = held.clone()
    assert copied(same_values) and not copied(same_values)
    with torch.inference_mode():
        inference = torch.randn(3, 7, 2)
    assert copied(inference) and copied(inference)  # no change counter: always written
    memory = np.zeros((3, 7, 2), dtype=np.float32)
    first, second = torch.from_numpy(memory), torch.from_numpy(memory)  # one address, two counters
    assert copied(first)
    memory += 1
    assert copied(second)  # another tensor, though at the same address with the same count


def test_graphs_of_a_pool_share_their_input_slots_and_reload_after_each_other():
    """Two buckets' graphs read one slot through views of their own shapes: a tensor written by
    one is written again for the other, and again for the first after the other wrote."""
    slots, held = Slots(), torch.randn(3, 7, 2)
    small_shape = Shape(rows=8, sentences=4, target=1, source=8)
    large = StaticInputs([held], [PER_SENTENCE_TENSOR], BUCKET, slots)
    small = StaticInputs([held], [PER_SENTENCE_TENSOR], small_shape, slots)
    assert small.tensors[0].data_ptr() == large.tensors[0].data_ptr()  # one buffer, the first's: large enough
    assert small.tensors[0].shape == (4, 8, 2) and large.tensors[0].shape == (BUCKET.sentences, BUCKET.source, 2)

    def holds(inputs: StaticInputs, shape: Shape) -> bool:
        return bool(torch.equal(inputs.tensors[0], PER_SENTENCE_TENSOR.grow(held, shape)))

    for inputs, shape in ((large, BUCKET), (small, small_shape), (large, BUCKET)):
        inputs.load([held])  # the same tensor, unchanged: written only where the other graph wrote last
        assert holds(inputs, shape)
    StaticInputs([torch.zeros(3, 7, 2)], [PER_SENTENCE_TENSOR], small_shape, slots)  # the same view, zeros
    small.load([held])
    assert holds(small, small_shape)


def test_a_slot_grows_to_at_least_twice_its_size_and_older_views_keep_theirs():
    slots, like = Slots(), torch.zeros(1)
    first, small = slots.view(("output", 0), torch.Size([4, 5]), like)
    small.fill_(1.0)
    second, large = slots.view(("output", 0), torch.Size([6, 5]), like)
    assert second is not first and second.buffer.numel() == 40  # twice 20, more than 30
    assert small.eq(1.0).all()  # the older graph's view is over the older buffer, untouched
    third, smaller = slots.view(("output", 0), torch.Size([3, 5]), like)
    assert third is second and smaller.data_ptr() == large.data_ptr()
    assert slots.view(("output", 0), torch.Size([3, 5]), torch.zeros(1, dtype=torch.half))[0] is not second  # by dtype
    assert slots.view(("output", 1), torch.Size([3, 5]), like)[0] is not second  # by role


def test_the_call_arguments_map_each_tensor_to_how_it_grows(task):
    model, src, src_lengths, prev = model_and_batch(task, "lstm", "additive", 2, [6, 4, 1])
    with torch.no_grad():
        encoder_out = model.encoder(src, src_lengths)
        cache = model.decoder.initial_cache(encoder_out)
    cache = {**cache, "state": cache["state"].clone()}  # a step's state, not the encoder's
    tensors, rebuild = tensors_of([prev, encoder_out, cache])
    pads = pads_of([prev, encoder_out, cache])
    assert len(pads) == len(tensors)  # one rule per tensor, in the same order
    pad_of = {id(x): pad for x, pad in zip(tensors, pads)}
    assert pad_of[id(prev)] is EMBEDDINGS
    assert pad_of[id(encoder_out["state"])] is STATE and pad_of[id(cache["state"])] is STATE
    assert pad_of[id(encoder_out["per_sentence"]["padding_mask"])] is PADDING_MASK
    per_sentence = [encoder_out["per_sentence"]["outputs"], *cache["per_sentence"].values()]
    assert {pad_of[id(x)] for x in per_sentence} == {PER_SENTENCE_TENSOR}
    rebuilt = rebuild([x.clone() for x in tensors])
    assert rebuilt[1].keys() == encoder_out.keys() and rebuilt[2]["per_sentence"].keys() == cache["per_sentence"].keys()
