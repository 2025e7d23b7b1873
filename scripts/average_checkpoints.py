"""Average the parameters of several checkpoints of one run into one checkpoint for decoding,
or take the exponential moving average that fairseq-train --store-ema keeps in a checkpoint.

Usage:
    python scripts/average_checkpoints.py SAVE_DIR --last 5            # -> SAVE_DIR/checkpoint_avg5.pt
    python scripts/average_checkpoints.py --inputs a.pt b.pt c.pt --out avg.pt
    python scripts/average_checkpoints.py --ema SAVE_DIR/checkpoint_last.pt --out ema.pt

``--last N`` takes the N epoch checkpoints ``checkpointEPOCH.pt`` of SAVE_DIR with the highest
epoch numbers (scripts/train.sh keeps the last 5). Checkpoints are read through fairseq's
``checkpoint_utils.load_checkpoint_to_cpu`` with the plugin's safe loading; they must hold the
same parameters (names, shapes), the same dictionaries and direction, and come from runs of one
seed: identities such as the dictionary fingerprints and the direction (SRC-TGT) are compared,
never averaged, and a mix is refused naming the files; an identity that some inputs lack
(checkpoints saved before it was recorded, e.g. the direction in a run resumed across that
change) is left out of the output.
Floating-point parameters are averaged in float64; buffers that are equal in every input are
copied. ``--ema`` writes the EMA weights of one checkpoint (refused, by name, when it holds none). The output keeps
the last input's configuration (with ``--last``, the newest's) and drops the optimizer state: it is for
fairseq-generate/interactive, not for resuming. What made it is noted under
``extra_state["made_by"]`` (a key fairseq does not read). It is written atomically, and never
over an input, a training run's checkpoint (checkpoint_last.pt, checkpoint_best.pt, ...) or an
existing file that is not an earlier output of this script.
"""
import argparse
import re
from pathlib import Path

import torch
from fairseq import checkpoint_utils
from omegaconf import OmegaConf

import user_dir.patches  # noqa: F401  (fairseq's checkpoint_utils with safe loads and atomic saves)
from user_dir.checkpoint_files import CheckpointError
from user_dir.dictionaries import DIRECTION_KEY, FINGERPRINT_KEYS, as_direction, as_hex, directions_differ
from user_dir.files import OutputError, WriteError, check_output, same_file
from user_dir.workflow import positive, script_main

EPOCH_CHECKPOINT = re.compile(r"checkpoint(\d+)\.pt")
SCRIPT = "average_checkpoints.py"
IDENTITY_KEYS = (DIRECTION_KEY, *FINGERPRINT_KEYS)  # compared, never averaged; kept (identities())


def last_epochs(save_dir: Path, n: int) -> list[Path]:
    """The ``n`` epoch checkpoints of ``save_dir`` with the highest epoch numbers, oldest first."""
    found = sorted((int(m.group(1)), p) for p in save_dir.iterdir() if (m := EPOCH_CHECKPOINT.fullmatch(p.name)))
    if len(found) < n:
        raise SystemExit(f"error: {save_dir} holds {len(found)} epoch checkpoints (checkpointN.pt), "
                         f"fewer than --last {n}")
    return [p for _, p in found[-n:]]


def average(paths: list[Path]) -> dict:
    """The last checkpoint's state (of ``paths``) with every parameter replaced by the mean over ``paths``."""
    states = [checkpoint_utils.load_checkpoint_to_cpu(str(p)) for p in paths]
    models = [s["model"] for s in states]
    first_parameters = parameters(models[0])
    for path, model in zip(paths[1:], models[1:]):
        ours = parameters(model)
        if ours.keys() != first_parameters.keys() or any(v.shape != first_parameters[k].shape for k, v in ours.items()):
            raise SystemExit(f"error: {path} holds other parameters than {paths[0]}: not checkpoints of one model")
    same_identity(list(zip(paths, models)))
    same_seed(paths, states)
    averaged = identities(models)
    for key, first in parameters(models[0]).items():
        if all(torch.equal(m[key], first) for m in models[1:]):
            averaged[key] = first
        elif first.is_floating_point():
            averaged[key] = (sum(m[key].double() for m in models) / len(models)).to(first.dtype)
        else:
            raise SystemExit(f"error: {key} is a non-floating-point tensor that differs between the checkpoints")
    return for_decoding(states[-1], averaged, averaged=[str(p) for p in paths])


def identities(models: list[dict]) -> dict:
    """Each identity some model holds, the first that is not empty: an older checkpoint lacks it,
    a run on data without languages has an empty direction (what the others' says is the average's)."""
    held = [key for key in IDENTITY_KEYS if any(key in m for m in models)]
    return {key: next((m[key] for m in models if key in m and m[key].numel()),
                      next(m[key] for m in models if key in m)) for key in held}


def parameters(model: dict) -> dict:
    """``model`` without its identities (compared by :func:`same_identity`, kept by :func:`identities`)."""
    return {k: v for k, v in model.items() if k not in IDENTITY_KEYS}


def same_seed(paths: list[Path], states: list[dict]) -> None:
    """Refuse checkpoints of runs with other seeds: two runs' parameters, however alike in shape,
    average to no model (their units are not in the same places); they decode as an ensemble."""
    seeds = [(path, (state.get("cfg") or {}).get("common", {}).get("seed")) for path, state in zip(paths, states)]
    (first, seed), *rest = seeds
    for path, other in rest:
        if other != seed:
            raise SystemExit(f"error: {path} was trained with --seed {other} but {first} with --seed {seed}: "
                             "checkpoints of two runs (an average of two runs is no model), or of one resumed with "
                             "another --seed (average only those of one seed); decode them together as an ensemble "
                             f"instead: {first}:{path}")


