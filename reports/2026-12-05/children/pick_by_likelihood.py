"""Does the model's likelihood choose the first quoted sentence better than the ranker? (no generation)"""
import sys, json, torch
from pathlib import Path
import assistants.retrieval as R
from assistants.settings import Settings
from assistants.services import build_chat
from assistants import prompts
from assistants.evaluation.suite import load_eval, fact_recall
from assistants.provenance import place_asked
K = int(sys.argv[1]) if len(sys.argv) > 1 else 4
qdir = sys.argv[2] if len(sys.argv) > 2 else "data/eval"
s = Settings(); chat = build_chat(s)
eng, r = chat.engine, chat.retriever
orig = R.quote_candidates
def openings(dom, q, ps, reg):
    cands, split = orig(r.sentences, r.read(dom, q), r.sentences.embed([r.read(dom, q)])[0], ps, r.kb.idf(dom))
    outs, seen = [], set()
    for i in range(min(len(cands), 12)):
        R.quote_candidates = lambda *a, i=i: ([cands[i]] + cands[:i] + cands[i+1:], split)
        try:
            o = r.opening(dom, q, ps, 1, reg)
        finally:
            R.quote_candidates = orig
        if o and o not in seen:
            seen.add(o); outs.append(o)
        if len(outs) == K: break
    return outs
@torch.no_grad()
def scores(messages, outs, adapter):
    p = eng.prompt_ids(messages)
    rows = [p + eng.tokenizer(o, add_special_tokens=False)["input_ids"] for o in outs]
    res = []
    for row in rows:
        ids = torch.tensor([row])
        m = eng.model
        if adapter:
            m.set_adapter(adapter); lo = m(ids).logits
        else:
            with m.disable_adapter(): lo = m(ids).logits
        lp = torch.log_softmax(lo[0, len(p)-1:-1].float(), -1)
        t = ids[0, len(p):]
        v = lp.gather(1, t[:, None])[:, 0]
        res.append((v.sum().item(), v.mean().item()))
    return res
out = []
for dom in ("legal", "medical", "support"):
    spec = chat.domains[dom]; info = eng.adapter_for(dom)
    cases = [c for c in load_eval(dom, Path(qdir)) if c["kind"] == "fact"]
    tally = {}
    for c in cases:
        q = c["question"]; reg = place_asked(q); ps = r.retrieve(dom, q, region=reg)
        msgs, ps = prompts.fit_prompt(spec, q, [], ps, eng.count_tokens, eng.context_window - 200, 20)
        outs = openings(dom, q, ps, reg)
        if not outs: continue
        rec = [fact_recall(o, c["facts"]) for o in outs]
        sa = scores(msgs, outs, info.peft_name); sb = scores(msgs, outs, None)
        row = {"id": c["id"], "outs": outs, "rec": rec, "adapter": sa, "base": sb}
        out.append(row)
        for name, sc in (("ranker", None), ("adapter-sum", [x[0] for x in sa]), ("adapter-mean", [x[1] for x in sa]),
                         ("base-sum", [x[0] for x in sb]), ("base-mean", [x[1] for x in sb]), ("oracle", rec)):
            i = 0 if sc is None else max(range(len(outs)), key=lambda k: sc[k])
            tally[name] = tally.get(name, 0) + rec[i]
    print(dom, len(cases), {k: round(100 * v / len(cases), 1) for k, v in tally.items()}, flush=True)
json.dump(out, open(f"/tmp/pick-{Path(qdir).name}.json", "w"))
