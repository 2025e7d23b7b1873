"""The GPU path, where CUDA is available (skipped on a machine without one): the model on CUDA
computes what it computes on CPU, on both decoder paths (fairseq-train on the GPU: e2e/test_gpu_cli.py)."""
import copy

import pytest
import torch
from torch.testing import assert_close

from helpers import VARIANTS, batch, build, prev_tokens

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


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
