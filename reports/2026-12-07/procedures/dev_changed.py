"""dev_changed.py A.tsv B.tsv: every dev-set opening (open_dev.py) that differs between two runs, in full, keyed by
the question's text (the dev set's ids are places in data/qa)."""
import sys


def load(path):
    return {line.split("\t")[5]: line.rstrip("\n").split("\t") for line in open(path)}


a, b = load(sys.argv[1]), load(sys.argv[2])
for q in a.keys() & b.keys():
    if a[q][7] != b[q][7]:
        print(f"Q: {q}  key facts {a[q][6]}: {a[q][2]} -> {b[q][2]}\n  before: {a[q][7]}\n  after:  {b[q][7]}\n")
