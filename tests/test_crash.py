"""Crash safety: kill -9 the real server while 50 clients write feedback; nothing acknowledged is lost."""

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import httpx
import pytest

from assistants.settings import REPO_ROOT
from tests.conftest import tiny_model
from tests.test_api import free_port


@pytest.fixture
def tiny_model_dir(tmp_path, tiny_tokenizer):
    folder = tmp_path / "tiny-model"
    tiny_model(tiny_tokenizer).save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    return folder


def start_server(env: dict, port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "assistants", "serve", "--port", str(port)], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(proc.stderr.read().decode()[-2000:])
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError("server did not become healthy")


def test_kill_9_during_concurrent_feedback_loses_nothing(tmp_path, tiny_model_dir):
    home = tmp_path / "home"
    env = {**os.environ, "ASSISTANTS_HOME": str(home), "ASSISTANTS_BASE_MODEL": str(tiny_model_dir),
           "ASSISTANTS_ADAPTERS_DIR": str(tmp_path / "no-adapters"), "ASSISTANTS_AUTO_INGEST": "0",
           "ASSISTANTS_RATE_LIMIT": "0", "ASSISTANTS_MAX_NEW_TOKENS": "2"}
    port = free_port()
    proc = start_server(env, port)
    url = f"http://127.0.0.1:{port}"
    try:
        answers = [httpx.post(f"{url}/v1/chat/completions", timeout=60, json={
            "model": "legal", "max_tokens": 2, "messages": [{"role": "user", "content": f"question {i}"}]}).json()
            for i in range(3)]
        answer_ids = [a["id"] for a in answers]
        sessions = {a["id"]: a["assistants"]["session_id"] for a in answers}  # only its conversation may rate an answer
        acked, stop = [], threading.Event()
        lock = threading.Lock()

        def writer(n: int):
            with httpx.Client(timeout=10) as client:
                while not stop.is_set():
                    try:
                        r = client.post(f"{url}/api/feedback", json={"answer_id": answer_ids[n % 3], "rating": "up",
                                                                     "reason": f"writer {n}",
                                                                     "session_id": sessions[answer_ids[n % 3]]})
                    except httpx.HTTPError:
                        return
                    if r.status_code == 201:
                        with lock:
                            acked.append(r.json()["id"])

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(50)]
        for t in threads:
            t.start()
        time.sleep(3)
        os.kill(proc.pid, signal.SIGKILL)  # mid-stream, no shutdown hooks
        proc.wait(timeout=10)
        stop.set()
        for t in threads:
            t.join(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert len(acked) > 20
    db = sqlite3.connect(home / "feedback.sqlite3")
    stored = {row[0] for row in db.execute("select id from feedback")}
    assert set(acked) <= stored
    assert db.execute("pragma integrity_check").fetchone()[0] == "ok"
    db.close()
    proc = start_server(env, port)  # the next start opens the same database
    try:
        r = httpx.post(f"{url}/api/feedback", json={"answer_id": answer_ids[0], "rating": "down",
                                                    "session_id": sessions[answer_ids[0]]})
        assert r.status_code == 201 and r.json()["id"] > max(acked)
    finally:
        proc.kill()


def test_bench_load_reports_and_stays_healthy(tmp_path, tiny_model_dir):
    from assistants.evaluation.bench import bench_load, format_load

    env = {"ASSISTANTS_HOME": str(tmp_path / "home"), "ASSISTANTS_BASE_MODEL": str(tiny_model_dir),
           "ASSISTANTS_ADAPTERS_DIR": str(tmp_path / "none"), "ASSISTANTS_AUTO_INGEST": "0"}
    result = bench_load(clients=6, seconds=6, env=env, max_tokens=2, warmup=2, rate_limit=20)
    assert not (tmp_path / "home" / "feedback.sqlite3").exists()  # the load's ratings stay out of the real store
    assert result["warmup_requests"] > 0 and result["rate_limit"] == 20
    assert result["requests"] > 10 and result["errors_5xx"] == 0 and result["hangs"] == 0
    assert result["unintended_non_2xx"] == 0
    assert "server RSS" in format_load(result)
