# Run from anywhere: LOGS=FOLDER bash docs/results/precision/short_40_updates.sh (the logs go to FOLDER).
LOGS="${LOGS:?give LOGS=folder for the logs}"
cd "$(dirname "$0")/../../.." && source scripts/env.sh
D=runs/multi30k/de-en/bin
for round in 1 2; do
 for arch in rnn_seq2seq_attention_multi30k rnn_seq2seq_multi30k; do
  for amp in 0 1; do
   rm -rf $LOGS/ck
   AMP=$amp bash scripts/train.sh $D $LOGS/ck --arch $arch --max-update 40 --log-interval 10 --log-format json --disable-validation --no-save > $LOGS/$arch.$amp.$round.log 2>&1
   echo "$arch amp=$amp round=$round: $(grep -o '"wps": "[0-9.]*"' $LOGS/$arch.$amp.$round.log | tail -3 | tr '\n' ' ')"
  done
 done
done
