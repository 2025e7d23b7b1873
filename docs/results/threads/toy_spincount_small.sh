cd /work/main && source scripts/env.sh
unset GOMP_SPINCOUNT RNN_SEQ2SEQ_SPIN  # libgomp's default (the runs were made before env.sh set it)
t() { local name=$1; shift; rm -rf /tmp/omp/$name
  env "$@" AMP=0 bash scripts/train.sh runs/demo/bin /tmp/omp/$name --max-update 40 --no-save > /tmp/omp/$name.log 2>&1
  echo "$name $(grep -o 'done training in [0-9.]* seconds' /tmp/omp/$name.log)"; }
for r in 1 2; do
t idle_spin1k$r GOMP_SPINCOUNT=1000
t idle_spin3k$r GOMP_SPINCOUNT=3000
done
python3 -c 'while 1: pass' & busy=$!
t busy_spin1k GOMP_SPINCOUNT=1000
t busy_spin3k GOMP_SPINCOUNT=3000
kill $busy
