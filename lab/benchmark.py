"""Benchmark rnn_seq2seq (fixed context, and additive attention) against fairseq's built-in
`lstm` (with and without attention) at matched sizes.

Usage:
    python lab/benchmark.py                                   # Multi30k bin if prepared, else a generated corpus
    python lab/benchmark.py --data runs/multi30k/de-en/bin --repeats 3 --out runs/bench
    python lab/benchmark.py --emb 32 --hidden 64 --train-batches 3 --decode-sentences 20   # smoke
    python lab/benchmark.py --data D --worker rnn_seq2seq --profile 15   # one model: where beam search spends time
    python lab/benchmark.py --data D --pair "rnn_seq2seq attention" --pairs 12   # training ratio, in turns

Every model sees the same binarized data, the same batches (same --max-tokens and seed), the
same threads and device (GPU when present, else CPU). Each measurement runs in its own process,
the models alternating within each repeat, and the median is reported:
  * training target tokens/s (forward + backward + Adam step) after warm-up batches; the
    plugin's models with masked_ce (no output layer on padding), fairseq's with cross_entropy
    (--criterion C: every model with C),
  * beam-5 and greedy decoding sentences/s on the test split, every hypothesis forced to
    --decode-len tokens (the models are untrained: equal work, not equal luck with EOS), and on
    CPU the share of that time spent in the model (encoder, decoder steps with the output layer
    and log-softmax, state reordering) rather than in fairseq's search,
  * peak resident memory (CPU) or peak allocated GPU memory (torch.cuda.max_memory_allocated),
    after training and at the end,
  * training FLOPs per target token, and the achieved FLOP/s as a share of the matrix-multiply
    peak measured here in the same precision (float32, bfloat16 or float16).
--bf16 runs training and decoding under bfloat16 autocast (what --amp does on CPU), --fp16 under
float16 autocast (what --amp does on CUDA); float32 weights either way. --half: float16 weights and
fairseq's FP16Optimizer (dynamic loss scale), what fairseq-train --fp16 does: scripts/train.sh's
precision on a GPU, for every model. --graphs adds the plugin's models with --decoder-graphs on; a
model with graphs first runs the timed batches and sentences once untimed (their shapes' graphs
captured; that pass's training seconds are recorded as first_pass_train_s).
Prints a table with ratios to fairseq lstm (attention), writes OUT/benchmark.json and OUT/benchmark.png.
A worker that fails or outlives --worker-timeout is listed under "failed" and not run again; the
others go on (exit 1 at the end); OUT/runs.jsonl gets each worker's outcome as it ends.
--pair M instead trains M and fairseq lstm in one process, in turns on the same batches, and
gives the ratio of their training speeds for each pair of turns (OUT/pair.json).
"""
import argparse
import contextlib
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

from user_dir import workflow  # fairseq-free: the parent process stays torch-free
from user_dir.machine import cpu_name

ROOT, USER_DIR = workflow.ROOT, str(workflow.USER_DIR)
OURS, THEIRS = ["--criterion", "masked_ce"], ["--criterion", "cross_entropy"]  # each model with its own loss
MODELS = {  # name -> fairseq-train args (attention is lstm's default)
    "rnn_seq2seq": ["--arch", "rnn_seq2seq", *OURS],
    "rnn_seq2seq attention": ["--arch", "rnn_seq2seq", "--decoder-attention", "additive", *OURS],
    "fairseq lstm": ["--arch", "lstm", *THEIRS],
    "fairseq lstm no attention": ["--arch", "lstm", "--decoder-attention", "0", *THEIRS],
}
GRAPHED = {  # --graphs: the plugin's models with --decoder-graphs on as well (CUDA graphs; the same models on a CPU)
    f"{name} graphs": [*MODELS[name], "--decoder-graphs", "on"] for name in ("rnn_seq2seq", "rnn_seq2seq attention")
}
REFERENCE = "fairseq lstm"


def models_of(args) -> dict:
    """The models measured, in order: the four; with ``--graphs`` also the plugin's two with CUDA graphs,
    the attention model's pair and the reference first (a run cut short by its time limit keeps those)."""
    if not args.graphs:
        return MODELS
    first = ["rnn_seq2seq attention graphs", REFERENCE, "rnn_seq2seq attention", "rnn_seq2seq graphs"]
    every = {**MODELS, **GRAPHED}
    return {name: every[name] for name in first + [m for m in every if m not in first]}


