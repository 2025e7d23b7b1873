"""The fairseq-train command scripts/train.sh runs, fitted to the data, the machine and the environment.

Usage (train.sh runs it): python scripts/train_settings.py [--log-fd N] ARGS_FILE DATA_BIN SAVE_DIR [EXTRA...]
Writes fairseq-train's arguments, one per line, to ARGS_FILE (the recipe's options, then the user's
EXTRA, which win), what starts its processes to ARGS_FILE.launcher (torchrun or fairseq-train), and
prints the plan; writes nothing when the run in SAVE_DIR is already complete. With --log-fd, the
plan and all output after it go to file descriptor N (train.sh's tee into SAVE_DIR/train.log), and
fairseq-train runs here, in this process, unless torchrun starts the processes: the seconds of
importing fairseq and the plugin are spent once. Once training finished, train.sh records ARGS_FILE
as SAVE_DIR/train.done (``user_dir.workflow.record_finished``).
Environment: AMP (0/1; unset: measured), PATIENCE, BUDGET_HOURS, NPROC, NNODES.

* Options are read by fairseq-train's own parser (aliases, ``--opt=value``, the last of a
  repeated option, types, the components' and the plugin's options), and the printed plan is
  that parse: what fairseq-train will do. Values it cannot train with are refused in one line.
* Recipe: criterion, optimizer, scheduler and the fixed options come from configs/multi30k.yaml
  (the fairseq-hydra-train recipe); the arch is ``rnn_seq2seq_multi30k``.
* Tokenization: OUT/prepare.json of scripts/prepare.py names it; for other data it is detected
  from the dictionary (sentencepiece pieces start with U+2581). It is what --eval-bleu removes.
* Size: fairseq's own batching of the training split's lengths (from the binarized index) gives
  the updates an epoch; validation (and epoch checkpoints) come about every VALIDATE_EVERY updates.
* Stopping: --max-update/--max-epoch in EXTRA are honoured exactly (early stopping only if
  PATIENCE is set). Otherwise the run ends at max(MIN_UPDATES, 9 epochs) updates, or earlier
  after PATIENCE (default 5) validations without a better BLEU. BUDGET_HOURS adds a wall-clock limit.
* Resuming: SAVE_DIR/checkpoint_last.pt's updates, epochs and training time against the plan's
  limits (fairseq-train's own stopping rules), or SAVE_DIR/train.done (the same command finished
  there), say the run is complete; a limit below what the checkpoint holds is refused. This is
  decided before the precision probe: a complete run is not probed.
* Precision: ``user_dir.precision`` (AMP, or on a CPU the faster of float32 and bfloat16 autocast for
  this model, timed on a few of its updates and cached); processes: ``user_dir.machine`` (NPROC, NNODES).
"""
import argparse
import ast
import contextlib
import gc
import io
import logging
import math
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from fairseq import checkpoint_utils, options, tasks
from fairseq.data import data_utils
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq.models import ARCH_MODEL_REGISTRY, BaseFairseqModel
from fairseq.registry import REGISTRIES
from fairseq.tasks import FairseqTask
from omegaconf import DictConfig, OmegaConf

from user_dir import patches
from user_dir.checkpoint_files import CheckpointError
from user_dir.data_folder import (
    language_pair,
    no_dictionary,
    raw_text,
    side_file,
    split_read,
    splits_of,
    training_parts,
)
from user_dir.dictionaries import uses_sentencepiece
from user_dir.errors import OptionError
from user_dir.files import (
    TRAINING_CHECKPOINT,
    FolderBusy,
    OutputError,
    lock_folder,
    make_folder,
    release_folder,
)
from user_dir.machine import distributed, env_number, several_machines, world
from user_dir.models.rnn_seq2seq import (
    RNNSeq2SeqConfig,
    RNNSeq2SeqModel,
    check_config,
    check_dictionaries,
    fill_defaults,
)
from user_dir.patches.checkpoints import as_dict, misfit, option_differences
from user_dir.precision import (
    CPU_CHOICES,
    measured_precision,
    precision,
    precision_name,
    training_work,
)
from user_dir.prepared import RECORD, prepared_record, prepared_record_path
from user_dir.workflow import DONE, ROOT, USER_DIR, argv_text, imported_user_dir

RECIPE = ROOT / "configs" / "multi30k.yaml"
ARCH = "rnn_seq2seq_multi30k"
LAUNCHER = ".launcher"  # ARGS_FILE.launcher: "torchrun" or "fairseq-train", what starts the processes
VALIDATE_EVERY = 200  # updates between validations, about (whole epochs, or updates for long epochs)
MIN_VALIDATIONS = 5  # a run short in epochs still validates (selects, stops early, shrinks the rate) this often
LONG_EPOCH = 2000  # updates an epoch above which validation and checkpoints go by updates
MIN_UPDATES, EPOCHS = 2000, 9  # default length: max(MIN_UPDATES, EPOCHS epochs) (docs/training.md)
SMALL = 10_000  # pairs below which the learning rate waits one more validation before it shrinks
COMPONENTS = {"criterion": "criterion", "optimizer": "optimizer", "lr-scheduler": "lr_scheduler"}
# the recipe's fixed options (section, field of configs/multi30k.yaml)
FIXED = [("optimization", "lr"), ("optimization", "clip_norm"), ("dataset", "max_tokens"),
         ("dataset", "required_batch_size_multiple"), ("dataset", "num_workers"), ("checkpoint", "keep_last_epochs"),
         ("checkpoint", "best_checkpoint_metric"), ("checkpoint", "maximize_best_checkpoint_metric"),
         ("task", "eval_bleu"), ("task", "eval_bleu_args"), ("common", "seed"), ("common", "log_format"),
         ("common", "log_interval")]
