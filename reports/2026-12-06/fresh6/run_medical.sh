#!/bin/bash
# Medical again on every set after the ibuprofen page's rewording (legal and support: final/).
out=reports/2026-12-06/fresh6/final-medical
for set in eval fresh fresh2 fresh3 fresh4 fresh5 fresh6; do
  q=data/eval/$set; [ $set = eval ] && q=data/eval
  PYTHONPATH=. .venv/bin/python -m assistants eval --domains medical \
    --configs adapter+retrieval base+retrieval --out $out/$set --questions $q > /tmp/s17/evalm_$set.log 2>&1
  echo "$set done $(date +%H:%M)"
done
