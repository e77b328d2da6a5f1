"""The sentence ranker: a LoRA adapter on the MiniLM embedder, trained to put the sentence that answers first.

A quote-first answer opens with the passages' best-ranked sentences (``retrieval.best_sentences``), so the
sentence ranking decides what an answer states. MiniLM was pre-trained to match texts on topic, not to find the
one sentence of a passage that answers a question ("how long does my landlord have to protect my deposit?" is
about deposits; so is every sentence of the passage). This adapter teaches it that, from the team's authored
questions (``data/qa``): for each question, the sentence of its document that holds its key facts is the
positive; the sentence the pre-trained ranking puts first among the passages the app retrieves, when it holds no
key fact, is a hard negative; the other questions' sentences in the batch are negatives too (InfoNCE). The
question is embedded as is, a sentence under its heading ("Deposits: The landlord must ..."), as the ranking reads it.

A second round (``--mine-with``) adds the mistakes of a ranker already trained: the app reranks the first
``retrieval.rerank`` passages by their best sentence, so a wrong sentence of another document that this ranker rates
highest moves a wrong passage first ("How many EpiPens should someone carry?" -> the paracetamol doses). The
``--negatives`` wrong sentences it rates highest among those candidate passages join the question's negatives.

    python -m assistants train ranker [--holdout 0.2] [--mine-with adapters/sentence-ranker --negatives 3]
        ->   adapters/sentence-ranker/

``--holdout`` keeps a share of the documents out of training and reports the ranking on their questions
against the ranking without the adapter (the held-out documents' questions are never trained on).
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..domains import read_qa
from ..errors import InvalidInput
from ..fsutil import replace_dir, scratch_dir
from ..retrieval import Retriever, passage_sentences, rank_sentences, ranked_text
from ..types import Passage
from .data import held_out, normalise

log = logging.getLogger(__name__)

RANKER = "sentence-ranker"  # its folder under the adapters folder


@dataclass
class RankerOptions:
    epochs: int = 2
    batch: int = 32
    lr: float = 3e-4
    rank: int = 16
    scale: float = 20.0  # cosine x scale are the logits (sentence-transformers' MultipleNegativesRankingLoss default)
    max_length: int = 96
    holdout: float = 0.0  # share of documents kept out (for measuring); 0 for the shipped adapter
    seed: int = 0
    negatives: int = 3  # with a miner: its highest-rated wrong sentences among the rerank candidates, per question


def _holds(sentence: str, facts: list[str]) -> int:
    """How many of ``facts`` the sentence states, matched as training data matches them (``data.normalise``)."""
    said = normalise(sentence)
    return sum(normalise(f) in said for f in facts)


def document_sentences(knowledge: Path, doc: str) -> list[tuple[str, str]]:
    """(sentence, heading) of a whole knowledge document, as ``passage_sentences`` splits a passage."""
    from ..documents import load_file

    text = load_file(knowledge / doc).text
    return passage_sentences(Passage(id=doc, title=Path(doc).stem.replace("-", " "), source=doc, score=1.0, text=text))


def pairs(retriever: Retriever, domains: list[str], options: RankerOptions, progress=print,
          per_domain: int | None = None, miner: Retriever | None = None) -> dict[str, list[dict]]:
    """{"train": [...], "test": [...]}: {domain, doc, question, facts, positive, negatives} per authored question
    whose document states a key fact in one sentence (the first ``per_domain`` of each domain, default all).
    Negatives: the best-ranked wrong sentence of the passages ``retriever`` gives, then (with a ``miner``) the
    ``options.negatives`` wrong sentences the miner rates highest among the domain's rerank candidates.
    Test: the held-out documents' questions."""
    kb = retriever.kb
    out: dict[str, list[dict]] = {"train": [], "test": []}
    for domain in domains:
        knowledge = kb.settings.knowledge_for(domain)
        idf, docs = kb.idf(domain), {}
        rows = [r for r in read_qa(domain) if (knowledge / r["doc"]).is_file()][:per_domain]  # a document removed: its questions go
        for i, row in enumerate(rows):
            if row["doc"] not in docs:
                docs[row["doc"]] = document_sentences(knowledge, row["doc"])
            every = docs[row["doc"]]
            held = [(j, _holds(s, row["facts"])) for j, (s, _) in enumerate(every)
                    if not s.startswith(("#", ">")) and len(s.split()) >= 3]
            best = max((k for _, k in held), default=0)
            if best == 0:
                continue  # the fact spans two sentences, or is worded differently: nothing to point at
            positive = next(ranked_text(every, j) for j, k in held if k == best)
            given = retriever.retrieve(domain, row["question"])
            vector = retriever.sentences.embed([row["question"]])[0]
            ranking = rank_sentences(retriever.sentences, row["question"], vector, given, idf)
            negatives = _wrong(ranking, given, row["facts"], 1)
            if miner is not None:
                negatives += [n for n in mistakes(miner, domain, row["question"], row["facts"], options.negatives)
                              if n not in negatives and n != positive]
            side = "test" if held_out(f"{domain}/{row['doc']}", options.holdout, options.seed) else "train"
            out[side].append(dict(domain=domain, doc=row["doc"], question=row["question"], facts=row["facts"],
                                  positive=positive, negatives=negatives))
            if progress and (i + 1) % 300 == 0:
                progress(f"pairs {domain}: {i + 1}/{len(rows)}")
    return out


