import json
import threading
import time

import httpx
import pytest

from assistants.api import build_app
from assistants.evaluation.cluster import free_port  # noqa: F401 - other tests import it from here
from assistants.services import Services
from assistants.settings import Settings


class AppServer:
    """An ASGI app on a real loopback port, in a thread."""

    def __init__(self, app, **config):
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", **config))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)


class Server(AppServer):
    """The real app (FastAPI + mounted Gradio) on a real port, in a thread."""

    def __init__(self, services: Services):
        super().__init__(build_app(services.settings, services), proxy_headers=False)


@pytest.fixture
def server(settings, tiny_chat):
    with Server(Services.ready(settings, tiny_chat)) as s:
        yield s


@pytest.fixture
def keyed_server(tiny_chat):
    settings = Settings.from_env(api_key="sekret", max_new_tokens=8)
    tiny_chat.settings = settings
    with Server(Services.ready(settings, tiny_chat)) as s:
        yield s


def test_healthz_ok(server):
    r = httpx.get(f"{server.url}/healthz")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["domains"] == ["legal", "medical", "support"]
    assert body["adapters"]["legal"] == {"version": "v1", "loaded": True}
    assert body["adapters"]["support"]["loaded"] is False


def test_healthz_503_while_loading(settings):
    services = Services(settings=settings, status="loading model")
    with Server(services) as s:
        r = httpx.get(f"{s.url}/healthz")
        assert r.status_code == 503 and r.json()["status"] == "loading model"
        r = httpx.post(f"{s.url}/v1/chat/completions", json={"model": "legal", "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 429 and "still starting" in r.json()["error"]["message"]


def test_models_list(server):
    ids = [m["id"] for m in httpx.get(f"{server.url}/v1/models").json()["data"]]
    assert ids == ["auto", "legal", "medical", "support"]


def test_openai_client_non_stream(server):
    from openai import OpenAI

    client = OpenAI(base_url=f"{server.url}/v1", api_key="unused")
    out = client.chat.completions.create(model="legal", messages=[{"role": "user", "content": "deposit?"}], max_tokens=5)
    assert out.choices[0].message.role == "assistant" and out.model == "legal"
    assert out.usage.completion_tokens <= 5
    assert out.choices[0].finish_reason == ("length" if out.usage.completion_tokens == 5 else "stop")
    extra = out.model_extra["assistants"]
    assert extra["adapter"] == {"name": "legal", "version": "v1", "label": "legal v1"} and extra["route"]["domain"] == "legal"
    assert server_answer(server, out.id)


def server_answer(server, answer_id):
    """The answer as the feedback store keeps it (what every replica sharing the store sees)."""
    return server.server.config.app.state.services.chat.store.answer(answer_id)


def test_openai_client_stream(server):
    from openai import OpenAI

    client = OpenAI(base_url=f"{server.url}/v1", api_key="unused")
    chunks = list(client.chat.completions.create(model="medical", stream=True, max_tokens=6,
                                                 messages=[{"role": "user", "content": "fever?"}]))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    answer = server_answer(server, chunks[0].id)
    assert answer is not None and answer["answer"] == text
    assert chunks[-1].model_extra["assistants"]["domain"] == "medical"


def test_raw_sse_ends_with_done(server):
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json={
            "model": "legal", "stream": True, "max_tokens": 3, "messages": [{"role": "user", "content": "hi"}]}) as r:
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]" and all(line.startswith("data: ") for line in lines)
    json.loads(lines[0][6:])


