"""Preference tuning from user feedback: KTO from thumbs (DPO when there are enough corrections),
starting from the live adapter, written as a new version, and an evaluation gate against the live one.

prepare data (split held-out by answer) -> train -> evaluate gate -> save ``adapters/<domain>/versions/vN``.
The live adapter is never overwritten; ``adapters promote`` decides.
"""

from __future__ import annotations

import hashlib
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .. import prompts
from .. import adapters as registry
from ..domains import DomainSpec
from ..errors import InvalidInput
from ..feedback import FeedbackStore
from ..settings import Settings
from .data import SFT_DIR, held_out, read_jsonl
from .sft import load_base, save_adapter


@dataclass
class PrefOptions:
    steps: int = field(default=12, metadata={"help": "optimizer steps"})
    lr: float = field(default=5e-5, metadata={"help": "learning rate"})
    beta: float = field(default=0.1, metadata={"help": "KTO/DPO beta: how far the policy may move from the reference"})
    batch_size: int = field(default=4, metadata={"help": "examples per step"})
    max_length: int = field(default=896, metadata={"help": "tokens per example"})
    min_pairs: int = field(default=16, metadata={"help": "DPO instead of KTO when at least this many corrections exist"})
    holdout: float = field(default=0.25, metadata={"help": "share of feedback kept out of training for the gate"})
    seed: int = 0
    include_unreviewed: bool = field(default=False, metadata={"help": "also use corrections nobody has approved yet"})
    bf16: bool = field(default_factory=lambda: __import__("assistants.generation.engine", fromlist=["x"]).cpu_has_bf16())

    def __post_init__(self) -> None:
        for name, ok, rule in (("steps", self.steps >= 1, ">= 1"), ("lr", 0 < self.lr < 1, "between 0 and 1"),
                               ("beta", self.beta > 0, "> 0"), ("holdout", 0 < self.holdout < 1, "between 0 and 1"),
                               ("batch_size", self.batch_size >= 1, ">= 1"), ("min_pairs", self.min_pairs >= 1, ">= 1")):
            if not ok:
                raise InvalidInput(f"--{name.replace('_', '-')} must be {rule}, got {getattr(self, name)}")


def prepare(store: FeedbackStore, domain: str, options: PrefOptions, check=None) -> dict:
    """Training and held-out feedback rows; the method (kto or dpo) that the data supports. ``check``: which
    ratings still apply (``FeedbackStore.latest``); the feedback round passes one."""
    kto = store.export(domain, "kto", check=check)
    dpo = store.export(domain, "dpo", include_unreviewed=options.include_unreviewed, check=check)
    split = lambda rows: ([r for r in rows if not held_out(r["answer_id"], options.holdout, options.seed)],  # noqa: E731
                          [r for r in rows if held_out(r["answer_id"], options.holdout, options.seed)])
    kto_train, kto_held = split(kto)
    dpo_train, dpo_held = split(dpo)
    method = "dpo" if len(dpo_train) >= options.min_pairs else "kto"
    if method == "kto" and not ({True, False} <= {r["label"] for r in kto_train}):
        raise InvalidInput(f"{domain}: preference training needs both thumbs up and thumbs down in the feedback "
                           f"({len(kto_train)} usable ratings). Collect more, or run `python -m assistants feedback seed --domain {domain}`.")
    return {"method": method, "train": dpo_train if method == "dpo" else kto_train, "kto_held": kto_held, "dpo_held": dpo_held}


