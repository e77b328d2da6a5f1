"""LoRA supervised fine-tuning of one domain adapter with trl's SFTTrainer.

prepare data -> train (resumable, seeded, progress bar) -> evaluate held-out loss -> save adapter + model card.
Loss is on the assistant answer only (prompt/completion format).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..domains import DomainSpec
from ..generation.engine import resolve_base_model
from ..errors import InvalidInput
from ..fsutil import replace_dir, scratch_dir
from ..settings import Settings
from .data import SFT_DIR, read_jsonl, write_domain

log = logging.getLogger(__name__)


@dataclass
class SFTOptions:
    """Defaults train one domain in under 15 minutes on 2 CPU cores with the embedded model."""

    epochs: float = field(default=1.0, metadata={"help": "passes over the training set"})
    lr: float = field(default=5e-4, metadata={"help": "peak learning rate (cosine schedule)"})
    rank: int = field(default=16, metadata={"help": "LoRA rank"})
    alpha: int = field(default=32, metadata={"help": "LoRA alpha (scale = alpha / rank)"})
    dropout: float = field(default=0.05, metadata={"help": "LoRA dropout"})
    batch_size: int = field(default=8, metadata={"help": "examples per optimizer step"})
    max_steps: int = field(default=20, metadata={"help": "cap on optimizer steps (-1 = no cap); keeps CPU training short"})
    max_length: int = field(default=896, metadata={"help": "tokens per example; longer ones are truncated"})
    seed: int = field(default=0, metadata={"help": "seed for data order and LoRA init"})
    bf16: bool = field(default_factory=lambda: __import__("assistants.generation.engine", fromlist=["x"]).cpu_has_bf16(),
                       metadata={"help": "bf16 autocast (default: when the CPU has native bf16); LoRA weights stay fp32"})
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

    def __post_init__(self) -> None:
        for name, ok in (("epochs", self.epochs > 0), ("lr", 0 < self.lr < 1), ("rank", self.rank >= 1),
                         ("batch_size", self.batch_size >= 1), ("max_length", self.max_length >= 64),
                         ("dropout", 0 <= self.dropout < 1), ("max_steps", self.max_steps == -1 or self.max_steps >= 1)):
            if not ok:
                raise InvalidInput(f"--{name.replace('_', '-')} is out of range: {getattr(self, name)}")


def to_prompt_completion(rows: list[dict]):
    from datasets import Dataset

    return Dataset.from_list([{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]} for r in rows])


def training_device() -> str:
    """"cuda" where torch sees a GPU (a whole batch per forward, bf16 where the GPU has it), else "cpu"."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def batching(options: SFTOptions, device: str) -> dict:
    """The trainer's device and batch settings. On CPU one example per forward, accumulated to
    ``options.batch_size`` per step: with no padding in a forward, attention runs the fused causal kernel instead
    of materializing a masked (T, T) matrix per head. On a GPU the batch is one padded forward (a 135M model
    leaves it idle otherwise: 3 epochs of 2,111 examples took 2 minutes on an H200 that way,
    reports/2026-12-04/gpu-sft)."""
    if device == "cpu":
        return {"use_cpu": True, "bf16": options.bf16, "per_device_train_batch_size": 1, "per_device_eval_batch_size": 1,
                "gradient_accumulation_steps": options.batch_size}
    import torch

    return {"use_cpu": False, "bf16": torch.cuda.is_bf16_supported(), "per_device_train_batch_size": options.batch_size,
            "per_device_eval_batch_size": options.batch_size, "gradient_accumulation_steps": 1}


