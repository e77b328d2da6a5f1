"""One FastAPI server: the Gradio UI at ``/``, ``/healthz``, and an OpenAI-compatible ``/v1`` API.

``python -m assistants serve``, ``make run`` and ``python app.py`` all start this app.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
import uuid
from typing import Literal

from fastapi import Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from .chat import AUTO, ChatRequest
from .errors import AssistantsError, InvalidInput, NotFound, TooLarge
from .limits import header_dict
from .provenance import check_region
from .services import Services
from .settings import Settings
from .studio import MAX_DOCS

log = logging.getLogger(__name__)


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")  # image_url and other parts are accepted and skipped

    type: str = Field(max_length=40)
    text: str | None = None


class Message(BaseModel):
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[ContentPart] | None = None


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # OpenAI clients send fields we do not use (n=1, user, ...)

    model: str = Field(max_length=64)
    messages: list[Message] = Field(min_length=1, max_length=200)
    stream: bool = False
    max_tokens: int | None = Field(default=None, ge=1, le=4096)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=4096)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    # our extension (OpenAI clients never send it): where the user is; retrieval, emergency numbers, notices
    region: str | None = Field(default=None, max_length=16)


class FeedbackBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    answer_id: str = Field(min_length=1, max_length=64)
    rating: Literal["up", "down"]
    correction: str | None = Field(default=None, max_length=8000)
    reason: str | None = Field(default=None, max_length=1000)
    session_id: str = Field(default="", max_length=64)
    rater: str = Field(default="", max_length=64, description="who rated: a name or handle (letters, digits, . _ @ + -)")


def error_body(message: str, kind: str, code: str | None = None, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _text(content: str | list[ContentPart] | None) -> str:
    if isinstance(content, list):  # OpenAI content parts: keep the text ones
        return "".join(p.text or "" for p in content if p.type == "text")
    return content or ""


def to_chat_request(body: CompletionRequest, client: str = "") -> ChatRequest:
    turns = [m for m in body.messages if m.role in ("user", "assistant")]  # client system prompts are ignored
    if not turns or turns[-1].role != "user":
        raise InvalidInput("the last message must have role 'user'")
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    if len(stop) > 4:
        raise InvalidInput("at most 4 stop sequences")
    return ChatRequest(
        message=_text(turns[-1].content), history=[{"role": m.role, "content": _text(m.content)} for m in turns[:-1]],
        domain=body.model, max_new_tokens=body.max_completion_tokens or body.max_tokens,
        temperature=body.temperature, top_p=body.top_p, stop=stop, client=client, region=check_region(body.region),
        session_id=uuid.uuid4().hex)  # returned in the trace: /api/feedback needs it to rate this answer


def trace(answer, session_id: str = "") -> dict:
    data = answer.to_json()
    return {**{k: data[k] for k in ("domain", "route", "sources", "adapter", "timings", "disclaimer", "notices")},
            "session_id": session_id}


def build_api(services: Services) -> FastAPI:
    settings = services.settings
    app = FastAPI(title="Specialist assistants", docs_url="/api/docs", openapi_url="/api/openapi.json")

    limiter = services.limiter

    def limit(request: Request) -> None:
        limiter.check(services.client(request))

    def require_key(request: Request) -> None:
        limit(request)
        if not settings.api_key:
            return
        given = request.headers.get("authorization", "")
        if not secrets.compare_digest(given.encode(), f"Bearer {settings.api_key}".encode()):
            raise AuthError()

    _add_error_handlers(app)
    _add_completions(app, services, require_key)
    _add_studio(app, services, limit)

    @app.get("/healthz")
    def healthz():
        if services.chat is None:
            return JSONResponse({"status": services.status, "reason": services.error or services.status}, status_code=503)
        chat = services.chat
        return {"status": "ok", "model": chat.engine.base_model_id, "domains": list(chat.domains),
                "adapters": {d: ({"version": a.version, "loaded": True} if a.loaded else {"loaded": False, "reason": a.reason})
                             for d, a in chat.engine.adapters.items()},
                "sentence_ranker": chat.retriever.sentences.embedder.id if chat.retriever is not None else None}

    @app.get("/v1/models", dependencies=[Depends(require_key)])
    def models():
        from .domains import load_all

        names = [AUTO, *(services.chat.domains if services.chat is not None else load_all(settings))]
        return {"object": "list", "data": [{"id": n, "object": "model", "created": 0, "owned_by": "assistants"} for n in names]}

    @app.get("/api/search", dependencies=[Depends(require_key)])
    async def search(domain: str, q: str, k: int = 4):
        chat = services.get()
        if chat.retriever is None:
            raise InvalidInput("retrieval is not enabled on this server")
        if not 1 <= len(q) <= settings.max_message_chars or not 1 <= k <= 20:
            raise InvalidInput(f"q must be 1-{settings.max_message_chars} characters and k between 1 and 20")
        passages = await run_in_threadpool(chat.retriever.search, domain, q, k)  # as the chat chooses them
        return [{"id": p.id, "title": p.title, "source": p.source, "score": p.score, "text": p.text} for p in passages]

    @app.get("/api/answers/{answer_id}", dependencies=[Depends(require_key)])
    async def answer(answer_id: str, session_id: str = ""):
        """An answer with its ratings, from the shared store: any replica answers for any other."""
        chat = services.get()
        if chat.store is None:
            raise InvalidInput("feedback is not enabled on this server")
        return await run_in_threadpool(chat.store.lookup, answer_id, session_id)

    @app.post("/api/feedback", status_code=201, dependencies=[Depends(limit)])
    async def rate(body: FeedbackBody):
        chat = services.get()
        rating_id = await run_in_threadpool(chat.rate, body.answer_id, body.rating, body.correction, body.reason, body.session_id,
                                            body.rater)
        return {"id": rating_id, "answer_id": body.answer_id, "rating": body.rating}

    return app



class OperatorBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str = Field(default="", max_length=20)
    force: bool = False
    steps: int = Field(default=30, ge=1, le=2000)


class SpecEdit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str | None = Field(default=None, max_length=60)
    emoji: str | None = Field(default=None, max_length=16)
    description: str | None = Field(default=None, max_length=300)
    system_prompt: str | None = Field(default=None, max_length=4000)
    disclaimer: str | None = Field(default=None, max_length=600)
    k: int | None = Field(default=None, ge=1, le=8)
    evidence_first: int | None = Field(default=None, ge=0, le=10)


def operator_check(settings: Settings, authorization: str) -> None:
    """The studio's door: HTTP Basic with the operator's user:password (ASSISTANTS_ADMIN, else ASSISTANTS_AUTH)."""
    import base64

    from .errors import Forbidden

    operator = settings.operator
    if operator is None:
        raise Forbidden("the studio is off on this server: its operator sets ASSISTANTS_ADMIN=user:password to turn it on")
    scheme, _, value = (authorization or "").partition(" ")
    try:
        given = base64.b64decode(value, validate=True).decode() if scheme.lower() == "basic" else ""
    except (ValueError, UnicodeDecodeError):
        given = ""
    if not secrets.compare_digest(given.encode(), ":".join(operator).encode()):
        raise OperatorAuthError()


class OperatorAuthError(AssistantsError):
    http_status = 401

    def __init__(self) -> None:
        super().__init__("the studio needs the operator's login: send HTTP Basic credentials (ASSISTANTS_ADMIN's user:password)")


def _add_studio(app: FastAPI, services: Services, limit) -> None:
    """``/api/specialists``: the studio for scripts (operator only). Multipart create, list, delete, train,
    promote, discard, edit."""
    from .studio import Upload

    settings = services.settings

    def operator(request: Request) -> None:
        limit(request)
        operator_check(settings, request.headers.get("authorization", ""))

    guard = [Depends(operator)]

    @app.get("/api/specialists", dependencies=guard)
    async def list_specialists():
        return await run_in_threadpool(services.studio().listing)

    @app.post("/api/specialists", status_code=201, dependencies=guard)
    async def create_specialist(name: str = Form(default="", max_length=64), title: str = Form(default="", max_length=200),
                                description: str = Form(default="", max_length=1000),
                                examples: str = Form(default="", max_length=200_000),
                                emoji: str = Form(default="", max_length=32), system_prompt: str = Form(default="", max_length=8000),
                                disclaimer: str = Form(default="", max_length=2000),
                                documents: list[UploadFile] = File(default=[])):
        studio = services.studio()
        cap = settings.max_upload_mb * 1024 * 1024
        docs = []
        for f in documents:
            data = await f.read(cap + 1)  # one byte over the limit is enough to refuse it
            docs.append(Upload(f.filename or "", data))
        return await run_in_threadpool(studio.create, name, title, description, docs, examples, emoji, system_prompt, disclaimer)

    @app.delete("/api/specialists/{name}", dependencies=guard)
    async def delete_specialist(name: str):
        return {"message": await run_in_threadpool(services.studio().delete, name)}

    @app.post("/api/specialists/{name}/train", status_code=202, dependencies=guard)
    async def train_specialist(name: str, body: OperatorBody):
        return await run_in_threadpool(services.studio().train, name, body.steps)

    @app.get("/api/studio/job", dependencies=guard)
    async def job():
        return services.studio().jobs.current() or {"status": "none"}

    @app.post("/api/studio/job/cancel", dependencies=guard)
    async def cancel_job():
        return await run_in_threadpool(services.studio().jobs.cancel)

    @app.post("/api/specialists/{name}/promote", dependencies=guard)
    async def promote(name: str, body: OperatorBody):
        return {"message": await run_in_threadpool(services.studio().promote, name, body.version, body.force)}

    @app.post("/api/specialists/{name}/discard", dependencies=guard)
    async def discard(name: str, body: OperatorBody):
        return {"message": await run_in_threadpool(services.studio().discard, name, body.version)}

    @app.put("/api/specialists/{name}/spec", dependencies=guard)
    async def save_spec(name: str, body: SpecEdit):
        changes = body.model_dump(exclude_none=True)
        return {"message": await run_in_threadpool(services.studio().save, name, changes)}

    @app.post("/api/specialists/{name}/restore", dependencies=guard)
    async def restore_spec(name: str, body: OperatorBody):
        return {"message": await run_in_threadpool(services.studio().restore, name, body.version)}


def _add_error_handlers(app: FastAPI) -> None:
    """Our errors and request validation as OpenAI-style JSON bodies with the right status."""

    @app.exception_handler(AssistantsError)
    async def assistants_error(request: Request, exc: AssistantsError):
        kind = {404: "not_found_error", 429: "rate_limit_error", 413: "invalid_request_error"}.get(exc.http_status, "invalid_request_error")
        if exc.http_status >= 500:
            kind = "server_error"
        return JSONResponse(error_body(str(exc), kind), status_code=exc.http_status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", []) if x != "body")
        return JSONResponse(error_body(f"invalid request: {where or 'body'}: {first.get('msg', 'bad value')}",
                                       "invalid_request_error", param=where or None), status_code=422)


def _add_completions(app: FastAPI, services: Services, require_key) -> None:
    """``POST /v1/chat/completions``: whole or streamed (server-sent events), one of the client's slots held
    until the answer is complete or abandoned."""
    slots = services.slots

    @app.post("/v1/chat/completions", dependencies=[Depends(require_key)])
    async def completions(body: CompletionRequest, http: Request):
        chat = services.get()
        if body.model != AUTO and body.model not in chat.domains:
            raise NotFound(f"model {body.model[:40]!r} does not exist; use one of: {', '.join([AUTO, *chat.domains])}")
        client = services.client(http)
        request = to_chat_request(body, client)
        created = int(time.time())
        slot = slots.hold(client, extra=services.queued_events(client))
        slot.__enter__()  # one of this client's slots, until the answer is complete or abandoned
        handed_over = False  # a stream releases the slot itself when it ends
        try:
            stream = chat.stream(request)
            if not body.stream:
                answer = await _run_unless_gone(stream, http, request)
                if answer is None:  # the client left: generation was cancelled
                    return JSONResponse(error_body("client disconnected", "invalid_request_error"), status_code=499)
                return {"id": answer.id, "object": "chat.completion", "created": created, "model": answer.domain,
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text},
                                     "finish_reason": answer.finish_reason}],
                        "usage": {**answer.usage, "total_tokens": sum(answer.usage.values())},
                        "assistants": trace(answer, request.session_id)}
            first = await run_in_threadpool(next, stream)  # errors in validation/routing become HTTP errors, not a broken stream
            # cancel the engine request first (any thread may), then close the turn, then free the slot
            done = _once(lambda: (_abort(request), _close(stream), slot.__exit__(None, None, None)))
            handed_over = True
            return ClosingStream(sse(first, stream, created, request.session_id, done), done, media_type="text/event-stream")
        finally:
            if not handed_over:
                slot.__exit__(None, None, None)


async def sse(first, stream, created, session_id, done):
    try:
        async for event in _events(first, stream, created, session_id):
            yield event
    finally:  # finished: stop generating and give the client's slot back
        done()

async def _events(first, stream, created, session_id):
    sent = 0

    def chunk(answer, delta: dict, finish: str | None = None, extra: bool = False) -> str:
        data = {"id": answer.id, "object": "chat.completion.chunk", "created": created, "model": answer.domain,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        if extra:
            data["assistants"] = trace(answer, session_id)
        return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

    yield chunk(first, {"role": "assistant", "content": ""})
    answer = first
    try:
        async for answer in iterate_in_threadpool(_chain(first, stream)):
            if answer.finished:
                break
            if len(answer.text) > sent:
                yield chunk(answer, {"content": answer.text[sent:]})
                sent = len(answer.text)
    except AssistantsError as exc:
        yield f"data: {json.dumps(error_body(str(exc), 'server_error'))}\n\n"
        return
    if len(answer.text) > sent:  # the final text may differ (stop strings trimmed): send what is new
        yield chunk(answer, {"content": answer.text[sent:]})
    yield chunk(answer, {}, answer.finish_reason, extra=True)
    yield "data: [DONE]\n\n"


async def _run_unless_gone(stream, http: Request, request: ChatRequest):
    """Run a turn to the end, or stop generating as soon as the client disconnects (returns None then)."""
    answer = None
    async for answer in iterate_in_threadpool(stream):
        if await http.is_disconnected():
            _abort(request)
            stream.close()  # between items the generator is idle: closing it ends the turn
            return None
    return answer


def _abort(request: ChatRequest) -> None:
    """Cancel the turn's engine request from any thread (a worker may be waiting for its next piece)."""
    if request.abort is not None:
        try:
            request.abort()
        except ValueError:  # a plain generator running in another thread: _close finishes the job
            pass


