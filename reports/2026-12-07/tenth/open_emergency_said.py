"""open_emergency.py OUT.tsv (reports/2026-12-06/emergency/, read against ``RedFlagDetector.said`` as the chat does): every held-out emergency line (assistants/domains/redflags/heldout, near misses
left out) routed to its domain as the chat does, its 3-sentence opening as the chat path quotes it (no model):
rule, domain, the passages given, the opening. Compare two runs with diff_emergency.py."""
import sys
from pathlib import Path
from assistants.settings import Settings
from assistants.domains import load_all
from assistants.embeddings import Embedder
from assistants.retrieval import KnowledgeBase, Retriever
from assistants import redflags, provenance
from assistants.router import train_for
s = Settings.from_env(); d = load_all(s); emb = Embedder.for_settings(s)
kb = KnowledgeBase(s, d, emb); r = Retriever(kb)
det = redflags.build(d, emb, s.domains_dir, s.home / "cache")
router = train_for(s, emb, d)
routes = lambda sentences: [x.domain for x in router.route_many(sentences)]  # as ChatService._domains_of
out = open(sys.argv[1], "w")
for f in sorted(Path("assistants/domains/redflags/heldout").glob("*.txt")):
    if f.stem == "near_miss":
        continue
    for q in f.read_text().splitlines():
        if not q.strip() or q.startswith("#"):
            continue
        fl = det.detect(q)
        doms = [x.domain for x in fl if x.rule.docs]
        if not doms:
            out.write(f"{f.stem}\t-\t-\t-\t{q}\t\n"); continue
        dom = doms[0]
        prefer = redflags.documents(fl, dom); sure = redflags.confirmed(fl, dom)
        region = provenance.place_asked(q)
        asked = det.said(q, fl, routes)
        ps = r.retrieve(dom, asked, region=region, prefer=prefer, sure=sure)
        op = r.opening(dom, asked, ps, 3, region, prefer)
        out.write(f"{f.stem}\t{dom}\t{','.join(x.rule.name for x in fl)}\t{' '.join(p.id for p in ps)}\t{q}\t{op}\n")
        out.flush()
