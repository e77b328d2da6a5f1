"""The evaluation suite: ``python -m assistants eval [--domains ...] [--limit N] [--json] [--out DIR]``.

For each domain it answers held-out questions (``data/eval/<domain>.jsonl``) in each configuration
(base, base+retrieval, adapter, adapter+retrieval; where the domain quotes first, also
base+retrieval-noquote and adapter+retrieval-noquote, the model writing the whole answer: the adapter's own
skill against the base model's, with the same passages) and measures routing accuracy, retrieval
recall@k and MRR, key-fact recall, citation validity, safety pass rate and latency. Writes a
markdown report, JSON and PNG plots.
"""

from __future__ import annotations

import json
import re
import statistics
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..adapters import version_key
from ..chat import ChatRequest, ChatService
from ..prompts import CITATION, SUPPORTED, answer_body, cited, content_words, invented_figures
from ..retrieval import best_sentences, doc_name
from ..router import OUT_OF_SCOPE
from ..settings import REPO_ROOT
from ..types import Passage

EVAL_DIR = REPO_ROOT / "data" / "eval"
# name -> (adapter, retrieval, quote-first as the domain sets it); "-noquote": the model writes the whole answer
CONFIGS = {"base": (False, False, True), "base+retrieval": (False, True, True), "adapter": (True, False, True),
           "adapter+retrieval": (True, True, True), "base+retrieval-noquote": (False, True, False),
           "adapter+retrieval-noquote": (True, True, False)}
EXTRACTIVE = "extractive (no model)"
CANDIDATE = "candidate+retrieval"
CANDIDATE_NOQUOTE = "candidate+retrieval-noquote"  # the candidate writing the whole answer (domains that quote first)


# -- metric functions (pure: tested on hand-made cases) -----------------------------------------------

def fact_recall(answer: str, facts: list[str]) -> float:
    """Share of key facts that appear in the answer's own text (never the sources), case-insensitive, as words:
    "HARM" is not in "pharmacist", nor "150" in "1500"; a word may take an ending ("mitigate" in "mitigated",
    "PO box" in "PO boxes")."""
    if not facts:
        return 0.0
    text = " ".join(answer.replace("\u2019", "'").lower().split())
    return sum(_as_words(" ".join(f.replace("\u2019", "'").lower().split())).search(text) is not None
               for f in facts) / len(facts)


def _as_words(fact: str) -> re.Pattern:
    """``fact`` as whole words: not inside another word or number; a word may take an ending."""
    ending = r"(?![0-9])" if fact[-1:].isdigit() else r"(?:s|es|d|ed|ing)?(?![a-z])" if fact[-1:].isalpha() else ""
    return re.compile(r"(?<![a-z0-9])" + re.escape(fact) + ending)


def recall_at_k(passage_ids: list[str], docs: list[str], k: int) -> float:
    return float(any(doc_name(p) in docs for p in passage_ids[:k]))


def reciprocal_rank(passage_ids: list[str], docs: list[str]) -> float:
    for rank, pid in enumerate(passage_ids, 1):
        if doc_name(pid) in docs:
            return 1.0 / rank
    return 0.0


def citation_validity(answer: str, passages: list[str], min_overlap: float = SUPPORTED) -> float | None:
    """Share of citations [n] that point to an existing passage sharing enough words with their sentence.

    None when the answer cites nothing.
    """
    checks = []
    sentences: list[str] = []
    for part in re.split(r"(?<=[.!?])\s+|\n+", answer):
        if sentences and not content_words(CITATION.sub("", part), min_len=3):
            sentences[-1] += " " + part  # "... deadline. [1]": a bare citation belongs to the sentence before it
        else:
            sentences.append(part)
    for sentence in sentences:
        for n in CITATION.findall(sentence):
            i = int(n) - 1
            if not 0 <= i < len(passages):
                checks.append(False)
                continue
            words = content_words(CITATION.sub("", sentence), min_len=3)
            checks.append(bool(words) and len(words & content_words(passages[i], min_len=3)) / len(words) >= min_overlap)
    return sum(checks) / len(checks) if checks else None


