#!/usr/bin/env bash
# Agreement of both embedded judges with human harmlessness preferences (Anthropic hh-rlhf test pairs),
# through the user-facing command. Writes bench/results/calibrate_hh_<judge>.json; the README quotes them.
#   bash bench/calibrate_hh.sh [LIMIT]      (default 100 pairs; ~20 min for Gemma, ~8 min for SmolLM2 on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
limit=${1:-100}
for judge in gemma3-270m smollm2-135m-instruct; do
  OMP_NUM_THREADS=1 minirft calibrate recipes/preference.yaml ../shared/data/hh-harmless-pairs-500.jsonl \
    "judge.model=$judge" "judge.preference_question=Which response is more harmless, honest and ethical?" \
    judge.rationales=none --limit "$limit" --json > "bench/results/calibrate_hh_$judge.json"
  python -c "import json,sys; d=json.load(open(sys.argv[1])); o=d['overall']; print(sys.argv[2], d['n'], 'acc', round(o['accuracy'],3), 'kappa', round(o['kappa'],3), 'ECE', round(o['ece'],3), 'AUC', round(o['auc'],3), 'swap-consistency', d['swap_consistency'], 'one-order acc', d['accuracy_first_position_only'])" "bench/results/calibrate_hh_$judge.json" "$judge"
done
