#!/usr/bin/env bash
# The pretraining figures in the README: bert-mini for 15 minutes per recipe on Gutenberg (held-out
# MLM accuracy on WikiText-2 valid; NSP accuracy for bert), then the multilingual UDHR sampling runs
# with alpha 0.3 and 1.0. About 70 minutes on 2 cores; run it on an otherwise idle machine.
#   bash benchmarks/pretraining_runs.sh [OUT_DIR]      (default runs/)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs}
UDHR=../shared/data/udhr/txt
BIN=${BIN:-.venv/bin}
for recipe in bert roberta spanbert mlm arlm; do
  "$BIN/bertkit" pretrain --config "configs/$recipe.yaml" --corpus ../shared/data/gutenberg_nltk --preset mini \
    --max-steps 1300 --max-minutes 15 --out "$OUT/$recipe-mini" --overwrite --train.warmup_steps=100 \
    --train.eval_every=250 --train.checkpoint_every=250
done
for alpha in 0.3 1.0; do
  "$BIN/bertkit" pretrain --config configs/roberta.yaml --preset tiny --max-steps 300 --max-minutes 4 \
    --corpus cpu=$UDHR/cpu.txt --corpus shp=$UDHR/shp.txt --corpus fra=$UDHR/fra.txt --corpus eng=$UDHR/eng.txt \
    --corpus rus=$UDHR/rus.txt --corpus chv=$UDHR/chv.txt --corpus cmn=$UDHR/cmn_hans.txt \
    --pretrain.alpha=$alpha --pretrain.vocab_size=8000 --pretrain.eval_corpus=null --pretrain.batch_size=16 \
    --train.warmup_steps=30 --out "$OUT/udhr-alpha$alpha" --overwrite
done
