"""The GPU path, where CUDA is available (skipped on a machine without one): the model on CUDA
computes what it computes on CPU, on both decoder paths (fairseq-train on the GPU: e2e/test_gpu_cli.py)."""
import copy
import gc

import pytest
import torch
from torch.testing import assert_close

from helpers import VARIANTS, batch, build, prev_tokens
from user_dir.modules.graphs import MAX_GRAPHS

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(autouse=True)
def _graphs_freed_after_each_test():
    """A test's models and their graphs are freed before the next test captures (the decoder and
    its graphs reference each other, so only the garbage collector frees them)."""
    yield
    gc.collect()
    torch.cuda.synchronize()


@pytest.fixture(autouse=True)
def _full_float32():
    """No TF32 in matmuls or cuDNN, so CUDA's float32 is comparable with CPU's."""
    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


def forward_backward(model, src, lengths, prev):
    out, _ = model(src, lengths, prev)
    out.square().sum().backward()
    return out.detach().cpu(), {n: p.grad.cpu() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("path", ["auto", "loop"])
@pytest.mark.parametrize("variant", ["lstm", "gru-2layer", "gru-bidir-2layer-shared", "gru-bidir-attention-deep"])
def test_cuda_outputs_and_gradients_equal_cpu(task, variant, path):
    """``auto`` is the fused cuDNN call on CUDA and the loop on CPU: the same function."""
    cpu = build(task, decoder_rnn=path, **VARIANTS[variant]).train()
    gpu = copy.deepcopy(cpu).cuda()
    src, lengths = batch(task, [5, 3, 1])
    prev = prev_tokens(task, 3, 6)
    cpu_out, cpu_grads = forward_backward(cpu, src, lengths, prev)
    gpu_out, gpu_grads = forward_backward(gpu, src.cuda(), lengths.cuda(), prev.cuda())
    assert_close(gpu_out, cpu_out, rtol=1e-4, atol=1e-5)
    assert gpu_grads.keys() == cpu_grads.keys()
    for name in cpu_grads:
        assert_close(gpu_grads[name], cpu_grads[name], rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("variant", ["lstm", "gru-bidir-attention-deep", "gru-bidir-multiplicative-deep"])
def test_cuda_incremental_decoding_equals_full_forward(task, variant):
    model = build(task, **VARIANTS[variant]).cuda()
    src, lengths = batch(task, [5, 3, 1])
    prev = prev_tokens(task, 3, 6).cuda()
    enc = model.encoder(src.cuda(), lengths.cuda())
    full, _ = model.decoder(prev, enc)
    state = {}
    steps = [model.decoder(prev[:, : t + 1], enc, incremental_state=state)[0] for t in range(prev.size(1))]
    assert_close(torch.cat(steps, dim=1), full, rtol=1e-4, atol=1e-5)


GRAPH_VARIANTS = [(cell, attention) for cell in ("lstm", "gru") for attention in ("none", "additive", "multiplicative")]


def graphed_pair(task, cell: str, attention: str):
    """The same weights with --decoder-graphs off and on, on CUDA."""
    overrides = dict(cell=cell, decoder_attention=attention, encoder_layers=2, decoder_layers=2,
                     encoder_bidirectional=True, decoder_deep_output=True, decoder_out_embed_dim=8)
    eager = build(task, decoder_graphs="off", **overrides).cuda()
    graphed = build(task, decoder_graphs="on", **overrides).cuda()
    graphed.load_state_dict(eager.state_dict())
    return eager, graphed


def right_padded_batch(task, src_lengths, tgt_lengths):
    src, lengths = batch(task, src_lengths)
    prev = prev_tokens(task, len(tgt_lengths), max(tgt_lengths))
    for row, n in enumerate(tgt_lengths):
        prev[row, n:] = task.target_dictionary.pad()
    return src.cuda(), lengths.cuda(), prev.cuda()


def masked_loss(model, src, lengths, prev, weights):
    """A loss over the real target positions only, as masked_ce's."""
    out, _ = model(src, lengths, prev)
    padding = prev.eq(model.decoder.padding_idx).unsqueeze(2)
    return (out * weights[: out.size(0), : out.size(1)]).masked_fill(padding, 0).sum()


@pytest.mark.parametrize("cap", [MAX_GRAPHS, 1], ids=["graphs", "second-bucket-plain"])
@pytest.mark.parametrize("cell, attention", GRAPH_VARIANTS)
def test_decoder_graphs_train_as_the_step_by_step_decoder(task, cell, attention, cap):
    """Loss and every gradient equal, accumulated over two batches of one bucket (one graph
    captured, then replayed), then a batch of another bucket, rows and lengths padded (or, past a
    cap of 1 training graph, unpadded kernel by kernel), then the first bucket again (its graph
    shares its inputs, outputs and gradients with the other's)."""
    eager, graphed = graphed_pair(task, cell, attention)
    graphed.decoder.graphs.cap = cap
    eager.train()
    graphed.train()
    weights = torch.randn(16, 16, len(task.target_dictionary), device="cuda")
    batches = [([5, 3, 1], [6, 4, 1]), ([7, 2], [5, 5]), ([9, 9, 4, 2, 8, 3, 3, 1, 5], [12, 9, 3, 3, 1, 2, 4, 5, 6]),
               ([4, 3, 2], [3, 5, 2])]
    for i, (src_lengths, tgt_lengths) in enumerate(batches):
        src, lengths, prev = right_padded_batch(task, src_lengths, tgt_lengths)
        losses = [masked_loss(m, src, lengths, prev, weights) for m in (eager, graphed)]
        for loss in losses:
            loss.backward()
        assert_close(losses[1], losses[0], rtol=1e-4, atol=1e-5)
        if i == 0:
            continue  # the first two batches' gradients accumulate, as with --update-freq 2
        for (name, p), q in zip(eager.named_parameters(), graphed.parameters()):
            assert (p.grad is None) == (q.grad is None), name
            if p.grad is not None:
                assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-5, msg=name)
        eager.zero_grad()
        graphed.zero_grad()
    assert len(graphed.decoder.graphs.graphs) == min(cap, 2)  # one per bucket, up to the cap


@pytest.mark.parametrize("cell, attention", GRAPH_VARIANTS)
def test_decoder_graphs_validate_as_the_step_by_step_decoder(task, cell, attention):
    """Teacher forcing without gradients in evaluation, as validation runs it: the same logits and
    attention at the real target positions over two buckets and the first again, one graph per bucket."""
    eager, graphed = graphed_pair(task, cell, attention)
    eager.eval()
    graphed.eval()
    batches = [([5, 3, 1], [6, 4, 1]), ([9, 9, 4, 2, 8], [12, 9, 3, 3, 1]), ([4, 3, 2], [3, 5, 2])]
    for src_lengths, tgt_lengths in batches:
        src, lengths, prev = right_padded_batch(task, src_lengths, tgt_lengths)
        padding = prev.eq(eager.decoder.padding_idx).unsqueeze(2)
        with torch.no_grad():
            (want, want_extra), (got, got_extra) = (m(src, lengths, prev) for m in (eager, graphed))
        assert_close(got.masked_fill(padding, 0), want.masked_fill(padding, 0), rtol=1e-4, atol=1e-5)
        if attention != "none":
            assert_close(got_extra["attn"][0].masked_fill(padding, 0), want_extra["attn"][0].masked_fill(padding, 0),
                         rtol=1e-4, atol=1e-5)
    assert [k[0] for k in graphed.decoder.graphs.graphs] == ["forward", "forward"]


@pytest.mark.parametrize("cell, attention", GRAPH_VARIANTS)
def test_decoder_graphs_give_the_same_beam_hypotheses(task, cell, attention):
    from fairseq.sequence_generator import SequenceGenerator

    eager, graphed = graphed_pair(task, cell, attention)
    src, lengths = batch(task, [7, 5, 3, 2, 1])
    sample = {"net_input": {"src_tokens": src.cuda(), "src_lengths": lengths.cuda()}}
    hyps = []
    for model in (eager, graphed):
        generator = SequenceGenerator([model.eval()], task.target_dictionary, beam_size=5, max_len_b=8)
        with torch.no_grad():
            hyps.append(generator.generate([model], sample))
    for want, got in zip(*hyps):
        assert [h["tokens"].tolist() for h in got] == [h["tokens"].tolist() for h in want]
        assert_close(torch.stack([h["score"] for h in got]), torch.stack([h["score"] for h in want]),
                     rtol=1e-4, atol=1e-5)
    assert graphed.decoder.graphs.graphs  # the steps ran from graphs


def test_decoder_graphs_refuse_the_backward_of_a_call_replayed_over(task):
    """Two training calls of one bucket before the first one's backward: the second replay
    overwrote the activations that backward reads, so it is refused (never wrong gradients)."""
    model = build(task, decoder_graphs="on", decoder_attention="additive").cuda().train()
    src, lengths, prev = right_padded_batch(task, [5, 3, 1], [6, 4, 1])
    first, second = (model(src, lengths, prev)[0].sum() for _ in range(2))
    with pytest.raises(RuntimeError, match="ran again before the backward of its previous call"):
        first.backward()
    second.backward()  # the latest call's backward is its own
    assert all(p.grad is not None for p in model.decoder.rnn.parameters())


def test_decoder_graphs_keep_allocated_only_their_shared_slots(task):
    """More graphs of buckets no larger than the first keep no more memory allocated: each graph's
    outputs and gradients are copied into the pool's slots, and its own memory is the pool's to
    reuse; a graph that kept its parameter gradients alone would keep one copy more each."""
    gc.collect()
    model = build(task, decoder_graphs="on", decoder_attention="additive").cuda().train()
    largest_first = [([9, 9, 4, 2, 8, 3, 3, 1, 5], [12, 9, 3, 3, 1, 2, 4, 5, 6]), ([5, 3, 1], [6, 4, 1]),
                     ([9, 2], [3, 2]), ([4, 3], [11, 2])]
    allocated = []
    for src_lengths, tgt_lengths in largest_first:
        src, lengths, prev = right_padded_batch(task, src_lengths, tgt_lengths)
        model(src, lengths, prev)[0].sum().backward()
        model.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        allocated.append(torch.cuda.memory_allocated())
    assert len(model.decoder.graphs.graphs) == 4
    one_copy = sum(p.numel() * p.element_size() for p in model.decoder.parameters())
    assert allocated[-1] - allocated[0] < one_copy, allocated


def decoder_twice(model, task, training: bool):
    """The decoder's features for one batch, twice, in training or evaluation mode."""
    src, lengths, prev = right_padded_batch(task, [5, 3, 1], [6, 4, 1])
    model.train(training)
    with torch.no_grad():
        encoder_out = model.encoder(src, lengths)
    return [model.decoder(prev, encoder_out, features_only=True)[0] for _ in range(2)]


@pytest.mark.parametrize("layers", [2, 3])
@pytest.mark.parametrize("attention", ["none", "additive"])
def test_decoder_graphs_draw_new_dropout_masks_at_each_replay(task, attention, layers):
    """Dropout 0.3 inside the graph (between the layers and on the outputs; none on the embeddings,
    which stay outside): training, the same batch twice gives different features; evaluating,
    equal ones. 3 layers: cuDNN's dropout between the upper layers keeps training out of graphs."""
    model = build(task, decoder_graphs="on", decoder_attention=attention, encoder_layers=layers,
                  decoder_layers=layers, dropout=0.3, dropout_in=0.0, word_dropout=0.0).cuda()
    first, second = decoder_twice(model, task, training=True)
    assert not torch.equal(first, second)
    assert len(model.decoder.graphs.graphs) == (0 if layers == 3 else 1)
    first, second = decoder_twice(model, task, training=False)
    assert torch.equal(first, second)
    assert len(model.decoder.graphs.graphs) == (1 if layers == 3 else 2)


def test_on_a_gpu_host_the_plan_trains_in_one_process_per_gpu(plan):
    """Unset NPROC: fairseq-train's own default, a process per GPU; more processes than GPUs are refused."""
    gpus = torch.cuda.device_count()
    assert plan("--max-update", "5")[0].distributed_world_size == gpus
    assert plan("--max-update", "5", "--cpu")[0].distributed_world_size == 1
    with pytest.raises(SystemExit, match=f"error: NPROC={gpus + 1}: {gpus} GPU"):
        plan("--max-update", "5", NPROC=str(gpus + 1))