# fairseq-train's counts: below these it divides by zero, trains nothing or misreads them (0: no limit)
LEAST = {"max_tokens": 1, "batch_size": 1, "update_freq": 1, "validate_interval": 1, "save_interval": 1,
         "log_interval": 1, "max_update": 0, "max_epoch": 0, "validate_interval_updates": 0,
         "save_interval_updates": 0, "stop_time_hours": 0, "distributed_world_size": 1}


def cli(field: str, value) -> list[str]:
    """A YAML field as fairseq-train's option: a flag for true, nothing for false, lists as fairseq writes them."""
    if isinstance(value, bool):
        return [f"--{field.replace('_', '-')}"] if value else []
    if isinstance(value, list):
        value = value[0] if len(value) == 1 else str(tuple(value))
    return [f"--{field.replace('_', '-')}", str(value)]


def recipe() -> tuple[dict, list[str]]:
    """configs/multi30k.yaml as (component kind -> (name, its options)) and the fixed options: the
    one source of the recipe for train.sh and fairseq-hydra-train."""
    cfg = OmegaConf.to_container(OmegaConf.load(RECIPE))
    ours = {kind: (cfg[section].pop("_name"), [x for item in cfg[section].items() for x in cli(*item)])
            for kind, section in COMPONENTS.items()}
    return ours, [x for section, field in FIXED for x in cli(field, cfg[section][field])]


def components(recipe_components: dict, chosen: dict, lr_patience: int, warmup: int) -> list[str]:
    """The recipe's criterion, optimizer and scheduler with their options (RECIPE_COMPONENTS, from
    :func:`recipe`); where the user chose another one (CHOSEN: kind -> name), only the options that
    one defines (fairseq-train refuses the others)."""
    args = []
    for kind, (ours, recipe_options) in recipe_components.items():
        values = dict(zip(recipe_options[::2], recipe_options[1::2]))
        if kind == "lr-scheduler":
            values.update({"--lr-patience": str(lr_patience), "--warmup-updates": str(warmup)})
        if chosen[kind] != ours:
            parser = argparse.ArgumentParser()
            REGISTRIES[COMPONENTS[kind]]["registry"][chosen[kind]].add_args(parser)  # fairseq's way to list them
            defined = {option for action in parser._actions for option in action.option_strings}
            values = {k: v for k, v in values.items() if k in defined}
        args += [f"--{kind}", chosen[kind], *(x for item in values.items() for x in item)]
    return args


def fairseq_options(argv: list[str], given_only: bool = False) -> argparse.Namespace:
    """ARGV as fairseq-train reads it (its parser with the model's, task's, components' and the
    plugin's options); GIVEN_ONLY: only the options ARGV sets. A usage error becomes one line."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            return options.parse_args_and_arch(options.get_training_parser(), argv, suppress_defaults=given_only)
    except SystemExit:
        why = (stderr.getvalue().strip().splitlines() or ["cannot read these options"])[-1]
        raise SystemExit(f"error: fairseq-train {why.split(': error: ', 1)[-1]}") from None


def check_whole_counts(extra: list[str]) -> None:
    """Refuse an --update-freq that is not whole numbers: fairseq's list parser truncates 1.5 to 1."""
    for i, arg in enumerate(extra):
        name, equals, value = arg.partition("=")
        if name != "--update-freq" or (not equals and i + 1 == len(extra)):
            continue
        value = value if equals else extra[i + 1]
        parsed = ast.literal_eval(value)  # as fairseq's eval_str_list; fairseq's own parse has read it already
        values = parsed if isinstance(parsed, (list, tuple)) else [parsed]
        if not all(type(v) is int for v in values):
            raise SystemExit(f"error: --update-freq {value}: give whole numbers (fairseq-train would read "
                             f"{','.join(str(int(v)) for v in values)})")


def check_counts(plan: argparse.Namespace) -> None:
    """Refuses a count fairseq-train would divide by zero with, train nothing with, or misread (the
    validation's, which its parser leaves as text, included)."""
    for dest in ("max_tokens_valid", "batch_size_valid"):
        text = str(getattr(plan, dest, None) or "")
        if text and not (text.isascii() and text.isdigit() and int(text) > 0):
            raise SystemExit(f"error: --{dest.replace('_', '-')} {text}: give a whole number >= 1")
    for dest, least in LEAST.items():
        value = getattr(plan, dest, None)
        if value is not None and min(value if isinstance(value, list) else [value]) < least:
            shown = ",".join(map(str, value)) if isinstance(value, list) else value
            meaning = " (0: no limit)" if least == 0 else ""
            raise SystemExit(f"error: --{dest.replace('_', '-')} {shown}: give a number >= {least}{meaning}")


