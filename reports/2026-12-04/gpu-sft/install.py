"""Install the GPU-trained LoRA weights (fp16, from .dev/gpu_sft.py) as candidate versions beside the live adapters."""
import json, math, sys, subprocess, hashlib
from pathlib import Path
import torch
from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM
from assistants.adapters import next_version
from assistants.generation.engine import EMBEDDED_ID
from assistants.training.sft import save_adapter, model_card

src = Path(sys.argv[1])
metrics = {json.loads(l)["domain"]: json.loads(l) for l in open(src / "metrics.jsonl")}
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
for domain, m in metrics.items():
    base = AutoModelForCausalLM.from_pretrained("data/models/smollm2-135m-instruct", dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, task_type="CAUSAL_LM", target_modules=TARGETS))
    sd = {k: v.float() for k, v in load_file(src / f"{domain}-e{m['epochs']}.safetensors").items()}
    result = set_peft_model_state_dict(model, sd)
    if result.unexpected_keys:
        raise SystemExit(f"unexpected keys: {result.unexpected_keys[:3]}")
    missing = [k for k in result.missing_keys if "lora" in k]
    if missing:
        raise SystemExit(f"missing LoRA keys: {missing[:3]}")
    if domain == "medical":
        text = subprocess.run(["git", "show", "867e298:data/sft/medical/train.jsonl"], capture_output=True, check=True).stdout
        data = {"file": "data/sft/medical/train.jsonl", "commit": "867e298"}
    else:
        text = Path(f"data/sft/{domain}/train.jsonl").read_bytes()
        data = {"file": f"data/sft/{domain}/train.jsonl"}
    data |= {"sha256_16": hashlib.sha256(text).hexdigest()[:16], "train_examples": m["train_examples"], "test_examples": m["test_examples"],
             "layout": "authored question-answer pairs (data/qa/<domain>), RAFT distractors, evidence-only passages (3 sentences each, "
                       "best first); held-out loss on the whole test split"}
    domain_dir = Path("adapters") / domain
    version = next_version(domain_dir)
    meta = {"version": version, "domain": domain, "base_model": EMBEDDED_ID, "method": "sft",
            "data": data,
            "hyperparameters": {"epochs": m["epochs"], "lr": m["lr"], "rank": 16, "alpha": 32, "dropout": 0.05, "batch_size": m["batch_size"],
                                "max_steps": m["steps"], "max_length": 896, "seed": 0, "bf16": True, "targets": TARGETS},
            "metrics": {"heldout_loss_base": m["heldout_loss_base"], "heldout_loss_adapter": m["heldout_loss_adapter"],
                        "heldout_ppl_base": round(math.exp(m["heldout_loss_base"]), 3), "heldout_ppl_adapter": round(math.exp(m["heldout_loss_adapter"]), 3),
                        "train_minutes": m["train_minutes"]},
            "trained_on": f"{m['device']} (a GPU lent to one session), reports/2026-12-04/gpu-sft/train_gpu.py"}

    def card(meta):
        text = model_card(meta)
        text = text.replace(f"- Training time: {meta['metrics']['train_minutes']} minutes on CPU",
                            f"- Training time: {meta['metrics']['train_minutes']} minutes on one {m['device']} (whole epochs; bf16 autocast, "
                            f"fp32 LoRA weights, saved fp16 from the GPU run); `reports/2026-12-04/gpu-sft/` has the script and log")
        return text.replace("Reproduce: `python -m assistants train sft", "Reproduce on CPU (slower, capped steps): `python -m assistants train sft")
    save_adapter(model, domain_dir / "versions" / version, EMBEDDED_ID, meta, card=card)
    print(domain, version, m)