class ClosingStream(StreamingResponse):
    """A streaming response that runs ``on_close`` however it ends.

    When the client leaves, the server notices on the next send and raises out of the response;
    the body generator is then never resumed, so its own ``finally`` would wait for the garbage
    collector while the engine kept generating for nobody.
    """

    def __init__(self, content, on_close, **kwargs):
        super().__init__(content, **kwargs)
        self.on_close = on_close

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.on_close()


def _once(fn):
    """``fn`` made idempotent: the first call runs it, later ones do nothing."""
    lock, ran = threading.Lock(), []

    def call() -> None:
        with lock:
            if ran:
                return
            ran.append(True)
        fn()
    return call


def _close(stream) -> None:
    """Close a chat stream (cancelling its engine request), also while a worker thread is inside ``next``."""
    def close() -> None:
        for _ in range(400):  # a step of the batch is well under a second; give up after 20 s
            try:
                stream.close()
                return
            except ValueError:  # "generator already executing": the thread's next() is still running
                time.sleep(0.05)

    try:
        stream.close()
    except ValueError:
        threading.Thread(target=close, name="close-stream", daemon=True).start()


def _chain(first, rest):
    yield first
    yield from rest


class AuthError(AssistantsError):
    http_status = 401

    def __init__(self) -> None:
        super().__init__("missing or wrong API key: send the header `Authorization: Bearer <ASSISTANTS_API_KEY>`")