def check_device(plan: argparse.Namespace) -> None:
    """Refuses float16 training where no CUDA is, and --bf16, which fairseq 0.12 runs on a TPU only
    (fairseq-train fails deep inside instead)."""
    if (plan.fp16 or plan.memory_efficient_fp16) and not torch.cuda.is_available():
        raise SystemExit("error: --fp16 trains on a CUDA GPU and there is none here: leave it out (train.sh "
                         "chooses float32 or bfloat16 autocast on a CPU; --amp forces bfloat16)")
    if plan.bf16 or plan.memory_efficient_bf16:
        raise SystemExit("error: --bf16 is fairseq 0.12's TPU precision (it sets --tpu): leave it out (on a CPU, "
                         "--amp or AMP=1 trains in bfloat16 autocast)")


def check_model(plan: argparse.Namespace, info: dict) -> None:
    """Refuses rnn_seq2seq options that cannot build a model on INFO's dictionaries, before anything is
    written (fairseq-train would refuse them after the plan and the precision probe)."""
    if ARCH_MODEL_REGISTRY.get(plan.arch) is not RNNSeq2SeqModel:
        return
    cfg = argparse.Namespace(**vars(plan))
    fill_defaults(cfg, RNNSeq2SeqConfig)  # the parser leaves the defaults to build_model
    try:
        check_config(cfg)
        if cfg.share_all_embeddings:
            check_dictionaries(cfg, *info["dictionaries"])
    except OptionError as e:
        raise SystemExit(f"error: {e}") from None


def check_ends(plan: argparse.Namespace) -> None:
    """Refuses a plan that nothing stops: fairseq reads --max-update 0 and --max-epoch 0 as no limit."""
    early = plan.patience > 0 and not plan.disable_validation
    if not plan.max_update and not plan.max_epoch and plan.stop_time_hours <= 0 and not early:
        raise SystemExit(f"error: --max-update {plan.max_update} and --max-epoch {plan.max_epoch} mean no limit to "
                         "fairseq-train, and no early stopping (PATIENCE, with validation) or wall-clock limit "
                         "(BUDGET_HOURS) ends the run: give --max-update N or --max-epoch N")


def direction(plan: argparse.Namespace) -> tuple[str, str]:
    """The (source, target) fairseq-train reads: -s and -t, else the folder's one pair (fairseq takes
    it from the file names even where one of -s, -t is given: a contradicting one is refused)."""
    given = (plan.source_lang, plan.target_lang)
    if all(given):
        return given
    pair = language_pair(Path(plan.data))
    for option, value, read in zip(("-s", "-t"), given, pair):
        if value and value != read:
            raise SystemExit(f"error: {option} {value} alone: fairseq-train reads the pair from {plan.data}'s file "
                             f"names ({'->'.join(pair)}) unless both -s and -t are given: give both")
    return pair


def loaded(task: FairseqTask, plan: argparse.Namespace, subset: str, combine: bool, option: str) -> list[str]:
    """TASK's SUBSET loaded as fairseq-train loads it (COMBINE: with the SUBSET1, SUBSET2... parts it
    adds, and --upsample-primary copies of SUBSET), and those parts; what fairseq would fail on is one
    line: a split it lacks or cannot read, no target side, parts under --upsample-primary below 1,
    files it reads as --dataset-impl cached (its first batch fails with KeyError)."""
    data, src, tgt = Path(task.cfg.data), task.cfg.source_lang, task.cfg.target_lang
    parts = training_parts(data, src, tgt, subset) if combine else [subset]
    if len(parts) > 1 and plan.upsample_primary < 1:
        raise SystemExit(f"error: {data} holds {', '.join(parts[1:])}, which fairseq-train adds to '{subset}' with "
                         f"--upsample-primary copies of '{subset}' (default -1: it fails): give --upsample-primary 1 "
                         "(or more), or move them out")
    try:
        impl = f", --dataset-impl {plan.dataset_impl}" * bool(plan.dataset_impl)
        with split_read(data, subset, (src, tgt), f" as fairseq-train reads it ({option}{impl})"):
            task.load_dataset(subset, epoch=1, combine=combine)
    except FileNotFoundError:
        held, raw = splits_of(data, src, tgt), raw_text(data, subset)
        if subset in held and raw != (plan.dataset_impl == "raw"):  # fairseq infers no text format
            raise SystemExit(f"error: split '{subset}' of {data} is fairseq-preprocess --dataset-impl raw text, which "
                             "fairseq-train finds only with --dataset-impl raw: give it" if raw else
                             f"error: split '{subset}' of {data} is binarized, not text: leave --dataset-impl raw out"
                             ) from None
        raise SystemExit(f"error: {data} holds no split '{subset}' of {src}-{tgt} "
                         f"({side_file(data, subset, (src, tgt), raw=plan.dataset_impl == 'raw')}), "
                         f"which fairseq-train loads ({option}); it holds: {', '.join(held) or 'none'}") from None
    dataset = task.dataset(subset)
    if dataset.tgt is None:
        raise SystemExit(f"error: split '{subset}' of {data} has no {tgt} side "
                         f"({side_file(data, subset, (src, tgt), 1, plan.dataset_impl == 'raw')}): "
                         f"fairseq-train needs its pairs ({option})")
    if dataset.supports_prefetch:  # fairseq 0.12's epoch iterator leaves cached datasets unread
        raise SystemExit(f"error: {data} holds fairseq's indexed (lazy/cached) files, which fairseq-train reads as "
                         f"--dataset-impl cached{' (inferred)' * (not plan.dataset_impl)} and then fails on (KeyError "
                         "in its first batch): give --dataset-impl lazy")
    return parts