def mistakes(miner: Retriever, domain: str, question: str, facts: list[str], n: int) -> list[str]:
    """The ``n`` sentences holding none of ``facts`` that ``miner`` rates highest among the passages the app
    reranks for ``question`` (the first ``retrieval.rerank`` of the domain's ranking), "heading: sentence"."""
    from ..retrieval import RERANK_STEP

    kb = miner.kb
    depth = max(kb.domains[domain].retrieval.rerank, kb.domains[domain].retrieval.k)
    candidates = [p for p, _ in kb.ranked(domain, question, depth=depth)]
    vector = miner.sentences.embed([question])[0]
    ranking = rank_sentences(miner.sentences, question, vector, candidates, kb.idf(domain), step=RERANK_STEP, figure=0.0)
    return _wrong(ranking, candidates, facts, n)


def _wrong(ranking: list, passages: list, facts: list[str], n: int) -> list[str]:
    """The ``n`` best-ranked distinct sentences of ``passages`` holding none of ``facts``, "heading: sentence";
    ``ranking`` is ``rank_sentences``' answer for those passages."""
    split = [passage_sentences(p) for p in passages]
    wrong = sorted(((score, r, j) for r, ranked in enumerate(ranking) for j, score in ranked
                    if not _holds(split[r][j][0], facts)), reverse=True)
    out: list[str] = []
    for _, r, j in wrong:
        text = ranked_text(split[r], j)
        if text not in out:
            out.append(text)
        if len(out) == n:
            break
    return out


