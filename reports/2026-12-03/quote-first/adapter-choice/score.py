import sys, json, random, copy
sys.path.insert(0, "/work/main")
import torch
torch.set_num_threads(2)
from assistants.settings import Settings
from assistants.services import build_chat
from assistants import prompts
from assistants.retrieval import passage_sentences, rank_sentences
from assistants.evaluation.suite import load_eval, fact_recall
from assistants.domains import read_qa
from pathlib import Path
settings = Settings.from_env() if hasattr(Settings, "from_env") else Settings()
chat = build_chat(settings, use_router=False)
eng = chat.engine
dom, which = sys.argv[1], sys.argv[2]
K = 6
spec = chat.domains[dom]
info = eng.adapter_for(dom)
model = eng.model
model.set_adapter(info.peft_name)
print(dom, info.label)
tok = eng.tokenizer
if which == "eval":
    cases = [c for c in load_eval(dom) if c["kind"] == "fact"]
else:
    rows = read_qa(dom)
    if dom != "medical":
        test = {prompts.question_of(json.loads(l)["messages"][-2]["content"]) for l in open(f"/work/main/data/sft/{dom}/test.jsonl")}
        rows = [r for r in rows if r["question"] in test]
    random.Random(0).shuffle(rows)
    cases = [{"id": i, "question": r["question"], "facts": r["facts"]} for i, r in enumerate(rows[:int(sys.argv[3])])]
print("cases", len(cases), flush=True)
out = []
for c in cases:
    q = c["question"]
    passages = chat.retriever.retrieve(dom, q)
    vector = chat.retriever.kb.embedder.embed([q])[0]
    ranking = rank_sentences(chat.retriever.sentences, q, vector, passages, chat.retriever.kb.idf(dom))
    split = [passage_sentences(p) for p in passages]
    cands = sorted([(score, r, j, split[r][j][0]) for r, ranked in enumerate(ranking) for j, score in ranked], reverse=True)[:K]
    if not cands:
        continue
    msgs = prompts.build_messages(spec, q, [], passages)
    pids = eng.prompt_ids(msgs)
    lps = []
    with torch.no_grad():
        o = model(torch.tensor([pids]), use_cache=True)
        past, first = o.past_key_values, o.logits[0, -1]
        for score, r, j, s in cands:
            tids = tok(f"{s} [{r+1}]", add_special_tokens=False)["input_ids"]
            o2 = model(torch.tensor([tids]), past_key_values=copy.deepcopy(past), use_cache=True)
            logits = torch.cat([first[None], o2.logits[0, :-1]], 0)
            lp = torch.log_softmax(logits.float(), -1).gather(1, torch.tensor(tids)[:, None]).squeeze(1)
            lps.append(lp.tolist())
    out.append({"id": c["id"], "q": q, "facts": c["facts"], "cands": [
        {"rank": s, "r": r, "j": j, "s": t, "lp": l, "fr": fact_recall(t, c["facts"])} for (s, r, j, t), l in zip(cands, lps)]})
    print(len(out), end=" ", flush=True)
json.dump(out, open(f"/tmp/qp/{dom}-{which}.json", "w"))
print("done")
