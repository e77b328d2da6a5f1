import json, glob, sys
from pathlib import Path
from assistants.settings import Settings
from assistants.cli import _domains, ordinary_questions
from assistants import redflags
from assistants.router import OUT_OF_SCOPE, read_examples
from assistants.embeddings import Embedder
s=Settings(); d=_domains(s); emb=Embedder.for_settings(s)
routing = read_examples(s.domains_dir / "routing" / "train", [*d, OUT_OF_SCOPE])
floor = redflags.RedFlagDetector.patterns_only(d)
negs = [q for qs in routing.values() for q in qs if not floor.detect(q)]
ordinary=ordinary_questions(list(d))
fresh=[json.loads(l)["question"] for f in glob.glob("data/eval/fresh/*.jsonl") for l in open(f) if json.loads(l)["kind"]=="fact"]
probe=["it started 10 minutes ago","I can't do this anymore. I've got the tablets lined up on the table."]
for folder in sys.argv[1:]:
    det=redflags.RedFlagDetector.train(d, emb, Path(folder), negs, s.home/"cache")
    pr=[round(float(det.probabilities([q])[0].sum()),2) for q in probe]  # one message per call, as the app scores it
    for t in (0.35,0.4):
        det.threshold=t
        r=redflags.evaluate(det, s.domains_dir/"redflags", ordinary)
        fr=[q for q in fresh if det.detect(q)]
        miss=sum(len(v) for v in r["misses"].values())
        print(folder, t, "probes", pr, "missed", miss, "near", r["false_alarms"], "ordinary", r["ordinary_alarms"], "fresh", len(fr), flush=True)
