import sys
def load(p):
    return {(l.split("\t")[0],l.split("\t")[1]): l.rstrip("\n").split("\t") for l in open(p)}
a,b=load(sys.argv[1]),load(sys.argv[2])
for k in a:
    if a[k][7]!=b[k][7]:
        print(k, a[k][2],'->',b[k][2],'|',a[k][5][:140], a[k][6]); print('  before:',a[k][7][:int(sys.argv[3]) if len(sys.argv)>3 else 400]); print('  after: ',b[k][7][:int(sys.argv[3]) if len(sys.argv)>3 else 400])
