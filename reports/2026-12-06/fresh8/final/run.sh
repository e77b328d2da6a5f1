#!/bin/bash
# Every question of the ten sets with the model, shipped (adapter+retrieval) and base+retrieval, on the final code.
# run.sh [OUT]: writes under OUT (default beside this script), a folder and a log per set.
cd "$(dirname "$0")/../../../.." || exit 1
out=${1:-reports/2026-12-06/fresh8/final}
mkdir -p "$out"
for st in fresh9 fresh8 eval fresh fresh2 fresh3 fresh4 fresh5 fresh6 fresh7; do
  q=data/eval; [ "$st" != eval ] && q=data/eval/$st
  PYTHONPATH=. .venv/bin/python -m assistants eval --domains legal medical support \
    --configs adapter+retrieval base+retrieval --out "$out/$st" --questions "$q" > "$out/$st.log" 2>&1
  echo "$st done $(date +%H:%M)"
done
