#!/bin/bash
# Every question of the seven sets with the model, shipped and base + retrieval, on the final code (~45 min on 2 cores).
out=reports/2026-12-06/fresh6/final
for set in fresh6 eval fresh fresh2 fresh3 fresh4 fresh5; do
  q=data/eval/$set; [ $set = eval ] && q=data/eval
  PYTHONPATH=. .venv/bin/python -m assistants eval --domains legal medical support \
    --configs adapter+retrieval base+retrieval --out $out/$set --questions $q > /tmp/s17/eval_$set.log 2>&1
  echo "$set done $(date +%H:%M)"
done
