"""Average the parameters of several checkpoints of one run into one checkpoint for decoding,
or take the exponential moving average that fairseq-train --store-ema keeps in a checkpoint.

Usage:
    python scripts/average_checkpoints.py SAVE_DIR --last 5            # -> SAVE_DIR/checkpoint_avg5.pt
    python scripts/average_checkpoints.py --inputs a.pt b.pt c.pt --out avg.pt
    python scripts/average_checkpoints.py --ema SAVE_DIR/checkpoint_last.pt --out ema.pt

``--last N`` takes the N epoch checkpoints ``checkpointEPOCH.pt`` of SAVE_DIR with the highest
epoch numbers (scripts/train.sh keeps the last 5). Checkpoints are read through fairseq's
``checkpoint_utils.load_checkpoint_to_cpu`` with the plugin's safe loading; they must hold the
same parameters (names, shapes, dictionaries). Floating-point parameters are averaged in
float64; buffers that are equal in every input (such as the dictionary fingerprints) are copied.
``--ema`` writes the EMA weights of one checkpoint (refused, by name, when it holds none). The
output keeps the newest input's configuration and drops the optimizer state: it is for
fairseq-generate/interactive, not for resuming. It is written atomically.
"""
import argparse
import re
import sys
from pathlib import Path

from prepare import ROOT  # noqa: F401  (scripts/ is on sys.path when run as a script; prepare puts ROOT there)

import torch
from fairseq import checkpoint_utils
from omegaconf import OmegaConf

import user_dir  # noqa: F401  (the plugin's checkpoint repairs: safe loading, atomic saves)
from user_dir.patches.checkpoints import CheckpointError

EPOCH_CHECKPOINT = re.compile(r"checkpoint(\d+)\.pt")


def last_epochs(save_dir: Path, n: int) -> list[Path]:
    """The ``n`` epoch checkpoints of ``save_dir`` with the highest epoch numbers, oldest first."""
    found = sorted((int(m.group(1)), p) for p in save_dir.iterdir() if (m := EPOCH_CHECKPOINT.fullmatch(p.name)))
    if len(found) < n:
        raise SystemExit(f"error: {save_dir} holds {len(found)} epoch checkpoints (checkpointN.pt), "
                         f"fewer than --last {n}")
    return [p for _, p in found[-n:]]


def average(paths: list[Path]) -> dict:
    """The newest checkpoint's state with every parameter replaced by the mean over ``paths``."""
    states = [checkpoint_utils.load_checkpoint_to_cpu(str(p)) for p in paths]
    models = [s["model"] for s in states]
    for path, model in zip(paths[1:], models[1:]):
        if model.keys() != models[0].keys() or any(model[k].shape != models[0][k].shape for k in model):
            raise SystemExit(f"error: {path} holds other parameters than {paths[0]}: not checkpoints of one model")
    averaged = {}
    for key, first in models[0].items():
        if all(torch.equal(m[key], first) for m in models[1:]):
            averaged[key] = first
        elif first.is_floating_point():
            averaged[key] = (sum(m[key].double() for m in models) / len(models)).to(first.dtype)
        else:
            raise SystemExit(f"error: {key} is a non-floating-point tensor that differs between the checkpoints")
    return for_decoding(states[-1], averaged, averaged=[str(p) for p in paths])


def ema(path: Path) -> dict:
    """``path``'s state with its parameters replaced by the EMA that fairseq-train --store-ema saved."""
    state = checkpoint_utils.load_checkpoint_to_cpu(str(path))
    weights = (state.get("extra_state") or {}).pop("ema", None)
    if not weights:
        raise SystemExit(f"error: {path} holds no EMA weights: train with fairseq-train --store-ema")
    if weights.keys() != state["model"].keys():
        raise SystemExit(f"error: the EMA weights of {path} hold other parameters than its model")
    state["extra_state"].pop("ema_fp32_params", None)
    return for_decoding(state, {k: v.to(state["model"][k].dtype) for k, v in weights.items()}, ema=str(path))


def for_decoding(state: dict, model: dict, **note) -> dict:
    """``state`` with ``model`` as its parameters, no optimizer state, and ``note`` in its extra state."""
    state["cfg"] = OmegaConf.to_container(state["cfg"], resolve=True, enum_to_str=True)  # as fairseq saves it
    state["model"] = model
    state["last_optimizer_state"] = None
    state.setdefault("extra_state", {}).update(note)
    return state


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("save_dir", nargs="?", type=Path, help="a fairseq-train --save-dir (with --last)")
    p.add_argument("--last", type=int, help="average the last N epoch checkpoints of SAVE_DIR")
    p.add_argument("--inputs", nargs="+", type=Path, help="average these checkpoints")
    p.add_argument("--ema", type=Path, metavar="CHECKPOINT", help="write the EMA weights of this checkpoint")
    p.add_argument("--out", type=Path, help="output (default SAVE_DIR/checkpoint_avgN.pt)")
    args = p.parse_args()
    if sum(x is not None for x in (args.inputs, args.last, args.ema)) != 1:
        p.error("give SAVE_DIR with --last N, --inputs, or --ema")
    if args.ema is not None:
        paths, out = [args.ema], args.out
        if out is None:
            p.error("--ema needs --out")
    elif args.last is not None:
        if args.save_dir is None or not args.save_dir.is_dir():
            p.error("--last needs SAVE_DIR, an existing folder")
        if args.last < 1:
            p.error("--last must be positive")
        paths = last_epochs(args.save_dir, args.last)
        out = args.out or args.save_dir / f"checkpoint_avg{args.last}.pt"
    else:
        paths, out = args.inputs, args.out
        if out is None:
            p.error("--inputs needs --out")
    if out.resolve() in {q.resolve() for q in paths}:
        p.error(f"--out {out} is one of the inputs")
    try:
        state = ema(args.ema) if args.ema is not None else average(paths)
    except CheckpointError as e:
        raise SystemExit(f"error: {e}")
    checkpoint_utils.torch_persistent_save(state, str(out))
    what = "the EMA weights of" if args.ema is not None else f"averaged {len(paths)} checkpoints"
    print(f"{what} {', '.join(q.name for q in paths)} -> {out}")


if __name__ == "__main__":
    sys.exit(main())
