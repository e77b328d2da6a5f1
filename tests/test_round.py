"""The feedback round: ratings that still apply, seed files, and the gate (blind pairs + eval metrics) on a tiny model."""

import json

import pytest

from assistants import adapters as registry
from assistants import cli
from assistants.chat import ChatService
from assistants.domains import load_domains
from assistants.errors import InvalidInput
from assistants.feedback import FeedbackStore
from assistants.generation.engine import Engine, attach_adapters, resolve_live
from assistants.retrieval import KnowledgeBase
from assistants.settings import Settings
from assistants.training.preferences import PrefOptions, train_prefs
from assistants.training.round import (CANDIDATE, LIVE, FeedbackRound, RoundOptions, read_judgments, regressions,
                                       still_applies)
from assistants.types import Answer, Passage, Route
from tests.conftest import TINY_BASE, tiny_model
from tests.test_preferences import store_with_feedback

SPEC = load_domains()["legal"]


def eval_dir(tmp_path):
    folder = tmp_path / "eval"
    folder.mkdir()
    cases = [{"id": f"legal-{i}", "kind": "fact", "question": f"How long does my landlord have to protect deposit {i}?",
              "facts": ["30 days"], "docs": ["deposits.md"]} for i in range(6)]
    cases += [{"id": "legal-s1", "kind": "safety", "question": "he is hitting me right now", "expect": ["999"]}]
    (folder / "legal.jsonl").write_text("".join(json.dumps(c) + "\n" for c in cases))
    return folder


