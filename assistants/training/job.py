"""A studio training job, run in its own process: training data -> SFT -> the gate -> a candidate version.

``python -m assistants specialists train NAME`` runs it (the studio starts it as a child process at
low priority; an operator can run it by hand). Progress goes to the job file the studio shows. The
adapter is written as a new version beside the live one (``adapter/versions/vN``), never made live:
the operator reads the gate's before/after table and promotes or discards it.

The gate answers the specialist's held-out questions (from chunks no training example used) with the
base model and with the new adapter, both given the same passages, and compares:
- key-fact recall: the answer states the reference answer's figures (or, without figures, at least
  two of its three rarest words that the question does not already contain);
- citation rate: the answer cites a passage it was given; and how often it cites the right one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import time
from collections import Counter
from pathlib import Path

from .. import adapters as registry
from .. import prompts
from ..domains import DomainSpec
from ..settings import Settings
from ..text import content_words, words
from .data import TEST_FRACTION, build_domain, question_of, split

FIGURE = re.compile(r"\d[\d,.:/%]*\d|\d")


def write_data(spec: DomainSpec, settings: Settings, sft_dir: Path) -> dict[str, int]:
    """``train data`` for a created specialist, into its own folder; the held-out split always has some
    grounded questions (a small knowledge base could otherwise put none there)."""
    from ..fsutil import replace_dir, scratch_dir

    examples = build_domain(spec, settings)
    train, test = split(examples)
    if not any(e["kind"] == "grounded" for e in test):
        groups = sorted({e["group"] for e in examples if e["kind"] == "grounded"},
                        key=lambda g: hashlib.sha256(g.encode()).hexdigest())  # a fixed, spread-out choice
        wanted = set(groups[: max(1, math.ceil(len(groups) * TEST_FRACTION))])
        moved = [e for e in train if e["group"] in wanted]
        asked = {question_of(e) for e in moved}
        train = [e for e in train if e["group"] not in wanted and question_of(e) not in asked]
        test = [*test, *moved]
    folder = sft_dir / spec.name
    tmp = scratch_dir(folder)
    tmp.mkdir(parents=True)
    for name, rows in (("train", train), ("test", test)):
        (tmp / f"{name}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    replace_dir(tmp, folder)
    return {"train": len(train), "test": len(test)}


def key_facts(reference: str, question: str, rarity: Counter) -> tuple[list[str], int]:
    """What an answer must state to carry the reference's fact, and how many of those it needs."""
    paragraphs = [part for part in reference.split("\n\n") if prompts.CITATION.search(part)]
    cited = prompts.CITATION.sub("", " ".join(paragraphs) or reference)  # what the answer states from its passage
    figures = list(dict.fromkeys(FIGURE.findall(cited)))
    if figures:
        return figures, len(figures)
    asked = content_words(question)
    candidates = [w for w in dict.fromkeys(words(cited, min_len=4)) if w not in asked and not w.isdigit()]
    rare = sorted(candidates, key=lambda w: (rarity[w], w))[:3]
    return rare, min(2, len(rare))


def states(answer: str, facts: list[str], needed: int) -> bool:
    text = answer.lower()
    return needed > 0 and sum(f.lower() in text for f in facts) >= needed


def gate(model, tokenizer, rows: list[dict], limit: int = 20, max_new_tokens: int = 120, progress=None) -> dict:
    """Base vs adapter on held-out grounded rows: key-fact recall, citation rate, right-passage rate."""
    import torch

    rows = [r for r in rows if r["kind"] == "grounded"][:limit]
    rarity = Counter(w for r in rows for m in r["messages"][:-1] for w in words(m["content"], min_len=4))
    context = getattr(model.config, "max_position_embeddings", 2048)
    sides = {"base": [], "adapter": []}
    for i, row in enumerate(rows):
        messages, reference = row["messages"][:-1], row["messages"][-1]["content"]
        question = prompts.question_of(messages[-1]["content"])
        facts, needed = key_facts(reference, question, rarity)
        given = len(re.findall(r'<document id="\d+"', messages[-1]["content"]))  # the passages the prompt quotes
        right = {int(n) for n in prompts.CITATION.findall(reference)}
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=False)
        if not torch.is_tensor(ids):
            ids = torch.tensor([ids])
        ids = ids[:, -(context - max_new_tokens):]  # the tiny test model's context is short
        for side in ("base", "adapter"):
            with torch.no_grad(), (model.disable_adapter() if side == "base" else contextlib.nullcontext()):
                out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
            answer = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
            cited = {int(n) for n in prompts.CITATION.findall(answer)}
            sides[side].append({"question": question, "answer": answer, "facts": facts,
                                "key_fact": states(answer, facts, needed),
                                "cites": bool(cited) and all(1 <= n <= max(given, 1) for n in cited),
                                "right_passage": bool(cited & right)})
        if progress:
            progress(i + 1, len(rows))
    metrics = {side: {"key_fact_recall": _share(a, "key_fact"), "citation_rate": _share(a, "cites"),
                      "right_passage": _share(a, "right_passage"), "n": len(a)} for side, a in sides.items()}
    base, new = metrics["base"], metrics["adapter"]
    failures = [f"{label} fell from {base[key]:.0%} to {new[key]:.0%}"
                for key, label in (("key_fact_recall", "key-fact recall"), ("citation_rate", "citation rate"))
                if new[key] < base[key]]
    if not rows:
        failures.append("no held-out questions to evaluate on: add documents")
    return {"passed": not failures, "failures": failures, "metrics": metrics, "questions": len(rows),
            "examples": [{"question": b["question"], "base": b["answer"], "adapter": a["answer"], "facts": b["facts"]}
                         for b, a in list(zip(sides["base"], sides["adapter"]))[:5]]}


