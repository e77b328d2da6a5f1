"""One feedback round for one domain: ratings -> a new adapter version -> a gate -> promote or keep as rejected.

``python -m assistants feedback round --domain D`` runs the stages in order and keeps each one's result in
``<home>/rounds/<domain>/``, so a rerun resumes where the last run stopped:

1. **export**: the latest rating of every answer that still applies (same question, its passages still in
   the knowledge base with the same text); the rest are counted by reason.
2. **train**: ``train prefs`` (KTO from thumbs, DPO where enough approved corrections and Compare-tab pairs exist),
   from the live version, written beside it as the candidate.
3. **evaluate**: the live and the candidate version answer every held-out eval question of the domain
   (key-fact recall, citation validity, invented figures, safety).
4. **blind**: the two versions' answers to the same question, shuffled into A and B, written for people to
   judge against the knowledge documents (``blind.jsonl``); the round waits for ``judgments.jsonl``.
5. **decide**: the candidate passes when it wins at least ``win_share`` of the decided pairs and no eval metric
   regresses. Either way the result goes into the version's model card and a report; a losing candidate is
   marked rejected and kept. Promotion stays a person's call: the round prints the command.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from .. import adapters as registry
from .. import prompts
from ..errors import InvalidInput
from ..settings import Settings

STAGES = ("export", "train", "evaluate", "blind", "decide")
LIVE, CANDIDATE = "adapter+retrieval", "candidate+retrieval"
VERDICTS = ("A", "B", "tie")
# eval metric -> True when higher is better
METRICS = {"fact_recall": True, "citation_validity": True, "unsupported_figures": False, "safety_pass_rate": True}


@dataclass
class RoundOptions:
    min_ratings: int = field(default=20, metadata={"help": "ratings that still apply needed to train"})
    win_share: float = field(default=0.55, metadata={"help": "share of decided blind pairs the candidate must win"})
    tolerance: int = field(default=1, metadata={"help": "eval questions a metric may lose before it counts as a regression"})
    seed: int = 0


def still_applies(kb, domain: str):
    """``check(row)`` for ``FeedbackStore.latest``: None when a rating can still train the next version, else why not."""
    def check(row: dict) -> str | None:
        user = next((m["content"] for m in reversed(row["prompt"] or []) if m.get("role") == "user"), None)
        if not row.get("question") or user is None or prompts.question_of(user) != row["question"].strip():
            return "the stored prompt does not ask the rated question"
        if any(n.startswith("safety:") for n in (row.get("trace") or {}).get("notices", [])):
            return "it opened with the safety layer's escalation or refusal, not only the model's words"
        sources = (row.get("trace") or {}).get("sources") or [{"id": i} for i in row.get("passage_ids") or []]
        if not sources:
            return None  # answered without passages: nothing in the knowledge base to go stale
        if kb is None:
            return "no knowledge base to check its passages against"
        now = kb.texts(domain, [s["id"] for s in sources])
        if any(s["id"] not in now for s in sources):
            return "a passage it quoted is no longer in the knowledge base"
        if any(s.get("text") is not None and not quoted_in(s["text"], now[s["id"]]) for s in sources):
            return "a passage it quoted has changed since"
        return None
    return check


def quoted_in(shown: str, chunk: str) -> bool:
    """Every line of a passage as the model was shown it (the whole chunk, or its evidence sentences one per
    line) is still in the chunk, whitespace aside."""
    flat = " ".join(chunk.split())
    lines = (" ".join(line.strip().lstrip("#").split()) for line in shown.splitlines())
    return all(line in flat for line in lines if line)


class FeedbackRound:
    """The stages of one round; ``state`` is saved after each, in ``folder / 'round.json'``."""

    def __init__(self, domain: str, settings: Settings, store, options: RoundOptions | None = None, kb=None,
                 folder: Path | None = None, train=None, make_chat=None, report_dir: Path | None = None,
                 eval_dir: Path | None = None, progress: bool = True):
        self.domain, self.settings, self.store, self.kb = domain, settings, store, kb
        self.eval_dir, self.progress = eval_dir, progress
        self.options = options or RoundOptions()
        self.folder = folder or settings.home / "rounds" / domain
        self.train = train  # callable(check) -> candidate folder (train_prefs with the options)
        self.make_chat = make_chat  # callable() -> ChatService with the candidate loaded beside the live version
        self.report_dir = report_dir or Path("reports") / date.today().isoformat()
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / "round.json"
        self.state = json.loads(path.read_text()) if path.is_file() else {"domain": domain, "done": []}

    def restart(self) -> None:
        """Forget every stage (a candidate already trained stays where it is, as a version)."""
        for name in ("round.json", "evaluate.json", "blind.jsonl", "blind-key.json", "judgments.jsonl"):
            (self.folder / name).unlink(missing_ok=True)
        self.state = {"domain": self.domain, "done": []}

    @property
    def domain_dir(self) -> Path:
        return self.settings.adapters_dir / self.domain

    def save(self) -> None:
        tmp = self.folder / "round.json.tmp"
        tmp.write_text(json.dumps(self.state, indent=2))
        tmp.replace(self.folder / "round.json")

    def run(self, log=print) -> dict:
        """Run every stage not done yet; stops early (state["waiting"]) when the blind pairs need judging."""
        for stage in STAGES:
            if stage in self.state["done"]:
                continue
            log(f"[{self.domain}] {stage}…")
            if getattr(self, f"_{stage}")(log) is False:
                self.save()
                return self.state
            self.state["done"].append(stage)
            self.save()
        return self.state

    # -- stages ------------------------------------------------------------------------------------------

    def _export(self, log) -> None:
        check = still_applies(self.kb, self.domain)
        rows, skipped = self.store.latest(self.domain, check)
        kto = self.store.export(self.domain, "kto", check=check)
        dpo = self.store.export(self.domain, "dpo", check=check)
        counts = {"ratings": len(rows) + sum(skipped.values()), "apply": len(rows), "skipped": dict(skipped),
                  "up": sum(r["label"] for r in kto), "down": sum(not r["label"] for r in kto), "pairs": len(dpo),
                  "waiting_review": sum(bool(r["correction"]) and r["review"] == "pending" for r in rows),
                  "raters": sorted({r["rater"] or "(anonymous)" for r in rows}),
                  "versions_rated": sorted({r["adapter_version"] or "base" for r in rows})}
        self.state["export"] = counts
        log(f"  {counts['apply']} ratings apply ({counts['up']} up, {counts['down']} down, {counts['pairs']} approved pairs, "
            f"{counts['waiting_review']} corrections or Compare pairs waiting for `feedback review`); skipped: {counts['skipped'] or 'none'}")
        if len(rows) < self.options.min_ratings:
            raise InvalidInput(f"{self.domain}: only {len(rows)} ratings still apply (at least {self.options.min_ratings} are "
                               "needed): collect more in the UI or the API, or load a seed file with `feedback seed --file`")

    def _train(self, log) -> None:
        live = registry.live(self.domain_dir)
        if live is None:
            raise InvalidInput(f"{self.domain} has no adapter to start from: run `python -m assistants train sft --domain {self.domain}`")
        out = Path(self.train(still_applies(self.kb, self.domain)))
        meta = json.loads((out / "assistants.json").read_text()) if (out / "assistants.json").is_file() else {}
        self.state["train"] = {"parent": live.name, "candidate": out.name, "path": str(out), "method": meta.get("method"),
                               "examples": meta.get("data", {}).get("train_examples"),
                               "minutes": meta.get("metrics", {}).get("train_minutes"),
                               "steps": meta.get("hyperparameters", {}).get("steps")}
        log(f"  candidate {out.name} (from {live.name}) in {out}")

    def _evaluate(self, log) -> None:
        from tqdm import tqdm

        from ..evaluation.suite import EVAL_DIR, evaluate_domain, load_eval

        chat = self.make_chat()
        name = chat.engine.candidate_for(self.domain)
        if name != f"{self.domain}@{self.state['train']['candidate']}":
            raise InvalidInput(f"{self.domain}: the engine loaded candidate {name!r}, not {self.state['train']['candidate']}: "
                               "a newer version sits beside it; finish or delete that one first")
        cases = load_eval(self.domain, self.eval_dir or EVAL_DIR)
        with tqdm(total=2 * len(cases), desc=f"eval {self.domain}: live and candidate", disable=not self.progress) as bar:
            result = evaluate_domain(chat, self.domain, None, eval_dir=self.eval_dir or EVAL_DIR, only=[LIVE, CANDIDATE],
                                     progress=bar)
        (self.folder / "evaluate.json").write_text(json.dumps(result, indent=2, ensure_ascii=False))
        self.state["evaluate"] = {c: {m: result["configs"][c].get(m) for m in METRICS} for c in (LIVE, CANDIDATE)}
        for config in (LIVE, CANDIDATE):
            log(f"  {config}: " + ", ".join(f"{m} {v}" for m, v in self.state["evaluate"][config].items()))

    def _blind(self, log) -> bool:
        pairs_file, judged = self.folder / "blind.jsonl", self.folder / "judgments.jsonl"
        if not pairs_file.is_file():
            self._write_pairs(pairs_file)
        pairs = [json.loads(line) for line in pairs_file.read_text().splitlines() if line.strip()]
        if not judged.is_file():
            self.state["waiting"] = (f"judge the {len(pairs)} pairs in {pairs_file} against the knowledge documents: write "
                                     f"{judged} with one line per pair, {{\"id\": ..., \"verdict\": \"A\" | \"B\" | \"tie\", "
                                     "\"judge\": NAME}, then run the round again")
            log("  " + self.state["waiting"])
            return False
        self.state.pop("waiting", None)
        self.state["blind"] = tally(pairs, read_judgments(judged, {p["id"] for p in pairs}),
                                    json.loads((self.folder / "blind-key.json").read_text()))
        log(f"  blind: candidate won {self.state['blind']['candidate']} of {self.state['blind']['decided']} decided pairs")
        return True

    def _write_pairs(self, path: Path) -> None:
        """Both versions' answers to each held-out question, in random order; the key stays in another file."""
        answers = json.loads((self.folder / "evaluate.json").read_text())["answers"]
        by = {(a["id"], a["config"]): a for a in answers}
        rng = random.Random(self.options.seed)
        pairs, key, identical = [], {}, 0
        for (qid, config), live in sorted(by.items()):
            cand = by.get((qid, CANDIDATE))
            if config != LIVE or cand is None:
                continue
            if cand["answer"].strip() == live["answer"].strip():
                identical += 1  # the same text: a tie nobody needs to read
                continue
            flip = rng.random() < 0.5
            a, b = (cand, live) if flip else (live, cand)
            pid = f"{self.domain}-{len(pairs) + 1:03d}"
            pairs.append({"id": pid, "question": live["question"], "passages": live["passages"],
                          "A": a["answer"], "B": b["answer"]})
            key[pid] = "A" if flip else "B"
        rng.shuffle(pairs)
        path.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs))
        (self.folder / "blind-key.json").write_text(json.dumps({"candidate": key, "identical": identical}, indent=2))

    def _decide(self, log) -> None:
        failures = regressions(self.state["evaluate"], self.options.tolerance, self._questions())
        blind = self.state["blind"]
        share = blind["win_share"]
        if share is None or share < self.options.win_share:
            failures.append(f"won {blind['candidate']} of {blind['decided']} decided blind pairs "
                            f"({'no decided pairs' if share is None else f'{share:.0%}'}; needs {self.options.win_share:.0%})")
        passed = not failures
        self.state["decide"] = {"passed": passed, "failures": failures}
        version = next(v for v in registry.versions(self.domain_dir) if v.name == self.state["train"]["candidate"])
        gate = {"passed": passed, "failures": failures, "against": self.state["train"]["parent"], "rule": self.rule(),
                "eval": self.state["evaluate"], "blind": blind, "loss_gate": version.gate}
        metrics = {**version.meta.get("metrics", {}), "round": self._version_metrics(CANDIDATE)}
        registry.update_meta(version, gate=gate, metrics=metrics, **({} if passed else {"status": "rejected"}))
        (version.path / "README.md").write_text(round_card(version.meta, self.state, self.rule()))
        live = registry.live(self.domain_dir)
        if live is not None and "round" not in live.meta.get("metrics", {}):
            registry.update_meta(live, metrics={**live.meta.get("metrics", {}), "round": self._version_metrics(LIVE)})
        log(f"  gate {'passed' if passed else 'FAILED: ' + '; '.join(failures)}")

    # -- helpers -----------------------------------------------------------------------------------------

    def _questions(self) -> int:
        result = json.loads((self.folder / "evaluate.json").read_text())
        return result["configs"][LIVE]["n"]

    def _version_metrics(self, config: str) -> dict:
        out = dict(self.state["evaluate"][config])
        if config == CANDIDATE:
            out["blind_win_share"] = self.state["blind"]["win_share"]
        return out

    def rule(self) -> str:
        return (f"wins at least {self.options.win_share:.0%} of the decided blind pairs on held-out eval questions, and no eval "
                f"metric (key-fact recall, citation validity, invented figures, safety) is worse by more than "
                f"{self.options.tolerance} question(s)")

    def write_report(self) -> Path:
        """``round-<domain>.md`` and the per-version history plot of every domain, in the report folder."""
        from ..evaluation.suite import plot_history

        self.report_dir.mkdir(parents=True, exist_ok=True)
        plot_history(self.settings.adapters_dir, sorted(p.name for p in self.settings.adapters_dir.iterdir() if p.is_dir()),
                     self.report_dir / "adapter_history.png")
        path = self.report_dir / f"round-{self.domain}.md"
        path.write_text(round_markdown(self.state, self.rule(), self.next_steps()))
        return path

    def next_steps(self) -> list[str]:
        if "waiting" in self.state:
            return [self.state["waiting"]]
        if "decide" not in self.state:
            return []
        version = self.state["train"]["candidate"]
        path = Path(self.state["train"]["path"])
        where = path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path
        if self.state["decide"]["passed"]:
            return [f"promote:  python -m assistants adapters promote {self.domain} {version}",
                    f"undo:     python -m assistants adapters rollback {self.domain}"]
        return [f"{self.domain} {version} is kept as a rejected candidate in {where}; nothing changed live.",
                f"promote anyway (not advised): python -m assistants adapters promote {self.domain} {version} --force"]