def train(model, examples: list[dict], options: RankerOptions, progress=print):
    """LoRA on the sentence-transformers model's encoder, InfoNCE over (question, positive, hard negatives)
    with in-batch negatives (every question's negatives count for the whole batch). Returns the peft model (not
    merged) and the loss history."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(options.seed)
    encoder = model[0].auto_model
    tokenizer = model.tokenizer
    peft_model = get_peft_model(encoder, LoraConfig(r=options.rank, lora_alpha=2 * options.rank, lora_dropout=0.05,
                                                    target_modules=["query", "key", "value", "dense"]))
    model[0].auto_model = peft_model
    peft_model.train()
    params = [p for p in peft_model.parameters() if p.requires_grad]
    steps = options.epochs * ((len(examples) + options.batch - 1) // options.batch)
    optimizer = torch.optim.AdamW(params, lr=options.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 10) * max(0.0, 1 - s / steps))

    def encode(texts: list[str]):
        batch = tokenizer(texts, padding=True, truncation=True, max_length=options.max_length, return_tensors="pt")
        hidden = peft_model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9), dim=-1)

    rng, history, step, started = random.Random(options.seed), [], 0, time.perf_counter()
    for epoch in range(options.epochs):
        order = examples[:]
        rng.shuffle(order)
        for start in range(0, len(order), options.batch):
            chunk = order[start:start + options.batch]
            questions = encode([e["question"] for e in chunk])
            candidates = [e["positive"] for e in chunk] + [n for e in chunk for n in e["negatives"]]
            sentences = encode(candidates)
            logits = options.scale * questions @ sentences.T
            loss = torch.nn.functional.cross_entropy(logits, torch.arange(len(chunk)))
            loss.backward()
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            step += 1
            history.append(loss.item())
            if progress and (step % 10 == 0 or step == steps):
                progress(f"ranker step {step}/{steps} epoch {epoch + 1} loss {np.mean(history[-10:]):.3f} "
                         f"({time.perf_counter() - started:.0f} s)")
    peft_model.eval()
    return peft_model, history


def save(peft_model, out_dir: Path, options: RankerOptions, meta: dict) -> Path:
    """The adapter's weights and config, and ``ranker.json`` (options, data, measured results)."""
    with scratch_dir(out_dir) as tmp:
        peft_model.save_pretrained(str(tmp))
        config = json.loads((tmp / "adapter_config.json").read_text())
        config["base_model_name_or_path"] = "sentence-transformers/all-MiniLM-L6-v2"  # not this machine's path
        (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
        (tmp / "README.md").unlink(missing_ok=True)  # peft's template; train_ranker writes the real card
        (tmp / "ranker.json").write_text(json.dumps({"options": asdict(options), **meta}, indent=2) + "\n")
        replace_dir(tmp, out_dir)
    return out_dir


def measure(retriever: Retriever, rows: list[dict]) -> dict[str, dict[str, float]]:
    """Per domain: key facts held by the best-ranked sentence ("top1") and by the 3-sentence quote-first opening
    ("quote3"), over the passages the app retrieves for each question."""
    from ..prompts import answer_body
    from ..evaluation.suite import fact_recall

    sums: dict[str, list[float]] = {}
    for row in rows:
        given = retriever.retrieve(row["domain"], row["question"])
        s = sums.setdefault(row["domain"], [0, 0.0, 0.0])
        s[0] += 1
        for i, n in ((1, 1), (2, 3)):
            s[i] += fact_recall(answer_body(retriever.opening(row["domain"], row["question"], given, n)), row["facts"])
    return {d: {"questions": n, "top1": round(a / n, 4), "quote3": round(b / n, 4)} for d, (n, a, b) in sums.items()}


def train_ranker(settings, domains: dict, options: RankerOptions, out_dir: Path | None = None, progress=print,
                 per_domain: int | None = None, mine_with: Path | None = None) -> Path:
    """Build the pairs (hard negatives from the ranking with MiniLM as pre-trained and, with ``mine_with``, the
    mistakes of that trained ranker), train from MiniLM, save with a README; with ``options.holdout``, measure the
    held-out documents' questions before (pre-trained, and the miner) and after, the adapter loaded from its folder
    as the app loads it."""
    from sentence_transformers import SentenceTransformer

    from ..embeddings import Embedder, bundled_model_path
    from ..retrieval import KnowledgeBase

    out_dir = out_dir or (settings.adapters_dir / RANKER if not options.holdout else settings.home / "ranker-holdout")
    if mine_with is not None and not (Path(mine_with) / "adapter_config.json").is_file():
        raise InvalidInput(f"--mine-with names a trained sentence ranker's folder (with adapter_config.json); "
                           f"{mine_with} has none: train one first (python -m assistants train ranker)")
    started = time.perf_counter()
    kb = KnowledgeBase(settings, domains, Embedder.for_settings(settings))
    names = [d for d in domains if (settings.knowledge_for(d)).is_dir() and read_qa(d)]
    for name in names:
        kb.ingest(name, progress=False)
    base = Retriever(kb, ranker=kb.embedder, asked=False)
    miner = (Retriever(kb, ranker=Embedder(backend="torch", adapter=Path(mine_with).resolve()), asked=False)
             if mine_with else None)
    data = pairs(base, names, options, progress, per_domain, miner)
    if not data["train"]:
        raise InvalidInput("no authored question has a document sentence holding its key facts: write questions in "
                           "data/qa/<domain>/ for the documents in knowledge/<domain>/ before training the ranker")
    if progress:
        progress(f"{len(data['train'])} training questions, {len(data['test'])} held out ({options.holdout:.0%} of documents)")
    model = SentenceTransformer(str(bundled_model_path()), device="cpu")
    peft_model, history = train(model, data["train"], options, progress)
    meta = {"domains": names, "examples": len(data["train"]), "held_out_questions": len(data["test"]),
            "negatives": sum(len(e["negatives"]) for e in data["train"]),
            "mined_with": str(mine_with) if mine_with is not None else None,
            "steps": len(history), "seconds": round(time.perf_counter() - started),
            "loss_first10": round(float(np.mean(history[:10])), 4), "loss_last10": round(float(np.mean(history[-10:])), 4),
            "held_out": {}}
    save(peft_model, out_dir, options, meta)
    if data["test"]:
        meta["held_out"] = {"before": measure(base, data["test"]),
                            **({"miner": measure(miner, data["test"])} if miner is not None else {}),
                            "after": measure(Retriever(kb, ranker=Embedder(backend="torch", adapter=out_dir), asked=False),
                                             data["test"])}
        (out_dir / "ranker.json").write_text(json.dumps({"options": asdict(options), **meta}, indent=2) + "\n")
    (out_dir / "README.md").write_text(model_card(options, meta))
    return out_dir


def model_card(options: RankerOptions, meta: dict) -> str:
    lines = ["# Sentence ranker (LoRA on all-MiniLM-L6-v2)", "",
             "Ranks the sentences of retrieved passages against a question: the prompt's evidence and the opening of a "
             "quote-first answer come from this ranking (`assistants/training/ranker.py`; "
             "`ASSISTANTS_SENTENCE_RANKER=off` ranks with MiniLM as pre-trained).", "",
             f"Trained on {meta['examples']} authored questions ({', '.join(meta['domains'])}; `data/qa`): "
             f"{meta['steps']} steps, {options.epochs} epochs, batch {options.batch}, lr {options.lr}, LoRA rank "
             f"{options.rank}, {meta['seconds']} s on this machine. InfoNCE loss {meta['loss_first10']} (first 10 steps) "
             f"-> {meta['loss_last10']} (last 10). {meta['negatives']} hard negatives"
             + (f", with up to {options.negatives} per question mined from the rerank candidates by the ranker in "
                f"`{meta['mined_with']}` (a second round)." if meta.get("mined_with") else "."), ""]
    if meta["held_out"]:
        lines += [f"Held-out documents ({options.holdout:.0%}, {meta['held_out_questions']} questions never trained on): "
                  "key facts in the best sentence / in a 3-sentence opening", "",
                  "(before: MiniLM as pre-trained" + ("; miner: the ranker that mined the negatives" if "miner" in
                                                       meta["held_out"] else "") + ")", ""]
        runs = [r for r in ("before", "miner", "after") if r in meta["held_out"]]
        lines += ["| domain | questions | " + " | ".join(f"top 1 {r}" for r in runs) + " | "
                  + " | ".join(f"quote 3 {r}" for r in runs) + " |", "|---|---|" + "---|" * 2 * len(runs)]
        for d, before in meta["held_out"]["before"].items():
            got = [meta["held_out"][r][d] for r in runs]
            lines.append(f"| {d} | {before['questions']} | " + " | ".join(f"{g['top1']:.1%}" for g in got) + " | "
                         + " | ".join(f"{g['quote3']:.1%}" for g in got) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"
