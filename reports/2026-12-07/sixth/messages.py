"""The messages negatives.py and vouch.py read: every held-out emergency and near miss, and the fact questions of the
thirteen sets written before fresh13, as (kind, category or domain, message)."""
import json
from pathlib import Path
from assistants import redflags as RF

SETS = "eval fresh fresh2 fresh3 fresh4 fresh5 fresh6 fresh7 fresh8 fresh9 fresh10 fresh11 fresh12".split()


def messages():
    rows = []
    for f in sorted(Path("assistants/domains/redflags/heldout").glob("*.txt")):
        rows += [("near" if f.stem == "near_miss" else "emerg", f.stem, line) for line in RF.read_lines(f)]
    for st in SETS:
        for dom in ["legal", "medical", "support"]:
            p = Path("data/eval") / (dom + ".jsonl") if st == "eval" else Path("data/eval") / st / (dom + ".jsonl")
            rows += [("fact", dom, c["question"]) for c in map(json.loads, filter(str.strip, p.read_text().splitlines()))
                     if c["kind"] == "fact"]
    return rows