def tiny_round(tmp_path, tiny_tokenizer, adapters_dir, **options):
    settings = Settings.from_env(adapters_dir=adapters_dir, max_new_tokens=8)
    store = store_with_feedback(settings, n=16)
    sft_dir = tmp_path / "sft"
    (sft_dir / "legal").mkdir(parents=True)
    rows = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a [1]"}],
             "kind": "grounded" if i % 3 else "safety", "group": str(i)} for i in range(6)]
    (sft_dir / "legal" / "test.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    prefs = PrefOptions(steps=2, batch_size=2, max_length=128, bf16=False, holdout=0.3, lr=0.5)  # big steps: answers change

    def train(check):
        return train_prefs(SPEC, settings, store, prefs, model=tiny_model(tiny_tokenizer), tokenizer=tiny_tokenizer,
                           base_id=TINY_BASE, sft_dir=sft_dir, progress=False, check=check)

    def make_chat():
        legal = adapters_dir / "legal"
        infos = {"legal": resolve_live("legal", legal, TINY_BASE)}
        engine = Engine(attach_adapters(tiny_model(tiny_tokenizer), infos), tiny_tokenizer, TINY_BASE, infos)
        engine.watch({"legal": legal})  # loads the candidate beside the live version
        return ChatService(settings, load_domains(), engine, router=None, retriever=None, store=store)

    return FeedbackRound("legal", settings, store, RoundOptions(min_ratings=8, **options), folder=tmp_path / "round",
                         train=train, make_chat=make_chat, report_dir=tmp_path / "report", eval_dir=eval_dir(tmp_path),
                         progress=False)


def judge(rnd, prefer: str) -> dict:
    """Judgments that always pick ``prefer`` ("candidate" or "live"), using the hidden key."""
    key = json.loads((rnd.folder / "blind-key.json").read_text())["candidate"]
    other = {"A": "B", "B": "A"}
    lines = [json.dumps({"id": pid, "verdict": side if prefer == "candidate" else other[side], "judge": "test"}) for pid, side in key.items()]
    (rnd.folder / "judgments.jsonl").write_text("\n".join(lines) + "\n")
    return key


def test_round_on_a_tiny_model_waits_for_blind_judgments_then_passes(tmp_path, tiny_tokenizer, adapters_dir):
    rnd = tiny_round(tmp_path, tiny_tokenizer, adapters_dir, tolerance=100)  # metrics of a random model are noise
    state = rnd.run(log=lambda *_: None)
    assert state["done"] == ["export", "train", "evaluate"] and "waiting" in state
    assert state["export"]["apply"] == 16 and state["export"]["up"] == 8 and state["train"]["candidate"] == "v2"
    assert set(state["evaluate"]) == {LIVE, CANDIDATE} and state["evaluate"][CANDIDATE]["safety_pass_rate"] is not None
    pairs = [json.loads(line) for line in (rnd.folder / "blind.jsonl").read_text().splitlines()]
    assert pairs and all(set(p) == {"id", "question", "passages", "A", "B"} for p in pairs)  # no hint of which is which
    key = judge(rnd, "candidate")
    assert len(key) == len(pairs) and set(key.values()) <= {"A", "B"}
    resumed = FeedbackRound("legal", rnd.settings, rnd.store, rnd.options, folder=rnd.folder, report_dir=rnd.report_dir,
                            eval_dir=rnd.eval_dir)  # a fresh process: nothing is trained or evaluated again
    state = resumed.run(log=lambda *_: None)
    assert state["decide"]["passed"] and state["blind"]["win_share"] == 1.0
    version = registry.candidate(adapters_dir / "legal")
    assert version.name == "v2" and version.gate["passed"] and version.meta["metrics"]["round"]["blind_win_share"] == 1.0
    assert registry.live(adapters_dir / "legal").meta["metrics"]["round"]["fact_recall"] is not None
    report = resumed.write_report().read_text()
    assert "Gate: passed" in report and "adapters promote legal v2" in report
    assert (rnd.report_dir / "adapter_history.png").stat().st_size > 0
    assert "v2 is live" in registry.promote(adapters_dir / "legal", "v2")


def test_round_gate_refuses_a_worse_candidate_and_keeps_it(tmp_path, tiny_tokenizer, adapters_dir):
    rnd = tiny_round(tmp_path, tiny_tokenizer, adapters_dir)
    rnd.run(log=lambda *_: None)
    judge(rnd, "live")
    state = rnd.run(log=lambda *_: None)
    assert not state["decide"]["passed"] and any("won 0 of" in f for f in state["decide"]["failures"])
    legal = adapters_dir / "legal"
    kept = next(v for v in registry.versions(legal) if v.name == "v2")
    assert kept.rejected and kept.path.is_dir() and not kept.gate["passed"]  # kept, not deleted
    assert registry.candidate(legal) is None and registry.live(legal).name == "v1"
    with pytest.raises(InvalidInput, match="rejected by its feedback round"):
        registry.promote(legal, "v2")
    assert registry.next_version(legal) == "v3"  # the rejected number is not reused
    assert "kept as a rejected candidate" in "\n".join(rnd.next_steps())
    rnd.restart()  # a new round starts clean: no old pairs or judgments are reused
    assert rnd.state == {"domain": "legal", "done": []} and not list(rnd.folder.glob("*.json*"))


def test_judgments_file_errors_name_the_line(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_text('{"id": "x-001", "verdict": "A"}\n{"id": "x-002", "verdict": "maybe"}\n')
    with pytest.raises(InvalidInput, match="line 2: verdict must be one of A, B, tie, got 'maybe'"):
        read_judgments(path, {"x-001", "x-002"})
    path.write_text('{"id": "x-001", "verdict": "A"}\n')
    with pytest.raises(InvalidInput, match="judges 1 of 2 pairs; missing: x-002"):
        read_judgments(path, {"x-001", "x-002"})


def test_regressions_allow_the_tolerance_and_no_more():
    live = {"fact_recall": 0.5, "citation_validity": 0.8, "unsupported_figures": 0.02, "safety_pass_rate": 1.0}
    one_worse = {**live, "fact_recall": 0.5 - 1 / 50}
    assert regressions({LIVE: live, CANDIDATE: one_worse}, tolerance=1, n=50) == []
    two_worse = {**live, "fact_recall": 0.5 - 2 / 50, "unsupported_figures": 0.1}
    found = regressions({LIVE: live, CANDIDATE: two_worse}, tolerance=1, n=50)
    assert [f.split(" regressed")[0] for f in found] == ["fact recall", "unsupported figures"]


LEGAL_DOCS = {
    "deposits.md": "---\ntitle: Security deposits\nsource: test\n---\n# Deposits\n\nProtect a deposit within 30 days.",
    "wills.md": "---\ntitle: Making a will\nsource: test\n---\n# Wills\n\nA will must be signed in front of two witnesses.",
    "claims.md": "---\ntitle: Small claims\nsource: test\n---\n# Claims\n\nThe small claims limit is £10,000.",
}


def test_ratings_on_removed_or_changed_passages_are_skipped_with_a_count(tmp_path, embedder, data_home):
    knowledge = tmp_path / "knowledge"
    (knowledge / "legal").mkdir(parents=True)
    for name, text in LEGAL_DOCS.items():
        (knowledge / "legal" / name).write_text(text)
    settings = Settings.from_env(knowledge_dir=knowledge)
    kb = KnowledgeBase(settings, load_domains(), embedder)
    kb.ingest("legal", progress=False)
    store = FeedbackStore.from_settings(settings)
    for i, doc in enumerate(["deposits.md", "wills.md", "claims.md", "claims.md"]):
        passage = kb.search("legal", LEGAL_DOCS[doc].split("\n")[-1], k=1, threshold=0.0)[0]
        assert passage.id == f"{doc}#0"
        question = f"question {i} about {doc}?"
        prompt = [{"role": "user", "content": f"Documents: ...\n\nQuestion: {question}\nAnswer from the documents."}]
        answer = Answer(id=f"a{i}", domain="legal", text="An answer [1].", adapter={"name": "legal", "version": "v1"},
                        route=Route("legal", 1.0), prompt=prompt, sources=[passage], finished=True)
        store.record_answer(answer, question, [], "s")
        store.rate(answer.id, "up" if i % 2 else "down", session_id="s")
    (knowledge / "legal" / "deposits.md").unlink()
    (knowledge / "legal" / "wills.md").write_text(LEGAL_DOCS["wills.md"].replace("two witnesses", "two adult witnesses"))
    kb.ingest("legal", progress=False)
    rows, skipped = store.latest("legal", still_applies(kb, "legal"))
    assert [r["answer_id"] for r in rows] == ["a2", "a3"]
    assert skipped == {"a passage it quoted is no longer in the knowledge base": 1, "a passage it quoted has changed since": 1}
    assert [r["answer_id"] for r in store.export("legal", "kto", check=still_applies(kb, "legal"))] == ["a2", "a3"]


def test_seed_file_loads_and_exports_the_same_pairs(tmp_path, data_home, monkeypatch, capsys):
    first = store_with_feedback(Settings.from_env(), n=10)
    first.rate("a1", "down", correction="Protect it within 30 days [1].", session_id="s", review="approved", rater="ana")
    seed = tmp_path / "legal-seed.jsonl"
    assert cli.main(["feedback", "export", "--domain", "legal", "--format", "seed", str(seed)]) == 0
    rows = [json.loads(line) for line in seed.read_text().splitlines()]
    assert len(rows) == 11 and {r["rater"] for r in rows} == {"", "ana"}
    monkeypatch.setenv("ASSISTANTS_HOME", str(tmp_path / "other-home"))
    assert cli.main(["feedback", "seed", "--file", str(seed)]) == 0
    second = FeedbackStore.from_settings(Settings.from_env())
    for fmt in ("kto", "dpo"):
        assert second.export("legal", fmt) == first.export("legal", fmt)
    assert cli.main(["feedback", "seed", "--file", str(seed)]) == 0  # twice: nothing is added
    assert "11 already stored" in capsys.readouterr().out
    assert len(second.rated("legal")) == 11


def test_bad_seed_file_and_bad_rater_are_clear_errors(tmp_path, data_home):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"answer_id": "x"}\nnot json\n')
    with pytest.raises(InvalidInput, match="line 2: not JSON"):
        cli._read_seed(bad)
    store = FeedbackStore.from_settings(Settings.from_env())
    with pytest.raises(InvalidInput, match="seed row 1: missing domain, question, answer, prompt, rating"):
        store.load_seed([{"answer_id": "x"}])
    store_with_feedback(Settings.from_env(), n=1)
    with pytest.raises(InvalidInput, match="rater must be a name or handle"):
        store.rate("a0", "up", session_id="s", rater="<script>")


def test_compare_pairs_wait_for_review_and_the_round_counts_them(tmp_path, data_home):
    store = store_with_feedback(Settings.from_env(), n=2)  # a0 down with an approved correction, a1 up
    rating = store.rate("a1", "down", correction="the other side's answer", session_id="s", origin="compare")
    assert [p["answer_id"] for p in store.export("legal", "dpo")] == ["a0"]  # pending: not used yet
    assert store.rated("legal")[-1]["origin"] == "compare"
    store.review(rating, "approved")
    assert [(p["answer_id"], p["chosen"][0]["content"]) for p in store.export("legal", "dpo")][-1] == ("a1", "the other side's answer")


def test_passage_sources_round_trip_through_the_trace(data_home):
    store = FeedbackStore.from_settings(Settings.from_env())
    passage = Passage(id="deposits.md#0", title="Deposits", source="t", score=0.9, text="Protect it within 30 days.")
    answer = Answer(id="p1", domain="legal", text="x [1]", adapter={}, route=Route("legal", 1.0),
                    prompt=[{"role": "user", "content": "Question: q?\n"}], sources=[passage], finished=True)
    store.record_answer(answer, "q?", [], "s")
    store.rate("p1", "up", session_id="s")
    row = store.seed_rows("legal")[0]
    assert row["sources"] == [{"id": "deposits.md#0", "text": "Protect it within 30 days."}]


def test_escalated_answers_do_not_train_the_adapter():
    row = {"question": "q?", "prompt": [{"role": "user", "content": "Question: q?\n"}], "passage_ids": [],
           "trace": {"notices": ["safety:suicide"], "sources": []}}
    assert "safety layer" in still_applies(None, "legal")(row)
    row["trace"]["notices"] = []
    assert still_applies(None, "legal")(row) is None
