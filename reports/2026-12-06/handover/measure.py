"""measure.py: every routing question of the eval sets and the router's held-out lines, routed without and with the
domains' ``handover`` rules; and the authored training questions a rule would take from their own domain.
Prints each changed route and the totals (``handover.txt``)."""
import dataclasses
import glob
import json

from assistants import router as R
from assistants.domains import load_all, read_qa
from assistants.embeddings import Embedder
from assistants.settings import Settings

s = Settings.from_env()
domains = load_all(s)
with_rules = R.train_for(s, Embedder.for_settings(s), domains)
without = dataclasses.replace(with_rules, handovers={})
items = {}
for f in sorted(glob.glob("data/eval/*.jsonl") + glob.glob("data/eval/fresh*/*.jsonl")):
    label = f.split("/")[-1][:-6]
    for line in open(f):
        if line.strip():
            c = json.loads(line)
            items[f"{f}:{c['id']}"] = (label, c["question"])
for label in with_rules.labels:
    for q in open(f"assistants/domains/routing/heldout/{label}.txt"):
        if q.strip() and not q.startswith("#"):
            items[f"heldout:{q.strip()}"] = (label, q.strip())
questions = [q for _, q in items.values()]
before, after = without.route_many(questions), with_rules.route_many(questions)
for (key, (label, q)), b, a in zip(items.items(), before, after):
    if a.domain != b.domain:
        print(f"{'GAIN' if a.domain == label else 'LOSS' if b.domain == label else 'MOVE'} {label}: {b.domain} -> {a.domain}  {q}")
right = lambda routes: sum(r.domain == label for r, (label, _) in zip(routes, items.values()))
print(f"eval sets and held-out routing lines: {right(before)} -> {right(after)} of {len(items)} routed right")
for name in domains:  # the authored questions and routing lines (training data) a rule would move away from their own domain
    authored = [row["question"] for row in read_qa(name)] + R.read_examples(s.domains_dir / "routing" / "train", [name]).get(name, [])
    moved = [q for q, r, b in zip(authored, with_rules.route_many(authored), without.route_many(authored))
             if b.domain == name != r.domain]
    print(f"{name}: {len(moved)} of {len(authored)} authored questions and routing lines routed to it would be handed over")
    for q in moved:
        print("   ", q)
