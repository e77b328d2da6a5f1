#!/bin/bash
# Every medical question of the sets whose openings moved, with the model, shipped and base + retrieval, on the final
# code (legal and support openings did not move: the alarm and the asker are medical's).
out=reports/2026-12-06/fresh7/final-medical
for set in fresh7 eval fresh fresh2 fresh3 fresh4 fresh5; do
  q=data/eval/$set; [ $set = eval ] && q=data/eval
  PYTHONPATH=. .venv/bin/python -m assistants eval --domains medical \
    --configs adapter+retrieval base+retrieval --out $out/$set --questions $q > /tmp/s19/evalm_$set.log 2>&1
  echo "$set done $(date +%H:%M)"
done
