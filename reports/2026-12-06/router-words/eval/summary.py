"""summary.py [RUN_DIR]: one line per set of a full eval run (default this folder's), per domain key facts by config."""
import json,os,sys
base=sys.argv[1] if len(sys.argv)>1 else 'reports/2026-12-06/router-words/eval'
short={'adapter+retrieval':'A','base+retrieval':'B','adapter+retrieval-noquote':'Anq','base+retrieval-noquote':'Bnq','extractive (no model)':'X'}
for st in ["eval","fresh","fresh2","fresh3","fresh4","fresh5","fresh6","fresh7","fresh8","fresh9","fresh10","fresh11","fresh12","fresh13","fresh14","fresh15", "fresh16", "fresh17"]:  # those the run holds
    p=f"{base}/{st}/eval.json"
    if not os.path.exists(p): continue
    d=json.load(open(p)); out=[f"{st:7s} routing {d['routing']['accuracy']:.1%}"]
    for dom,dd in d['domains'].items():
        c=dd['configs']
        out.append(dom[:3]+" "+" ".join(f"{short[k]}={v['fact_recall']:.0%}" for k,v in c.items())+f" cv={c['adapter+retrieval']['citation_validity']:.0%} inv={c['adapter+retrieval']['unsupported_figures']:.0%} p50={c['adapter+retrieval']['latency_p50_ms']/1000:.1f}/{c['base+retrieval']['latency_p50_ms']/1000:.1f}s r@3={dd['retrieval']['recall_at_k']:.0%} mrr={dd['retrieval']['mrr']:.3f}")
    print("\n   ".join(out))