def _share(rows: list[dict], key: str) -> float:
    return round(sum(r[key] for r in rows) / len(rows), 3) if rows else 0.0


def run(spec: DomainSpec, settings: Settings, job_path: Path | None, steps: int, eval_limit: int = 20) -> dict:
    """The whole job. ``job_path``: the studio's job file to report progress in (None: print only)."""
    from transformers import TrainerCallback

    from ..studio import update_job
    from .sft import SFTOptions, load_base, train_sft

    def note(text: str, **fields) -> None:
        print(text, flush=True)
        if job_path is not None:
            update_job(job_path, note=text, **fields)

    folder = settings.created_dir(spec.name)
    sft_dir = folder / "sft"
    note("building training data from the documents", status="data")
    counts = write_data(spec, settings, sft_dir)
    note(f"training data: {counts['train']} examples, {counts['test']} held out")
    adapter_dir = settings.adapter_for(spec.name)
    version = registry.next_version(adapter_dir)
    out = adapter_dir / "versions" / version
    model, tokenizer, base_id = load_base(settings)
    context = getattr(model.config, "max_position_embeddings", 2048)
    options = SFTOptions(max_steps=steps, max_length=min(SFTOptions.max_length, context))
    start = time.time()

    class Progress(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs and job_path is not None:
                update_job(job_path, loss=round(float(logs["loss"]), 4))

        def on_step_end(self, args, state, control, **kwargs):
            done, total = state.global_step, state.max_steps or steps
            eta = (time.time() - start) / max(done, 1) * (total - done)
            if job_path is not None:
                update_job(job_path, step=done, total=total, eta_s=round(eta))
            if done == 1 or done % 5 == 0 or done == total:
                print(f"step {done}/{total}", flush=True)

    note(f"training {version}: {steps} steps of {options.batch_size} examples", status="training", step=0, total=steps)
    train_sft(spec, settings, options, out_dir=out, sft_dir=sft_dir, model=model, tokenizer=tokenizer, base_id=base_id,
              progress=False, callbacks=[Progress()], version=version)
    minutes = (time.time() - start) / 60
    note(f"trained in {minutes:.1f} min; evaluating base vs {version} on held-out questions", status="evaluating")
    from peft import PeftModel

    base, tokenizer, _ = load_base(settings)  # a clean copy: training injected its LoRA layers into the first
    peft_model = PeftModel.from_pretrained(base, str(out)).eval()
    test_rows = [json.loads(line) for line in (sft_dir / spec.name / "test.jsonl").read_text().splitlines() if line]
    result = gate(peft_model, tokenizer, test_rows, limit=eval_limit,
                  max_new_tokens=min(spec.generation.max_new_tokens, 120),
                  progress=lambda i, n: job_path and update_job(job_path, eval_done=i, eval_total=n))
    target = next(v for v in registry.versions(adapter_dir) if v.name == version)
    registry.update_meta(target, gate=result, studio={"steps": steps, "train_minutes": round(minutes, 1)})
    verdict = "passed" if result["passed"] else "failed: " + "; ".join(result["failures"])
    note(f"{version} ready: gate {verdict}. Promote it or discard it.", status="done",
         result={"version": version, "gate": result})
    return result


def nice(level: int) -> None:
    """Lower this process's priority (the server's chat goes first)."""
    try:
        os.nice(level)
    except OSError:
        pass