def corpus(plan: argparse.Namespace) -> dict:
    """The pairs fairseq-train trains and validates on, read by its own task (the direction,
    --train-subset with the train1, train2... parts fairseq adds to it, --upsample-primary; the
    validation subsets it loads at its start); tokenization: prepare.json's where prepare.py made
    DATA_BIN, else detected from the target dictionary."""
    data = Path(plan.data)
    made = prepared_record(data)  # an unreadable record: one error line
    src, tgt = direction(plan)
    cfg, task = configured(plan)
    validation, valid_parts = {}, {}
    if not plan.disable_validation:
        try:
            data_utils.raise_if_valid_subsets_unintentionally_ignored(cfg)
        except ValueError as e:
            raise SystemExit(f"error: {e}") from None
        names = plan.valid_subset.split(",")
        if plan.combine_valid_subsets and names != ["valid"]:
            raise SystemExit(f"error: --combine-valid-subsets loads 'valid' with its valid1, valid2... parts, and "
                             f"fairseq-train then validates on each --valid-subset ({plan.valid_subset}), not loaded: "
                             "give --valid-subset valid, or leave --combine-valid-subsets out")
        for subset in names:
            valid_parts[subset] = loaded(task, plan, subset, plan.combine_valid_subsets,
                                         f"--valid-subset {plan.valid_subset}")
            validation[subset] = sizes_of(task.dataset(subset))
    parts = loaded(task, plan, plan.train_subset, True, f"--train-subset {plan.train_subset}")
    train = task.dataset(plan.train_subset)
    tokenization = made.get("tokenization")
    if tokenization is None:
        tokenization = "sentencepiece" if uses_sentencepiece(task.target_dictionary) else "none"
    return {"tokenization": tokenization, "pairs": len(train), "source": "prepare.json" if made else "detected",
            "direction": (src, tgt), "parts": parts, "dictionaries": (task.source_dictionary, task.target_dictionary),
            "sizes": sizes_of(train), "valid": validation, "valid_parts": valid_parts,
            "positions": task.max_positions()}


def sizes_of(dataset) -> tuple[np.ndarray, np.ndarray]:
    """A LanguagePairDataset's (source, target) lengths, copied (not views of memory maps)."""
    return np.array(dataset.src_sizes), np.array(dataset.tgt_sizes)


def check_save_outside_data(data: Path, save: Path) -> None:
    """SAVE_DIR may not lie in DATA_BIN, nor in a prepare.py folder's raw/ or spm/: the data's folders,
    which prepare.py replaces whole when it prepares them again."""
    out = prepared_record_path(data).parent  # DATA_BIN's folder, links resolved
    folders = [data, *(out / name for name in ("raw", "spm") if (out / RECORD).is_file())]
    for folder in folders:
        if save.resolve().is_relative_to(folder.resolve()):
            raise SystemExit(f"error: SAVE_DIR {save} is inside {folder}, a folder of the data: give one beside it "
                             f"(e.g. {out / 'ckpt'})")


def held_folder(save: Path, hold: bool) -> None:
    """SAVE_DIR made (with its parents) and writable, and with HOLD held for this run (its .lock, which
    fairseq-train's check takes too), or one line saying why not: a second run on it is refused before the
    probe and the log."""
    try:
        make_folder(save, "SAVE_DIR")
        if hold:
            lock_folder(str(save), "train.sh")
    except (OutputError, FolderBusy) as e:
        raise SystemExit(f"error: SAVE_DIR {e}" if isinstance(e, FolderBusy) else f"error: {e}") from None


def saved_progress(plan: argparse.Namespace) -> dict | None:
    """The checkpoint fairseq-train resumes from (SAVE_DIR/checkpoint_last.pt: its path, state,
    updates, finished epochs, training hours, and whether its optimizer state is loaded); None when
    it starts afresh (no checkpoint_last.pt, another --restore-file)."""
    path = Path(plan.save_dir) / "checkpoint_last.pt"
    if plan.restore_file != "checkpoint_last.pt" or not path.is_file():
        return None
    try:
        state = checkpoint_utils.load_checkpoint_to_cpu(str(path))
    except CheckpointError as e:
        raise SystemExit(f"error: {e} (train.sh resumes from it: give another SAVE_DIR for a new run)") from None
    extra = state.get("extra_state") or {}
    # the iterator's epoch is the next one to train once an epoch ended, else the one under way
    return {"path": path, "updates": state["optimizer_history"][-1]["num_updates"],
            "epochs": extra.get("train_iterator", {}).get("epoch", 1) - 1,
            "hours": extra.get("previous_training_time", 0) / 3600, "cfg": state["cfg"], "model": state["model"],
            "optimizer": not plan.reset_optimizer}


def check_new_run(plan: argparse.Namespace) -> None:
    """Refuses a run that starts afresh (no checkpoint_last.pt, another --restore-file) or from
    epoch 1 (--reset-dataloader) in a folder holding another run's checkpoints: fairseq would keep
    the highest-numbered epoch checkpoints (the old run's, which scripts/average_checkpoints.py
    would average) and replace checkpoint_best.pt. A run that saves nothing may start there."""
    save = Path(plan.save_dir)
    earlier = sorted(p.name for p in save.iterdir() if TRAINING_CHECKPOINT.fullmatch(p.name)) if save.is_dir() else []
    why = ("it holds no checkpoint_last.pt" if not (save / "checkpoint_last.pt").is_file() else
           f"--restore-file {plan.restore_file}" if plan.restore_file != "checkpoint_last.pt" else
           "--reset-dataloader" if plan.reset_dataloader else None)
    if earlier and why and not plan.no_save:
        shown = ", ".join(earlier[:3]) + (", ..." if len(earlier) > 3 else "")
        raise SystemExit(f"error: {save} holds checkpoints of an earlier run ({shown}) and this run would not "
                         f"resume it ({why}): its checkpoints would mix with them; give another SAVE_DIR (or, to "
                         "go on from checkpoint_last.pt, leave --restore-file and --reset-dataloader out)")


