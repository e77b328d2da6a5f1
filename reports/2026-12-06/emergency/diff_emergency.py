"""diff_emergency.py BEFORE.tsv AFTER.tsv: the held-out emergencies whose opening changed (open_emergency.py runs)."""
import sys
before = [line.rstrip("\n").split("\t") for line in open(sys.argv[1])]
after = [line.rstrip("\n").split("\t") for line in open(sys.argv[2])]
changed = 0
for x, y in zip(before, after):
    if x[5] != y[5] or x[3] != y[3]:
        changed += 1
        print(f"{x[0]}: {x[4]}\n  BEFORE {x[5]}\n  AFTER  {y[5]}\n")
print(f"openings changed: {changed} of {len(before)}")
