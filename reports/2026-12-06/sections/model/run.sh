#!/bin/bash
# The sets whose no-model openings changed with rerank_asked (eval, fresh2, fresh5, fresh7, fresh9), with the model,
# shipped (adapter+retrieval) and base+retrieval, on the final code. Run from a checkout (ASSISTANTS_HOME may point
# at another data home); writes beside this script.
cd "$(dirname "$0")/../../../.." || exit 1
out=reports/2026-12-06/sections/model
for st in fresh9 eval fresh7 fresh2 fresh5; do
  q=data/eval; [ "$st" != eval ] && q=data/eval/$st
  PYTHONPATH=. .venv/bin/python -m assistants eval --domains legal medical support \
    --configs adapter+retrieval base+retrieval --out "$out/$st" --questions "$q" > "$out/$st.log" 2>&1
  echo "$st done $(date +%H:%M)"
done
