import sys
def load(f):
    return {(r[0],r[1]):r for r in (l.rstrip("\n").split("\t") for l in open(f))}
a,b=load(sys.argv[1]),load(sys.argv[2])
up=[k for k in a if k in b and float(b[k][2])>float(a[k][2])]; dn=[k for k in a if k in b and float(b[k][2])<float(a[k][2])]
ch=[k for k in a if k in b and a[k][-1]!=b[k][-1]]
ok=lambda d:sum(float(r[2])>=1 for r in d.values())
print(f"n={len(a)} full before {ok(a)} after {ok(b)}; up {len(up)} down {len(dn)}; changed {len(ch)}")
for tag,ks in (("UP",up),("DOWN",dn)):
    for k in ks: print(tag,k,a[k][2],'->',b[k][2],'|',a[k][5][:150],a[k][6]); print('   before:',a[k][7][:300]); print('   after: ',b[k][7][:300])