def build_app(settings: Settings, services: Services | None = None) -> FastAPI:
    """The whole server: API routes plus the Gradio UI mounted at ``/``. Loads the model in the background."""
    import gradio as gr

    from .web import CSS, build_ui

    services = services or Services(settings=settings).load_in_background()
    app = build_api(services)
    auth = _ui_login(settings)
    # Gradio runs up to max_batch chat events at once: they all feed the one decoding batch.
    demo = build_ui(services).queue(default_concurrency_limit=settings.max_batch, max_size=settings.max_queue + settings.max_batch)
    # show_error=False: an unexpected exception shows a generic message (details in the log); our gr.Error
    # messages are written for users and still show. max_file_size: Gradio refuses bigger uploads itself.
    app = gr.mount_gradio_app(app, demo, path="/", auth=auth, css=CSS, allowed_paths=[], show_error=False,
                              footer_links=["api"], max_file_size=f"{settings.max_upload_mb}mb")
    # Mounting never sets has_launched, and Gradio skips its own check that event files were uploaded
    # through its upload route while it is False: with it, a FileData naming /etc/passwd is refused.
    demo.has_launched = True
    services.demo = demo
    app.state.services = services
    return RequestGuard(app, services)


def _ui_login(settings: Settings):
    """The page's login: none without ASSISTANTS_AUTH; with it, its user, and the operator (ASSISTANTS_ADMIN) too."""
    if not settings.auth:
        return None
    allowed = [settings.auth] + ([settings.admin] if settings.admin else [])

    def check(user: str, password: str) -> bool:
        given = f"{user}:{password}".encode()
        return any(secrets.compare_digest(given, a.encode()) for a in allowed)
    return check


