"""docvote.py FEATURES.jsonl: the question bank as a document classifier. The K authored questions closest to the
question vote for their passage's document (each its cosine above FLOOR); a rerank candidate gains LAM times its
document's share of the vote. Key facts in the top 3 passages, against the shipped rerank (simulate.top3)."""
import sys, json
from collections import defaultdict
sys.path.insert(0, __file__.rsplit("/", 1)[0])
import simulate  # noqa: E402

def doc(pid):
    return pid.split("#")[0]

def top3(row, k, lam, floor):
    votes = defaultdict(float)
    for pid, cos in row["neighbours"][:k]:
        votes[doc(pid)] += max(0.0, cos - floor)
    total = sum(votes.values()) or 1.0
    return simulate.top3(row["cands"], 3, 0.0, 0.0, extra=lambda c: lam * votes[doc(c["id"])] / total)

rows = [json.loads(l) for l in open(sys.argv[1])]
base = {r["qid"]: max((c["gold"] for c in top3(r, 1, 0.0, 0.0)), default=0.0) for r in rows}
print(f"{'shipped':24s} all {sum(base.values())/len(rows)*100:5.1f}")
for k in (5, 10, 20):
    for lam in (0.05, 0.1, 0.2, 0.4):
        for floor in (0.3, 0.5):
            got = {r["qid"]: max((c["gold"] for c in top3(r, k, lam, floor)), default=0.0) for r in rows}
            doms = defaultdict(lambda: [0, 0.0])
            for r in rows:
                doms[r["domain"]][0] += 1; doms[r["domain"]][1] += got[r["qid"]]
            f9 = [got[r["qid"]] for r in rows if r["qid"].startswith("fresh9:")]
            gain = sum(got[q] > base[q] for q in got); loss = sum(got[q] < base[q] for q in got)
            print(f"k{k:<3d} lam{lam:<5} floor{floor:<4} all {sum(got.values())/len(rows)*100:5.1f}  "
                  + " ".join(f"{d[:3]} {v[1]/v[0]*100:5.1f}" for d, v in sorted(doms.items()))
                  + f"  +{gain}/-{loss}" + (f"  fresh9 {sum(f9)/len(f9)*100:.1f}" if f9 else ""))