def matmul_peak_gflops(device: str, dtype_name: str = "float32", n: int = 2048, reps: int = 10) -> float:
    """Measured matrix-multiply throughput on this device in ``dtype_name`` (the precision the
    models ran in: each precision's share of peak is against its own peak)."""
    import torch

    dtype = getattr(torch, dtype_name)
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    for _ in range(2):
        a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


def sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def train_flops(model, criterion, sample) -> float:
    """FLOPs of one forward + backward on ``sample``; fused RNN layers are counted analytically
    (torch's flop counter does not see inside them): 2 x rows x gates x H x (in + H), x3 with backward.
    Counted step by step (CUDA graphs off: the same arithmetic, none of a capture's warm-up)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    graphs = getattr(model.decoder, "graphs", None)
    if graphs is not None:
        model.decoder.graphs = None

    rnn_flops = []

    def hook(module, inputs, output):
        x = inputs[0]
        rows = x.data.size(0) if isinstance(x, torch.nn.utils.rnn.PackedSequence) else x.size(0) * x.size(1)
        gates = 4 if isinstance(module, torch.nn.LSTM) else 3
        dirs = 2 if module.bidirectional else 1
        h, total = module.hidden_size, 0
        for layer in range(module.num_layers):
            inp = module.input_size if layer == 0 else h * dirs
            total += 2 * rows * gates * h * (inp + h) * dirs
        rnn_flops.append(3 * total)

    rnns = [m for m in model.modules() if isinstance(m, (torch.nn.LSTM, torch.nn.GRU))]
    handles = [m.register_forward_hook(hook) for m in rnns]
    with FlopCounterMode(display=False) as counter:
        loss, _, _ = criterion(model, sample)
        loss.backward()
    for h in handles:
        h.remove()
    model.zero_grad()
    if graphs is not None:
        model.decoder.graphs = graphs
    return counter.get_total_flops() + sum(rnn_flops)


def build(args, name: str) -> dict:
    """Model ``name`` with its criterion, Adam, the task (train and test splits loaded) and the
    timed training batches (warm-up first), on the GPU when there is one."""
    import torch
    from fairseq import optim, options, tasks, utils
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model_args = models_of(args)[name] + (["--criterion", args.criterion] if args.criterion else [])
    sizes = [f"--{side}-{what}" for side in ("encoder", "decoder") for what in ("embed-dim", "hidden-size", "layers")]
    values = [args.emb, args.hidden, args.layers] * 2
    cli = [args.data, "--user-dir", USER_DIR, *model_args,
           *[str(x) for pair in zip(sizes, values) for x in pair],
           "--dropout", "0.1", "--optimizer", "adam", "--lr", "1e-3",
           "--max-tokens", str(args.max_tokens), "--required-batch-size-multiple", "1", "--seed", "1",
           "--num-workers", "0", *(["--decoder-out-embed-dim", str(args.hidden)] if "lstm" in model_args else []),
           *(["--cpu"] if device == "cpu" else []), *(["--fp16"] if args.half else [])]
    cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(options.get_training_parser(), cli))
    utils.import_user_module(cfg.common)
    torch.manual_seed(1)
    task = tasks.setup_task(cfg.task)
    for split in ("train", "test"):
        task.load_dataset(split)
    model = task.build_model(cfg.model)
    model = (model.half() if args.half else model).to(device)
    criterion = task.build_criterion(cfg.criterion).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = (optim.FP16Optimizer.build_optimizer(cfg, params) if args.half  # as fairseq's Trainer
                 else optim.build_optimizer(cfg.optimizer, params))
    batches = task.get_batch_iterator(task.dataset("train"), max_tokens=args.max_tokens, seed=1,
                                      required_batch_size_multiple=1).next_epoch_itr(shuffle=True)
    n = args.warmup_batches + args.train_batches
    samples = [utils.move_to_cuda(s) if device == "cuda" else s for _, s in zip(range(n), batches)]
    return {"device": device, "task": task, "model": model.train(), "criterion": criterion, "optimizer": optimizer,
            "samples": samples, "criterion_name": cfg.criterion._name, "graphs": "--decoder-graphs" in model_args}


def autocast(args, device: str):
    import torch

    dtype = torch.bfloat16 if args.bf16 else torch.float16 if args.fp16 else None
    return torch.autocast(device, dtype=dtype, enabled=dtype is not None)


def train_tokens_per_s(args, run: dict, samples: list) -> float:
    """Training steps (forward + backward + Adam) over ``samples``: target tokens per second (0
    for no samples: --warmup-batches 0)."""
    tokens, seconds = 0, 0.0
    for sample in samples:
        sync(run["device"])
        start = time.perf_counter()
        with autocast(args, run["device"]):
            loss, _, _ = run["criterion"](run["model"], sample)
        run["optimizer"].backward(loss)  # scaled under --half
        try:
            run["optimizer"].clip_grad_norm(0.0)  # as fairseq's Trainer: unscales, checks for overflow
            run["optimizer"].step()
        except OverflowError:  # --half's loss scale lowered; fairseq skips the update too
            pass
        run["optimizer"].zero_grad()
        sync(run["device"])
        tokens, seconds = tokens + sample["ntokens"], seconds + time.perf_counter() - start
    return tokens / seconds if samples else 0.0


def worker(args) -> dict:
    """One model, one process: train-step timing, decoding timing, peak memory."""
    import torch

    run = build(args, args.worker)
    device, model, samples = run["device"], run["model"], run["samples"]
    flops = train_flops(model, run["criterion"], samples[-1]) / samples[-1]["ntokens"]  # the work done, per real token
    train_tokens_per_s(args, run, samples[: args.warmup_batches])
    timed = samples[args.warmup_batches :]
    result = {}
    if run["graphs"]:  # capture every timed batch's graphs first
        start = time.perf_counter()
        train_tokens_per_s(args, run, timed)
        result["first_pass_train_s"] = time.perf_counter() - start
    result.update(train_tokens_per_s=train_tokens_per_s(args, run, timed), train_flops_per_token=flops)
    if device == "cuda":
        result["peak_memory_train_mb"] = torch.cuda.max_memory_allocated() / 2**20
    model.eval()
    for beam, key in ((5, "beam5"), (1, "greedy")):
        if run["graphs"]:
            decode(args, run, beam)
        result.update({f"{key}_{k}": v for k, v in decode(args, run, beam).items()})
    result["peak_memory_mb"] = (torch.cuda.max_memory_allocated() / 2**20 if device == "cuda"
                                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    result["criterion"] = run["criterion_name"]
    result["device"] = device_name(device)
    return result


def decode(args, run: dict, beam: int) -> dict:
    """Beam search over the first --decode-sentences test sentences: sentences per second and,
    on CPU, the share of that time spent in the model."""
    import torch
    from fairseq import utils

    device, task, model = run["device"], run["task"], run["model"]
    # every hypothesis gets exactly --decode-len tokens, so untrained models do equal work
    gen = task.build_generator([model], argparse.Namespace(
        beam=beam, max_len_a=0, max_len_b=args.decode_len, min_len=args.decode_len))
    in_model = time_model_calls(gen.model) if device == "cpu" else None
    itr = task.get_batch_iterator(task.dataset("test"), max_sentences=args.decode_batch, seed=1,
                                  required_batch_size_multiple=1).next_epoch_itr(shuffle=False)
    done, seconds = 0, 0.0
    profiling = args.profile and beam == 5
    with torch.profiler.profile() if profiling else contextlib.nullcontext() as profile:
        for sample in itr:
            if done >= args.decode_sentences:
                break
            sample = utils.move_to_cuda(sample) if device == "cuda" else sample
            sync(device)
            start = time.perf_counter()
            with torch.no_grad(), autocast(args, device):
                task.inference_step(gen, [model], sample)
            sync(device)
            done, seconds = done + sample["nsentences"], seconds + time.perf_counter() - start
    if profiling:
        print(profile.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.profile), file=sys.stderr)
    result = {"sentences_per_s": done / seconds}
    if in_model is not None:
        result["model_share"] = in_model["seconds"] / seconds
    return result


def paired(args) -> dict:
    """``--pair MODEL``: MODEL and fairseq lstm in one process, trained in turns on the same
    batches (A B, then B A, ...); each pair of turns gives a ratio of training speeds. Drift in
    the machine's speed hits both turns of a pair nearly alike, which the table's separate
    processes, minutes apart, do not ensure."""
    runs = {name: build(args, name) for name in (args.pair, REFERENCE)}
    for run in runs.values():
        train_tokens_per_s(args, run, run["samples"][: args.warmup_batches])
    speeds = {name: [] for name in runs}
    for i in range(args.pairs):
        for name in list(runs)[:: 1 if i % 2 == 0 else -1]:
            speeds[name].append(train_tokens_per_s(args, runs[name], runs[name]["samples"][args.warmup_batches :]))
    ratios = [a / b for a, b in zip(speeds[args.pair], speeds[REFERENCE])]
    return {"device": device_name(runs[REFERENCE]["device"]), "models": [args.pair, REFERENCE],
            "criteria": [r["criterion_name"] for r in runs.values()],
            "train_tokens_per_s": speeds, "ratios": ratios, "median_ratio": statistics.median(ratios),
            "quartiles": statistics.quantiles(ratios, n=4)}


def device_name(device: str) -> str:
    import torch

    return torch.cuda.get_device_name() if device == "cuda" else f"cpu: {cpu_name()} ({os.cpu_count()} cores)"


def precision_of(args) -> tuple:
    """(the matrix multiplies' dtype, the precision in words)."""
    if args.half:
        return "float16", "float16 weights, FP16Optimizer (fairseq-train --fp16)"
    if args.bf16 or args.fp16:
        return ("bfloat16", "bfloat16 autocast") if args.bf16 else ("float16", "float16 autocast")
    return "float32", "float32"


def setting(args) -> dict:
    """What a record's numbers depend on besides the code, and the command that made it."""
    import torch

    return {"threads": torch.get_num_threads(), "python": platform.python_version(), "torch": torch.__version__,
            "precision": precision_of(args)[1],
            "data": args.data,
            "sizes": {"emb": args.emb, "hidden": args.hidden, "layers": args.layers, "max_tokens": args.max_tokens},
            "command": shlex.join(["python", "lab/benchmark.py", *sys.argv[1:]])}


MODEL_CALLS = ("forward_encoder", "reorder_encoder_out", "reorder_incremental_state", "forward_decoder")


def time_model_calls(ensemble) -> dict:
    """Add up the time fairseq's SequenceGenerator spends in the model: the encoder, every decoder
    step (output layer and log-softmax included) and the reordering of states. The rest of a
    decoding step is the search. Wraps this generator's methods only (CPU: no synchronisation)."""
    spent = {"seconds": 0.0}
    for name in MODEL_CALLS:
        def timed(*args, _call=getattr(ensemble, name), **kwargs):
            start = time.perf_counter()
            try:
                return _call(*args, **kwargs)
            finally:
                spent["seconds"] += time.perf_counter() - start
        setattr(ensemble, name, timed)
    return spent


def default_data(out: Path) -> str:
    """The prepared Multi30k data when present, else a generated toy corpus (binarized once)."""
    m30k = ROOT / "runs" / "multi30k" / "de-en" / "bin"
    if m30k.exists():
        return str(m30k)
    gen = out / "generated"
    if not (gen / "bin").exists():
        subprocess.run([sys.executable, ROOT / "scripts" / "make_toy_data.py", gen, "--train", "20000",
                        "--test", "500", "--min-len", "5", "--max-len", "25"], check=True)
        subprocess.run(["fairseq-preprocess", "--source-lang", "src", "--target-lang", "tgt", "--joined-dictionary",
                        "--trainpref", gen / "train", "--validpref", gen / "valid", "--testpref", gen / "test",
                        "--destdir", gen / "bin", "--workers", "2"], check=True, capture_output=True)
    return str(gen / "bin")


def plot(summary: dict, path: Path) -> bool:
    """The table's main numbers as bars in ``path``; False where matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        return False

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ["train_tokens_per_s", "beam5_sentences_per_s", "greedy_sentences_per_s", "peak_memory_mb"]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3))
    models = list(summary["models"])
    colors = dict(zip({**MODELS, **GRAPHED}, ["tab:blue", "tab:cyan", "tab:gray", "silver", "tab:green", "tab:olive"]))
    for ax, key in zip(axes, keys):
        vals = [summary["models"][m][key] for m in models]
        ax.bar(range(len(models)), vals, color=[colors[m] for m in models])
        ax.set_xticks(range(len(models)), [m.replace(" ", "\n", 1) for m in models], fontsize=6)
        ax.set_title(key.replace("_", " "), fontsize=9)
        ax.tick_params(labelsize=7)
    ratio = summary["ratios"].get("rnn_seq2seq")
    fig.suptitle(f"{summary['device']}, {summary['precision']}" + (": rnn_seq2seq / fairseq lstm = " + ", ".join(
        f"{ratio[k]:.2f}" for k in keys) if ratio else ""), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return True


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="binarized data (default: Multi30k de-en if prepared, else generated)")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench")
    p.add_argument("--emb", type=int, default=256)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--max-tokens", type=int, default=4096)
    p.add_argument("--warmup-batches", type=int, default=3)
    p.add_argument("--train-batches", type=int, default=20)
    p.add_argument("--decode-sentences", type=int, default=500, help="test sentences decoded per measurement")
    p.add_argument("--decode-batch", type=int, default=64)
    p.add_argument("--decode-len", type=int, default=20, help="tokens generated per sentence")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--worker-timeout", type=float, default=0, metavar="S",
                   help="the table: stop a model's worker after S seconds and record it as failed (0: no limit)")
    p.add_argument("--criterion", choices=["masked_ce", "cross_entropy"],
                   help="train every model with this loss (default: each its own, masked_ce for the plugin's models, "
                        "cross_entropy for fairseq's): separates what the loss gains from what the model gains")
    precision = p.add_mutually_exclusive_group()
    precision.add_argument("--bf16", action="store_true", help="bfloat16 autocast (float32 weights), as --amp on CPU")
    precision.add_argument("--fp16", action="store_true", help="float16 autocast (float32 weights), as --amp on CUDA")
    precision.add_argument("--half", action="store_true",
                           help="float16 weights and FP16Optimizer, as fairseq-train --fp16 (train.sh's on a GPU)")
    p.add_argument("--graphs", action="store_true",
                   help="also the plugin's models with --decoder-graphs on (CUDA graphs), side by side")
    p.add_argument("--pair", choices=[m for m in {**MODELS, **GRAPHED} if m != REFERENCE],
                   help="train this model and fairseq lstm in one process, in turns (--pairs pairs), instead of the "
                        "table: the per-pair ratios of training speed, in OUT/pair.json")
    p.add_argument("--pairs", type=int, default=12)
    p.add_argument("--worker", choices=list({**MODELS, **GRAPHED}),
                   help="measure this model only, in this process; prints its JSON")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="with --worker: print the N operators of beam-5 decoding with the most CPU time "
                        "(torch.profiler)")
    args = p.parse_args()
    if args.profile and not args.worker:
        p.error("--profile needs --worker MODEL")
    if args.worker_timeout < 0:
        p.error(f"--worker-timeout must be 0 (no limit) or more, not {args.worker_timeout:g}")
    if args.worker:
        print(json.dumps(worker(args)))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    args.data = args.data or default_data(args.out)
    if args.pair:
        if args.pairs < 2:
            p.error("--pairs must be at least 2")
        record = {**paired(args), **setting(args)}
        (args.out / "pair.json").write_text(json.dumps(record, indent=2) + "\n")
        for i, r in enumerate(record["ratios"]):
            speeds = ", ".join(f"{m} {record['train_tokens_per_s'][m][i]:.0f}" for m in record["models"])
            print(f"pair {i + 1}: {speeds} target tokens/s: {r:.3f}x")
        print(f"{args.pair} / {REFERENCE}, training: median {record['median_ratio']:.3f}x, quartiles "
              + ", ".join(f"{q:.3f}" for q in record["quartiles"]) + f"; wrote {args.out / 'pair.json'}")
        return
    runs, failed = measure(args)
    import torch

    precision = precision_of(args)[0]
    peak = matmul_peak_gflops("cuda" if torch.cuda.is_available() else "cpu", precision)
    summary = {**summarize(runs, failed, peak, precision), **setting(args)}
    (args.out / "benchmark.json").write_text(json.dumps(summary, indent=2) + "\n")
    plotted = bool(summary["models"]) and plot(summary, args.out / "benchmark.png")
    print_table(summary, args.data)
    print(f"wrote {args.out / 'benchmark.json'}" + (f" and {args.out / 'benchmark.png'}" if plotted
                                                     else " (no plot: no model measured, or no matplotlib)"))
    if failed:
        raise SystemExit(f"{len(failed)} of {len(models_of(args))} models failed: {', '.join(failed)} "
                         f"(their errors above; runs.jsonl and benchmark.json hold the others)")


def measure(args) -> tuple:
    """Each model in its own worker process, the models alternating within each repeat. A worker that
    fails or outlives --worker-timeout is recorded with its error and not run again; the others go on,
    and the model's earlier repeats are left out of the medians too. Every worker's outcome is
    appended to OUT/runs.jsonl at once, so a run stopped midway keeps them."""
    passthrough = [a for a in sys.argv[1:] if a not in ("--data", args.data)] + ["--data", args.data]
    runs, failed = {m: [] for m in models_of(args)}, {}
    log = args.out / "runs.jsonl"
    log.write_text("")
    for r in range(args.repeats):
        for m in [m for m in runs if m not in failed]:  # alternate, so drift in machine load hits both
            result, error = run_worker(passthrough, m, args.worker_timeout)
            if error:
                failed[m] = error
            else:
                runs[m].append(result)
            with log.open("a") as f:
                f.write(json.dumps({"model": m, "repeat": r + 1, **({"error": error} if error else result)}) + "\n")
            print(f"repeat {r + 1}/{args.repeats} {m}: {error or result}", file=sys.stderr)
    return {m: rs for m, rs in runs.items() if m not in failed}, failed


def run_worker(passthrough: list, model: str, timeout: float) -> tuple:
    """(the worker's JSON, None), or (None, its error in one line) with its stderr's end printed."""
    try:
        proc = subprocess.run([sys.executable, __file__, *passthrough, "--worker", model],
                              capture_output=True, text=True, timeout=timeout or None)
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else e.stderr or ""  # bytes, or None
        show_stderr(model, err)
        return None, f"timed out after {timeout:g} s (--worker-timeout)"
    if proc.returncode != 0:
        show_stderr(model, proc.stderr)
        return None, f"exit {proc.returncode}: {last_line(proc.stderr)}"
    try:
        return json.loads(last_line(proc.stdout)), None
    except json.JSONDecodeError:
        show_stderr(model, proc.stderr)
        return None, f"no JSON result; its last line: {last_line(proc.stdout)!r}"


def last_line(text: str) -> str:
    """The last line of ``text`` that is not blank ("" if none)."""
    return next((line.strip() for line in reversed(text.splitlines()) if line.strip()), "")


def show_stderr(model: str, stderr: str) -> None:
    """A failed worker's stderr, its end, where the run's log shows it."""
    if stderr.strip():
        print(f"{model} worker's stderr:\n{stderr[-4000:]}", file=sys.stderr)


def summarize(runs: dict, failed: dict, peak: float, precision: str) -> dict:
    """Medians over the repeats, FLOP/s as a share of the matmul peak, ratios to fairseq lstm
    (none when it failed), and the failed models with their errors."""
    models = {m: {k: statistics.median(r[k] for r in rs) for k in rs[0] if k not in ("device", "criterion")}
              for m, rs in runs.items()}
    for m in models.values():
        m["train_gflops_per_s"] = m["train_tokens_per_s"] * m["train_flops_per_token"] / 1e9
        m["share_of_matmul_peak"] = m["train_gflops_per_s"] / peak
    ref = models.get(REFERENCE, {})
    return {
        "device": next((rs[0]["device"] for rs in runs.values()), None), "matmul_peak_gflops": peak,
        "matmul_peak_precision": precision, "repeats": max((len(rs) for rs in runs.values()), default=0),
        "criteria": {m: rs[0]["criterion"] for m, rs in runs.items()}, "models": models, "failed": failed,
        "ratios": {m: {k: v / ref[k] for k, v in r.items() if k in ref} for m, r in models.items()
                   if ref and m != REFERENCE},
    }


def print_table(summary: dict, data: str) -> None:
    """The medians, a column a model, each with its ratio to fairseq lstm; then the failed models."""
    models, ratios = summary["models"], summary["ratios"]
    print(f"device: {summary['device']}, threads {summary['threads']}, "
          f"matmul peak {summary['matmul_peak_gflops']:.0f} GFLOP/s, data {data}")
    print(f"{'metric':26s}" + "".join(f"{m:>31s}" for m in models) + "   (x fairseq lstm)")
    for k in dict.fromkeys(key for m in models.values() for key in m):
        cells = [f"{models[m][k]:21.4g}" + (f" ({ratios[m][k]:5.2f}x)" if k in ratios.get(m, {}) else " " * 10)
                 if k in models[m] else " " * 31 for m in models]
        print(f"{k:26s}" + "".join(cells))
    for m, error in summary["failed"].items():
        print(f"failed: {m}: {error}")


if __name__ == "__main__":
    main()
