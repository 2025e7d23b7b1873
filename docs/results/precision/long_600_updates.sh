# Run from anywhere: LOGS=FOLDER bash docs/results/precision/long_600_updates.sh (the logs go to FOLDER).
LOGS="${LOGS:?give LOGS=folder for the logs}"
cd "$(dirname "$0")/../../.." && source scripts/env.sh
D=runs/multi30k/de-en/bin
for amp in 1 0; do
  rm -rf $LOGS/ck
  AMP=$amp bash scripts/train.sh $D $LOGS/ck --arch rnn_seq2seq_attention_multi30k --max-update 600 --log-interval 50 --log-format json --disable-validation --no-save > $LOGS/long.$amp.log 2>&1
  echo "amp=$amp: $(grep -o '"wps": "[0-9.]*"' $LOGS/long.$amp.log | tr '\n' ' ')"
done
cd "$(dirname "$0")/../../.." && source scripts/env.sh
D=runs/multi30k/de-en/bin
for amp in 1; do
  rm -rf $LOGS/ck
  ONEDNN_PRIMITIVE_CACHE_CAPACITY=16384 AMP=$amp /usr/bin/time -v bash scripts/train.sh $D $LOGS/ck --arch rnn_seq2seq_attention_multi30k --max-update 600 --log-interval 50 --log-format json --disable-validation --no-save > $LOGS/long2.$amp.log 2>&1
  echo "amp=$amp cache16k: $(grep -o '"wps": "[0-9.]*"' $LOGS/long2.$amp.log | tr '\n' ' ')"
  grep "Maximum resident" $LOGS/long2.$amp.log
done
cd "$(dirname "$0")/../../.." && source scripts/env.sh
D=runs/multi30k/de-en/bin
for amp in 1 0; do
  rm -rf $LOGS/ck3
  AMP=$amp bash scripts/train.sh $D $LOGS/ck3 --max-update 600 --log-interval 50 --log-format json --disable-validation --no-save > $LOGS/long3.$amp.log 2>&1
  echo "rnn_seq2seq_multi30k amp=$amp: $(grep -o '"wps": "[0-9.]*"' $LOGS/long3.$amp.log | tr '\n' ' ')"
done