# what a resume keeps from the checkpoint unless --reset-optimizer: (section, its fields, None: all but
# the learning rate, the option's name for "_name"): the optimizer's state, and what fairseq-train
# resumes only with (it asserts the criterion's and optimizer's class)
KEPT_ON_RESUME = [("criterion", ["_name"], "criterion"), ("optimizer", None, "optimizer"),
                  ("common", ["fp16", "amp", "bf16", "memory_efficient_fp16"], None)]


def configured(plan: argparse.Namespace) -> tuple[DictConfig, FairseqTask]:
    """PLAN's config and task, as fairseq-train sets them up (a dictionary it lacks: one line)."""
    with warnings.catch_warnings():  # hydra's deprecation notes on fairseq 0.12's use of it
        warnings.simplefilter("ignore")
        cfg = convert_namespace_to_omegaconf(plan)
    try:
        return cfg, tasks.setup_task(cfg.task)
    except FileNotFoundError as e:
        raise SystemExit(no_dictionary(plan.data, Path(e.filename or "?").name, direction(plan))) from None


def built(plan: argparse.Namespace) -> tuple[DictConfig, FairseqTask, BaseFairseqModel]:
    """PLAN's config, task and model, as fairseq-train builds them."""
    cfg, task = configured(plan)
    return cfg, task, task.build_model(cfg.model)


def check_resume(plan: argparse.Namespace, saved: dict) -> tuple[DictConfig, FairseqTask, BaseFairseqModel]:
    """Refuses resuming SAVE_DIR/checkpoint_last.pt with options it cannot resume with or would not
    apply: another model or data (fairseq-train's own check, :func:`misfit`); unless
    --reset-optimizer, another criterion, optimizer or precision (fairseq-train asserts), optimizer
    options (restored from its state, less --optimizer-overrides) or, with reduce_lr_on_plateau past
    its warmup, --lr (the rate continues from the checkpoint's). Returns what it built (:func:`built`)."""
    path = saved["path"]
    cfg, task, model = resumed = built(plan)
    try:
        model.load_state_dict(saved["model"], strict=True, model_cfg=cfg.model)
    except Exception as e:
        raise SystemExit(f"error: {misfit(str(path), e, cfg.model, task, saved['cfg']['model'])}") from None
    if not saved["optimizer"]:
        return resumed
    overridden = set(ast.literal_eval(plan.optimizer_overrides or "{}"))
    differ = []
    for section, keys, name in KEPT_ON_RESUME:
        before = as_dict(saved["cfg"].get(section))  # an older checkpoint may lack a section
        keys = keys or [k for k in before if k != "lr" and k not in overridden]
        differ += option_differences(before, cfg[section], keys, name)
    plateau = plan.lr_scheduler == "reduce_lr_on_plateau" and saved["updates"] > plan.warmup_updates
    if plateau and "lr" not in overridden:
        differ += option_differences(as_dict(saved["cfg"].get("optimization")), cfg.optimization, ["lr"])
    if differ:
        where = " (on a GPU: it was trained in float16)" if any(d.startswith("--fp16 (") for d in differ) else ""
        raise SystemExit(f"error: {path} was trained with {', '.join(differ)}: resuming it keeps the checkpoint's "
                         "criterion, optimizer state and precision" + (" (and learning rate)" if plateau else "")
                         + f"; give its values{where}, --reset-optimizer to start the optimizer afresh, or another "
                         "SAVE_DIR for a new run")
    return resumed


def complete(plan: argparse.Namespace, argvs: list[list[str]], saved: dict) -> str | None:
    """Why the run in SAVE_DIR, resumed from SAVED, is complete (fairseq-train's stopping rules
    against its checkpoint, or this very command finished there: one of ARGVS, which differ only
    in the precision a probe would choose), None when training is left; refuses limits below it. A
    --reset-* option starts counting afresh: never complete."""
    if plan.reset_optimizer or plan.reset_dataloader or plan.reset_meters or plan.reset_lr_scheduler:
        return None
    path, done = saved["path"], []
    for option, limit, held, unit in (("--max-update", plan.max_update, saved["updates"], "updates"),
                                      ("--max-epoch", plan.max_epoch, saved["epochs"], "finished epochs")):
        if limit and held > limit:
            raise SystemExit(f"error: {path} holds {held} {unit}, more than {option} {limit}: nothing to train; "
                             f"give a larger {option}, or another SAVE_DIR for a new model")
        done += [f"{held} {unit} of {option} {limit}"] if limit and held == limit else []
    if 0 < plan.stop_time_hours < saved["hours"]:
        done.append(f"{saved['hours']:.3f} training hours of --stop-time-hours {plan.stop_time_hours} (BUDGET_HOURS)")
    marker = path.parent / DONE
    if (marker.is_file() and marker.read_text() in [argv_text(argv) for argv in argvs]
            and path.stat().st_mtime_ns <= marker.stat().st_mtime_ns):
        done.append(f"{saved['updates']} updates, and this command finished there ({marker})")
    return f"{path} holds {done[0]}" if done else None


