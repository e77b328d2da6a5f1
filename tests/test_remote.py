"""The remote generation backend (ASSISTANTS_BACKEND=openai) against a fake vLLM server that speaks vLLM's
contract: /v1/models, streamed /v1/chat/completions by model name, and the runtime LoRA endpoints
(/v1/load_lora_adapter, /v1/unload_lora_adapter, present only with VLLM_ALLOW_RUNTIME_LORA_UPDATING)."""

import json
import shutil
import time
from pathlib import Path

import pytest

from assistants import adapters as registry
from assistants.errors import Busy, ModelError
from assistants.generation.base import GenerationRequest
from assistants.generation.remote import RemoteEngine
from tests.test_api import AppServer, free_port

ANSWER = "Deposits must be protected within 30 days [1]."


class FakeVLLM(AppServer):
    """What a vLLM server started with ``--served-model-name base --enable-lora --lora-modules legal=...`` answers."""

    def __init__(self, runtime_lora: bool = True):
        from fastapi import FastAPI, Request
        from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

        self.served = {"base": None, "legal": "startup"}
        self.fail: list[int] = []  # statuses to answer the next chat requests with, before answering normally
        self.calls: list[tuple[str, dict]] = []
        app = FastAPI()

        def error(status: int, message: str, kind: str = "BadRequestError"):
            return JSONResponse({"object": "error", "message": message, "type": kind, "param": None, "code": status},
                                status_code=status)

        @app.get("/v1/models")
        def models():
            return {"object": "list", "data": [{"id": n, "object": "model", "created": 0, "owned_by": "vllm",
                                                "root": p or n, "parent": None if p is None else "base"}
                                               for n, p in self.served.items()]}

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            body = await request.json()
            self.calls.append(("chat", body))
            if self.fail:
                status = self.fail.pop(0)
                return error(status, f"fake failure {status}", "ServiceUnavailableError")
            if body["model"] not in self.served:
                return error(404, f"The model `{body['model']}` does not exist.", "NotFoundError")
            pieces = ANSWER.split(" ")

            def events():
                for i, word in enumerate(pieces):
                    delta = {"role": "assistant", "content": word + ("" if i == len(pieces) - 1 else " ")}
                    yield "data: " + json.dumps({"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": body["model"],
                                                 "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}) + "\n\n"
                yield "data: [DONE]\n\n"
            return StreamingResponse(events(), media_type="text/event-stream")

        if runtime_lora:
            @app.post("/v1/load_lora_adapter")
            async def load(request: Request):
                body = await request.json()
                self.calls.append(("load", body))
                name, path = body.get("lora_name"), body.get("lora_path", "")
                if name in self.served:
                    return error(400, f"The lora adapter '{name}' has already been loaded.")
                if not (Path(path) / "adapter_config.json").is_file():
                    return error(404, f"No adapter found for {path}", "NotFoundError")
                self.served[name] = path
                return PlainTextResponse(f"Success: LoRA adapter '{name}' added successfully.")

            @app.post("/v1/unload_lora_adapter")
            async def unload(request: Request):
                body = await request.json()
                self.calls.append(("unload", body))
                if self.served.pop(body.get("lora_name"), "missing") == "missing":
                    return error(404, f"The lora adapter '{body.get('lora_name')}' cannot be found.", "NotFoundError")
                return PlainTextResponse(f"Success: LoRA adapter '{body['lora_name']}' removed successfully.")

        super().__init__(app)
        self.url += "/v1"

    def calls_of(self, kind: str) -> list[dict]:
        return [body for k, body in self.calls if k == kind]


@pytest.fixture
def vllm():
    with FakeVLLM() as server:
        yield server


def add_version(domain_dir: Path, name: str) -> Path:
    """A trained-looking version beside v1 with a passed gate, so promote accepts it."""
    folder = domain_dir / "versions" / name
    folder.mkdir(parents=True)
    for f in ("adapter_config.json", "adapter_model.safetensors"):
        shutil.copy(domain_dir / f, folder / f)
    (folder / "assistants.json").write_text(json.dumps({"version": name, "method": "dpo", "gate": {"passed": True}}))
    return folder


def ask(engine: RemoteEngine, domain: str = "legal") -> str:
    info = engine.adapter_for(domain)
    return engine.generate(GenerationRequest(messages=[{"role": "user", "content": "deposit?"}],
                                             adapter=info.peft_name if info else None, max_new_tokens=20))


def test_promotion_is_loaded_into_the_server_and_followed_by_every_replica(vllm, adapters_dir, monkeypatch):
    folder = adapters_dir / "legal"
    a = RemoteEngine(vllm.url, {"legal": folder}, "base", retries=0, load_lora=True)
    b = RemoteEngine(vllm.url, {"legal": folder}, "base", retries=0, load_lora=True)  # a second replica, same folder
    assert a.adapter_for("legal").peft_name == "legal" and a.adapter_for("legal").version == "v1"
    assert ask(a) == ANSWER and vllm.calls_of("chat")[-1]["model"] == "legal"
    assert vllm.calls_of("chat")[-1]["stream"] is True and vllm.calls_of("load") == []  # v1 was served from the start

    v2 = add_version(folder, "v2")
    registry.promote(folder, "v2")
    assert a.refresh(min_interval=0.0) == ["legal"]
    assert vllm.calls_of("load") == [{"lora_name": "legal@v2", "lora_path": str(v2.resolve())}]
    assert ask(a) == ANSWER and vllm.calls_of("chat")[-1]["model"] == "legal@v2"
    assert b.refresh(min_interval=0.0) == ["legal"] and len(vllm.calls_of("load")) == 1  # already served: not loaded twice
    assert ask(b) == ANSWER and vllm.calls_of("chat")[-1]["model"] == "legal@v2"
    assert a.adapter_for("legal").label == "legal v2"

    # the next promotion retires v2 on the server once other replicas have had time to move on
    monkeypatch.setattr("assistants.generation.remote.RETIRE_AFTER", 0.0)
    add_version(folder, "v3")
    registry.promote(folder, "v3")
    a.refresh(min_interval=0.0)
    a.refresh(min_interval=0.0)
    assert vllm.calls_of("unload") == [{"lora_name": "legal@v2"}] and "legal@v2" not in vllm.served
    assert "legal@v3" in vllm.served and "legal" in vllm.served  # a startup module is never unloaded

    registry.rollback(folder)  # back to v2: loaded again
    a.refresh(min_interval=0.0)
    assert a.adapter_for("legal").peft_name == "legal@v2" and "legal@v2" in vllm.served


def test_without_runtime_loading_a_promotion_the_server_lacks_is_reported(vllm, adapters_dir):
    folder = adapters_dir / "legal"
    engine = RemoteEngine(vllm.url, {"legal": folder}, "base", retries=0, load_lora=False)
    add_version(folder, "v2")
    registry.promote(folder, "v2")
    engine.refresh(min_interval=0.0)
    assert engine.adapter_for("legal") is None  # the base model answers, and says why
    reason = engine.adapters["legal"].reason
    assert "does not serve 'legal@v2'" in reason and "adapters vllm" in reason and "ASSISTANTS_BACKEND_LOAD_LORA" in reason
    assert vllm.calls_of("load") == []
    assert ask(engine) == ANSWER and vllm.calls_of("chat")[-1]["model"] == "base"


def test_an_adapter_vllm_would_refuse_is_not_sent(vllm, adapters_dir):
    folder = adapters_dir / "legal"
    v2 = add_version(folder, "v2")
    config = json.loads((v2 / "adapter_config.json").read_text())
    (v2 / "adapter_config.json").write_text(json.dumps({**config, "modules_to_save": ["lm_head"], "use_dora": True}))
    registry.promote(folder, "v2")
    engine = RemoteEngine(vllm.url, {"legal": folder}, "base", retries=0, load_lora=True)
    assert engine.adapter_for("legal") is None
    assert "modules_to_save" in engine.adapters["legal"].reason and "DoRA" in engine.adapters["legal"].reason
    assert vllm.calls_of("load") == []


def test_429_and_5xx_are_retried_with_backoff(vllm):
    engine = RemoteEngine(vllm.url, {"legal": None}, "base", retries=3)
    vllm.fail = [429, 503]
    start = time.perf_counter()
    assert ask(engine) == ANSWER
    assert len(vllm.calls_of("chat")) == 3 and time.perf_counter() - start >= 0.5  # waited between tries

    vllm.fail = [429] * 5
    quick = RemoteEngine(vllm.url, {"legal": None}, "base", retries=1)
    with pytest.raises(Busy, match="busy"):
        ask(quick)
    vllm.fail = [500] * 5
    with pytest.raises(ModelError, match="HTTP 500 after 1 retries"):
        ask(quick)


def test_a_missing_adapter_name_and_a_server_that_is_down_get_clear_errors(vllm, adapters_dir):
    engine = RemoteEngine(vllm.url, {"medical": None}, "base", retries=0)
    with pytest.raises(ModelError, match=r"does not serve the model 'medical'.*adapters vllm"):
        ask(engine, "medical")

    down = f"http://127.0.0.1:{free_port()}/v1"
    engine = RemoteEngine(down, {"legal": adapters_dir / "legal"}, "base", retries=1)  # starting before the server is fine
    assert engine.adapter_for("legal") is None and "cannot be reached" in engine.adapters["legal"].reason
    with pytest.raises(ModelError, match=r"cannot be reached \(tried 2 times\).*ASSISTANTS_BACKEND_URL"):
        ask(engine)


def test_shipped_adapters_pass_vllms_lora_rules_and_odd_ones_do_not(tmp_path):
    from assistants.settings import REPO_ROOT

    for domain in ("legal", "medical", "support"):
        for version in registry.versions(REPO_ROOT / "adapters" / domain):
            assert registry.vllm_problems(version.path) == [], (domain, version.name)
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 600, "bias": "all", "fan_in_fan_out": True,
                                                         "target_modules": ["q_proj", "lm_head", "embed_tokens"]}))
    found = " | ".join(registry.vllm_problems(odd))
    for expected in ("rank 600", "bias", "fan_in_fan_out", "lm_head", "embed_tokens", "no adapter_model.safetensors"):
        assert expected in found


