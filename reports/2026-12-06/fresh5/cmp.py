import sys, collections
def load(p):
    out={}
    for l in open(p):
        f=l.rstrip("\n").split("\t")
        out[(f[0],f[1])]=(float(f[2]),float(f[3]),f[5],f[6],f[7])
    return out
a,b=load(sys.argv[1]),load(sys.argv[2])
tot=collections.defaultdict(lambda:[0,0,0])
changed=0
for k in a:
    st=k[0]; dom=k[1].split('-')[0]
    t=tot[(st,dom)]; t[0]+=1; t[1]+=a[k][0]; t[2]+=b[k][0]
    if a[k][4]!=b[k][4]: changed+=1
    if a[k][0]!=b[k][0]:
        print(f"{'GAIN' if b[k][0]>a[k][0] else 'LOSS'} {k} {a[k][2][:150]} {a[k][3]}\n  before: {a[k][4][:300]}\n  after:  {b[k][4][:300]}")
for k,t in sorted(tot.items()): print(k, t[0], f"{t[1]/t[0]:.3f} -> {t[2]/t[0]:.3f}")
print("openings changed:", changed, "of", len(a))