def positions(info: dict, plan: argparse.Namespace) -> tuple[float, float]:
    """The source and target lengths fairseq-train keeps: the smaller of the task's positions and the
    model's (those the options give it; a model without them keeps the task's)."""
    task_source, task_target = info["positions"]
    return (min(task_source, getattr(plan, "max_source_positions", math.inf)),
            min(task_target, getattr(plan, "max_target_positions", math.inf)))


def within(sizes: tuple[np.ndarray, np.ndarray], limits: tuple[float, float], tokens: float) -> np.ndarray:
    """Which pairs of SIZES (source, target lengths) fairseq keeps: none longer than LIMITS or TOKENS."""
    return (sizes[0] <= min(tokens, limits[0])) & (sizes[1] <= min(tokens, limits[1]))


def training_kept(info: dict, plan: argparse.Namespace) -> np.ndarray:
    """Which training pairs fairseq-train trains on: none longer than --max-tokens or the positions."""
    return within(info["sizes"], positions(info, plan), plan.max_tokens or math.inf)


def validation_kept(info: dict, plan: argparse.Namespace) -> dict[str, np.ndarray]:
    """Which pairs of each validation split fairseq-train validates on: none longer than the positions
    (those it leaves out under --skip-invalid-size-inputs-valid-test, else fails on)."""
    return {subset: within(sizes, positions(info, plan), math.inf) for subset, sizes in info["valid"].items()}


def check_validation(info: dict, plan: argparse.Namespace) -> None:
    """Refuses validation fairseq-train would fail on in its dry run at the start (after this plan and
    the probe): pairs longer than the positions without --skip-invalid-size-inputs-valid-test, none
    left with it, pairs longer than --max-tokens-valid."""
    tokens = int(plan.max_tokens_valid or 0) or plan.max_tokens or math.inf  # a str: check_counts read it
    for subset, fit in validation_kept(info, plan).items():
        longer = "longer than the positions (--max-source-positions {}, --max-target-positions {})".format(
            *positions(info, plan))
        if not fit.all() and not plan.skip_invalid_size_inputs_valid_test:
            raise SystemExit(f"error: split '{subset}' holds {(~fit).sum()} pair(s) {longer}: fairseq-train would "
                             "fail at its start; give larger positions, or --skip-invalid-size-inputs-valid-test to "
                             "validate without them")
        if not fit.any():
            raise SystemExit(f"error: every pair of split '{subset}' is {longer}: fairseq-train would validate on "
                             "nothing and fail at its start; give larger positions")
        longest = int(np.maximum(*info["valid"][subset])[fit].max())
        if longest > tokens:
            raise SystemExit(f"error: split '{subset}' holds pairs of up to {longest} tokens, more than "
                             f"--max-tokens-valid {tokens} (unset: --max-tokens): fairseq-train would fail at its "
                             f"start; give --max-tokens-valid {longest} or more")


def batches(info: dict, plan: argparse.Namespace) -> list[np.ndarray]:
    """fairseq's own batches of the training pairs (indices of those it keeps: none longer than
    --max-tokens or the positions), in LanguagePairDataset's order, by --max-tokens, --batch-size and
    --required-batch-size-multiple."""
    src, tgt = info["sizes"]
    kept = np.flatnonzero(training_kept(info, plan))
    order = kept[np.lexsort((tgt[kept], src[kept]))]  # by source length, then target length, as fairseq orders them
    return data_utils.batch_by_size(order, None, num_tokens_vec=np.maximum(src, tgt)[order].astype(np.int64),
                                    max_tokens=plan.max_tokens, max_sentences=plan.batch_size,
                                    required_batch_size_multiple=plan.required_batch_size_multiple)


def per_epoch(info: dict, plan: argparse.Namespace) -> int:
    """Updates an epoch: fairseq's batches, shared by the processes and --update-freq (a value per
    epoch: the last, which fairseq keeps for every later epoch)."""
    count = len(batches(info, plan))
    if not count:
        raise SystemExit(f"error: no training pair of {plan.data} fits --max-tokens {plan.max_tokens} and the model's "
                         "positions: fairseq-train would train on nothing (give a larger --max-tokens, or larger "
                         "--max-source-positions/--max-target-positions)")
    return max(1, math.ceil(math.ceil(count / plan.distributed_world_size) / plan.update_freq[-1]))


