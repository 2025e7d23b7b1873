"""What --decoder-graphs holds in memory for a data set's training batches, estimated on a CPU: the
buckets the batches fall into (one training graph each), and the bytes their inputs, outputs and
gradients take if each graph kept its own, against the pool's shared slots (graphs.Slots, grown as
the batches come). Float16 sizes (train.sh's --fp16 on a GPU); the graphs' working memory, which
their pool reuses, is not counted.

Usage, from the repository root:
    python -m lab.graph_memory --data runs/multi30k/de-en-v4k/bin [--batches 20] [--emb 256 --hidden 512]
"""
import argparse
from types import SimpleNamespace
from typing import Dict, List

import torch

from lab.benchmark import GRAPHED, MODELS, build
from user_dir.modules import buckets, graphs

MB = 2**20


def half_bytes(x: torch.Tensor) -> int:
    """``x``'s bytes in float16 (train.sh's precision on a GPU); other dtypes as they are."""
    return x.numel() * (2 if x.is_floating_point() else x.element_size())


def bucket_tensors(decoder, encoder_out, emb: torch.Tensor, shape: buckets.Shape,
                   params: List) -> Dict[tuple, list]:
    """A training graph's tensors of ``shape``, by slot role (as graphs.Captured keys them)."""
    args = [emb, encoder_out]
    tensors, rebuild = buckets.tensors_of(args)
    pads = buckets.pads_of(args)
    padded = [pad.grow(x, shape).detach().requires_grad_(x.requires_grad) for x, pad in zip(tensors, pads)]
    outputs = [o for o in decoder.teacher_forced(*rebuild(padded)) if o is not None]
    wrt = [x for x in padded + params if x.requires_grad]
    grads = torch.autograd.grad(outputs, wrt, [torch.ones_like(o) for o in outputs], allow_unused=True)
    return {**{("input", i, pad): x for i, (x, pad) in enumerate(zip(padded, pads))},
            **{("output", i): o for i, o in enumerate(outputs)},
            **{("output gradient", i): o for i, o in enumerate(outputs)},
            **{("gradient", i): g for i, g in enumerate(grads) if g is not None}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="fairseq-preprocess output")
    p.add_argument("--batches", type=int, default=20, help="training batches read")
    p.add_argument("--model", default="rnn_seq2seq attention", choices=[m for m in {**MODELS, **GRAPHED}
                                                                          if m.startswith("rnn_seq2seq")])
    for name, default in (("--emb", 256), ("--hidden", 512), ("--layers", 1), ("--max-tokens", 4096)):
        p.add_argument(name, type=int, default=default)
    args = p.parse_args()
    run = build(SimpleNamespace(**vars(args), warmup_batches=0, train_batches=args.batches, criterion=None,
                                half=False, bf16=False, fp16=False, graphs=True), args.model)
    model, decoder = run["model"], run["model"].decoder
    params = [p for p in decoder.parameters() if p.requires_grad]
    slots, made, own, shapes = graphs.Slots(), [], {}, set()  # made: every slot buffer, older ones kept by graphs
    for sample in run["samples"]:
        net = sample["net_input"]
        encoder_out = model.encoder(net["src_tokens"], net["src_lengths"])
        emb = decoder.embed(net["prev_output_tokens"])
        shape = buckets.bucket_shape(buckets.call_shape(emb, encoder_out), teacher_forcing=True)
        if shape in shapes:
            continue
        shapes.add(shape)
        for role, x in bucket_tensors(decoder, encoder_out, emb, shape, params).items():
            own[role[0]] = own.get(role[0], 0) + half_bytes(x)
            slot = slots.view(role, x.shape, torch.empty(0, dtype=x.dtype, device="meta"))[0]
            if all(slot is not m for m in made):
                made.append(slot)
    print(f"{args.model}, emb {args.emb}, hidden {args.hidden}, --max-tokens {args.max_tokens}: "
          f"{len(run['samples'])} batches, {len(shapes)} buckets (training graphs)")
    for role, size in own.items():
        print(f"  {role + 's':18s} {size / MB:8.1f} MB if each graph kept its own")
    shared = sum(half_bytes(slot.buffer) for slot in made) / MB
    print(f"  {'in all':18s} {sum(own.values()) / MB:8.1f} MB; in the pool's shared slots: {shared:.1f} MB")


if __name__ == "__main__":
    main()
