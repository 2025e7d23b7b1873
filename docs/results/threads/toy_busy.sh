cd /work/main && source scripts/env.sh
unset GOMP_SPINCOUNT RNN_SEQ2SEQ_SPIN  # libgomp's default (the runs were made before env.sh set it)
t() { # name, env...
  local name=$1; shift
  rm -rf /tmp/omp/$name
  local s=$(date +%s.%N)
  env "$@" AMP=0 bash scripts/train.sh runs/demo/bin /tmp/omp/$name --max-update 40 --no-save > /tmp/omp/$name.log 2>&1
  echo "$name $(grep -o 'done training in [0-9.]* seconds' /tmp/omp/$name.log) wall $(echo "$(date +%s.%N)-$s" | bc)"
}
mkdir -p /tmp/omp
t idle_default
t idle_passive OMP_WAIT_POLICY=PASSIVE
python3 -c 'while 1: pass' & busy=$!
t busy_default
t busy_passive OMP_WAIT_POLICY=PASSIVE
t busy_1thread OMP_NUM_THREADS=1
kill $busy
