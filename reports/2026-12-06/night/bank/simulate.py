"""simulate.py FEATURES.jsonl: key facts in the top 3 passages under rerank rules read from features.py's candidates.
shipped: as Retriever.rerank (the 3 closest authored questions' passages join, 0.85 vouches). fused(n, lam, t): the
passages of the n closest authored questions join, and each candidate's score gains lam * max(0, asked - t)."""
import sys, json
from collections import defaultdict

VOUCH, SENT_T, STEP = 0.85, 0.4, 0.01

def top3(cands, n_asked, lam, t, vouch=VOUCH, extra=None):
    """The 3 passages the rule keeps; ``extra(candidate)``: a further score (docvote.py's document share)."""
    pool = [c for c in cands if c["kept"] is not None or (c["asked_rank"] is not None and c["asked_rank"] < n_asked)]
    scored = []
    for i, c in enumerate(pool):
        if c["best"] is None:
            continue
        a = c["asked"] if c["asked"] is not None and c["asked_rank"] is not None and c["asked_rank"] < n_asked else None
        vouched = a is not None and a >= vouch
        counts = bool(c["kept"]) or (c["cos"] is not None and c["cos"] >= SENT_T) or vouched
        if not counts:
            continue
        score = c["best"] - STEP * i + (lam * max(0.0, a - t) if a is not None else 0.0) + (extra(c) if extra else 0.0)
        scored.append((vouched, a if vouched else -1, score, i, c))
    scored.sort(key=lambda x: (not x[0], -x[1], -x[2], x[3]))
    return [x[4] for x in scored[:3]]

def run(path, rules):
    rows = [json.loads(l) for l in open(path)]
    res = {}
    for name, (n, lam, t, vouch) in rules.items():
        tot = defaultdict(lambda: [0, 0.0])
        per = {}
        for r in rows:
            got = top3(r["cands"], n, lam, t, vouch)
            g = max((c["gold"] for c in got), default=0.0)
            key = (r["qid"].split(":")[0] if ":" in r["qid"] else "dev", r["domain"])
            tot[key][0] += 1; tot[key][1] += g; per[r["qid"]] = g
        res[name] = (tot, per)
    return res

if __name__ == "__main__":
    rules = {"shipped": (3, 0.0, 0.0, VOUCH), "none": (0, 0.0, 0.0, 9)}
    for n in (3, 5, 10):
        for lam in (0.0, 0.5, 1.0, 2.0):
            for t in (0.5, 0.6, 0.7):
                rules[f"n{n} lam{lam} t{t}"] = (n, lam, t, VOUCH)
    res = run(sys.argv[1], rules)
    base = res["shipped"][1]
    for name, (tot, per) in res.items():
        allq = sum(v[0] for v in tot.values()); allg = sum(v[1] for v in tot.values())
        gain = sum(1 for q in per if per[q] > base[q]); loss = sum(1 for q in per if per[q] < base[q])
        doms = {}
        for (st, dom), (nq, g) in tot.items():
            doms.setdefault(dom, [0, 0]); doms[dom][0] += nq; doms[dom][1] += g
        f9 = " ".join(f"{tot[k][1]/tot[k][0]*100:.0f}" for k in sorted(tot) if k[0] == "fresh9")
        print(f"{name:22s} all {allg/allq*100:5.1f}  " + " ".join(f"{d[:3]} {v[1]/v[0]*100:5.1f}" for d, v in sorted(doms.items()))
              + f"  +{gain}/-{loss}" + (f"  fresh9 {f9}" if f9 else ""))
