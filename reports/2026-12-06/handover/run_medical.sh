#!/bin/bash
# Medical on every set with the model after the ibuprofen page's prescription section and the five near-miss lines
# (legal and support: their answers did not change; reports/2026-12-06/fresh6/final/).
out=reports/2026-12-06/handover/medical
for set in eval fresh fresh2 fresh3 fresh4 fresh5 fresh6; do
  q=data/eval/$set; [ $set = eval ] && q=data/eval
  PYTHONPATH=. .venv/bin/python -m assistants eval --domains medical \
    --configs adapter+retrieval base+retrieval --out $out/$set --questions $q > /tmp/s18/evalm_$set.log 2>&1
  echo "$set done $(date +%H:%M)"
done
