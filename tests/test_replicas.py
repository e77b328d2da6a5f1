"""Two app replicas behind nginx (deploy/nginx.conf), sharing one PostgreSQL, one Chroma server, one adapters
folder and one knowledge folder: the scale-out setup of deploy/compose.yaml, minus the GPU. Each replica runs
the real model on its local engine. What one replica does, the other sees: answers, ratings, promotions,
ingestion; and two replicas ingesting at once neither duplicate nor lose chunks."""

import os
import shutil
import time
from pathlib import Path

import httpx
import pytest

from assistants.evaluation.cluster import Cluster, postgres_missing
from assistants.settings import REPO_ROOT
from tests.conftest import SHARED_HOME

LEGAL_FILES = ["tenancy-security-deposits.md", "consumer-faulty-goods-and-refunds.md", "employment-wages-and-overtime.md"]


def _missing() -> str:
    if postgres_missing():
        return postgres_missing()
    if not shutil.which("nginx") and not os.path.exists("/usr/sbin/nginx"):
        return "nginx is not installed (Debian package nginx-light; .ci/run installs it)"
    return ""


pytestmark = pytest.mark.skipif(bool(_missing()), reason=_missing() or "ok")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from assistants.embeddings import prepare_onnx
    from assistants.generation.engine import prepare_embedded_cache

    root = tmp_path_factory.mktemp("replicas")
    prepare_embedded_cache(SHARED_HOME)  # converted once per machine, shared with the smoke tests
    prepare_onnx(SHARED_HOME / "models")
    shutil.copytree(REPO_ROOT / "adapters" / "legal", root / "adapters" / "legal")  # promotions must not touch the repo
    (root / "knowledge" / "legal").mkdir(parents=True)
    for name in LEGAL_FILES:
        shutil.copy(REPO_ROOT / "knowledge" / "legal" / name, root / "knowledge" / "legal" / name)
    env = {"ASSISTANTS_ADAPTERS_DIR": str(root / "adapters"), "ASSISTANTS_KNOWLEDGE_DIR": str(root / "knowledge"),
           "ASSISTANTS_RATE_LIMIT": "0", "ASSISTANTS_THREADS": "1", "ASSISTANTS_MAX_NEW_TOKENS": "12"}
    with Cluster(replicas=2, env=env, root=root, prepared=SHARED_HOME) as c:
        yield c


def ask(url: str, question: str = "How long does my landlord have to protect my deposit?", model: str = "legal") -> dict:
    r = httpx.post(f"{url}/v1/chat/completions", timeout=120,
                   json={"model": model, "max_tokens": 12, "messages": [{"role": "user", "content": question}]})
    assert r.status_code == 200, r.text
    return r.json()


def test_both_replicas_ingested_at_once_without_duplicates_or_losses(cluster):
    import chromadb

    client = chromadb.HttpClient(host=cluster.env["CHROMA_HOST"], port=int(cluster.env["CHROMA_PORT"]))
    got = client.get_collection("kb_legal").get(include=["metadatas"])
    per_file: dict[str, list[int]] = {}
    for m in got["metadatas"]:
        per_file.setdefault(m["file"], []).append(m["chunk"])
    assert sorted(per_file) == sorted(LEGAL_FILES)
    for name, chunks in per_file.items():  # every chunk once, none missing
        n = next(m["n_chunks"] for m in got["metadatas"] if m["file"] == name)
        assert sorted(chunks) == list(range(n)), name
    assert len(got["ids"]) == len(set(got["ids"]))