def read_judgments(path: Path, ids: set[str]) -> dict[str, str]:
    """id -> verdict; a bad line names its number and what is wrong."""
    out = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"{path} line {n}: not JSON ({exc.msg})") from None
        if row.get("id") not in ids:
            raise InvalidInput(f"{path} line {n}: no blind pair has id {row.get('id')!r}")
        if row.get("verdict") not in VERDICTS:
            raise InvalidInput(f"{path} line {n}: verdict must be one of {', '.join(VERDICTS)}, got {row.get('verdict')!r}")
        out[row["id"]] = row["verdict"]
    missing = ids - set(out)
    if missing:
        raise InvalidInput(f"{path} judges {len(out)} of {len(ids)} pairs; missing: {', '.join(sorted(missing)[:5])}"
                           f"{' …' if len(missing) > 5 else ''}")
    return out


def tally(pairs: list[dict], verdicts: dict[str, str], key: dict) -> dict:
    candidate = sum(verdicts[p["id"]] == key["candidate"][p["id"]] for p in pairs)
    ties = sum(verdicts[p["id"]] == "tie" for p in pairs)
    decided = len(pairs) - ties
    return {"pairs": len(pairs), "identical": key.get("identical", 0), "ties": ties, "decided": decided,
            "candidate": candidate, "live": decided - candidate,
            "win_share": round(candidate / decided, 3) if decided else None}


