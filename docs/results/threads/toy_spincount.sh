cd /work/main && source scripts/env.sh
unset GOMP_SPINCOUNT RNN_SEQ2SEQ_SPIN  # libgomp's default (the runs were made before env.sh set it)
t() { local name=$1; shift; rm -rf /tmp/omp/$name
  env "$@" AMP=0 bash scripts/train.sh runs/demo/bin /tmp/omp/$name --max-update 40 --no-save > /tmp/omp/$name.log 2>&1
  echo "$name $(grep -o 'done training in [0-9.]* seconds' /tmp/omp/$name.log)"; }
for r in 1 2; do
t idle_default$r
t idle_passive$r OMP_WAIT_POLICY=PASSIVE
t idle_spin10k$r GOMP_SPINCOUNT=10000
t idle_spin100k$r GOMP_SPINCOUNT=100000
done
python3 -c 'while 1: pass' & busy=$!
t busy_spin10k GOMP_SPINCOUNT=10000
t busy_spin100k GOMP_SPINCOUNT=100000
kill $busy
