import json,sys
TH=0.4; ST=0.8
def fires(r,F):
    if r["whole"]>=TH: return True
    return any(v>=ST for v in r["sent"]) and r["whole"]>=F
def clf_fires(r,F): return fires(r,F)
S=json.load(open(sys.argv[1]))
if isinstance(S,list): S={"cv_pos":[r for r in S if r["kind"]=="pos"],"cv_near":[r for r in S if r["kind"]=="near"]}
for F in [0,0.03,0.05,0.08,0.1,0.15,0.2,0.25]:
    row=[]
    for k,rows in S.items():
        n=sum(1 for r in rows if clf_fires(r,F) or r["pattern"])
        row.append(f"{k} {n}/{len(rows)}")
    print(F," | ".join(row))
