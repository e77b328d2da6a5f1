"""Go on training a domain's adapter on the served-layout examples (build.py), on CPU, and save it as a new
candidate version beside the live one (not promoted: the gate decides).

python train.py DATA_DIR DOMAIN FROM_VERSION STEPS"""
import json
import math
import sys
import time
from pathlib import Path

import torch
from peft import PeftModel
from trl import SFTConfig, SFTTrainer

from assistants.adapters import next_version
from assistants.settings import Settings
from assistants.training.data import read_jsonl
from assistants.training.sft import SFTOptions, batching, data_hash, load_base, model_card, save_adapter, to_prompt_completion

data_dir, domain, start, steps = Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
settings = Settings.from_env()
options = SFTOptions(max_steps=steps, lr=3e-4)
model, tokenizer, base_id = load_base(settings)
domain_dir = settings.adapters_dir / domain
model = PeftModel.from_pretrained(model, str(domain_dir / "versions" / start), is_trainable=True)
train_file = data_dir / domain / "train.jsonl"
train_rows, test_rows = read_jsonl(train_file), read_jsonl(data_dir / domain / "test.jsonl")
work = settings.home / "checkpoints" / f"served-{domain}"
config = SFTConfig(output_dir=str(work), max_steps=steps, learning_rate=options.lr, lr_scheduler_type="cosine",
                   warmup_steps=2, logging_steps=5, save_steps=1000, seed=0, data_seed=0, max_length=options.max_length,
                   report_to="none", completion_only_loss=True, dataloader_num_workers=0, **batching(options, "cpu"))
trainer = SFTTrainer(model=model, args=config, train_dataset=to_prompt_completion(train_rows),
                     eval_dataset=to_prompt_completion(test_rows), processing_class=tokenizer)
before = trainer.evaluate()["eval_loss"]
t0 = time.perf_counter()
trainer.train()
minutes = (time.perf_counter() - t0) / 60
after = trainer.evaluate()["eval_loss"]
with trainer.model.disable_adapter():
    base_loss = trainer.evaluate()["eval_loss"]
version = next_version(domain_dir)
start_meta = json.loads((domain_dir / "versions" / start / "assistants.json").read_text())
meta = {"version": version, "domain": domain, "base_model": base_id, "method": "sft", "parent": f"{domain}@{start}",
        "data": {"file": str(train_file), "sha256_16": data_hash(train_file), "train_examples": len(train_rows),
                 "test_examples": len(test_rows),
                 "layout": "the app's served prompt for each authored question (real retrieval, rerank, evidence sentences); "
                           "the answer quotes the given sentence holding the key facts (reports/2026-12-05/served-sft)"},
        "hyperparameters": {**start_meta.get("hyperparameters", {}), "continued_steps": steps, "continued_lr": options.lr,
                            "batch_size": options.batch_size},
        "metrics": {"heldout_loss_base": round(base_loss, 4), "heldout_loss_parent": round(before, 4),
                    "heldout_loss_adapter": round(after, 4), "heldout_ppl_base": round(math.exp(base_loss), 3),
                    "heldout_ppl_adapter": round(math.exp(after), 3), "train_minutes": round(minutes, 1)},
        "trained_on": "cpu"}


def card(meta: dict) -> str:
    text = model_card(meta).replace("by\n`python -m assistants train data`.", f"by\n`python -m assistants train data`, then "
                                    f"{steps} more steps from {domain} {start} on the served layout "
                                    f"(reports/2026-12-05/served-sft/; parent's held-out loss {before:.4f}).")
    return text.replace("Reproduce: `python -m assistants train sft --domain", "Reproduce: `reports/2026-12-05/served-sft/"
                        "build.py` then `train.py` (the parent: `python -m assistants train sft --domain")


save_adapter(trainer.model, domain_dir / "versions" / version, base_id, meta, card=card)
print(json.dumps(meta["metrics"] | {"version": version}), flush=True)