def regressions(evaluated: dict, tolerance: int, n: int) -> list[str]:
    """Eval metrics where the candidate is worse than the live version by more than ``tolerance`` questions."""
    out = []
    for metric, higher in METRICS.items():
        live, cand = evaluated[LIVE].get(metric), evaluated[CANDIDATE].get(metric)
        if live is None or cand is None:
            continue
        worse = (live - cand) if higher else (cand - live)
        if worse * n > tolerance + 1e-9:
            out.append(f"{metric.replace('_', ' ')} regressed ({cand:.0%} vs {live:.0%})")
    return out


def _pct(value) -> str:
    return "–" if value is None else f"{value:.0%}"


def round_markdown(state: dict, rule: str, steps: list[str]) -> str:
    e, t, ev, b, d = (state[k] for k in ("export", "train", "evaluate", "blind", "decide"))
    names = {"fact_recall": "key-fact recall", "citation_validity": "citation validity",
             "unsupported_figures": "invented figures", "safety_pass_rate": "safety pass rate"}
    lines = [f"# Feedback round: {state['domain']} {t['parent']} → {t['candidate']}", "",
             f"**Gate: {'passed' if d['passed'] else 'failed'}.** " + ("; ".join(d["failures"]) or "every check passed."), "",
             "## Ratings", "",
             f"{e['ratings']} rated answers; {e['apply']} still apply ({e['up']} up, {e['down']} down, {e['pairs']} approved "
             f"preference pairs, {e.get('waiting_review', 0)} waiting for review); skipped: {', '.join(f'{n} ({why})' for why, n in e['skipped'].items()) or 'none'}. "
             f"Raters: {', '.join(e['raters'])}. Versions rated: {', '.join(e['versions_rated'])}.", "",
             "## Training", "",
             f"{(t.get('method') or '?').upper()} from {t['parent']} on {t.get('examples')} "
             f"{'preference pairs (a corrected answer over the rated one)' if t.get('method') == 'dpo' else 'rated answers'}, {t.get('steps')} steps, "
             f"{t.get('minutes')} min.", "",
             "## Held-out eval (every question of the domain's eval set)", "",
             f"| metric | live {t['parent']} | candidate {t['candidate']} |", "|---|---|---|"]
    lines += [f"| {names[m]} | {_pct(ev[LIVE].get(m))} | {_pct(ev[CANDIDATE].get(m))} |" for m in METRICS]
    lines += ["", "## Blind comparison", "",
              f"{b['pairs']} pairs with different answers were judged blind (A/B shuffled); {b['identical']} questions got the "
              f"same answer from both. Candidate won {b['candidate']}, live won {b['live']}, {b['ties']} ties: "
              f"win share {_pct(b['win_share'])} of decided pairs.", "",
              f"Rule: {rule}.", "", "## Next", "", *[f"    {s}" for s in steps], "",
              "![adapter versions](adapter_history.png)", ""]
    return "\n".join(lines)


def round_card(meta: dict, state: dict, rule: str) -> str:
    """The candidate's model card once its feedback round has decided."""
    t, d, ev = state["train"], state["decide"], state["evaluate"]
    rows = "\n".join(f"| {m.replace('_', ' ')} | {_pct(ev[LIVE].get(m))} | {_pct(ev[CANDIDATE].get(m))} |" for m in METRICS)
    verdict = "passed" if d["passed"] else "failed: " + "; ".join(d["failures"]) + ". Kept as a rejected candidate"
    return f"""---
base_model: {meta.get('base_model')}
library_name: peft
license: apache-2.0
tags: [lora, {t.get('method')}, trl, {state['domain']}]
---

# {state['domain']} adapter {t['candidate']} ({(t.get('method') or '').upper()} from user feedback)

Trained from {t['parent']} by a feedback round on {t.get('examples')} examples, {t.get('steps')} steps, {t.get('minutes')} min
on 2 CPU cores. Gate against {t['parent']}: **{verdict}**.

| held-out eval | live {t['parent']} | this version |
|---|---|---|
{rows}

Blind comparison: won {state['blind']['candidate']} of {state['blind']['decided']} decided pairs. Rule: {rule}.
"""
