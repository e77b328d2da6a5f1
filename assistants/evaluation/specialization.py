"""Evaluations that print numbers and save plots: adapter specialization (held-out loss matrix)
and citation rate. ``python -m assistants eval specialization [--json] [--limit N] [--out DIR]``.
"""

from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

from ..generation.base import BASE, GenerationRequest

from ..generation.engine import Engine
from ..prompts import has_citation
from ..training.data import SFT_DIR, read_jsonl


def completion_loss(engine: Engine, rows: list[dict], adapter: str | None) -> float:
    """Mean cross-entropy per answer token (prompt tokens masked), as in training."""
    import torch

    total, count = 0.0, 0
    for row in rows:
        prompt_ids = engine.prompt_ids(row["messages"][:-1])
        full = engine.tokenizer.apply_chat_template(row["messages"], tokenize=True)
        full_ids = list(full["input_ids"] if hasattr(full, "keys") else full)
        ids = torch.tensor([full_ids])
        labels = ids.clone()
        labels[0, : len(prompt_ids)] = -100
        kwargs = {"adapter_names": [adapter or BASE]} if engine.is_peft else {}
        with torch.inference_mode():
            logits = engine.model(input_ids=ids, **kwargs).logits.float()
        loss = torch.nn.functional.cross_entropy(logits[0, :-1], labels[0, 1:], ignore_index=-100, reduction="sum")
        total += loss.item()
        count += int((labels[0, 1:] != -100).sum())
    return total / max(count, 1)


def specialization(engine: Engine, domains: list[str], sft_dir: Path = SFT_DIR, limit: int = 40,
                   progress: bool = True) -> dict:
    """Held-out loss and perplexity of the base model and of every loaded adapter on every domain's test set."""
    from tqdm import tqdm

    models = [None] + [d for d in domains if engine.adapter_for(d)]
    tests = {d: [r for r in read_jsonl(sft_dir / d / "test.jsonl")][:limit] for d in domains if (sft_dir / d / "test.jsonl").is_file()}
    loss: dict[str, dict[str, float]] = {}
    with tqdm(total=len(models) * len(tests), desc="eval specialization", disable=not progress) as bar:
        for model in models:
            name = model or "base"
            loss[name] = {}
            for domain, rows in tests.items():
                loss[name][domain] = round(completion_loss(engine, rows, model), 4)
                bar.update(1)
    ppl = {m: {d: round(math.exp(v), 3) for d, v in row.items()} for m, row in loss.items()}
    checks = {}
    for domain in tests:
        if domain in ppl:
            own, base = ppl[domain][domain], ppl["base"][domain]
            others = [ppl[m][domain] for m in ppl if m not in ("base", domain)]
            checks[domain] = {"reduction_vs_base": round(1 - own / base, 4), "beats_base_by_20pct": own <= 0.8 * base,
                              "beats_other_adapters": all(own < o for o in others)}
    return {"loss": loss, "perplexity": ppl, "checks": checks, "examples_per_domain": {d: len(r) for d, r in tests.items()}}


def citation_rate(engine: Engine, domains: list[str], sft_dir: Path = SFT_DIR, limit: int = 20,
                  max_new_tokens: int = 200, progress: bool = True) -> dict[str, float]:
    """Share of held-out grounded questions (passages contain the answer) whose generated answer cites [n].

    200 new tokens, the domains' default answer length: the training answers put the citation after
    the quoted facts, so a shorter cut would miss citations a user would see.
    """
    from tqdm import tqdm

    rates = {}
    for domain in domains:
        if not engine.adapter_for(domain) or not (sft_dir / domain / "test.jsonl").is_file():
            continue
        rows = [r for r in read_jsonl(sft_dir / domain / "test.jsonl") if r["kind"] == "grounded"][:limit]

        def answer(row: dict) -> str:
            return engine.generate(GenerationRequest(messages=row["messages"][:-1], adapter=domain,
                                                     max_new_tokens=max_new_tokens, repetition_penalty=1.15))

        # with a scheduler running, answers are generated side by side in one batch
        workers = engine.scheduler.max_batch if getattr(engine, "scheduler", None) else 1
        with ThreadPoolExecutor(workers) as pool:
            texts = list(tqdm(pool.map(answer, rows), total=len(rows), desc=f"citations {domain}", disable=not progress, leave=False))
        rates[domain] = round(sum(has_citation(t) for t in texts) / max(len(rows), 1), 3)
    return rates


def plot_matrix(ppl: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models, domains = list(ppl), list(next(iter(ppl.values())))
    values = [[ppl[m][d] for d in domains] for m in models]
    fig, ax = plt.subplots(figsize=(1.6 + 1.5 * len(domains), 1.2 + 0.7 * len(models)))
    im = ax.imshow(values, cmap="viridis_r")
    ax.set_xticks(range(len(domains)), domains)
    ax.set_xlabel("held-out test set")
    ax.set_yticks(range(len(models)), [m if m == "base" else f"{m} adapter" for m in models])
    for i, row in enumerate(values):
        for j, v in enumerate(row):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="white" if v > sum(map(sum, values)) / (len(models) * len(domains)) else "black")
    ax.set_title("Held-out perplexity (lower is better)")
    fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown_report(result: dict) -> str:
    ppl = result["perplexity"]
    domains = list(next(iter(ppl.values())))
    lines = ["| model | " + " | ".join(f"{d} test" for d in domains) + " |", "|---" * (len(domains) + 1) + "|"]
    lines += [f"| {m if m == 'base' else m + ' adapter'} | " + " | ".join(f"{ppl[m][d]:.2f}" for d in domains) + " |" for m in ppl]
    lines += ["", "| domain | perplexity reduction vs base | >= 20% | beats other adapters | citation rate |", "|---|---|---|---|---|"]
    for d, c in result["checks"].items():
        rate = result.get("citation_rate", {}).get(d)
        lines.append(f"| {d} | {c['reduction_vs_base']:.0%} | {'yes' if c['beats_base_by_20pct'] else 'NO'} | "
                     f"{'yes' if c['beats_other_adapters'] else 'NO'} | {'' if rate is None else f'{rate:.0%}'} |")
    return "\n".join(lines)


def save_report(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "specialization.json").write_text(json.dumps(result, indent=2))
    (out / "specialization.md").write_text(markdown_report(result) + "\n")
    plot_matrix(result["perplexity"], out / "specialization.png")


def default_out() -> Path:
    return Path("reports") / date.today().isoformat()
