# The precision probe on the AMD EPYC: Multi30k probes (3 fresh caches per preset), 40-update speeds, precision_check on the toy corpus.
set -x
cd /work/main && source scripts/env.sh
L=/tmp/epyc
git rev-parse --short HEAD; lscpu | grep "Model name"; grep -o 'avx512_bf16\|amx_bf16\|avx512_fp16' /proc/cpuinfo | sort -u | tr '\n' ' '; echo
[ -d runs/multi30k/de-en/bin ] || python scripts/prepare.py --raw-dir ../shared/data/multi30k --out runs/multi30k/de-en > $L/prepare.log 2>&1
for c in 1 2 3; do
 for arch in rnn_seq2seq_attention_multi30k rnn_seq2seq_multi30k; do
  s=$(date +%s.%N)
  XDG_CACHE_HOME=$L/c$c python scripts/train_settings.py $L/args runs/multi30k/de-en/bin $L/save --arch $arch --max-update 5 2>&1 | grep "precision:"
  echo "train_settings.py: $(echo "$(date +%s.%N)-$s" | bc) s"
 done
done > $L/probe.log
LOGS=$L/short bash -c 'mkdir -p $LOGS && bash docs/results/precision/short_40_updates.sh' > $L/short_40_updates.log 2>&1
mkdir -p $L/c && cp data/toy/train.src $L/c/corpus.de && cp data/toy/train.tgt $L/c/corpus.en
rm -rf $L/toy && python scripts/prepare.py --corpus $L/c/corpus --src de --tgt en --out $L/toy > $L/toy_prepare.log 2>&1
python lab/precision_check.py $L/toy/bin > $L/precision_check.log 2>&1; echo "precision_check exit $?"
echo done
