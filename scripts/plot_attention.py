"""Translate one sentence with an attention model and draw its attention weights as a heat map.

Usage:
    python scripts/plot_attention.py MODEL_DIR CHECKPOINT "Ein Hund läuft durch den Schnee." --out attention.png
    python scripts/plot_attention.py runs/multi30k/de-en runs/attn/checkpoint_best.pt "Zwei Männer ..." \\
        --out docs/attention_de-en.png

MODEL_DIR is laid out by scripts/prepare.py (``spm.model``, ``bin/``). The beam-5 translation's
weights (fairseq's per-hypothesis ``attention``: rows are target pieces, columns source pieces
and the end-of-sentence token) are drawn as they are; each row sums to 1.
"""
import argparse
from pathlib import Path

from user_dir.checkpoint_files import CheckpointError, absolute_ensemble, split_ensemble
from user_dir.files import not_a_file
from user_dir.workflow import check_figure, positive, pyplot, save_figure, script_main


def attention(model_dir: Path, checkpoint: Path, sentence: str, beam: int):
    """(source pieces, target pieces, T x S weights) of the best hypothesis."""
    from user_dir.models.rnn_seq2seq import RNNSeq2SeqModel  # here: refusals before it need no fairseq

    try:
        paths = split_ensemble(str(checkpoint))
        hub = RNNSeq2SeqModel.from_pretrained(str(model_dir), checkpoint_file=absolute_ensemble(str(checkpoint)))
    except (CheckpointError, FileNotFoundError, ValueError) as e:  # from_pretrained names what is wrong
        raise SystemExit(f"error: {e}") from None
    for path, model in zip(paths, hub.models):  # an ensemble's weights: the mean of its members'
        if model.decoder.attention is None:
            raise SystemExit(f"error: {path} has no attention (--decoder-attention none): nothing to draw")
    tokens = hub.encode(sentence)
    best = hub.generate([tokens], beam=beam)[0][0]
    if best["attention"].numel() == 0:  # answered with an empty translation (the warning says why)
        raise SystemExit(f"error: {sentence!r} got an empty translation (the warning above says why): nothing to draw")
    src = [hub.src_dict[t] for t in tokens]
    tgt = [hub.tgt_dict[t] for t in best["tokens"]]
    return src, tgt, best["attention"].float().t().numpy()  # S x T -> T x S


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_dir", type=Path)
    p.add_argument("checkpoint", type=Path)
    p.add_argument("sentence")
    p.add_argument("--beam", type=positive, default=5)
    p.add_argument("--out", type=Path, default=Path("attention.png"), help="a .png, .pdf, .svg or .jpg file")
    args = p.parse_args()
    if not args.sentence.strip():
        raise SystemExit("error: the sentence is empty: nothing to translate")
    if not args.model_dir.is_dir():
        raise SystemExit(f"error: MODEL_DIR {args.model_dir} {not_a_file(args.model_dir) or 'is not a folder'}")
    if not (args.model_dir / "bin").is_dir():
        raise SystemExit(f"error: MODEL_DIR {args.model_dir} holds no bin/ folder: give the folder scripts/prepare.py "
                         "made (spm.model, bin/), or one laid out as it is")
    check_figure(args.out, [args.model_dir, args.checkpoint])
    src, tgt, weights = attention(args.model_dir, args.checkpoint, args.sentence, args.beam)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(0.45 * len(src) + 2, 0.4 * len(tgt) + 1.5))
    ax.imshow(weights, cmap="Greys", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(src)), src, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(tgt)), tgt, fontsize=8)
    ax.set_xlabel("source pieces")
    ax.set_ylabel("translation pieces")
    fig.tight_layout()
    save_figure(fig, args.out, dpi=110)
    print(f"{' '.join(tgt)}\nwrote {args.out}")


if __name__ == "__main__":
    script_main(main)