def test_an_answer_from_one_replica_is_rated_and_read_through_the_other(cluster):
    a, b = (r.url for r in cluster.replicas)
    out = ask(a)
    session = out["assistants"]["session_id"]
    assert out["assistants"]["adapter"]["name"] == "legal"
    r = httpx.post(f"{b}/api/feedback", json={"answer_id": out["id"], "session_id": session, "rating": "down",
                                              "correction": "Within 30 days of receiving it [1]."})
    assert r.status_code == 201, r.text
    for url in (a, b, cluster.url):
        got = httpx.get(f"{url}/api/answers/{out['id']}", params={"session_id": session})
        assert got.status_code == 200, got.text
        assert got.json()["answer"] == out["choices"][0]["message"]["content"]
        assert [x["correction"] for x in got.json()["ratings"]] == ["Within 30 days of receiving it [1]."]
    assert httpx.get(f"{b}/api/answers/{out['id']}", params={"session_id": "not-mine"}).status_code == 403


def test_a_promotion_on_one_machine_reaches_both_replicas_without_a_restart(cluster):
    a, b = (r.url for r in cluster.replicas)
    from assistants import adapters as registry

    shipped = registry.live(REPO_ROOT / "adapters" / "legal").name  # the repository's live version, copied
    assert shipped != "v2" and {ask(u)["assistants"]["adapter"]["version"] for u in (a, b)} == {shipped}
    done = cluster.run("adapters", "promote", "legal", "v2", "--force")
    assert done.returncode == 0, done.stderr
    deadline = time.time() + 60
    seen = {}
    while time.time() < deadline and set(seen.values()) != {"v2"}:
        time.sleep(2.5)  # replicas look at live.json at most every 2 s
        seen = {u: ask(u)["assistants"]["adapter"]["version"] for u in (a, b)}
    assert seen == {a: "v2", b: "v2"}
    health = [httpx.get(f"{u}/healthz").json()["adapters"]["legal"] for u in (a, b)]
    assert health == [{"version": "v2", "loaded": True}] * 2
    cluster.run("adapters", "rollback", "legal")


def test_ingestion_run_from_one_machine_is_searched_by_both(cluster):
    a, b = (r.url for r in cluster.replicas)
    doc = Path(cluster.env["ASSISTANTS_KNOWLEDGE_DIR"]) / "legal" / "parking-permits-test.md"
    doc.write_text("---\ntitle: Residents' parking permits\nsources: [https://www.gov.uk/parking-permits]\nreviewed: 2026-11-01\n---\n"
                   "# Residents' parking permits\n\nA residents' parking permit from the council lets you park in a "
                   "controlled parking zone near your home. Councils set their own prices and rules.\n")
    try:
        done = cluster.run("ingest", "--domain", "legal")
        assert done.returncode == 0 and "1 added" in done.stdout, done.stdout + done.stderr
        for url in (a, b, cluster.url):
            hits = httpx.get(f"{url}/api/search", params={"domain": "legal", "q": "residents parking permit controlled zone"}).json()
            assert hits and hits[0]["title"] == "Residents' parking permits", url
    finally:
        doc.unlink()
        cluster.run("ingest", "--domain", "legal")


def test_the_load_balancer_spreads_api_traffic_and_streams(cluster):
    import json

    for _ in range(6):
        r = httpx.get(f"{cluster.url}/v1/models")
        assert r.status_code == 200 and "legal" in [m["id"] for m in r.json()["data"]]
    answered = set()
    for i in range(4):
        out = ask(cluster.url, f"Can my landlord keep my deposit? ({i})")
        answered.add(out["id"])
    assert len(answered) == 4
    pieces = []
    with httpx.stream("POST", f"{cluster.url}/v1/chat/completions", timeout=120,
                      json={"model": "legal", "stream": True, "max_tokens": 12,
                            "messages": [{"role": "user", "content": "Can my landlord keep my deposit?"}]}) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                pieces.append(json.loads(line[6:]))
    assert len(pieces) >= 3 and pieces[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    log = (cluster.balancer.root / "logs" / "access.log").read_text().splitlines()
    upstreams = {line.split()[-2] for line in log if "POST /v1/chat/completions" in line}
    assert upstreams == {f"127.0.0.1:{r.port}" for r in cluster.replicas}  # both replicas answered
    assert httpx.get(f"{cluster.url}/").status_code == 200  # the web UI, through the sticky upstream