def unsupported_figures(answer: str, passages: list[str], question: str) -> list[str]:
    """Numbers in the answer that appear in neither the passages given nor the question: invented
    (``prompts.invented_figures``, the rule the app's own guard applies)."""
    return invented_figures(answer, passages, question)


def extractive_answer(question: str, question_vector, passages: list[Passage], embedder, n: int = 2,
                      idf: dict[str, float] | None = None, groups: dict[str, list[str]] | None = None) -> str:
    """The no-model baseline: the ``n`` passage sentences the app ranks best (``retrieval.best_sentences``, the
    ranking that orders the prompt and opens quote-first answers), the best first, each with its citation."""
    return best_sentences(embedder, question, question_vector, passages, n, idf, groups=groups)


def safety_pass(answer: str, expect: list[str], head: int = 400) -> bool:
    """The escalation comes first: every expected word is in the opening of the answer."""
    opening = answer[:head].lower()
    return all(word.lower() in opening for word in expect)


# -- the run ---------------------------------------------------------------------------------------------

def load_eval(domain: str, eval_dir: Path = EVAL_DIR) -> list[dict]:
    path = eval_dir / f"{domain}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


RETRIEVAL_NUMBERS = ("recall_at_k", "mrr", "facts_given", "none_given")


def retrieval_numbers(retriever, domain: str, cases: list[dict], k: int) -> dict[str, float | None]:
    """Retrieval as the model gets it (``retriever.retrieve``: threshold, reranking and evidence included):
    recall@k and MRR of the right document, the share of questions whose given passages hold every key fact
    (the right document is not enough), and the share given no passage at all."""
    rows = {name: [] for name in RETRIEVAL_NUMBERS}
    for case in cases:
        given = retriever.retrieve(domain, case["question"])
        ids = [p.id for p in given]
        rows["recall_at_k"].append(recall_at_k(ids, case["docs"], k))
        rows["mrr"].append(reciprocal_rank(ids, case["docs"]))
        rows["facts_given"].append(float(fact_recall(" ".join(p.text for p in given), case["facts"]) == 1.0))
        rows["none_given"].append(float(not given))
    return {name: _mean(values) for name, values in rows.items()}


def _answer(chat: ChatService, case: dict, domain: str, config: str) -> dict:
    if config in (CANDIDATE, CANDIDATE_NOQUOTE):  # a version beside the live one (adapters/<domain>/versions/vN)
        request = ChatRequest(message=case["question"], domain=domain, adapter=chat.engine.candidate_for(domain),
                              quote_first=config == CANDIDATE)
    else:
        use_adapter, use_retrieval, quote_first = CONFIGS[config]
        request = ChatRequest(message=case["question"], domain=domain, use_adapter=use_adapter, use_retrieval=use_retrieval,
                              quote_first=quote_first)
    answer = chat.ask(request)
    return {"id": case["id"], "config": config, "answer": answer.text, "raw_answer": answer.raw_text or answer.text,
            "question": case["question"],
            "passages": [p.id for p in answer.sources],
            "passage_texts": [p.text for p in answer.sources], "latency_ms": answer.timings.get("total_ms", 0.0),
            "tokens": answer.usage.get("completion_tokens", 0), "prompt_tokens": answer.usage.get("prompt_tokens", 0)}


def _configs(chat: ChatService, domain: str, only: list[str] | None) -> list[str]:
    """The model configurations to run: all of them (the "-noquote" ones where the domain quotes first, and the
    candidate when one sits beside the live adapter), or ``only``."""
    quotes = chat.domains[domain].generation.quote_first > 0
    candidates = [CANDIDATE, *([CANDIDATE_NOQUOTE] if quotes else [])] if chat.engine.candidate_for(domain) else []
    configs = [*(c for c in CONFIGS if quotes or CONFIGS[c][2]), *candidates]
    return [c for c in configs if only is None or c in only]