def train_prefs(spec: DomainSpec, settings: Settings, store: FeedbackStore, options: PrefOptions,
                model=None, tokenizer=None, base_id: str | None = None, sft_dir: Path = SFT_DIR, progress: bool = True,
                check=None, loss_gate: bool = True) -> Path:
    """Train a new version from the live one. ``loss_gate``: run the quick gate (held-out loss, citation rate,
    win rate by likelihood on held-out feedback) now; the feedback round runs its own gate on answers instead."""
    from datasets import Dataset
    from peft import PeftModel

    domain_dir = settings.adapters_dir / spec.adapter
    live = registry.live(domain_dir)
    if live is None:
        raise InvalidInput(f"{spec.name} has no adapter to start from: run `python -m assistants train sft --domain {spec.name}` first")
    data = prepare(store, spec.name, options, check)
    if model is None:
        model, tokenizer, base_id = load_base(settings)
    policy = PeftModel.from_pretrained(model, str(live.path), is_trainable=True)
    rows = [{k: r[k] for k in (("prompt", "chosen", "rejected") if data["method"] == "dpo" else ("prompt", "completion", "label"))}
            for r in data["train"]]
    work = settings.home / "checkpoints" / f"prefs-{spec.name}"
    common = dict(output_dir=str(work), max_steps=options.steps, per_device_train_batch_size=options.batch_size,
                  learning_rate=options.lr, beta=options.beta, max_length=options.max_length, use_cpu=True, bf16=options.bf16,
                  report_to="none", save_strategy="no", logging_steps=2, seed=options.seed, disable_tqdm=not progress)
    start = time.perf_counter()
    if data["method"] == "dpo":
        from trl import DPOConfig, DPOTrainer

        trainer = DPOTrainer(model=policy, ref_model=None, args=DPOConfig(**common), train_dataset=Dataset.from_list(rows),
                             processing_class=tokenizer)
    else:
        from trl import KTOConfig, KTOTrainer

        trainer = KTOTrainer(model=policy, ref_model=None, args=KTOConfig(**common), train_dataset=Dataset.from_list(rows),
                             processing_class=tokenizer)
    trainer.train()
    minutes = (time.perf_counter() - start) / 60
    version = registry.next_version(domain_dir)
    out = domain_dir / "versions" / version
    meta = {"version": version, "domain": spec.name, "base_model": base_id, "method": data["method"], "parent": live.name,
            "data": {"file": f"feedback store ({data['method']} export)", "sha256_16": _rows_hash(rows),
                     "train_examples": len(rows), "test_examples": len(data["kto_held"]) + len(data["dpo_held"])},
            "hyperparameters": {k: v for k, v in asdict(options).items()},
            "metrics": {"train_minutes": round(minutes, 1)}}
    pending = f"# {spec.name} adapter {version}\n\nTrained from {live.name}; its gate has not run yet, so it cannot be promoted.\n"
    save_adapter(trainer.model, out, base_id, meta, card=lambda m: pending)  # the card is written once a gate has run
    shutil.rmtree(work, ignore_errors=True)
    if not loss_gate:
        return out
    base = trainer.model.unload()  # the plain base model again: the gate loads live and candidate side by side
    gate = evaluate_gate(base, tokenizer, base_id, live, out, spec, data, sft_dir)
    finish_card(out, meta, gate, live)
    return out


def _rows_hash(rows: list[dict]) -> str:
    return hashlib.sha256(repr(rows).encode()).hexdigest()[:16]


def evaluate_gate(base, tokenizer, base_id: str, live: registry.Version, candidate_dir: Path, spec: DomainSpec,
                  data: dict, sft_dir: Path = SFT_DIR, limit: int = 24) -> dict:
    """Candidate vs live on the domain's held-out set (loss, safety-case loss, citation rate) and on held-out
    feedback (win rate by log-probability: up answers more likely, down answers less, chosen over rejected)."""
    from peft import PeftModel

    from ..generation.base import GenerationRequest

    from ..generation.engine import Engine
    from ..evaluation.specialization import completion_loss

    peft = PeftModel.from_pretrained(base, str(live.path), adapter_name="live")
    peft.load_adapter(str(candidate_dir), adapter_name="candidate")
    peft.eval()
    engine = Engine(peft, tokenizer, base_id)
    test = read_jsonl(sft_dir / spec.name / "test.jsonl") if (sft_dir / spec.name / "test.jsonl").is_file() else []
    grounded = [r for r in test if r["kind"] == "grounded"][1::2][:limit]  # the other half seeds simulated feedback
    safety_rows = [r for r in test if r["kind"] in ("safety", "refusal")][:limit]
    metrics = {}
    for name in ("live", "candidate"):
        cited = 0
        for row in grounded[:6]:
            text = engine.generate(GenerationRequest(messages=row["messages"][:-1], adapter=name, max_new_tokens=80,
                                                     repetition_penalty=1.15))
            cited += prompts.has_citation(text)
        metrics[name] = {"heldout_loss": round(completion_loss(engine, grounded, name), 4) if grounded else None,
                         "safety_loss": round(completion_loss(engine, safety_rows, name), 4) if safety_rows else None,
                         "citation_rate": round(cited / max(len(grounded[:6]), 1), 3)}
    wins = []
    for r in data["kto_held"]:
        lp = {n: -completion_loss(engine, [{"messages": r["prompt"] + r["completion"]}], n) for n in ("live", "candidate")}
        wins.append((lp["candidate"] > lp["live"]) == bool(r["label"]))
    for r in data["dpo_held"]:
        margin = {n: -completion_loss(engine, [{"messages": r["prompt"] + r["chosen"]}], n)
                  + completion_loss(engine, [{"messages": r["prompt"] + r["rejected"]}], n) for n in ("live", "candidate")}
        wins.append(margin["candidate"] > margin["live"])
    win_rate = round(sum(wins) / len(wins), 3) if wins else None
    live_m, cand_m = metrics["live"], metrics["candidate"]
    failures = []
    if live_m["heldout_loss"] is not None and cand_m["heldout_loss"] > live_m["heldout_loss"] * 1.02:
        failures.append(f"held-out loss regressed ({cand_m['heldout_loss']} vs {live_m['heldout_loss']})")
    if live_m["safety_loss"] is not None and cand_m["safety_loss"] > live_m["safety_loss"] * 1.05:
        failures.append(f"safety/refusal cases regressed ({cand_m['safety_loss']} vs {live_m['safety_loss']})")
    if cand_m["citation_rate"] < live_m["citation_rate"] - 0.15:
        failures.append(f"citation rate dropped ({cand_m['citation_rate']:.0%} vs {live_m['citation_rate']:.0%})")
    if win_rate is not None and win_rate < 0.5:
        failures.append(f"win rate on held-out feedback is {win_rate:.0%} (< 50%)")
    if win_rate is None:
        failures.append("no held-out feedback to judge the candidate on")
    return {"passed": not failures, "failures": failures, "live": live_m, "candidate": cand_m,
            "feedback_win_rate": win_rate, "feedback_held_out": len(wins), "compared_with": live.name}


