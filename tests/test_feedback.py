import json
import sqlite3
import threading

import pytest

from assistants import cli
from assistants.errors import ConfigError, Forbidden, InvalidInput, NotFound
from assistants.feedback import SCHEMA_VERSION, FeedbackStore, redact
from assistants.types import Answer, Passage, Route


def make_answer(i: int = 0, domain: str = "legal") -> Answer:
    return Answer(id=f"a{i}", domain=domain, text=f"answer {i}, call 020 7946 0000",
                  adapter={"name": domain, "version": "v1", "label": f"{domain} v1"},
                  route=Route(domain=domain, confidence=0.9), sources=[Passage("doc.md#0", "Doc", "s", 0.8, "t")],
                  prompt=[{"role": "system", "content": "sys"}, {"role": "user", "content": "q from bob@example.org"}], finished=True)


@pytest.fixture
def store(tmp_path):
    return FeedbackStore(f"sqlite:///{tmp_path / 'fb.sqlite3'}")


def test_round_trip_with_trace(store):
    store.record_answer(make_answer(), "q from bob@example.org", [{"role": "user", "content": "earlier"}], "sess1")
    with pytest.raises(Forbidden, match="another conversation"):  # not the conversation that saw it
        store.rate("a0", "up", reason="clear", session_id="other")
    rating_id = store.rate("a0", "up", reason="clear", session_id="sess1")
    assert rating_id == 1
    row = store.answer("a0")
    assert row["domain"] == "legal" and row["adapter_version"] == "v1" and row["passage_ids"] == ["doc.md#0"]
    assert row["route_confidence"] == 0.9 and row["history_summary"] == "earlier" and row["session_id"] == "sess1"
    assert row["trace"]["route"]["domain"] == "legal"


@pytest.mark.parametrize("text,expected", [
    ("mail jane.doe+x@mail.example.co.uk now", "mail [email] now"),
    ("call +44 20 7946 0958 or (555) 010-2030", "call [phone] or [phone]"),
    ("order NW-10482736 costs 49.99", "order NW-10482736 costs 49.99"),
])
def test_redaction(text, expected):
    assert redact(text) == expected


def test_pii_never_stored(store):
    store.record_answer(make_answer(), "q from bob@example.org", [], "s")
    store.rate("a0", "down", correction="reach me at bob@example.org or 07700 900123", session_id="s")
    raw = "".join(str(r) for r in sqlite3.connect(store.url.removeprefix("sqlite:///")).execute(
        "select * from answers join feedback on feedback.answer_id = answers.id"))
    assert "bob@example.org" not in raw and "07700" not in raw and "7946" not in raw


@pytest.mark.parametrize("args,error,needle", [
    (("nope", "up"), NotFound, "no answer with id 'nope'"),
    (("a0", "meh"), InvalidInput, "rating must be 'up' or 'down'"),
    (("a0", "up", "x" * 9000), InvalidInput, "correction is too long"),
])
def test_bad_ratings_raise(store, args, error, needle):
    store.record_answer(make_answer(), "q", [], "s")
    with pytest.raises(error, match=needle):
        store.rate(*args)


def test_concurrent_writers_lose_nothing(store):
    for i in range(50):
        store.record_answer(make_answer(i), f"q{i}", [], "s")
    ids, errors = [], []

    def writer(i):
        try:
            ids.append(store.rate(f"a{i}", "up" if i % 2 else "down", session_id="s"))
        except Exception as exc:  # pragma: no cover - the assertion below reports it
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(ids)) == 50
    conn = sqlite3.connect(store.url.removeprefix("sqlite:///"))
    assert conn.execute("select count(*) from feedback").fetchone()[0] == 50
    assert conn.execute("pragma integrity_check").fetchone()[0] == "ok"
    assert conn.execute("pragma journal_mode").fetchone()[0] == "wal"