def schedule(plan: argparse.Namespace, epoch: int, total: int) -> list[str]:
    """Validation and epoch checkpoints about every VALIDATE_EVERY updates (at least MIN_VALIDATIONS
    times a run), in whole epochs, or by updates for long epochs; the last epoch of --max-epoch included."""
    if epoch > LONG_EPOCH:
        interval = str(VALIDATE_EVERY * 10)
        return ["--validate-interval-updates", interval, "--save-interval-updates", interval,
                "--keep-interval-updates", "5"]
    interval = max(1, min(round(VALIDATE_EVERY / epoch), total // (MIN_VALIDATIONS * epoch)))
    while plan.max_epoch and plan.max_epoch % interval:
        interval -= 1
    return ["--validate-interval", str(interval), "--save-interval", str(interval)]


def every(epochs: int, updates: int) -> str:
    return f"every {epochs} epoch(s)" + (f" and every {updates} updates" if updates > 0 else "")


def describe(plan: argparse.Namespace, info: dict, sized: bool, why: str, ours: str, torchrun: bool) -> list[str]:
    """The plan as fairseq-train will carry it out (read from the parsed options)."""
    limits = [f"--max-update {plan.max_update}"] * bool(plan.max_update) + [f"--max-epoch {plan.max_epoch}"] * bool(
        plan.max_epoch)
    stop = " and ".join(limits) or "no update or epoch limit"
    stop += " as given" if sized else f" (default: max({MIN_UPDATES}, {EPOCHS} epochs))"
    metric = "BLEU" if plan.best_checkpoint_metric == "bleu" else plan.best_checkpoint_metric
    early = plan.patience > 0 and not plan.disable_validation
    validations = f"{plan.patience} validation{'s' * (plan.patience != 1)}"
    stop += f"; early stopping after {validations} without a better {metric}" if early else "; no early stopping"
    stop += f"; wall-clock limit {plan.stop_time_hours} h" if plan.stop_time_hours > 0 else "; no wall-clock limit"
    validation = "none" if plan.disable_validation else every(plan.validate_interval, plan.validate_interval_updates)
    saves = "none" if plan.no_save else every(plan.save_interval, plan.save_interval_updates)
    when = f"validation and checkpoints: {saves}" if saves == validation else (
        f"validation: {validation}; checkpoints: {saves}")
    rate = f"learning rate {plan.lr[0]}, --lr-scheduler {plan.lr_scheduler}"
    if plan.lr_scheduler == "reduce_lr_on_plateau":
        rate = (f"learning rate {plan.lr[0]}, x{plan.lr_shrink} after {plan.lr_patience + 1} validation(s) without "
                f"a better {metric}, {plan.warmup_updates} warmup updates")
    name = precision_name(plan.fp16, plan.amp)
    processes = f"processes: {plan.distributed_world_size}"
    if plan.distributed_world_size > 1:  # without NPROC, fairseq-train starts one per GPU itself
        launcher = "torchrun" if torchrun else "fairseq-train's own"
        processes += f" ({launcher}; --distributed-backend {plan.distributed_backend} --ddp-backend {plan.ddp_backend})"
    freq = plan.update_freq
    steady = f" from epoch {len(freq)} (--update-freq {','.join(map(str, freq))})" * (len(freq) > 1)
    parts = info["parts"]
    read = f" ({'+'.join(parts)}" + f", --upsample-primary {plan.upsample_primary}" * (len(parts) > 1) + ")"
    read *= parts != ["train"]
    dropped = int((~training_kept(info, plan)).sum())
    read += f" ({dropped} longer than --max-tokens or the positions, left out)" * bool(dropped)
    for subset, fit in validation_kept(info, plan).items():
        combined = info["valid_parts"][subset]
        read += (f"; validation on {'+'.join(combined)} (--upsample-primary {plan.upsample_primary})"
                 * (len(combined) > 1))
        read += (f"; validation leaves out {(~fit).sum()} of the {len(fit)} pairs of '{subset}' (longer than the "
                 "positions)" * (not fit.all()))
    return [f"data: {plan.data}, {'->'.join(info['direction'])}: {info['pairs']} training pairs{read}, about "
            f"{per_epoch(info, plan)} updates an epoch{steady}; "
            f"tokenization {info['tokenization']} ({info['source']}), "
            + ("removed before validation BLEU" if plan.eval_bleu_remove_bpe else "BLEU on the dictionary's tokens"),
            f"stop: {stop}", f"{when}; {rate}",
            f"precision: {name}, " + (why if name == ours else "as given in the options"), processes]


def length_and_rate(pre: argparse.Namespace, info: dict, ours: dict, sized: bool, patience: int | None,
                    budget: float | None) -> list[str]:
    """The run's length (unless given: max(MIN_UPDATES, EPOCHS epochs)), early stopping, wall-clock limit,
    validation schedule, the recipe's learning-rate components and BLEU's tokenization."""
    epoch = per_epoch(info, pre)
    total = min(pre.max_update or sys.maxsize, pre.max_epoch * epoch or sys.maxsize)
    args = []
    if not sized:
        total = round(max(MIN_UPDATES, EPOCHS * epoch), -2)
        args += ["--max-update", str(total)]
    patience = (patience or 0) if sized else (5 if patience is None else patience)
    args += ["--patience", str(patience)] + (["--stop-time-hours", str(budget)] if budget else [])
    args += schedule(pre, epoch, total)
    recipe_scheduler = dict(zip(ours["lr-scheduler"][1][::2], ours["lr-scheduler"][1][1::2]))
    lr_patience = int(recipe_scheduler["--lr-patience"]) + (info["pairs"] < SMALL)
    warmup = min(int(recipe_scheduler["--warmup-updates"]), max(1, total // 10))
    args += components(ours, {kind: getattr(pre, dest) for kind, dest in COMPONENTS.items()}, lr_patience, warmup)
    return args + (["--eval-bleu-remove-bpe", "sentencepiece"] if info["tokenization"] == "sentencepiece" else [])


def check_plan(plan: argparse.Namespace, info: dict, saved: dict | None) -> None:
    """Every check of the options fairseq-train will run with, against the data and the save folder."""
    check_counts(plan)
    check_model(plan, info)
    check_ends(plan)
    check_device(plan)
    check_validation(info, plan)
    if saved is None or plan.reset_dataloader:
        check_new_run(plan)


def settings(data: Path, save: Path, extra: list[str]) -> tuple[list[str] | None, list[str], bool]:
    """fairseq-train's arguments (None: the run is complete), the lines that describe them, and whether
    torchrun starts its processes."""
    patience = env_number("PATIENCE", int, 0, "a whole number of validations >= 0 (0: no early stopping)")
    budget = env_number("BUDGET_HOURS", float, 1e-9, "a number of hours > 0 (unset: no wall-clock limit)")
    ours, fixed = recipe()
    names = [x for kind, (name, _) in ours.items() for x in (f"--{kind}", name)]
    head, tail = [data.as_posix(), "--arch", ARCH], ["--user-dir", str(USER_DIR), *extra]
    given = vars(fairseq_options(head + names + tail, given_only=True))
    check_whole_counts(extra)
    if "save_dir" in given:
        raise SystemExit("error: --save-dir in the options: give the folder as train.sh's SAVE_DIR instead")
    check_save_outside_data(data, save)
    head[1:1] = ["--save-dir", save.as_posix()]
    gpus = 0 if given.get("cpu") or not torch.cuda.is_available() else torch.cuda.device_count()
    slurm = given.get("distributed_port", 0) > 0 and bool(os.environ.get("SLURM_STEP_NODELIST",
                                                                        os.environ.get("SLURM_JOB_NODELIST")))
    size, torchrun = world(gpus, given.get("distributed_world_size"), slurm)
    scale = distributed(size, gpus)
    pre = fairseq_options(head + names + fixed + ["--distributed-world-size", str(size)] + tail)
    check_counts(pre)
    info = corpus(pre)
    sized = "max_update" in given or "max_epoch" in given
    args = length_and_rate(pre, info, ours, sized, patience, budget)
    saved = saved_progress(pre)
    several = several_machines(slurm)
    machine, why = precision(gpus > 0, saved, several, given)  # None: measured once training is left
    choices = [machine] if machine is not None else CPU_CHOICES
    argvs = [head + args + choice + scale + fixed + tail for choice in choices]
    plan = fairseq_options(argvs[0])
    check_plan(plan, info, saved)
    resumed = check_resume(plan, saved) if saved is not None else None
    done = complete(plan, argvs, saved) if saved is not None else None
    if done:
        return None, [f"the run is complete: {done}; nothing to do (a larger --max-update or --max-epoch "
                      "trains on)"], False
    # a train.sh on each machine, or on each of SLURM's tasks, shares the folder: fairseq-train's rank 0 holds it
    held_folder(save, hold=not several and not (slurm and not torchrun))
    if machine is None:
        machine, why = measured_precision(training_work(*(resumed or built(plan))))  # a model built once
    argv = head + args + machine + scale + fixed + tail
    plan = plan if argv == argvs[0] else fairseq_options(argv)
    ours_name = precision_name("--fp16" in machine, "--amp" in machine)
    return argv, describe(plan, info, sized, why, ours_name, torchrun), torchrun


def train(argv: list[str], save: Path) -> None:
    """fairseq-train on ARGV in this process, as its console script runs it (its exit status is this process's)."""
    gc.collect()  # the precision probe's model goes before training builds its own
    if fairseq_options(argv).distributed_world_size > 1:
        release_folder(str(save))  # fairseq starts a process per GPU, and the first one takes the lock
    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        del sys.path[0]  # scripts/, whose evaluate.py or prepare.py would hide packages of those names
    sys.argv = ["fairseq-train", *imported_user_dir(argv)]
    logging.getLogger().handlers[:] = []  # fairseq-train's logging.basicConfig (format, INFO, stdout) then applies
    from fairseq_cli import train as fairseq_train
    # the patches' line, which a fresh fairseq-train logs on import (fairseq's own import-time notes are not repeated)
    patches.logger.info(patches.summary())
    sys.exit(fairseq_train.cli_main())


def to_log(fd: int) -> None:
    """stdout and stderr onto FD (train.sh's tee into SAVE_DIR/train.log), also where either was closed."""
    for number, name in ((1, "stdout"), (2, "stderr")):
        stream = getattr(sys, name)
        if stream is not None:
            stream.flush()
        os.dup2(fd, number)
        if stream is None:  # Python starts without it when the descriptor is closed
            setattr(sys, name, open(number, "w", buffering=1, closefd=False))


def main() -> None:
    args, log_fd = sys.argv[1:], None
    if args[:1] == ["--log-fd"]:
        log_fd, args = "".join(args[1:2]), args[2:]
    if len(args) < 3 or args[0] in ("-h", "--help") or not (log_fd is None or log_fd.isdigit()):
        print(__doc__)
        raise SystemExit(0 if args[:1] in (["-h"], ["--help"]) else 2)
    args_file, data, save, *extra = args
    argv, plan_lines, torchrun = settings(Path(data).resolve(), Path(save), extra)
    if argv is not None:
        Path(args_file).write_text(argv_text(argv))
        Path(args_file + LAUNCHER).write_text("torchrun\n" if torchrun else "fairseq-train\n")
        if log_fd is not None:
            to_log(int(log_fd))
    print("".join(f"train.sh: {line}\n" for line in plan_lines), end="", flush=True)
    if argv is not None and log_fd is not None and not torchrun:
        train(argv, Path(save))


if __name__ == "__main__":
    main()