@pytest.mark.parametrize("body,status,needle", [
    ({"model": "cooking", "messages": [{"role": "user", "content": "hi"}]}, 404, "model 'cooking' does not exist"),
    ({"model": "legal", "messages": []}, 422, "messages"),
    ({"model": "legal"}, 422, "messages"),
    ({"model": "legal", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, 422, "max_tokens"),
    ({"model": "legal", "messages": [{"role": "user", "content": "hi"}], "temperature": 9}, 422, "temperature"),
    ({"model": "legal", "messages": [{"role": "wizard", "content": "hi"}]}, 422, "role"),
    ({"model": "legal", "messages": [{"role": "user", "content": ""}]}, 400, "empty"),
    ({"model": "legal", "messages": [{"role": "user", "content": "x" * 5000}]}, 413, "limit"),
    ({"model": "legal", "messages": [{"role": "assistant", "content": "hi"}]}, 400, "last message must have role 'user'"),
    ({"model": "legal", "messages": [{"role": "user", "content": "hi"}], "region": "Narnia"}, 400, "unknown region"),
    ({"model": "legal", "messages": [{"role": "user", "content": "hi"}], "region": "x" * 40}, 422, "region"),
])
def test_bad_requests_get_openai_error_bodies(server, body, status, needle):
    r = httpx.post(f"{server.url}/v1/chat/completions", json=body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert needle in error["message"] and error["type"]


def test_not_json_is_422(server):
    r = httpx.post(f"{server.url}/v1/chat/completions", content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "error" in r.json()


def test_api_key_required_when_set(keyed_server):
    url = f"{keyed_server.url}/v1/models"
    denied = httpx.get(url)
    assert denied.status_code == 401 and "Authorization: Bearer" in denied.json()["error"]["message"]
    assert httpx.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer sekret"}).status_code == 200
    assert httpx.get(f"{keyed_server.url}/healthz").status_code == 200  # health stays open for load balancers


def test_gradio_client_chat_endpoint(server):
    from gradio_client import Client

    client = Client(server.url, verbose=False)
    messages, message_box, disclaimer = client.predict("Where is my deposit?", "legal", [], api_name="/chat")
    assert messages[0]["role"] == "user" and messages[-1]["role"] == "assistant"
    assert "Legal specialist" in str(messages[-1]["content"]) and "adapter" in str(messages[-1]["content"])
    assert "not legal advice" in disclaimer


def test_ui_page_served(server):
    r = httpx.get(server.url + "/")
    assert r.status_code == 200 and ("<gradio-app" in r.text or "gradio" in r.text.lower())


def test_feedback_endpoint(server):
    out = httpx.post(f"{server.url}/v1/chat/completions",
                     json={"model": "legal", "max_tokens": 3, "messages": [{"role": "user", "content": "deposit?"}]}).json()
    session = out["assistants"]["session_id"]  # only the conversation that saw the answer may rate it
    r = httpx.post(f"{server.url}/api/feedback", json={"answer_id": out["id"], "rating": "down", "correction": "Better.",
                                                       "session_id": session})
    assert r.status_code == 201 and r.json()["id"] >= 1
    r = httpx.post(f"{server.url}/api/feedback", json={"answer_id": "nope", "rating": "up"})
    assert r.status_code == 404 and "no answer with id" in r.json()["error"]["message"]
    for bad in ({"answer_id": out["id"], "rating": "meh"}, {"rating": "up"}, {"answer_id": out["id"], "rating": "up", "x": 1}):
        assert httpx.post(f"{server.url}/api/feedback", json=bad).status_code == 422
    # the answer and its rating, read back from the store (on several replicas: from any of them)
    got = httpx.get(f"{server.url}/api/answers/{out['id']}", params={"session_id": session})
    assert got.status_code == 200 and got.json()["answer"] == out["choices"][0]["message"]["content"]
    assert [(r["rating"], r["correction"]) for r in got.json()["ratings"]] == [("down", "Better.")]
    assert got.json()["adapter"] == {"name": "legal", "version": "v1"}
    other = httpx.get(f"{server.url}/api/answers/{out['id']}", params={"session_id": "someone-else"})
    assert other.status_code == 403 and "another conversation" in other.json()["error"]["message"]
    assert httpx.get(f"{server.url}/api/answers/nope", params={"session_id": session}).status_code == 404


def test_rate_limit_gives_429(tiny_chat):
    settings = Settings.from_env(rate_limit=2, max_new_tokens=4)
    with Server(Services.ready(settings, tiny_chat)) as s:
        codes = [httpx.get(f"{s.url}/v1/models").status_code for _ in range(4)]
    assert codes[:2] == [200, 200] and codes[2:] == [429, 429]


def test_search_endpoint(server):
    r = httpx.get(f"{server.url}/api/search", params={"domain": "legal", "q": "deposit"})
    assert r.status_code == 400 and "retrieval is not enabled" in r.json()["error"]["message"]


def test_openai_backend_against_our_own_endpoint(server, settings):
    """ASSISTANTS_BACKEND=openai: generation goes to an OpenAI-compatible server (here: this project's own)."""
    from assistants.chat import ChatRequest, ChatService
    from assistants.domains import load_domains
    from assistants.generation.remote import RemoteEngine

    engine = RemoteEngine(f"{server.url}/v1", dict.fromkeys(["legal", "medical", "support"]), base_model="auto")
    chat = ChatService(settings, load_domains(), engine, None, None)
    answer = chat.ask(ChatRequest(message="Can my landlord keep my deposit?", domain="legal", max_new_tokens=4))
    assert answer.finished and answer.adapter == {"name": "legal", "version": "remote", "label": "legal remote"}
    assert answer.usage["completion_tokens"] >= 1


def test_openai_backend_setting_needs_a_url():
    from assistants.errors import ConfigError

    with pytest.raises(ConfigError, match="ASSISTANTS_BACKEND_URL"):
        Settings.from_env(backend="openai")


def test_ui_login_when_auth_is_set(tiny_chat):
    settings = Settings.from_env(auth="alice:s3cret", max_new_tokens=4)
    with Server(Services.ready(settings, tiny_chat)) as s:
        assert httpx.get(f"{s.url}/config").status_code == 401
        assert httpx.post(f"{s.url}/login", data={"username": "alice", "password": "wrong"}).status_code >= 400
        with httpx.Client() as browser:
            assert browser.post(f"{s.url}/login", data={"username": "alice", "password": "s3cret"}).status_code == 200
            assert browser.get(f"{s.url}/config").status_code == 200
        assert httpx.get(f"{s.url}/healthz").status_code == 200  # health stays open