def finish_card(out: Path, meta: dict, gate: dict, live: registry.Version) -> None:
    import json

    meta["gate"] = gate
    loss = gate["candidate"]["heldout_loss"]
    meta["metrics"].update({"heldout_loss_adapter": loss, "heldout_ppl_adapter": round(math.exp(loss), 3) if loss else None,
                            "heldout_ppl_base": live.meta.get("metrics", {}).get("heldout_ppl_base"),
                            "heldout_loss_base": live.meta.get("metrics", {}).get("heldout_loss_base"),
                            "feedback_win_rate": gate["feedback_win_rate"]})
    (out / "assistants.json").write_text(json.dumps(meta, indent=2))
    verdict = "passed" if gate["passed"] else "FAILED: " + "; ".join(gate["failures"])
    card = f"""# {meta['domain']} adapter {meta['version']} ({meta['method'].upper()} from user feedback)

Trained from the live version {meta['parent']} with trl's {meta['method'].upper()} trainer on
{meta['data']['train_examples']} feedback examples ({meta['data']['test_examples']} held out for the gate).

| gate (vs {gate['compared_with']}) | live | candidate |
|---|---|---|
| held-out loss | {gate['live']['heldout_loss']} | {gate['candidate']['heldout_loss']} |
| safety/refusal loss | {gate['live']['safety_loss']} | {gate['candidate']['safety_loss']} |
| citation rate | {gate['live']['citation_rate']} | {gate['candidate']['citation_rate']} |

Win rate on held-out feedback: {gate['feedback_win_rate']} ({gate['feedback_held_out']} items). Gate: **{verdict}**.
Promote with `python -m assistants adapters promote {meta['domain']} {meta['version']}`.
"""
    front = (f"---\nbase_model: {meta['base_model']}\nlibrary_name: peft\nlicense: apache-2.0\n"
             f"tags: [lora, {meta['method']}, trl, {meta['domain']}]\n---\n\n")
    (out / "README.md").write_text(front + card)


def seed_feedback(chat, store: FeedbackStore, domain: str, n: int = 24, sft_dir: Path = SFT_DIR, progress: bool = True) -> dict:
    """Simulated ratings from held-out questions, labelled simulated: up when the answer cites and overlaps
    the reference answer, else down with the reference as the correction (so DPO pairs exist too)."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    from ..chat import ChatRequest

    rows = [r for r in read_jsonl(sft_dir / domain / "test.jsonl") if r["kind"] == "grounded"][0::2][:n]
    questions = [prompts.question_of(r["messages"][-2]["content"]) for r in rows]

    def one(i: int) -> str:
        answer = chat.ask(ChatRequest(message=questions[i], domain=domain, session_id="simulated"))
        reference = rows[i]["messages"][-1]["content"]
        words = prompts.content_words(reference, min_len=3)
        overlap = len(words & prompts.content_words(answer.text, min_len=3)) / max(len(words), 1)
        good = overlap >= 0.35 and bool(prompts.cited(answer.text, answer.sources))
        store.rate(answer.id, "up" if good else "down", correction=None if good else reference,
                   reason="simulated from the held-out set", session_id="simulated", simulated=True,
                   review="approved")  # the reference answer of a reviewed held-out example
        return "up" if good else "down"

    with ThreadPoolExecutor(8) as pool:
        results = list(tqdm(pool.map(one, range(len(rows))), total=len(rows), desc=f"seed {domain}", disable=not progress))
    return {"up": results.count("up"), "down": results.count("down")}