def test_older_schema_is_upgraded(tmp_path):
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript("""
        create table schema_version (version integer not null); insert into schema_version values (1);
        create table answers (id varchar(64) primary key, created_at datetime not null, session_id varchar(64) not null,
          domain varchar(64) not null, route_confidence float, route_method varchar(16), question text not null,
          history_summary text not null, answer text not null, adapter_name varchar(64), adapter_version varchar(32),
          passage_ids json not null, prompt json not null, trace json not null);
        create table feedback (id integer primary key autoincrement, answer_id varchar(64) not null references answers(id),
          created_at datetime not null, rating varchar(8) not null, correction text, reason text, session_id varchar(64) not null);
        insert into answers values ('old', '2026-01-01 00:00:00', '', 'legal', 0.9, 'router', 'q', '', 'a', 'legal', 'v1', '[]', '[]', '{}');
        insert into feedback (answer_id, created_at, rating, session_id) values ('old', '2026-01-01 00:00:00', 'up', '');
    """)
    conn.commit()
    conn.close()
    store = FeedbackStore(f"sqlite:///{path}")
    assert store.version() == SCHEMA_VERSION
    assert store.rated("legal")[0]["rating"] == "up" and store.rated("legal")[0]["simulated"] is False


def test_newer_schema_is_refused(tmp_path, store):
    with store.engine.begin() as conn:
        conn.exec_driver_sql(f"update schema_version set version = {SCHEMA_VERSION + 1}")
    with pytest.raises(ConfigError, match=f"schema version {SCHEMA_VERSION + 1}, newer than this app's"):  # an operator's fix, not bad input
        FeedbackStore(store.url)


def test_export_formats(store):
    for i in range(3):
        store.record_answer(make_answer(i), f"q{i}", [], "s")
    store.rate("a0", "down", session_id="s")
    store.rate("a0", "up", session_id="s")  # a changed mind: the latest vote counts, once
    store.rate("a1", "down", correction="The better answer [1].", session_id="s")
    store.rate("a2", "down", session_id="s")
    kto = store.export("legal", "kto")
    assert [r["label"] for r in kto] == [True, False, False]
    assert kto[0]["prompt"][0]["role"] == "system" and kto[0]["completion"][0]["role"] == "assistant"
    assert store.export("legal", "dpo") == []  # nobody has approved the correction yet
    assert len(store.export("legal", "dpo", include_unreviewed=True)) == 1
    store.review(3, "approved")
    dpo = store.export("legal", "dpo")
    assert len(dpo) == 1 and dpo[0]["chosen"][0]["content"] == "The better answer [1]."
    assert dpo[0]["rejected"][0]["content"].startswith("answer 1")
    with pytest.raises(InvalidInput):
        store.export("legal", "csv")
    store.review(3, "rejected")
    assert store.export("legal", "dpo", include_unreviewed=True) == []  # a rejected correction is never used


def test_cli_stats_and_export(settings, tmp_path, capsys):
    store = FeedbackStore.from_settings(settings)
    store.record_answer(make_answer(), "q", [], "s")
    store.rate("a0", "up", session_id="s")
    assert cli.main(["feedback", "stats", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["answers"] == 1 and stats["ratings"][0]["rating"] == "up"
    out = tmp_path / "kto.jsonl"
    assert cli.main(["feedback", "export", "--domain", "legal", "--format", "kto", str(out)]) == 0
    assert json.loads(out.read_text().splitlines()[0])["label"] is True


def test_public_contacts_in_the_passages_are_kept_personal_ones_redacted(store):
    from assistants.types import Passage

    passage = Passage(id="contact.md#0", title="Contact", source="t", score=0.9,
                      text="Email support@northwind.example or call 020 7946 0100 (UK).")
    answer = make_answer()
    answer.sources = [passage]
    answer.text = "Call 020 7946 0100 or email support@northwind.example [1]. I'm bob@example.org."
    answer.prompt = [{"role": "user", "content": f"{passage.text}\n\nQuestion: my number is 07700 900123, how do I reach you?"}]
    store.record_answer(answer, "my number is 07700 900123, how do I reach you?", [], "s")
    store.rate("a0", "down", correction="Call 020 7946 0100 [1]; ring me on 07700 900123", session_id="s")
    row = store.answer("a0")
    assert row["answer"] == "Call 020 7946 0100 or email support@northwind.example [1]. I'm [email]."
    assert "020 7946 0100" in row["prompt"][0]["content"] and "07700 900123" not in row["prompt"][0]["content"]
    assert row["question"] == "my number is [phone], how do I reach you?"
    assert store.rated("legal")[0]["correction"] == "Call 020 7946 0100 [1]; ring me on [phone]"
