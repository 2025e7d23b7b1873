cd /work/main && source scripts/env.sh
unset GOMP_SPINCOUNT RNN_SEQ2SEQ_SPIN  # libgomp's default (the runs were made before env.sh set it)
t() { local name=$1; shift; rm -rf /tmp/omp/$name
  env "$@" bash scripts/train.sh runs/multi30k/de-en/bin /tmp/omp/$name --arch rnn_seq2seq_attention_multi30k --max-update 40 --no-save --disable-validation > /tmp/omp/$name.log 2>&1
  echo "$name $(grep -o 'done training in [0-9.]* seconds' /tmp/omp/$name.log) $(grep -o 'precision: [a-z0-9 ]*' /tmp/omp/$name.log | head -1)"; }
for amp in 0 1; do
t m_idle_default_amp$amp AMP=$amp
t m_idle_spin3k_amp$amp AMP=$amp GOMP_SPINCOUNT=3000
done
python3 -c 'while 1: pass' & busy=$!
t m_busy_spin3k_amp0 AMP=0 GOMP_SPINCOUNT=3000
t m_busy_spin3k_amp1 AMP=1 GOMP_SPINCOUNT=3000
kill $busy
