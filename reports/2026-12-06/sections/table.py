"""table.py NAME=OPENINGS.tsv ...: per set and domain, key facts in the opening / in the passages given, for each run
(open_all.py's columns: set, id, opening recall, passages recall, ...), as a Markdown table."""
import collections
import sys

runs = [a.split("=", 1) for a in sys.argv[1:]]
tot = collections.OrderedDict()
for i, (_, path) in enumerate(runs):
    for line in open(path):
        f = line.rstrip("\n").split("\t")
        t = tot.setdefault((f[0], f[1].split("-")[0]), [[0, 0.0, 0.0] for _ in runs])[i]
        t[0] += 1; t[1] += float(f[2]); t[2] += float(f[3])
print("| set | domain | n | " + " | ".join(f"{n}: opening / given" for n, _ in runs) + " |")
print("|---|---|---|" + "---|" * len(runs))
for (st, dom), ts in tot.items():
    print(f"| {st} | {dom} | {ts[0][0]} | " + " | ".join(f"{100 * t[1] / t[0]:.0f} / {100 * t[2] / t[0]:.0f}%" for t in ts) + " |")
alls = [[sum(ts[i][k] for ts in tot.values()) for k in range(3)] for i in range(len(runs))]
print("| all | | " + str(alls[0][0]) + " | " + " | ".join(f"{100 * t[1] / t[0]:.1f} / {100 * t[2] / t[0]:.1f}%" for t in alls) + " |")