class RequestGuard:
    """ASGI middleware in front of the whole server (API and UI).

    - resolves the client address once (trusted proxies) and stores it in ``scope["state"]["client"]``;
    - refuses bodies over ``ASSISTANTS_MAX_BODY_MB`` with 413 before reading them (uploads: Gradio's
      ``max_file_size``) and rate-limits uploads;
    - for Gradio queue joins: refuses an unknown ``fn_index`` with 400 (Gradio answers 500) and a
      client already holding its share of the queue with 429.
    """

    UPLOAD, JOIN, CALL = "/gradio_api/upload", "/gradio_api/queue/join", "/gradio_api/call/"
    STUDIO = "/api/specialists"

    def __init__(self, app, services: Services):
        self.app, self.services = app, services
        settings = services.settings
        self.max_body = settings.max_body_mb * 1024 * 1024
        # Gradio caps each uploaded file, not the request (up to 1000 files): cap the whole upload too
        self.max_upload = (settings.max_uploads * settings.max_upload_mb + 1) * 1024 * 1024
        self.max_studio = (MAX_DOCS * settings.max_upload_mb + 1) * 1024 * 1024

    def __getattr__(self, name):  # the FastAPI app's attributes (state, routes...) stay reachable
        return getattr(self.app, name)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = header_dict(scope.get("headers", []))
        peer = scope["client"][0] if scope.get("client") else None
        client = self.services.proxies.client(peer, headers)
        scope.setdefault("state", {})["client"] = client
        path = scope.get("path", "")
        length = headers.get("content-length", "")
        try:
            if path.endswith(self.UPLOAD):
                self.services.limiter.check(client)
                if length.isdigit() and int(length) > self.max_upload:
                    raise TooLarge(f"the upload is over {self.max_upload // 2**20} MB in all: attach at most "
                                   f"{self.services.settings.max_uploads} files of {self.services.settings.max_upload_mb} MB")
                return await self.app(scope, _capped(receive, self.max_upload), send)
            if path == self.STUDIO and scope["method"] == "POST":  # a new specialist's documents: streamed, capped
                self.services.limiter.check(client)
                operator_check(self.services.settings, headers.get("authorization", ""))  # before reading the body
                if length.isdigit() and int(length) > self.max_studio:
                    raise TooLarge(f"the request is over {self.max_studio // 2**20} MB: send at most {MAX_DOCS} documents of "
                                   f"{self.services.settings.max_upload_mb} MB")
                return await self.app(scope, _capped(receive, self.max_studio), send)
            if length.isdigit() and int(length) > self.max_body:
                raise TooLarge(self._too_large())
            body = await self._read(receive)
            queues = scope["method"] == "POST" and (path.endswith(self.JOIN) or self.CALL in path)
            if queues:
                self._check_join(body, client, check_fn=path.endswith(self.JOIN))
        except AssistantsError as exc:
            return await _send_json(send, exc.http_status, error_body(str(exc), "invalid_request_error"))
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: disconnect notices

        if not queues:
            return await self.app(scope, replay, send)
        # the event joins the queue during this request and is counted there from then on: until then it
        # holds one of the client's slots, so simultaneous joins cannot all pass the check above
        with self.services.slots.hold(client, extra=self.services.queued_events(client)):
            return await self.app(scope, replay, send)

    def _too_large(self) -> str:
        return (f"the request body is over {self.services.settings.max_body_mb} MB (ASSISTANTS_MAX_BODY_MB): "
                "send a shorter conversation")

    async def _read(self, receive) -> bytes:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise TooLarge(self._too_large())
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        return b"".join(chunks)

    def _check_join(self, body: bytes, client: str, check_fn: bool = True) -> None:
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            raise InvalidInput("the queue join body is not JSON") from None
        fn_index = data.get("fn_index") if isinstance(data, dict) else None
        demo = self.services.demo
        if check_fn and demo is not None and (not isinstance(fn_index, int) or fn_index not in demo.fns):
            raise InvalidInput(f"unknown fn_index {str(fn_index)[:20]!r}: reload the page")
        busy = self.services.slots.full(client, extra=self.services.queued_events(client))
        if busy is not None:
            raise busy


def _capped(receive, limit: int):
    """``receive`` that reports a disconnect once more than ``limit`` bytes arrived (a chunked upload)."""
    seen = 0

    async def wrapped():
        nonlocal seen
        message = await receive()
        seen += len(message.get("body", b""))
        return {"type": "http.disconnect"} if seen > limit else message
    return wrapped


async def _send_json(send, status: int, body: dict) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


def serve(settings: Settings) -> None:
    import uvicorn

    print(f"Specialist assistants: http://{settings.host}:{settings.port}  (loading the model in the background)")
    # proxy_headers=False: uvicorn would believe X-Forwarded-For from 127.0.0.1; the app decides whom to
    # believe itself (ASSISTANTS_TRUSTED_PROXIES)
    uvicorn.run(build_app(settings), host=settings.host, port=settings.port, log_level="warning", proxy_headers=False)
