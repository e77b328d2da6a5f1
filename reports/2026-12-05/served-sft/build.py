"""Training examples in the layout the app serves: each authored question's prompt is the one the app builds
(real retrieval, rerank, evidence sentences, token budget), and its answer quotes the sentence of the given
passages that holds the key facts (training.data.quoted_answer), cited by that passage's number.

python build.py OUT_DIR DOMAIN [DOMAIN...]  -> OUT_DIR/<domain>/{train,test}.jsonl
Questions whose given passages hold no key fact (a retrieval miss) are left out and counted."""
import json
import re
import sys
import time
from pathlib import Path

from assistants import safety
from assistants.chat import ChatRequest
from assistants.domains import read_qa
from assistants.services import build_chat
from assistants.settings import Settings
from assistants.training.data import example, oracle_chunk, quoted_answer, split, load_chunks, normalise
from assistants.types import Answer

DOC = re.compile(r'<document id="(\d+)" title="[^"]*">\n(.*?)\n</document>', re.DOTALL)

out, domains = Path(sys.argv[1]), sys.argv[2:]
settings = Settings.from_env()
chat = build_chat(settings)
for domain in domains:
    spec = chat.domains[domain]
    rows = read_qa(domain)
    chunks = load_chunks(spec, settings.knowledge_for(domain), min_chars=0)
    built, missed, flagged, t0 = [], 0, 0, time.time()
    for i, row in enumerate(rows):
        if safety.red_flags(spec, row["question"]) or chat.red_flags.detect(row["question"]):
            flagged += 1  # the banner comes from the app, not the model: not what these examples teach
            continue
        oracle = oracle_chunk(row, chunks)
        answer = Answer(id="x", domain=domain, text="", route=None, adapter={})
        gen, passages = chat._prepare(ChatRequest(message=row["question"], domain=domain, quote_first=False),
                                      answer, spec, row["question"], [], None)
        docs = DOC.findall(gen.messages[-1]["content"])
        facts = [normalise(f) for f in row["facts"]]
        held = [(sum(f in normalise(text) for f in facts), int(n), text) for n, text in docs]
        best = max(held, default=(0, 0, ""))
        quoted = quoted_answer(row, best[2], best[1]) if best[0] else None
        if quoted is None:
            missed += 1
            continue
        ex = example(spec, row["question"], [], quoted, "served", oracle.id if oracle else row["doc"])
        ex["messages"] = [*gen.messages, {"role": "assistant", "content": quoted}]
        built.append(ex)
        if i % 100 == 0:
            print(f"{domain}: {i}/{len(rows)} questions, {len(built)} examples, {time.time() - t0:.0f} s", flush=True)
    train, test = split(built)
    (out / domain).mkdir(parents=True, exist_ok=True)
    for name, part in (("train", train), ("test", test)):
        with open(out / domain / f"{name}.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in part)
    print(json.dumps({"domain": domain, "questions": len(rows), "examples": len(built), "train": len(train),
                      "test": len(test), "fact_not_given": missed, "emergencies_left_out": flagged,
                      "seconds": round(time.time() - t0)}), flush=True)