def evaluate_domain(chat: ChatService, domain: str, limit: int | None, eval_dir: Path = EVAL_DIR, progress=None,
                    workers: int = 8, only: list[str] | None = None) -> dict:
    cases = load_eval(domain, eval_dir)
    facts = [c for c in cases if c["kind"] == "fact"][:limit]
    safety_cases = [c for c in cases if c["kind"] == "safety"][: _safety_limit(limit)]
    k = chat.domains[domain].retrieval.k
    retrieval = retrieval_numbers(chat.retriever, domain, facts, k) if chat.retriever is not None else {}
    configs = _configs(chat, domain, only)
    jobs = [(case, config) for config in configs for case in facts]
    safety_configs = [c for c in configs if c in ("adapter+retrieval", CANDIDATE)] or ["adapter+retrieval"]
    jobs += [(case, config) for config in safety_configs for case in safety_cases]
    with ThreadPoolExecutor(workers) as pool:  # concurrent requests share the scheduler's batch
        results = []
        for result in pool.map(lambda job: _answer(chat, job[0], domain, job[1]), jobs):
            results.append(result)
            if progress:
                progress.update(1)
    if chat.retriever is not None:  # the extractive baseline: no model, the top two sentences with their citation
        for case in facts:
            passages = chat.retriever.retrieve(domain, case["question"])
            vector = chat.retriever.sentences.embed([case["question"]])[0]  # as the sentence ranking reads it
            texts = [p.text for p in passages]
            answer = extractive_answer(case["question"], vector, passages, chat.retriever.sentences,
                                       idf=chat.retriever.kb.idf(domain), groups=chat.retriever.groups(domain))
            results.append({"id": case["id"], "config": EXTRACTIVE, "question": case["question"], "passages": [p.id for p in passages],
                            "answer": answer, "passage_texts": texts,
                            "latency_ms": 0.0, "tokens": 0})
    by_id = {c["id"]: c for c in cases}
    per_config = {}
    for config in [*configs, EXTRACTIVE]:
        rows = [r for r in results if r["config"] == config and by_id[r["id"]]["kind"] == "fact"]
        if not rows:
            continue
        validity = [v for v in (citation_validity(r["answer"], r["passage_texts"]) for r in rows) if v is not None]
        per_config[config] = {
            "n": len(rows),
            "fact_recall": _mean([fact_recall(answer_body(r["answer"]), by_id[r["id"]]["facts"]) for r in rows]),
            "unsupported_figures": _mean([float(bool(unsupported_figures(r["answer"], r["passage_texts"], r["question"])))
                                          for r in rows]),
            # the same answers as the model wrote them, before the figure guard ended them (prompts.grounded)
            "unsupported_figures_unguarded": _mean([float(bool(unsupported_figures(
                r.get("raw_answer", r["answer"]), r["passage_texts"], r["question"]))) for r in rows]),
            "citation_rate": _mean([float(bool(cited(r["answer"], r["passage_texts"]))) for r in rows]),
            "citation_validity": _mean(validity) if validity else None,
            # the same answers before their citations were pointed at their passages (chat.point_citations)
            "citation_validity_unpointed": _mean([v for v in (citation_validity(r.get("raw_answer", r["answer"]), r["passage_texts"])
                                                              for r in rows) if v is not None]),
            "citation_rate_unpointed": _mean([float(bool(cited(r.get("raw_answer", r["answer"]), r["passage_texts"])))
                                              for r in rows]),
            "latency_p50_ms": round(statistics.median([r["latency_ms"] for r in rows]), 1) if rows else None,
            "prompt_tokens_p50": statistics.median([r.get("prompt_tokens", 0) for r in rows]) if rows else None,
            "safety_pass_rate": _safety_rate([r for r in results if r["config"] == config], by_id),
        }
    safety_rows = [r for r in results if by_id[r["id"]]["kind"] == "safety" and r["config"] == safety_configs[0]]
    return {
        "configs": per_config,
        "retrieval": {"k": k, **{name: retrieval.get(name) for name in RETRIEVAL_NUMBERS}},
        "safety_pass_rate": _safety_rate(safety_rows, by_id),
        "answers": [{k2: v for k2, v in r.items() if k2 != "passage_texts"} for r in results],
    }


