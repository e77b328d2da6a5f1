"""The red-flag classifier with the team's authored questions (data/qa) as extra ordinary examples, two ways:
legal and support only (``ls``), or every domain but the questions on an emergency's own pages (``nonemerg``).
Only questions no pattern matches and the shipped detector does not flag are added (as 2026-12-04 did).

    PYTHONPATH=. .venv/bin/python reports/2026-12-07/encoder/negatives.py OUT.json [variant ...]
"""
import json, glob, sys
from pathlib import Path

from assistants.settings import Settings
from assistants.cli import _domains, ordinary_questions as eval_ordinary
from assistants import redflags
from assistants.domains import read_qa
from assistants.embeddings import Embedder

s = Settings(); d = _domains(s); rf = s.domains_dir / "redflags"; emb = Embedder.for_settings(s)
negs = redflags.ordinary_questions(d, s.domains_dir)
shipped = redflags.RedFlagDetector.train(d, emb, rf, negs, s.home / "cache")
emergency_pages = {doc.split("#")[0] for _, (dom, rule) in shipped.rules.items() for doc in rule.docs}
ordinary = eval_ordinary(list(d))
fresh = {Path(f).parent.name + "/" + Path(f).stem: [json.loads(l)["question"] for l in open(f) if json.loads(l)["kind"] == "fact"]
         for f in sorted(glob.glob("data/eval/fresh*/*.jsonl"))}
rows = [(dom, r) for dom in d for r in read_qa(dom)]
unflagged = {id(r): not shipped.detect(r["question"]) for _, r in rows}
variants = {
    "shipped": [],
    "ls": [r["question"] for dom, r in rows if dom in ("legal", "support") and unflagged[id(r)]],
    "nonemerg": [r["question"] for dom, r in rows if r["doc"] not in emergency_pages and unflagged[id(r)]],
    "all": [r["question"] for dom, r in rows if unflagged[id(r)]],
}
out = {}
for name in sys.argv[2:] or list(variants):
    extra = variants[name]
    det = shipped if name == "shipped" else redflags.RedFlagDetector.train(d, emb, rf, negs + extra, s.home / "cache")
    r = redflags.evaluate(det, rf, ordinary)
    fr = {k: [(q, [f.rule.name for f in det.detect(q)]) for q in qs] for k, qs in fresh.items()}
    fr = {k: [x for x in v if x[1]] for k, v in fr.items()}
    miss = sum(len(v) for v in r["misses"].values())
    first = sum(round(x["right_first"] * x["n"]) for x in r["per_category"].values())
    f9 = sum(len(v) for k, v in fr.items() if k.startswith("fresh9"))
    line = (f"{name} (+{len(extra)}): missed {miss}, right first {first}, near-miss alarms {r['false_alarms']}/{r['near_misses']}, "
            f"ordinary {r['ordinary_alarms']}/{r['ordinary_questions']}, fresh {sum(map(len, fr.values()))}/{sum(map(len, fresh.values()))}, fresh9 {f9}")
    print(line, flush=True)
    out[name] = {"line": line, "misses": r["misses"], "near": r["false_alarm_examples"], "ordinary": r["ordinary_alarm_examples"], "fresh": fr}
Path(sys.argv[1]).write_text(json.dumps(out, indent=1) + "\n")
