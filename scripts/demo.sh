#!/usr/bin/env bash
# Set up the environment (first run) and run the whole workflow on the shipped toy corpus:
# fairseq-preprocess -> fairseq-train -> fairseq-generate (beam 5) -> sacrebleu.
#
# Usage: bash scripts/demo.sh [OUT_DIR]        (default: runs/demo)
# The toy task: target = source reversed, each word translated (eins zwei -> two one).
# OUT_DIR is replaced only when an earlier demo made it (it holds .demo); any other folder is refused.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-runs/demo}"
if [ -e "$out" ] && [ ! -f "$out/.demo" ]; then
    echo "error: $out exists and was not made by demo.sh: name another folder (bash scripts/demo.sh OUT_DIR)" >&2
    exit 2
fi
source scripts/env.sh
rm -rf "$out" && mkdir -p "$out" && touch "$out/.demo"

fairseq-preprocess --source-lang src --target-lang tgt --joined-dictionary \
    --trainpref data/toy/train --validpref data/toy/valid --testpref data/toy/test \
    --destdir "$out/bin" --workers 1 > "$out/preprocess.log"

fairseq-train "$out/bin" --user-dir user_dir \
    --arch rnn_seq2seq --encoder-embed-dim 64 --decoder-embed-dim 64 \
    --encoder-hidden-size 128 --decoder-hidden-size 128 \
    --criterion masked_ce --optimizer adam --lr 5e-3 --clip-norm 1.0 \
    --max-tokens 400 --max-update 400 --required-batch-size-multiple 1 \
    --save-dir "$out/ckpt" --no-epoch-checkpoints --seed 1 \
    --num-workers 0 --no-progress-bar --log-interval 100 2>&1 | tee "$out/train.log" | grep -E "valid on|done training"

python scripts/evaluate.py "$out/bin" "$out/ckpt/checkpoint_best.pt" --ref data/toy/test.tgt \
    --beam 5 --hyp-out "$out/test.hyp" --json "$out/test.json"