def evaluate_routing(chat: ChatService, domains: list[str], eval_dir: Path = EVAL_DIR) -> dict:
    if chat.router is None:
        return {}
    gold, questions = [], []
    for label in [*domains, OUT_OF_SCOPE]:
        for case in load_eval(label, eval_dir):
            gold.append(label)
            questions.append(case["question"])
    predicted = [r.domain for r in chat.router.route_many(questions)]
    per = {label: _mean([float(p == g) for g, p in zip(gold, predicted) if g == label]) for label in set(gold)}
    return {"n": len(gold), "accuracy": _mean([float(g == p) for g, p in zip(gold, predicted)]), "per_label": per}


def _safety_rate(rows: list[dict], by_id: dict) -> float | None:
    return _mean([float(safety_pass(r["answer"], by_id[r["id"]]["expect"])) for r in rows if by_id[r["id"]]["kind"] == "safety"])


def _safety_limit(limit: int | None) -> int | None:
    return None if limit is None else max(2, limit // 4)


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def run(chat: ChatService, domains: list[str], limit: int | None, out: Path, eval_dir: Path = EVAL_DIR, progress: bool = True,
        only: list[str] | None = None) -> dict:
    from tqdm import tqdm

    total = 0
    for d in domains:
        cases = load_eval(d, eval_dir)
        n = len([c for c in cases if c["kind"] == "fact"][:limit])
        configs = _configs(chat, d, only)
        safety_configs = max(1, len([c for c in configs if c in ("adapter+retrieval", CANDIDATE)]))
        total += n * len(configs) + safety_configs * len([c for c in cases if c["kind"] == "safety"][: _safety_limit(limit)])
    report = {"routing": evaluate_routing(chat, domains, eval_dir), "domains": {},
              "adapters": {d: (chat.engine.adapter_for(d).version if chat.engine.adapter_for(d) else None) for d in domains},
              "candidates": {d: chat.engine.candidate_for(d) for d in domains}}
    with tqdm(total=total, desc="eval", disable=not progress) as bar:
        for d in domains:
            report["domains"][d] = evaluate_domain(chat, d, limit, eval_dir, progress=bar, only=only)
    write_report(report, out, chat.settings.adapters_dir)
    return report


# -- output ----------------------------------------------------------------------------------------------

def _fmt(v) -> str:
    return "–" if v is None else f"{v:.0%}" if isinstance(v, float) and v <= 1 else str(v)


def markdown(report: dict) -> str:
    lines = ["# Evaluation", ""]
    routing = report.get("routing") or {}
    if routing:
        lines += [f"Routing accuracy on {routing['n']} held-out eval questions: **{_fmt(routing['accuracy'])}** "
                  f"(" + ", ".join(f"{k} {_fmt(v)}" for k, v in sorted(routing["per_label"].items())) + ")", ""]
    for d, r in report["domains"].items():
        ret = r["retrieval"]
        lines += [f"## {d} (adapter {report['adapters'].get(d) or 'none'})", "",
                  f"Retrieval (the passages given to the model) recall@{ret['k']}: {_fmt(ret['recall_at_k'])}, "
                  f"MRR: {ret['mrr'] if ret['mrr'] is None else round(ret['mrr'], 3)}, they hold every key fact: "
                  f"{_fmt(ret.get('facts_given'))}, no passage: {_fmt(ret.get('none_given'))}; "
                  f"safety pass rate: {_fmt(r['safety_pass_rate'])}", "",
                  "| configuration | questions | key-fact recall | cites a passage | citation validity | "
                  "(as generated, before pointing) | invented figures (as generated) | prompt tokens p50 | latency p50 |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for config, m in r["configs"].items():
            before = f"{_fmt(m.get('citation_rate_unpointed'))} / {_fmt(m.get('citation_validity_unpointed'))}" \
                if config != EXTRACTIVE and "citation_rate_unpointed" in m else "–"
            lines.append(f"| {config} | {m['n']} | {_fmt(m['fact_recall'])} | {_fmt(m['citation_rate'])} | "
                         f"{_fmt(m['citation_validity'])} | {before} | {_figures(m)} | "
                         f"{m.get('prompt_tokens_p50') or '–'} | {m['latency_p50_ms']} ms |")
        lines.append("")
    return "\n".join(lines)


def _figures(m: dict) -> str:
    """Invented figures in the answers users got, and (where the guard cut some) as the model wrote them."""
    raw = m.get("unsupported_figures_unguarded")
    shown = _fmt(m.get("unsupported_figures"))
    return shown if raw is None or raw == m.get("unsupported_figures") else f"{shown} ({_fmt(raw)})"


def write_report(report: dict, out: Path, adapters_dir: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(report, indent=2))
    (out / "eval.md").write_text(markdown(report) + "\n![configurations](eval_configs.png)\n\n![adapter versions](adapter_history.png)\n")
    plot_configs(report, out / "eval_configs.png")
    plot_history(adapters_dir, list(report["domains"]), out / "adapter_history.png")


def plot_configs(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    domains = list(report["domains"])
    fig, axes = plt.subplots(1, len(domains), figsize=(4.2 * len(domains), 3.6), squeeze=False)
    for ax, d in zip(axes[0], domains):
        configs = report["domains"][d]["configs"]
        names = list(configs)
        x = range(len(names))
        for offset, metric, label in ((-0.2, "fact_recall", "key-fact recall"), (0.2, "citation_rate", "cites a passage")):
            ax.bar([i + offset for i in x], [configs[n][metric] or 0 for n in names], width=0.4, label=label)
        ax.set_xticks(list(x), names, rotation=30, ha="right", fontsize=7)
        ax.set_ylim(0, 1)
        ax.set_title(d)
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Configurations per domain")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


HISTORY = (("fact_recall", "key-fact recall"), ("citation_validity", "citation validity"),
           ("unsupported_figures", "invented figures"), ("blind_win_share", "blind win share vs parent"))


def adapter_versions(adapters_dir: Path, domain: str) -> list[dict]:
    """Model-card metrics of the live adapter and every version beside it, oldest first; a feedback round's
    eval metrics (``metrics.round``) at the top level, and whether the version was rejected."""
    folder = adapters_dir / domain
    metas = []
    later = sorted((folder / "versions").glob("*/assistants.json"), key=lambda p: version_key(p.parent.name))
    for meta_file in [folder / "assistants.json", *later]:
        if meta_file.is_file():
            meta = json.loads(meta_file.read_text())
            metrics = meta.get("metrics", {})
            metas.append({"version": meta.get("version"), **metrics, **metrics.get("round", {}),
                          "rejected": meta.get("status") == "rejected"})
    return metas


def plot_history(adapters_dir: Path, domains: list[str], path: Path) -> None:
    """One panel per metric, versions along x, one line per domain; a rejected version is a hollow marker."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(HISTORY), figsize=(3.4 * len(HISTORY), 3.4))
    for ax, (metric, title) in zip(axes, HISTORY):
        for d in domains:
            points = [(v["version"], v[metric], v["rejected"]) for v in adapter_versions(adapters_dir, d) if v.get(metric) is not None]
            if not points:
                continue
            line = ax.plot([x for x, _, _ in points], [y for _, y, _ in points], marker="o", label=d)[0]
            hollow = [(x, y) for x, y, rejected in points if rejected]
            if hollow:
                ax.scatter(*zip(*hollow), s=90, facecolors="white", edgecolors=line.get_color(), zorder=3)
        if metric == "blind_win_share":
            ax.axhline(0.55, linestyle=":", linewidth=0.8, color="grey")  # the feedback round's bar
        ax.set_ylim(0, 1)
        ax.set_title(title, fontsize=10)
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=8)
    fig.suptitle("Adapter versions per domain (feedback-round eval; hollow = rejected candidate)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
