set -x
cd /work/main && source scripts/env.sh
rm -rf /tmp/ft/plan_ts /tmp/ft/c /tmp/ft/de-en
bash scripts/train.sh runs/demo/bin /tmp/ft/plan_ts --max-update 150 > /tmp/ft/plan.log 2>&1
mkdir -p /tmp/ft/c && cp data/toy/train.src /tmp/ft/c/corpus.de && cp data/toy/train.tgt /tmp/ft/c/corpus.en
start=$(date +%s.%N)
python scripts/prepare.py --corpus /tmp/ft/c/corpus --src de --tgt en --out /tmp/ft/de-en > /tmp/ft/prep.log 2>&1
mid=$(date +%s.%N)
bash scripts/train.sh /tmp/ft/de-en/bin /tmp/ft/de-en/ckpt --max-update 300 > /tmp/ft/first.log 2>&1
end=$(date +%s.%N)
echo "prepare $(echo "$mid-$start" | bc) s, train $(echo "$end-$mid" | bc) s" > /tmp/ft/times.txt
ls -la /tmp/ft/de-en/ckpt >> /tmp/ft/times.txt; du -sh /tmp/ft/de-en/ckpt >> /tmp/ft/times.txt
lscpu | grep "Model name" >> /tmp/ft/times.txt
