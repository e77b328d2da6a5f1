#!/bin/bash
# Legal and medical on every set with the model, on the final code (support's openings did not change this session:
# reports/2026-12-06/fresh6/final/).
out=reports/2026-12-06/handover/final
for set in eval fresh fresh2 fresh3 fresh4 fresh5 fresh6; do
  q=data/eval/$set; [ $set = eval ] && q=data/eval
  PYTHONPATH=. .venv/bin/python -m assistants eval --domains legal medical \
    --configs adapter+retrieval base+retrieval --out $out/$set --questions $q > /tmp/s18/evalf_$set.log 2>&1
  echo "$set done $(date +%H:%M)"
done
