"""cmp_by_question.py A.tsv B.tsv: openings of two runs compared question by question (the dev set's ids are places in
data/qa, which moving an authored pair renumbers), with each question's key facts as each run read them."""
import collections, sys


def load(path):
    out = {}
    for line in open(path):
        f = line.rstrip("\n").split("\t")
        out[f[5]] = (f[1], float(f[2]), f[6], f[7])
    return out


a, b = load(sys.argv[1]), load(sys.argv[2])
tot, changed = collections.defaultdict(lambda: [0, 0.0, 0.0]), 0
for q in a.keys() & b.keys():
    dom = a[q][0].split("-")[0]
    t = tot[dom]; t[0] += 1; t[1] += a[q][1]; t[2] += b[q][1]
    changed += a[q][3] != b[q][3]
    if a[q][1] != b[q][1] or a[q][2] != b[q][2]:
        kind = "GAIN" if b[q][1] > a[q][1] else "LOSS" if b[q][1] < a[q][1] else "SAME"
        print(f"{kind} {a[q][0]} {q[:150]}\n  facts: {a[q][2]} -> {b[q][2]}\n  before: {a[q][3][:300]}\n  after:  {b[q][3][:300]}")
for dom, t in sorted(tot.items()):
    print(dom, t[0], f"{t[1] / t[0]:.3f} -> {t[2] / t[0]:.3f}")
print("only in one run:", len(a.keys() ^ b.keys()), "| openings changed:", changed, "of", len(a.keys() & b.keys()))