def same_identity(named: list[tuple["Path | str", dict]]) -> None:
    """Refuse states whose dictionary fingerprints or directions differ (other data: never averaged);
    each identity is compared among the states that hold it, directions as the model compares them."""
    for key in IDENTITY_KEYS:
        holders = [(name, model[key]) for name, model in named if key in model and model[key].numel()]
        for other, b in holders[1:]:
            first, a = holders[0]
            if key == DIRECTION_KEY and directions_differ(a, b):
                raise SystemExit(f"error: {other} translates {as_direction(b)} but {first} {as_direction(a)}: "
                                 "checkpoints of different directions cannot be mixed")
            if key != DIRECTION_KEY and as_hex(a) != as_hex(b):
                raise SystemExit(f"error: {other} and {first} were trained with other {key.split('_')[0]} "
                                 f"dictionaries (fingerprints {as_hex(b)} and {as_hex(a)}): checkpoints of "
                                 "different data cannot be mixed")


def ema(path: Path) -> dict:
    """``path``'s state with its parameters replaced by the EMA that fairseq-train --store-ema saved."""
    state = checkpoint_utils.load_checkpoint_to_cpu(str(path))
    weights = (state.get("extra_state") or {}).pop("ema", None)
    if not weights:
        raise SystemExit(f"error: {path} holds no EMA weights: train with fairseq-train --store-ema")
    if weights.keys() != state["model"].keys():
        raise SystemExit(f"error: the EMA weights of {path} hold other parameters than its model")
    same_identity([(path, state["model"]), (f"the EMA weights of {path}", weights)])
    state["extra_state"].pop("ema_fp32_params", None)
    return for_decoding(state, {k: v.to(state["model"][k].dtype) for k, v in weights.items()}, ema_of=str(path))


def for_decoding(state: dict, model: dict, **note) -> dict:
    """``state`` with ``model`` as its parameters, no optimizer state, and ``note`` under
    ``extra_state["made_by"]`` (fairseq reads "ema" and others there as training state)."""
    state["cfg"] = OmegaConf.to_container(state["cfg"], resolve=True, enum_to_str=True)  # as fairseq saves it
    state["model"] = model
    state["last_optimizer_state"] = None
    state.setdefault("extra_state", {})["made_by"] = {"script": SCRIPT, **note}
    return state


def earlier_output(path: Path) -> bool:
    """Recognise a checkpoint this script wrote (its ``made_by`` note)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return (state.get("extra_state") or {}).get("made_by", {}).get("script") == SCRIPT
    except Exception:  # not a checkpoint, or not one torch reads safely: not ours
        return False


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("save_dir", nargs="?", type=Path, help="a fairseq-train --save-dir (with --last)")
    p.add_argument("--last", type=positive, help="average the last N epoch checkpoints of SAVE_DIR")
    p.add_argument("--inputs", nargs="+", type=Path, help="average these checkpoints")
    p.add_argument("--ema", type=Path, metavar="CHECKPOINT", help="write the EMA weights of this checkpoint")
    p.add_argument("--out", type=Path, help="output (default SAVE_DIR/checkpoint_avgN.pt)")
    args = p.parse_args()
    chosen = [name for name, x in (("--last", args.last), ("--inputs", args.inputs), ("--ema", args.ema)) if x]
    if len(chosen) != 1:
        p.error("give one of SAVE_DIR with --last N, --inputs, or --ema" + (f" (not {' and '.join(chosen)})"
                                                                             if chosen else ""))
    if args.save_dir is not None and args.last is None:
        p.error(f"SAVE_DIR {args.save_dir} goes with --last N only; {chosen[0]} names its checkpoints itself")
    if args.ema is not None:
        paths, out = [args.ema], args.out
        if out is None:
            p.error("--ema needs --out")
    elif args.last is not None:
        if args.save_dir is None or not args.save_dir.is_dir():
            p.error("--last needs SAVE_DIR, an existing folder")
        paths = last_epochs(args.save_dir, args.last)
        out = args.out or args.save_dir / f"checkpoint_avg{args.last}.pt"
    else:
        paths, out = args.inputs, args.out
        if out is None:
            p.error("--inputs needs --out")
        twice = next(((a, b) for i, a in enumerate(paths) for b in paths[i + 1:] if same_file(a, b)), None)
        if twice:
            raise SystemExit(f"error: --inputs names {twice[0]} twice" + f" (as {twice[1]})" * (twice[0] != twice[1])
                             + ": it would weigh double in the average")
    try:
        check_output(out, "--out", paths, earlier_output)
        state = ema(args.ema) if args.ema is not None else average(paths)
        checkpoint_utils.torch_persistent_save(state, str(out))
    except (CheckpointError, OutputError, WriteError) as e:
        raise SystemExit(f"error: {e}")
    what = "the EMA weights of" if args.ema is not None else f"averaged {len(paths)} checkpoints"
    if len({q.parent for q in paths}) == 1:  # which files, unambiguously
        names = ", ".join(q.name for q in paths) + f" in {paths[0].parent}"
    else:
        names = ", ".join(map(str, paths))
    print(f"{what} {names} -> {out}")


if __name__ == "__main__":
    script_main(main)
