"""The feedback store's Postgres path (DATABASE_URL), against a real throwaway PostgreSQL server.

Uses TEST_POSTGRES_URL when set; otherwise starts a temporary cluster from Debian's `postgresql`
package (.ci/run installs it). Skips with the reason when neither is available.
"""

import glob
import os
import shutil
import subprocess
import tempfile
import threading

import pytest

from assistants.errors import NotFound
from assistants.feedback import SCHEMA_VERSION, FeedbackStore
from tests.test_api import free_port
from tests.test_feedback import make_answer


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture(scope="module")
def postgres_url():
    if os.environ.get("TEST_POSTGRES_URL"):
        yield os.environ["TEST_POSTGRES_URL"]
        return
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins or (os.geteuid() == 0 and shutil.which("runuser") is None):
        pytest.skip("PostgreSQL is not installed (Debian package postgresql; .ci/run installs it)")
    bindir = os.path.dirname(bins[-1])
    root = tempfile.mkdtemp(prefix="pgtest-")
    os.chmod(root, 0o777)
    data = os.path.join(root, "data")
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    port = free_port()
    subprocess.run(_as_postgres([f"{bindir}/initdb", "-D", data, "--auth=trust", "-U", "postgres"]), check=True,
                   capture_output=True)
    subprocess.run(_as_postgres([f"{bindir}/pg_ctl", "-D", data, "-w", "-l", os.path.join(root, "log"), "-o",
                                 f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start"]), check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_postgres([f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "stop"]), capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


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
