"""lone.py CV.json, from `python reports/2026-12-05/latenight/cv.py CV.json` (out-of-fold probabilities): what a lone sentence (a message that does not fire whole) does under
'emergency sum >= 0.8' (shipped) and '... and its strongest category >= m'."""
import json, sys
rows = json.load(open(sys.argv[1] if len(sys.argv) > 1 else "/tmp/s17/cv.json"))
for m in (0.0, 0.3, 0.4, 0.5, 0.6):
    fire = {"pos": 0, "near": 0}; n = {"pos": 0, "near": 0}; lost = []
    for r in rows:
        n[r["kind"]] += 1
        whole = r["whole"] >= 0.4 or r["pattern"]
        lone = any(s >= 0.8 and x >= m for s, x in zip(r["sent"], r["sent_max"]))
        if whole or lone:
            fire[r["kind"]] += 1
        elif r["kind"] == "pos" and any(s >= 0.8 for s in r["sent"]):
            lost.append(r["text"][:110])
    print(f"strongest >= {m}: emergencies {fire['pos']}/{n['pos']}, near misses fired {fire['near']}/{n['near']}")
    for t in lost:
        print("   lost:", t)
