import json, sys, itertools
from statistics import mean
sys.path.insert(0, "/work/main")
from assistants.evaluation.suite import fact_recall
def lpv(c, how):
    lp = c["lp"]
    return {"mean": sum(lp)/len(lp), "sum": sum(lp), "head": sum(lp[:8])/len(lp[:8]), "min": min(lp)}[how]
def run(rows, lam, how, n, K=6):
    tot = 0
    for r in rows:
        cs = r["cands"][:K]
        best = sorted(cs, key=lambda c: -(c["rank"] + lam * lpv(c, how)))[:n]
        best = sorted(best, key=lambda c: (c["r"], c["j"]))
        tot += fact_recall(" ".join(c["s"] for c in best), r["facts"])
    return tot / len(rows)
for f in sys.argv[1:]:
    rows = json.load(open(f))
    print(f, len(rows))
    for n in (1, 2):
        line = [f"n={n} ranker {run(rows, 0, 'mean', n):.2f}"]
        for how in ("mean", "head", "sum"):
            for lam in ((0.02, 0.05, 0.1, 0.2, 0.4) if how != "sum" else (0.002, 0.005, 0.01, 0.02)):
                line.append(f"{how}{lam}:{run(rows, lam, how, n):.2f}")
        print("  ".join(line))
    for K in (3, 4, 6):
        print("K", K, "n1 mean.1", round(run(rows, 0.1, "mean", 1, K), 2), "n2 mean.1", round(run(rows, 0.1, "mean", 2, K), 2))
    print("oracle1", mean(max(c["fr"] for c in r["cands"]) for r in rows))
