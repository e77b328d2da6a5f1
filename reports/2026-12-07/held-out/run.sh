#!/bin/bash
# Every question of the twelve sets with the model, shipped (adapter+retrieval) and base+retrieval.
# run.sh OUT [SETS...]: writes under OUT a folder and a log per set (default: fresh11 and fresh10 first, then the ten earlier sets).
cd "$(dirname "$0")/../../.." || exit 1
out=${1:?OUT}; shift
sets=${*:-fresh11 fresh10 fresh9 fresh8 eval fresh fresh2 fresh3 fresh4 fresh5 fresh6 fresh7}
mkdir -p "$out"
for st in $sets; do
  q=data/eval; [ "$st" != eval ] && q=data/eval/$st
  PYTHONPATH=. .venv/bin/python -m assistants eval --domains legal medical support \
    --configs adapter+retrieval base+retrieval --out "$out/$st" --questions "$q" > "$out/$st.log" 2>&1
  echo "$st done $(date +%H:%M)"
done
