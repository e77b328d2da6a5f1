"""conf.py CV.json > conf.txt: how many messages reach each confirmation threshold (redflags.CONFIRM).
CV.json: out-of-fold probabilities on the training split, written by ../latenight/cv.py (it chose the threshold);
then, not used to choose, the shipped detector's classifier-only flags on the held-out emergencies, held-out near
misses and every eval question of the five sets."""
import json, glob, sys
from assistants.settings import Settings
from assistants.domains import load_all
from assistants.embeddings import Embedder
from assistants import redflags

cv = json.load(open(sys.argv[1]))
print("Cross-validated (5-fold, training split) emergency probability of the whole message: how many reach each threshold")
print("| threshold | near misses (697) | emergencies (1,045) |")
print("|---|---|---|")
for t in (0.9, 0.95, 0.97, 0.98, 0.99):
    print(f"| {t} | {sum(r['kind'] == 'near' and r['whole'] >= t for r in cv)} | "
          f"{sum(r['kind'] == 'pos' and r['whole'] >= t for r in cv)} |")
print()
print("Near misses at 0.98 or more:", [r["text"] for r in cv if r["kind"] == "near" and r["whole"] >= 0.98])
print()
s = Settings.from_env(); d = load_all(s); emb = Embedder.for_settings(s)
det = redflags.build(d, emb, s.domains_dir, s.home / "cache")
rows = []
for name, msgs in redflags.read_split(s.domains_dir / "redflags" / "heldout", list(det.rules)).items():
    for m in msgs:
        rows.append(("near" if name == redflags.NEAR_MISS else "emerg", m, det.detect(m)))
for g in glob.glob("data/eval/**/*.jsonl", recursive=True):
    for line in open(g):
        q = json.loads(line)["question"]
        rows.append(("eval", q, det.detect(q)))
print("Held-out (not used to choose): classifier-only flags at 0.98 or more")
for grp, name in (("emerg", "emergencies (453)"), ("near", "near misses (160)"), ("eval", "eval questions, five sets (624)")):
    hi = [(m, f) for g2, m, f in rows if g2 == grp and f and f[0].by == "classifier" and f[0].score >= redflags.CONFIRM]
    print(f"- {name}: {len(hi)}" + (f" ({'; '.join(m[:80] for m, _ in hi)})" if grp == "eval" else ""))
