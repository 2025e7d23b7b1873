"""Operations per decoding step, counted on a CPU: what a GPU's launch-bound beam search pays for.

On a GPU, an RNN's decoding step is a string of kernels far too small to fill the chip, so its time
is nearly proportional to the number of kernels launched and host synchronisations made, not to
their arithmetic (docs/design.md, "On a GPU"). This counts, for each of lab/benchmark.py's models,
the aten operations (views excluded) of fairseq's beam search per step, split into fairseq's search
itself, the encoder, the reordering of states, the plugin's decoder step (what --decoder-graphs
replays as one graph) and the rest of the decoder (embedding, output layer, log-softmax; all of
it for fairseq's models), and the host synchronisations among them
(``.item()``, ``nonzero``, ``masked_select``, ``unique``: a GPU waits for the device at each; a
lower bound, as waits that are no operation on a CPU, copies to the host, are not seen).

Usage, from the repository root:
    python -m lab.step_ops --data runs/multi30k/de-en-v4k/bin [--beam 5] [--out runs/step_ops]
"""
import argparse
import json
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Dict

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from lab.benchmark import MODEL_CALLS, MODELS, build

VIEWS = {"view", "_unsafe_view", "expand", "slice", "select", "unsqueeze", "squeeze", "t", "transpose", "permute",
         "as_strided", "alias", "detach", "_reshape_alias", "unbind", "split", "split_with_sizes", "narrow",
         "view_as", "lift_fresh", "reshape", "chunk"}
SYNCS = {"_local_scalar_dense", "nonzero", "masked_select", "unique_consecutive", "_unique2", "unique_dim"}
PARTS = ("search", "encoder", "reorders", "decoder step", "decoder rest")


class Counts(TorchDispatchMode):
    """Operations and host synchronisations by the part of decoding that ran them."""

    def __init__(self):
        super().__init__()
        self.part = ["search"]  # innermost last
        self.ops, self.syncs = Counter(), Counter()
        self.total = 0  # every operation counted, whatever its part: the parts must add up to it
        self.names: Dict[str, Counter] = {part: Counter() for part in PARTS}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name not in VIEWS:
            part = self.part[-1]
            self.total += 1
            self.ops[part] += 1
            self.names[part][name] += 1
            self.syncs[part] += name in SYNCS
        return func(*args, **(kwargs or {}))

    def within(self, part: str, fn: Callable) -> Callable:
        """``fn``, its operations counted under ``part``."""
        def counted(*args, **kwargs):
            self.part.append(part)
            try:
                return fn(*args, **kwargs)
            finally:
                self.part.pop()
        return counted


PART_OF = {"forward_encoder": "encoder", "reorder_encoder_out": "reorders", "reorder_incremental_state": "reorders",
           "forward_decoder": "decoder rest"}
assert set(PART_OF) == set(MODEL_CALLS)


def count(args, name: str) -> Dict[str, Dict[str, float]]:
    """Per step, for model ``name``: operations and synchronisations by part, and in all."""
    run = build(SimpleNamespace(**vars(args), layers=1, max_tokens=4096, warmup_batches=0, train_batches=0,
                                criterion=None, half=False, bf16=False, fp16=False, graphs=False), name)
    task, model = run["task"], run["model"].eval()
    gen = task.build_generator([model], argparse.Namespace(beam=args.beam, max_len_a=0, max_len_b=args.decode_len,
                                                           min_len=args.decode_len))
    counts = Counts()
    for call in MODEL_CALLS:
        setattr(gen.model, call, counts.within(PART_OF[call], getattr(gen.model, call)))
    if hasattr(model.decoder, "step"):  # the plugin's: what --decoder-graphs replays as one graph
        model.decoder.step = counts.within("decoder step", model.decoder.step)
    sample = next(iter(task.get_batch_iterator(task.dataset("test"), max_sentences=args.decode_sentences, seed=1,
                                               required_batch_size_multiple=1).next_epoch_itr(shuffle=False)))
    with torch.no_grad():
        task.inference_step(gen, [model], sample)  # lazy initialisation outside the count
        with counts:
            task.inference_step(gen, [model], sample)
    steps = args.decode_len + 1  # with the end of sentence
    per_step = {"ops": {p: counts.ops[p] / steps for p in PARTS}, "syncs": {p: counts.syncs[p] / steps for p in PARTS}}
    for kind in per_step.values():
        kind["all"] = sum(kind.values())
    per_step["names"] = {p: {op: n / steps for op, n in counts.names[p].most_common()} for p in PARTS}
    per_step["counted"] = counts.total / steps
    return per_step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="fairseq-preprocess output")
    p.add_argument("--out", type=Path, help="also write OUT/step_ops.json")
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--decode-sentences", type=int, default=64, help="sentences in the decoded batch")
    p.add_argument("--decode-len", type=int, default=20, help="tokens generated per sentence")
    p.add_argument("--top", type=int, default=0, metavar="N", help="also each part's N most frequent operations")
    p.add_argument("--emb", type=int, default=32, help="sizes change no count; small is quick")
    p.add_argument("--hidden", type=int, default=64)
    args = p.parse_args()
    torch.manual_seed(1)
    record = {name: count(args, name) for name in MODELS}
    print(f"beam {args.beam}, {args.decode_sentences} sentences, {args.decode_len} tokens: per step, operations "
          "(host synchronisations)")
    print(f"{'':28s}" + "".join(f"{part:>15s}" for part in (*PARTS, "all")))
    for name, per_step in record.items():
        print(f"{name:28s}" + "".join(f"{per_step['ops'][part]:8.1f} ({per_step['syncs'][part]:4.1f})"
                                      for part in (*PARTS, "all")))
        for part, names in per_step["names"].items():
            if args.top and names:
                print(f"    {part}: " + ", ".join(f"{op} {n:.1f}" for op, n in list(names.items())[: args.top]))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "step_ops.json").write_text(json.dumps({"setting": vars(args) | {"out": str(args.out)},
                                                            "per_step": record}, indent=2) + "\n")


if __name__ == "__main__":
    main()
