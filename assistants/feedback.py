"""Feedback store: every answer with its trace, and the ratings/corrections users give it.

SQLite (WAL, one transaction per write) in the data dir by default; ``DATABASE_URL`` points the
same code at Postgres. The schema carries a version number; ``migrate`` upgrades older databases
in place, so a newer app opens an older database. E-mail addresses and phone numbers are redacted
before anything is stored.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import datetime, timezone

from sqlalchemy import (JSON, Boolean, Column, DateTime, Float, ForeignKey, Integer, MetaData, String, Table, Text,
                        create_engine, event, func, insert, inspect, select, text)
from sqlalchemy.engine import Engine as DBEngine

from .errors import ConfigError, Forbidden, InvalidInput, NotFound
from .safety import check_unicode
from .text import EMAIL
from .types import Answer

SCHEMA_VERSION = 4
MIGRATION_LOCK = 0x66656564  # the Postgres advisory lock key replicas take while migrating ("feed")
REVIEWS = ("pending", "approved", "rejected")
# where a rating came from: a thumb (UI or API), a Compare-tab preference (its correction is the other side's
# model answer, not free text), or a seed file loaded with `feedback seed --file`
ORIGINS = ("rating", "compare", "seed")
PHONE = re.compile(r"(?<![\w(+])(?:\+|\()?\d[\d ().-]{7,}\d(?![\w])")
RATINGS = ("up", "down")
MAX_TEXT = 8000

metadata = MetaData()
schema_version = Table("schema_version", metadata, Column("version", Integer, nullable=False))
answers = Table(
    "answers", metadata,
    Column("id", String(64), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("session_id", String(64), nullable=False, default=""),
    Column("domain", String(64), nullable=False),
    Column("route_confidence", Float),
    Column("route_method", String(16)),  # router | chosen | override (override = routing training data)
    Column("question", Text, nullable=False),
    Column("history_summary", Text, nullable=False, default=""),
    Column("answer", Text, nullable=False),
    Column("adapter_name", String(64)),
    Column("adapter_version", String(32)),
    Column("passage_ids", JSON, nullable=False, default=list),
    Column("prompt", JSON, nullable=False, default=list),  # the messages exactly as the model saw them
    Column("trace", JSON, nullable=False, default=dict),
)
feedback = Table(
    "feedback", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("answer_id", String(64), ForeignKey("answers.id"), nullable=False, index=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("rating", String(8), nullable=False),
    Column("correction", Text),
    Column("reason", Text),
    Column("session_id", String(64), nullable=False, default=""),
    Column("simulated", Boolean, nullable=False, default=False),  # added in schema 2
    # added in schema 3: a correction becomes a DPO "chosen" answer only once a person approved it
    Column("review", String(16), nullable=False, default="pending"),
    # added in schema 4: who rated (a name or handle the rater gave; "" = anonymous) and where it came from
    Column("rater", String(64), nullable=False, default=""),
    Column("origin", String(16), nullable=False, default="rating"),
)


RATER = re.compile(r"[\w.@+-]{1,64}")


def check_rater(rater: str | None) -> str:
    """A rater's name or handle as stored: letters, digits and ``._@+-``, at most 64 characters ("" = anonymous)."""
    rater = (rater or "").strip()
    if rater and not RATER.fullmatch(rater):
        raise InvalidInput(f"rater must be a name or handle of 1-64 letters, digits or . _ @ + - (got {rater[:70]!r})")
    return rater


def public_contacts(texts) -> frozenset[str]:
    """E-mail addresses and phone numbers printed in knowledge passages: public, not a user's personal data."""
    return frozenset(m.group(0) for text in texts if text for rx in (EMAIL, PHONE) for m in rx.finditer(text))


