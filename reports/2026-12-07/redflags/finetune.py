"""Red-flag classifier on a MiniLM fine-tuned for it (LoRA + a cosine head, cross-entropy over the detector's classes),
against the shipped one (MiniLM as pre-trained); the same logistic regression over [embedding, words] on top of each.

    PYTHONPATH=. .venv/bin/python reports/2026-12-07/encoder/finetune.py OUT_DIR [epochs] [rank] [lr]
"""
import json, glob, random, sys, time
from pathlib import Path

import numpy as np
import torch

from assistants.settings import Settings
from assistants.cli import _domains, ordinary_questions as eval_ordinary
from assistants import redflags
from assistants.domains import read_qa
from assistants.embeddings import Embedder

out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 2
rank = int(sys.argv[3]) if len(sys.argv) > 3 else 8
lr = float(sys.argv[4]) if len(sys.argv) > 4 else 3e-4
s = Settings(); d = _domains(s)
rf = s.domains_dir / "redflags"
negs = redflags.ordinary_questions(d, s.domains_dir)
floor = redflags.RedFlagDetector.patterns_only(d)
data = redflags.training_set(floor.rules, rf / "train", negs)
print("train", len(data.texts), "classes", len(data.labels), flush=True)

adapter = out / "adapter"
if not (adapter / "adapter_config.json").is_file():
    from peft import LoraConfig, get_peft_model
    from sentence_transformers import SentenceTransformer
    from assistants.embeddings import bundled_model_path
    torch.manual_seed(0)
    model = SentenceTransformer(str(bundled_model_path()), device="cpu")
    enc, tok = model[0].auto_model, model.tokenizer
    peft = get_peft_model(enc, LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.05,
                                          target_modules=["query", "key", "value", "dense"]))
    k = len(data.labels)
    # the head starts at each class's mean embedding under MiniLM as pre-trained
    with torch.no_grad():
        base = Embedder.for_settings(s).embed(data.texts)
    centres = np.stack([base[data.y == c].mean(0) for c in range(k)])
    head = torch.nn.Parameter(torch.tensor(centres / np.linalg.norm(centres, axis=1, keepdims=True)))
    params = [p for p in peft.parameters() if p.requires_grad] + [head]
    batch = 32
    steps = epochs * ((len(data.texts) + batch - 1) // batch)
    opt = torch.optim.AdamW(params, lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda st: min(1.0, (st + 1) / 10) * max(0.0, 1 - st / steps))
    # classes weighted so the emergencies (few per category) count as much as the many ordinary questions
    counts = np.bincount(data.y, minlength=k)
    weight = torch.tensor((len(data.y) / (k * counts)) ** 0.5, dtype=torch.float32)
    idx = list(range(len(data.texts))); rng = random.Random(0); step = 0; t0 = time.time(); hist = []
    peft.train()
    for ep in range(epochs):
        rng.shuffle(idx)
        for a in range(0, len(idx), batch):
            ch = idx[a:a + batch]
            b = tok([data.texts[i] for i in ch], padding=True, truncation=True, max_length=96, return_tensors="pt")
            h = peft(**b).last_hidden_state
            m = b["attention_mask"].unsqueeze(-1).float()
            e = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=-1)
            logits = 20.0 * e @ torch.nn.functional.normalize(head, dim=-1).T
            loss = torch.nn.functional.cross_entropy(logits, torch.tensor(data.y[ch]), weight=weight)
            loss.backward(); opt.step(); sched.step(); opt.zero_grad(); step += 1; hist.append(loss.item())
            if step % 20 == 0 or step == steps:
                print(f"step {step}/{steps} ep {ep+1} loss {np.mean(hist[-20:]):.3f} ({time.time()-t0:.0f} s)", flush=True)
    peft.eval()
    peft.save_pretrained(str(adapter))
    (out / "train.json").write_text(json.dumps({"epochs": epochs, "rank": rank, "lr": lr, "steps": steps,
                                                "seconds": round(time.time() - t0), "loss": hist}) + "\n")

ordinary = eval_ordinary(list(d))
fresh = [json.loads(l)["question"] for f in sorted(glob.glob("data/eval/fresh*/*.jsonl")) for l in open(f)
         if json.loads(l)["kind"] == "fact"]
qa = [r["question"] for dom in d for r in read_qa(dom)]
results = {}
for name, emb in [("shipped", Embedder.for_settings(s)), ("tuned", Embedder(adapter=adapter))]:
    det = redflags.RedFlagDetector.train(d, emb, rf, negs, s.home / "cache")
    r = redflags.evaluate(det, rf, ordinary)
    fr = [(q, [f.rule.name for f in det.detect(q)]) for q in fresh]
    fr = [x for x in fr if x[1]]
    qq = [(q, [f.rule.name for f in det.detect(q)]) for q in qa]
    qq = [x for x in qq if x[1]]
    miss = sum(len(v) for v in r["misses"].values())
    held = sum(x["n"] for x in r["per_category"].values())
    first = sum(round(x["right_first"] * x["n"]) for x in r["per_category"].values())
    line = (f"{name}: missed {miss}/{held}, right first {first}, near-miss alarms {r['false_alarms']}/{r['near_misses']}, "
            f"ordinary {r['ordinary_alarms']}/{r['ordinary_questions']}, fresh {len(fr)}/{len(fresh)}, data/qa {len(qq)}/{len(qa)}")
    print(line, flush=True)
    results[name] = {"line": line, "misses": r["misses"], "near": r["false_alarm_examples"],
                     "ordinary": r["ordinary_alarm_examples"], "fresh": fr, "qa": qq}
(out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
