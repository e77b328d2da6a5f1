"""route_acc.py OUT.tsv: every question of the eval sets (data/eval, fresh*) and the router's held-out lines, routed
as the app routes them; prints accuracy per source and writes each route (compare two runs with diff)."""
import glob, json, sys
from assistants import router as R
from assistants.domains import load_all
from assistants.embeddings import Embedder
from assistants.settings import Settings

import os
if "PER" in os.environ:  # the cap on authored questions per label (2026-12-06 sections: PER=600 route_acc.py OUT.tsv)
    R.authored_questions.__defaults__ = (int(os.environ["PER"]),)
s = Settings.from_env()
router = R.train_for(s, Embedder.for_settings(s), load_all(s))
items = []
for f in sorted(glob.glob("data/eval/*.jsonl") + glob.glob("data/eval/fresh*/*.jsonl")):
    for line in open(f):
        if line.strip():
            c = json.loads(line)
            items.append((f.split("/")[-2] if "fresh" in f else "eval", f.split("/")[-1][:-6], c["question"]))
for label in router.labels:
    for q in open(f"assistants/domains/routing/heldout/{label}.txt"):
        if q.strip() and not q.startswith("#"):
            items.append(("heldout", label, q.strip()))
routes = router.route_many([q for *_, q in items])
tot = {}
with open(sys.argv[1], "w") as out:
    for (src, label, q), r in zip(items, routes):
        t = tot.setdefault(src, [0, 0]); t[0] += 1; t[1] += r.domain == label
        out.write(f"{src}\t{label}\t{r.domain}\t{q}\n")
for src, (n, ok) in tot.items():
    print(f"{src:8s} {ok}/{n} = {ok / n:.3f}")
