cd /work/main && source scripts/env.sh
unset GOMP_SPINCOUNT RNN_SEQ2SEQ_SPIN  # libgomp's default (the runs were made before env.sh set it)
t() { local name=$1; shift; rm -rf /tmp/omp/$name
  env "$@" AMP=0 bash scripts/train.sh runs/multi30k/de-en/bin /tmp/omp/$name --arch rnn_seq2seq_attention_multi30k --max-update 40 --no-save --disable-validation > /tmp/omp/$name.log 2>&1
  echo "$name $(grep -o 'done training in [0-9.]* seconds' /tmp/omp/$name.log)"; }
for r in 1 2 3; do
t m_idle_default$r
t m_idle_spin3k$r GOMP_SPINCOUNT=3000
t m_idle_spin10k$r GOMP_SPINCOUNT=10000
done
python3 -c 'while 1: pass' & busy=$!
t m_busy_default
t m_busy_spin10k GOMP_SPINCOUNT=10000
kill $busy
