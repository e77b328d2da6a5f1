"""Tokenize the SFT files exactly as trl's prompt-completion path does; write compact arrays for the GPU run."""
import json, subprocess, sys
import numpy as np
from transformers import AutoTokenizer, AutoModelForCausalLM
import torch

tok = AutoTokenizer.from_pretrained("data/models/smollm2-135m-instruct")
MAX = 896
def rows(domain, split):
    if domain == "medical":
        text = subprocess.run(["git", "show", f"867e298:data/sft/medical/{split}.jsonl"], capture_output=True, text=True, check=True).stdout
    else:
        text = open(f"data/sft/{domain}/{split}.jsonl").read()
    return [json.loads(l) for l in text.splitlines() if l.strip()]

def ids(msgs, gen):
    out = tok.apply_chat_template(msgs, add_generation_prompt=gen, tokenize=True)
    return list(out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out)

for domain in ("legal", "medical", "support"):
    for split in ("train", "test"):
        toks, starts, lens, plens = [], [], [], []
        for r in rows(domain, split):
            p = ids(r["messages"][:-1], True)
            pc = ids(r["messages"], False)
            n = 0
            while n < min(len(p), len(pc)) and p[n] == pc[n]:
                n += 1
            pc = pc[:MAX]
            starts.append(sum(lens)); lens.append(len(pc)); plens.append(min(n, len(pc))); toks.extend(pc)
        np.savez_compressed(f".dev/d/{domain}-{split}.npz", toks=np.array(toks, np.uint16), lens=np.array(lens, np.int32), plens=np.array(plens, np.int32))
        print(domain, split, len(lens), "examples", sum(lens), "tokens", "mean", sum(lens) / len(lens), "completion mean", (sum(lens) - sum(plens)) / len(lens))

# reference logits of the converted base, to check the GPU run's conversion of the GGUF is the same model
m = AutoModelForCausalLM.from_pretrained("data/models/smollm2-135m-instruct", dtype=torch.float32)
x = torch.tensor([ids([{"role": "user", "content": "How long does my landlord have to protect my deposit?"}], True)])
with torch.no_grad():
    lg = m(x).logits[0, -1]
ref = {"ids": x[0].tolist(), "top5": lg.topk(5).indices.tolist(), "logits5": [round(v, 4) for v in lg.topk(5).values.tolist()]}
json.dump(ref, open(".dev/d/ref.json", "w"))
print(ref)
