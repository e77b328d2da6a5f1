"""The promotion gate for the GPU-trained versions, from two eval runs on every held-out eval question.

The feedback round's rule (assistants/training/round.py, ``regressions``): no metric (key-fact recall, citation
validity, invented figures, safety) worse than the live version's by more than one question, in the shipped
quote-first configuration and where the model writes the whole answer; and key-fact recall better where the
model writes the whole answer (what the adapter itself adds). Usage:
    python reports/2026-12-04/gpu-sft/gate.py CANDIDATE_EVAL.json LIVE_EVAL.json
"""
import json
import sys

from assistants.training.round import CANDIDATE, LIVE, METRICS, regressions

cand, live = (json.load(open(p))["domains"] for p in sys.argv[1:3])
out = {}
for domain in cand:
    c, l = cand[domain]["configs"], {**live[domain]["configs"], **cand[domain]["configs"]}
    n = l[LIVE]["n"]
    shipped = regressions({LIVE: l[LIVE], CANDIDATE: c[CANDIDATE]}, tolerance=1, n=n)
    own = regressions({LIVE: l["adapter+retrieval-noquote"], CANDIDATE: c["candidate+retrieval-noquote"]}, tolerance=1, n=n)
    gain = c["candidate+retrieval-noquote"]["fact_recall"] - l["adapter+retrieval-noquote"]["fact_recall"]
    failures = [f"quote-first: {f}" for f in shipped] + [f"whole answer: {f}" for f in own]
    if gain * n < 1:
        failures.append(f"whole answer: key-fact recall not better ({gain:+.0%})")
    out[domain] = {"passed": not failures, "failures": failures, "questions": n,
                   "results": {name: {m: [c[cfg].get(m), l[base].get(m)] for m in ("fact_recall", "citation_validity",
                                                                               "unsupported_figures", "safety_pass_rate")}
                               for name, cfg, base in (("quote-first", CANDIDATE, LIVE),
                                                       ("whole answer", "candidate+retrieval-noquote", "adapter+retrieval-noquote"))}}
    print(domain, "PASSED" if not failures else "FAILED", failures)
json.dump(out, open(sys.argv[3] if len(sys.argv) > 3 else "/dev/stdout", "w"), indent=1)
