"""The feedback store's Postgres path (DATABASE_URL), against a real throwaway PostgreSQL server.

Uses TEST_POSTGRES_URL when set; otherwise starts a temporary cluster from Debian's `postgresql`
package (.ci/run installs it). Skips with the reason when neither is available.
"""

import os
import threading

import pytest

from assistants.errors import NotFound
from assistants.evaluation.cluster import Postgres, postgres_missing
from assistants.feedback import SCHEMA_VERSION, FeedbackStore
from tests.test_feedback import make_answer


@pytest.fixture(scope="module")
def postgres_url():
    if os.environ.get("TEST_POSTGRES_URL"):
        yield os.environ["TEST_POSTGRES_URL"]
        return
    if postgres_missing():
        pytest.skip(postgres_missing())
    cluster = Postgres()
    try:
        yield cluster.url
    finally:
        cluster.close()


@pytest.fixture
def pg_store(postgres_url):
    store = FeedbackStore(postgres_url)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("truncate feedback, answers")
    return store


def test_postgres_round_trip_and_export(pg_store):
    assert pg_store.version() == SCHEMA_VERSION
    pg_store.record_answer(make_answer(), "q from bob@example.org", [], "s")
    rating = pg_store.rate("a0", "down", correction="better [1]", session_id="s")
    pg_store.review(rating, "approved")
    assert pg_store.answer("a0")["question"] == "q from [email]"
    assert pg_store.export("legal", "dpo")[0]["chosen"][0]["content"] == "better [1]"
    with pytest.raises(NotFound):
        pg_store.rate("missing", "up")


def test_postgres_concurrent_writers(pg_store):
    for i in range(10):
        pg_store.record_answer(make_answer(i), f"q{i}", [], "s")
    ids = []
    threads = [threading.Thread(target=lambda i=i: ids.append(pg_store.rate(f"a{i % 10}", "up", session_id="s"))) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 50 and sum(r["n"] for r in pg_store.stats()["ratings"]) == 50


def test_reopening_keeps_data(postgres_url, pg_store):
    pg_store.record_answer(make_answer(1), "q", [], "s")
    assert FeedbackStore(postgres_url).answer("a1") is not None


def test_replicas_starting_together_migrate_one_at_a_time(postgres_url):
    """Replicas started together on an empty database each create the schema: one does, the others find it
    (without the migration lock, the second CREATE TABLE failed with a duplicate-type error and the replica hung)."""
    from sqlalchemy import create_engine, text

    name = f"fresh_{os.getpid()}_{threading.get_ident() % 10000}"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    url = postgres_url.rsplit("/", 1)[0] + f"/{name}"
    start, errors, stores = threading.Barrier(6), [], []

    def open_store():
        start.wait()
        try:
            stores.append(FeedbackStore(url))
        except Exception as exc:  # noqa: BLE001 - the test reports every failure
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == [] and len(stores) == 6
        with stores[0].engine.connect() as conn:
            assert conn.execute(text("SELECT version FROM schema_version")).scalars().all() == [SCHEMA_VERSION]
    finally:
        for store in stores:
            store.engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))
        admin.dispose()
