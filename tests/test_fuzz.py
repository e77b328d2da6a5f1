"""Property-based fuzzing (hypothesis): hostile inputs give clear errors, never crashes or lost data."""

import zipfile

import httpx
import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from assistants.domains import load_spec
from assistants.errors import AssistantsError, ConfigError
from assistants.documents import SUFFIXES, BadFile, load_file
from assistants.retrieval import KnowledgeBase
from assistants.services import Services
from assistants.settings import Settings
from tests.test_api import Server

FAST = hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=50),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
                           max_leaves=12)


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory, tiny_tokenizer, tiny_adapters):
    from assistants.chat import ChatService
    from assistants.domains import load_domains
    from assistants.generation.engine import Engine, attach_adapters, read_adapter
    from assistants.feedback import FeedbackStore
    from tests.conftest import TINY_BASE, tiny_model

    settings = Settings.from_env(home=tmp_path_factory.mktemp("home"), max_new_tokens=2, rate_limit=0)
    infos = {d: read_adapter(d, p, TINY_BASE) for d, p in tiny_adapters.items()}
    engine = Engine(attach_adapters(tiny_model(tiny_tokenizer), infos), tiny_tokenizer, TINY_BASE, infos)
    chat = ChatService(settings, load_domains(), engine, None, None, FeedbackStore.from_settings(settings))
    with Server(Services.ready(settings, chat)) as server:
        yield server


@FAST
@given(body=json_values)
def test_chat_completions_never_500(fuzz_server, body):
    r = httpx.post(f"{fuzz_server.url}/v1/chat/completions", json=body, timeout=30)
    assert r.status_code in (200, 400, 404, 413, 422, 429), r.text
    if r.status_code != 200:
        assert r.json()["error"]["message"]


@FAST
@given(model=st.sampled_from(["legal", "medical", "auto", "x"]), content=st.text(max_size=300),
       role=st.sampled_from(["user", "assistant", "system", "tool"]), max_tokens=st.integers(-5, 5000))
def test_chat_completions_fields_never_500(fuzz_server, model, content, role, max_tokens):
    body = {"model": model, "messages": [{"role": role, "content": content}], "max_tokens": max_tokens}
    r = httpx.post(f"{fuzz_server.url}/v1/chat/completions", json=body, timeout=30)
    assert r.status_code in (200, 400, 404, 413, 422, 429), r.text


@FAST
@given(body=json_values)
def test_feedback_never_500(fuzz_server, body):
    r = httpx.post(f"{fuzz_server.url}/api/feedback", json=body, timeout=30)
    assert r.status_code in (201, 400, 404, 422, 429), r.text


@FAST
@given(data=st.binary(max_size=4096), suffix=st.sampled_from(sorted(SUFFIXES)))
def test_random_bytes_as_documents(tmp_path, data, suffix):
    path = tmp_path / f"doc{suffix}"
    path.write_bytes(data)
    try:
        doc = load_file(path)
        assert doc.text.strip()
    except AssistantsError as exc:
        assert str(exc)


def test_truncated_pdf_zip_bomb_and_long_line(tmp_path):
    pdf = tmp_path / "t.pdf"
    pdf.write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\nxref\n0 1\n")  # truncated
    with pytest.raises(BadFile):
        load_file(pdf)
    bomb = tmp_path / "bomb.docx"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("word/document.xml", '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body><w:p><w:r><w:t>'
                   + "A" * 3_000_000 + "</w:t></w:r></w:p></w:body></w:document>")
    with pytest.raises(BadFile, match="too long"):
        load_file(bomb)
    line = tmp_path / "line.txt"
    line.write_bytes(b"x" * 10_500_000)
    with pytest.raises(BadFile, match="too long"):
        load_file(line)


def test_store_intact_after_hostile_batch(tmp_path, embedder):
    knowledge = tmp_path / "k"
    (knowledge / "legal").mkdir(parents=True)
    (knowledge / "legal" / "good.md").write_text("# Good\n\nDeposits are protected within 30 days.")
    kb = KnowledgeBase(Settings.from_env(knowledge_dir=knowledge), {"legal": load_spec_dir()["legal"]}, embedder)
    kb.ingest("legal", progress=False)
    for i, blob in enumerate([b"\x00" * 100, b"%PDF-garbage", b"PK\x03\x04junk", b""]):
        (knowledge / "legal" / f"bad{i}{['.md', '.pdf', '.docx', '.txt'][i]}").write_bytes(blob)
    report = kb.ingest("legal", progress=False)
    assert len(report.failed) == 4 and kb.stored_files("legal").keys() == {"good.md"}
    assert kb.search("legal", "deposit protection")[0].id == "good.md#0"


def load_spec_dir():
    from assistants.domains import load_domains

    return load_domains()


@FAST
@given(doc=json_values)
def test_spec_files_fail_cleanly(tmp_path, doc):
    import yaml

    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump(doc))
    try:
        load_spec(path)
    except ConfigError as exc:
        assert str(exc).startswith("fuzz.yaml: ")