def redact(value: str | None, keep: frozenset[str] = frozenset()) -> str | None:
    """E-mail addresses and phone numbers replaced, except those in ``keep`` (the passages' own: a support
    line the answer quotes is a key fact, and training on "[phone]" would teach the model to write it)."""
    if value is None:
        return None
    value = EMAIL.sub(lambda m: m.group(0) if m.group(0) in keep else "[email]", value)
    return PHONE.sub(lambda m: m.group(0) if m.group(0) in keep else "[phone]", value)


def _redact_messages(messages: list[dict], keep: frozenset[str] = frozenset()) -> list[dict]:
    return [{**m, "content": redact(m.get("content", ""), keep)} for m in messages]


def _version(conn) -> int:
    """The schema version in the database ``conn`` reaches; 0 before the first migration."""
    if not inspect(conn).has_table(schema_version.name):
        return 0
    return conn.execute(select(func.max(schema_version.c.version))).scalar() or 0


class FeedbackStore:
    """Answers and ratings. Thread-safe: each call is its own transaction."""

    def __init__(self, url: str):
        self.url = url
        sqlite = url.startswith("sqlite")
        self.engine: DBEngine = create_engine(url, pool_pre_ping=True,
                                              connect_args={"timeout": 30} if sqlite else {})
        if sqlite:
            @event.listens_for(self.engine, "connect")
            def _pragmas(conn, _record):  # durability: WAL + fsync on commit survives kill -9 and power loss
                cur = conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=FULL")
                cur.execute("PRAGMA foreign_keys=ON")
                cur.close()
        self.migrate()

    @classmethod
    def from_settings(cls, settings) -> "FeedbackStore":
        if settings.database_url:
            return cls(settings.database_url)
        settings.home.mkdir(parents=True, exist_ok=True)
        return cls(f"sqlite:///{settings.home / 'feedback.sqlite3'}")

    # -- schema ------------------------------------------------------------------------------------

    def version(self) -> int:
        with self.engine.connect() as conn:
            return _version(conn)

    def migrate(self) -> None:
        """Create or upgrade the schema to SCHEMA_VERSION, one step at a time. On Postgres, replicas starting
        together take turns (a transaction-scoped advisory lock): the first creates the tables, the others find them."""
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
            current = _version(conn)
            if current > SCHEMA_VERSION:
                raise ConfigError(f"the feedback database {self.engine.url.render_as_string(hide_password=True)} has schema version {current}, newer than this app's "
                                  f"({SCHEMA_VERSION}): upgrade the app, or point DATABASE_URL / ASSISTANTS_HOME at another database")
            if current == SCHEMA_VERSION:
                return
            if current == 0:
                metadata.create_all(conn)
                conn.execute(insert(schema_version).values(version=SCHEMA_VERSION))
                return
            if current < 2:  # v1 -> v2: ratings can be simulated (feedback seed)
                conn.execute(text("ALTER TABLE feedback ADD COLUMN simulated BOOLEAN NOT NULL DEFAULT FALSE"))
            if current < 3:  # v2 -> v3: corrections wait for review before training uses them
                conn.execute(text("ALTER TABLE feedback ADD COLUMN review VARCHAR(16) NOT NULL DEFAULT 'pending'"))
                # simulated corrections are reference answers of reviewed held-out examples, as `feedback seed` stores them now
                conn.execute(text("UPDATE feedback SET review = 'approved' WHERE simulated = TRUE AND correction IS NOT NULL"))
            if current < 4:  # v3 -> v4: who rated, and where the rating came from (Compare-tab pairs were marked by their reason)
                conn.execute(text("ALTER TABLE feedback ADD COLUMN rater VARCHAR(64) NOT NULL DEFAULT ''"))
                conn.execute(text("ALTER TABLE feedback ADD COLUMN origin VARCHAR(16) NOT NULL DEFAULT 'rating'"))
                conn.execute(text("UPDATE feedback SET origin = 'compare' WHERE reason LIKE 'compare: preferred%'"))
            conn.execute(schema_version.delete())
            conn.execute(insert(schema_version).values(version=SCHEMA_VERSION))

    # -- writes ------------------------------------------------------------------------------------

    def record_answer(self, answer: Answer, question: str, history: list[dict], session_id: str = "") -> None:
        summary = " | ".join(m["content"][:80] for m in history[-4:] if m.get("role") == "user")
        trace = answer.to_json()
        trace.pop("answer", None)
        keep = public_contacts(p.text for p in answer.sources)
        row = dict(
            id=answer.id, created_at=datetime.now(timezone.utc), session_id=session_id[:64], domain=answer.domain,
            route_confidence=answer.route.confidence, route_method=answer.route.method,
            question=redact(question), history_summary=redact(summary), answer=redact(answer.text, keep),
            adapter_name=answer.adapter.get("name"), adapter_version=answer.adapter.get("version"),
            passage_ids=[p.id for p in answer.sources], prompt=_redact_messages(answer.prompt, keep),
            trace=json.loads(redact(json.dumps(trace), keep)))
        with self.engine.begin() as conn:
            conn.execute(insert(answers).values(**row))

    def rate(self, answer_id: str, rating: str, correction: str | None = None, reason: str | None = None,
             session_id: str = "", simulated: bool = False, review: str = "pending", rater: str = "",
             origin: str = "rating") -> int:  # noqa: PLR0913
        """Store a rating; returns its id. Unknown answer -> NotFound; bad values -> InvalidInput.

        Only the conversation that saw an answer (its ``session_id``) may rate or correct it (Forbidden).
        """
        if rating not in RATINGS:
            raise InvalidInput(f"rating must be 'up' or 'down', got {rating!r}")
        for name, value in (("correction", correction), ("reason", reason)):
            if value is not None and len(value) > MAX_TEXT:
                raise InvalidInput(f"{name} is too long ({len(value)} characters, limit {MAX_TEXT})")
        for value in (answer_id, correction, reason, session_id):
            if value is not None:
                check_unicode(value, "the rating")
        if review not in REVIEWS:
            raise InvalidInput(f"review must be one of {', '.join(REVIEWS)}, got {review!r}")
        if origin not in ORIGINS:
            raise InvalidInput(f"origin must be one of {', '.join(ORIGINS)}, got {origin!r}")
        rater = check_rater(rater)
        with self.engine.begin() as conn:
            row = conn.execute(select(answers.c.id, answers.c.session_id, answers.c.trace).where(answers.c.id == answer_id)).first()
            if row is None:
                raise NotFound(f"no answer with id {answer_id[:64]!r}: rate an answer the assistants gave (its `id`)")
            if not row.session_id or row.session_id != session_id[:64]:
                raise Forbidden("this answer was given in another conversation: only the conversation that saw an answer "
                                "can rate or correct it (send its `session_id`)")
            keep = public_contacts(s.get("text") for s in (row.trace or {}).get("sources", []))
            result = conn.execute(insert(feedback).values(
                answer_id=answer_id, created_at=datetime.now(timezone.utc), rating=rating,
                correction=redact(correction.strip(), keep) if correction and correction.strip() else None,
                reason=redact(reason.strip(), keep) if reason and reason.strip() else None,
                session_id=session_id[:64], simulated=simulated, review=review, rater=rater, origin=origin))
            return int(result.inserted_primary_key[0])

    # -- reads -------------------------------------------------------------------------------------

    def answer(self, answer_id: str) -> dict | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(answers).where(answers.c.id == answer_id)).mappings().first()
            return dict(row) if row else None

    def lookup(self, answer_id: str, session_id: str) -> dict:
        """An answer as its conversation saw it, with the ratings and corrections given to it: the same from
        every replica sharing this store. Only that conversation (``session_id``) may read it."""
        check_unicode(answer_id, "the answer id")
        check_unicode(session_id, "the session id")
        with self.engine.connect() as conn:
            row = conn.execute(select(answers.c.id, answers.c.created_at, answers.c.session_id, answers.c.domain,
                                      answers.c.answer, answers.c.adapter_name, answers.c.adapter_version, answers.c.trace)
                               .where(answers.c.id == answer_id[:64])).mappings().first()
            if row is None:
                raise NotFound(f"no answer with id {answer_id[:64]!r}")
            if not row["session_id"] or row["session_id"] != session_id[:64]:
                raise Forbidden("this answer was given in another conversation: send the `session_id` it was given in")
            rated = conn.execute(select(feedback.c.id, feedback.c.created_at, feedback.c.rating, feedback.c.correction,
                                        feedback.c.reason).where(feedback.c.answer_id == row["id"]).order_by(feedback.c.id))
            ratings = [{**r, "created_at": r["created_at"].isoformat()} for r in rated.mappings()]
        trace = row["trace"] or {}
        return {"id": row["id"], "created_at": row["created_at"].isoformat(), "domain": row["domain"], "answer": row["answer"],
                "adapter": {"name": row["adapter_name"], "version": row["adapter_version"]},
                "sources": [s.get("id") for s in trace.get("sources", [])], "ratings": ratings}

    def stats(self) -> dict:
        """Counts per domain, rating and adapter version."""
        query = (select(answers.c.domain, answers.c.adapter_version, feedback.c.rating, feedback.c.simulated,
                        func.count().label("n"))
                 .select_from(feedback.join(answers))
                 .group_by(answers.c.domain, answers.c.adapter_version, feedback.c.rating, feedback.c.simulated))
        with self.engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(query).mappings()]
            n_answers = conn.execute(select(func.count()).select_from(answers)).scalar()
            overrides = conn.execute(select(func.count()).select_from(answers).where(answers.c.route_method == "override")).scalar()
        return {"answers": n_answers, "route_overrides": overrides, "ratings": rows}

    def rated(self, domain: str) -> list[dict]:
        """Every rating of ``domain`` with its answer's prompt and text, oldest first."""
        query = (select(feedback.c.id, feedback.c.rating, feedback.c.correction, feedback.c.reason, feedback.c.simulated,
                        feedback.c.review, feedback.c.rater, feedback.c.origin, feedback.c.created_at,
                        answers.c.id.label("answer_id"), answers.c.prompt, answers.c.answer, answers.c.adapter_version,
                        answers.c.adapter_name, answers.c.question, answers.c.passage_ids, answers.c.trace, answers.c.domain)
                 .select_from(feedback.join(answers)).where(answers.c.domain == domain).order_by(feedback.c.id))
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def review(self, rating_id: int, verdict: str) -> None:
        """Mark a correction approved or rejected (a person read it against the knowledge documents)."""
        if verdict not in REVIEWS:
            raise InvalidInput(f"review must be one of {', '.join(REVIEWS)}, got {verdict!r}")
        with self.engine.begin() as conn:
            if conn.execute(feedback.update().where(feedback.c.id == rating_id).values(review=verdict)).rowcount == 0:
                raise NotFound(f"no rating with id {rating_id}")

    def latest(self, domain: str, check=None) -> tuple[list[dict], Counter]:
        """One vote per answer (its latest rating), and why the others were left out.

        ``check(row)`` returns None when a rating still applies, else the reason it does not (e.g. its
        passages left the knowledge base): those rows are counted by reason, not returned.
        """
        rows = list({r["answer_id"]: r for r in self.rated(domain)}.values())
        kept, skipped = [], Counter()
        for row in rows:
            reason = check(row) if check else None
            if reason:
                skipped[reason] += 1
            else:
                kept.append(row)
        return kept, skipped

    def export(self, domain: str, fmt: str, include_unreviewed: bool = False, check=None) -> list[dict]:
        """KTO rows (prompt, completion, label) from thumbs; DPO pairs (chosen = correction) where one exists.

        A correction is anyone's text: it becomes a "chosen" answer only once approved (``feedback review``),
        unless ``include_unreviewed``. Rejected corrections are never used. A Compare-tab preference (origin
        ``compare``: the preferred side's answer stored as the other side's correction) waits for review the
        same way: on a public Space anyone can click. ``check``: see ``latest``.
        """
        rows, _ = self.latest(domain, check)
        usable = ("approved", "pending") if include_unreviewed else ("approved",)
        if fmt == "kto":
            return [{"prompt": r["prompt"], "completion": [{"role": "assistant", "content": r["answer"]}],
                     "label": r["rating"] == "up", "answer_id": r["answer_id"], "rater": r["rater"]} for r in rows]
        if fmt == "dpo":
            return [{"prompt": r["prompt"], "chosen": [{"role": "assistant", "content": r["correction"]}],
                     "rejected": [{"role": "assistant", "content": r["answer"]}], "answer_id": r["answer_id"], "rater": r["rater"]}
                    for r in rows if r["correction"] and r["review"] in usable]
        raise InvalidInput(f"format must be kto or dpo, got {fmt!r}")

    # -- seed files: a rated set anyone can load to rerun a feedback round ----------------------------------

    def seed_rows(self, domain: str) -> list[dict]:
        """Every rating of ``domain`` with the answer it rates (prompt, passages, version), as a seed file holds them."""
        return [{"answer_id": r["answer_id"], "domain": r["domain"], "question": r["question"], "answer": r["answer"],
                 "adapter_version": r["adapter_version"], "adapter_name": r["adapter_name"], "passage_ids": r["passage_ids"],
                 "sources": [{"id": s.get("id"), "text": s.get("text")} for s in (r["trace"] or {}).get("sources", [])],
                 "prompt": r["prompt"], "rating": r["rating"], "correction": r["correction"], "reason": r["reason"],
                 "review": r["review"], "rater": r["rater"], "origin": r["origin"]} for r in self.rated(domain)]

    def load_seed(self, rows: list[dict]) -> dict:
        """Store a seed file's answers and ratings (origin ``seed``); an answer already stored keeps its
        ratings (loading twice adds nothing). Returns counts."""
        counts, added = Counter(), set()
        for i, row in enumerate(rows, 1):
            missing = [k for k in ("answer_id", "domain", "question", "answer", "prompt", "rating") if not row.get(k)]
            if missing:
                raise InvalidInput(f"seed row {i}: missing {', '.join(missing)}")
        for row in rows:
            with self.engine.begin() as conn:
                stored = conn.execute(select(answers.c.id).where(answers.c.id == row["answer_id"])).first()
                if stored and row["answer_id"] not in added:
                    counts["already stored"] += 1
                    continue
                if not stored:
                    added.add(row["answer_id"])
                    conn.execute(insert(answers).values(
                        id=row["answer_id"][:64], created_at=datetime.now(timezone.utc), session_id="seed", domain=row["domain"],
                        route_method="chosen", question=row["question"], history_summary="", answer=row["answer"],
                        adapter_name=row.get("adapter_name"), adapter_version=row.get("adapter_version"),
                        passage_ids=row.get("passage_ids") or [], prompt=row["prompt"],
                        trace={"sources": row.get("sources") or []}))
            self.rate(row["answer_id"], row["rating"], row.get("correction"), row.get("reason"), session_id="seed",
                      review=row.get("review") or "pending", rater=row.get("rater") or "",
                      origin="compare" if row.get("origin") == "compare" else "seed")
            counts[row["rating"]] += 1
        return dict(counts)

def format_stats(stats: dict) -> str:
    lines = [f"answers stored: {stats['answers']}   route overrides: {stats['route_overrides']}", "",
             f"{'domain':<10}{'adapter':<10}{'rating':<8}{'simulated':<11}{'count':>6}"]
    lines += [f"{r['domain']:<10}{str(r['adapter_version'] or 'base'):<10}{r['rating']:<8}{str(bool(r['simulated'])):<11}{r['n']:>6}"
              for r in stats["ratings"]]
    return "\n".join(lines)