def data_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def load_base(settings: Settings):
    """The base model for training: fp32 weights (LoRA needs stable gradients), and its stable id."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source, base_id = resolve_base_model(settings)
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    return model, tokenizer, base_id


def train_sft(spec: DomainSpec, settings: Settings, options: SFTOptions, out_dir: Path | None = None,
              sft_dir: Path = SFT_DIR, model=None, tokenizer=None, base_id: str | None = None,
              progress: bool = True, callbacks: list | None = None, version: str = "v1") -> Path:
    """Train ``spec``'s adapter and write it (with its model card) to ``out_dir`` (default adapters/<domain>)."""
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    train_file = sft_dir / spec.name / "train.jsonl"
    if not train_file.is_file():
        write_domain(spec, settings, sft_dir, options.seed)
    train_rows, test_rows = read_jsonl(train_file), read_jsonl(sft_dir / spec.name / "test.jsonl")
    if model is None:
        model, tokenizer, base_id = load_base(settings)
    out_dir = out_dir or settings.adapters_dir / spec.adapter
    work = settings.home / "checkpoints" / f"sft-{spec.name}"
    device = training_device()
    trainer_batching = batching(options, device)
    config = SFTConfig(
        output_dir=str(work), num_train_epochs=options.epochs, max_steps=options.max_steps,
        learning_rate=options.lr, lr_scheduler_type="cosine",
        warmup_steps=3, logging_steps=5, save_steps=10, save_total_limit=2, seed=options.seed, data_seed=options.seed,
        max_length=options.max_length, gradient_checkpointing=False, report_to="none",
        disable_tqdm=not progress, completion_only_loss=True, dataloader_num_workers=0, **trainer_batching)
    lora = LoraConfig(r=options.rank, lora_alpha=options.alpha, lora_dropout=options.dropout,
                      target_modules=list(options.targets), task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=config, train_dataset=to_prompt_completion(train_rows),
                         eval_dataset=to_prompt_completion(test_rows), processing_class=tokenizer, peft_config=lora,
                         callbacks=callbacks)
    resume = any(work.glob("checkpoint-*"))
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=True if resume else None)
    minutes = (time.perf_counter() - start) / 60
    adapter_loss = trainer.evaluate()["eval_loss"]
    with trainer.model.disable_adapter():
        base_loss = trainer.evaluate()["eval_loss"]
    save_adapter(trainer.model, out_dir, base_id, {
        "version": version, "domain": spec.name, "base_model": base_id, "method": "sft",
        "data": {"file": str(train_file.relative_to(train_file.parents[3])) if len(train_file.parents) > 3 else str(train_file),
                 "sha256_16": data_hash(train_file), "train_examples": len(train_rows), "test_examples": len(test_rows)},
        "hyperparameters": {k: v for k, v in asdict(options).items() if k != "targets"}
        | {"targets": list(options.targets), "bf16": trainer_batching["bf16"]},
        "metrics": {"heldout_loss_base": round(base_loss, 4), "heldout_loss_adapter": round(adapter_loss, 4),
                    "heldout_ppl_base": round(math.exp(base_loss), 3), "heldout_ppl_adapter": round(math.exp(adapter_loss), 3),
                    "train_minutes": round(minutes, 1)},
        "trained_on": device,
    })
    shutil.rmtree(work, ignore_errors=True)  # checkpoints only matter until the run completes
    return out_dir


def save_adapter(peft_model, out_dir: Path, base_id: str, meta: dict, card=None) -> None:
    """Adapter weights + config (recording the base model id) + assistants.json + README model card."""
    tmp = scratch_dir(out_dir)
    names = list(getattr(peft_model, "peft_config", {}))
    # only the trained adapter: trl's DPO adds a frozen "ref" copy beside it, which is not part of this version
    peft_model.save_pretrained(tmp, **({"selected_adapters": ["default"]} if "default" in names and len(names) > 1 else {}))
    config_file = tmp / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config["base_model_name_or_path"] = base_id
    config_file.write_text(json.dumps(config, indent=2))
    (tmp / "assistants.json").write_text(json.dumps(meta, indent=2))
    (tmp / "README.md").write_text((card or model_card)(meta))
    keep = out_dir / "versions"  # preference-tuned versions live beside the current adapter
    if keep.is_dir():
        shutil.move(str(keep), str(tmp / "versions"))
    replace_dir(tmp, out_dir)  # a running app reading the old adapter never sees half of the new one


def model_card(meta: dict) -> str:
    m, h, d = meta["metrics"], meta["hyperparameters"], meta["data"]
    return f"""---
base_model: {meta['base_model']}
library_name: peft
license: apache-2.0
tags: [lora, sft, trl, {meta['domain']}]
---

# {meta['domain']} adapter {meta['version']}

LoRA adapter for the **{meta['domain']}** specialist, trained with trl `SFTTrainer` (loss on the assistant
answer only) on grounded question/answer examples built from `knowledge/{meta['domain']}/` by
`python -m assistants train data`.

- Base model: `{meta['base_model']}` (the engine refuses this adapter on any other base)
- Data: `{d['file']}` (sha256 prefix `{d['sha256_16']}`), {d['train_examples']} train / {d['test_examples']} held-out examples
- Hyperparameters: rank {h['rank']}, alpha {h['alpha']}, dropout {h['dropout']}, lr {h['lr']}, batch {h['batch_size']} ({'one padded forward' if meta.get('trained_on') == 'cuda' else 'one example per forward, accumulated'}),
  epochs {h['epochs']}, max steps {h['max_steps']}, max length {h['max_length']}, seed {h['seed']}, targets {', '.join(h['targets'])}
- Training time: {m['train_minutes']} minutes on {'a GPU' if meta.get('trained_on') == 'cuda' else 'CPU'}

| held-out ({meta['domain']} test set) | loss | perplexity |
|---|---|---|
| base model | {m['heldout_loss_base']} | {m['heldout_ppl_base']} |
| base + this adapter | {m['heldout_loss_adapter']} | {m['heldout_ppl_adapter']} |

Reproduce: `python -m assistants train sft --domain {meta['domain']}`.
"""