def test_the_vllm_command_in_the_docs_is_the_one_the_cli_prints(capsys):
    from assistants.cli import main
    from assistants.settings import REPO_ROOT

    assert main(["adapters", "vllm", "--model", "/data/models/smollm2-135m-instruct", "--adapters-at", "/app/adapters"]) == 0
    printed = capsys.readouterr().out
    command = "\n".join(line for line in printed.splitlines() if not line.startswith("#"))
    assert "--enable-lora" in command and "--max-lora-rank 16" in command
    entries = []
    for domain in ("legal", "medical", "support"):  # each domain's live version, under the name it is served as
        live = registry.live(REPO_ROOT / "adapters" / domain)
        path = live.path.relative_to(REPO_ROOT / "adapters").as_posix()
        entries.append(f"{registry.served_name(domain, live.name)}=/app/adapters/{path}")
    assert f"--lora-modules {' '.join(entries)}" in command
    docs = (REPO_ROOT / "docs" / "deploy.md").read_text()
    assert command in docs, "docs/deploy.md shows a different vllm serve command: paste the one `adapters vllm` prints"


def test_an_opening_is_sent_as_the_assistant_turn_vllm_continues(vllm):
    """Quote-first on the remote backend: the opening streams first and goes to vLLM as the assistant's turn,
    with the parameters that make vLLM continue it rather than start a new one."""
    engine = RemoteEngine(vllm.url, {"legal": None}, "base")
    opening = "Deposits must be protected within 30 days [1]."
    pieces = list(engine.stream(GenerationRequest(messages=[{"role": "user", "content": "deposit?"}], adapter="legal",
                                                  max_new_tokens=20, opening=opening)))
    assert pieces[0] == opening
    body = vllm.calls_of("chat")[-1]
    assert body["messages"][-1] == {"role": "assistant", "content": opening}
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
