"""The Gradio chat UI. Thin: every turn goes through ``ChatService.stream``.

Per-user state (history, answers, uploads) lives in ``gr.State``; nothing per-user is global.
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from . import provenance
from .chat import AUTO, ChatRequest
from .errors import AssistantsError
from .documents import BadFile
from .retrieval import SessionDocs
from .router import OUT_OF_SCOPE
from .services import Services
from .types import Answer

log = logging.getLogger(__name__)

CSS = """
.footer-line { font-size: 0.85em; opacity: 0.85; }
@media (max-width: 640px) { .hide-small { display: none !important; } #chat { height: 60vh !important; } }
"""
UPLOAD_TYPES = [".md", ".txt", ".pdf", ".html", ".docx"]


@dataclass
class Conversation:
    """One browser session's chat: what the model saw, the answers with traces, attached documents."""

    session_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    history: list[dict] = field(default_factory=list)  # model-side messages (no footers)
    answers: list[Answer] = field(default_factory=list)
    uploads: SessionDocs = field(default_factory=SessionDocs)
    rated: tuple[str, str] | None = None  # (answer id, "up"/"down") of the last rating, for a correction
    region: str | None = None  # where the user said they are (None: auto)


def render(answer: Answer, domains: dict) -> str:
    """Markdown shown in the chat bubble: notices, answer, then who answered, sources, disclaimer."""
    parts = [f"> {n}" for n in answer.notices if not n.startswith("safety:")]
    parts.append(answer.text or "…")
    if answer.domain == OUT_OF_SCOPE:
        return "\n\n".join(parts)
    spec = domains[answer.domain]
    route = answer.route
    how = {"router": f"routed {route.confidence:.0%}", "chosen": "chosen by you", "override": "changed by you",
           "default": "default (no router)"}[route.method]
    footer = f"{spec.emoji} **{spec.title} specialist** · adapter: `{answer.adapter['label']}` · {how}"
    lines = ["---", footer]
    if answer.finished and answer.sources:
        lines.append("Sources:\n" + "\n".join(f"- {_source_line(i, p)}" for i, p in enumerate(answer.sources, 1)))
        # the sentences the answer relied on, highlighted: the reader checks the fact at a glance
        lines += [f"> [{i}] <mark>{_escape(sentence)}</mark>" for i, p in enumerate(answer.sources, 1)
                  for sentence in p.evidence]
    if answer.finished:
        lines.append(f"*{answer.disclaimer}*")
    return "\n\n".join(parts + lines)


GENERIC_ERROR = "Something went wrong. Please try again."


def user_errors(fn):
    """The one place that decides what a failed UI event shows: an AssistantsError's own message (it says
    what was wrong and what to do), anything else a generic message, with the details in the log only.
    Generator handlers stay generator functions, so Gradio still streams them."""

    def shown(exc: Exception) -> gr.Error:
        if isinstance(exc, gr.Error):
            return exc
        if isinstance(exc, AssistantsError):
            return gr.Error(str(exc), print_exception=False)
        log.exception("UI event %s failed", fn.__name__)
        return gr.Error(GENERIC_ERROR, print_exception=False)

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def streamed(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except Exception as exc:
                raise shown(exc) from None
        return streamed

    @functools.wraps(fn)
    def called(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            raise shown(exc) from None
    return called


def build_ui(services: Services) -> gr.Blocks:
    return ChatUI(services).build()


class ChatUI:
    """The Gradio app: the layout (``_chat_tab``, ``_compare_tab``), the event handlers (methods, each
    wrapped by ``user_errors``) and the wiring between them. Per-user state is the ``Conversation`` in
    ``gr.State``; this object holds only what every session shares."""

    def __init__(self, services: Services):
        from .domains import load_all

        self.services, self.settings = services, services.settings
        self._domains = load_all(self.settings)  # cheap; the UI renders before the model is loaded
        self.demo: gr.Blocks | None = None

    @property
    def domains(self) -> dict:
        """The specialists now: the loaded service's (the studio adds and removes some), else those at start."""
        chat = self.services.chat
        return chat.domains if chat is not None else self._domains

    def domain_choices(self) -> list[tuple[str, str]]:
        return [(f"{s.emoji} {s.title}".strip(), n) for n, s in self.domains.items()]

    def examples_for(self, domain: str) -> list[list[str]]:
        specs = self.domains.values() if domain == AUTO else [self.domains[domain]]
        return [[q] for s in specs for q in s.examples[: 4 if domain != AUTO else 2]]

    def disclaimer_for(self, domain: str) -> str:
        if domain == AUTO:
            return "Answers are general information from a small AI model, not legal or medical advice. " \
                   "Each answer says which specialist wrote it and shows its disclaimer."
        return self.domains[domain].disclaimer

    # -- layout -------------------------------------------------------------------------------------------

    def build(self) -> gr.Blocks:
        # delete_cache: uploads nobody attached (the attach step deletes the rest) go within the hour
        with gr.Blocks(title="Specialist assistants", fill_height=True, delete_cache=(600, 3600)) as demo:
            self.demo = demo
            conv = gr.State(None, time_to_live=6 * 3600, delete_callback=_forget)
            with gr.Row(elem_classes="hide-small"):
                gr.Markdown("## Specialist assistants\nLegal, medical and customer-support specialists sharing one small "
                            "language model: each has its own fine-tuned adapter and knowledge base.")
            if self.settings.space_without_storage:
                gr.Markdown("⚠️ **Data is not persistent on this Space**: ratings and uploads are lost when it restarts.")
            with gr.Tab("Chat", elem_id="chat-tab"):
                chat = self._chat_tab()
            with gr.Tab("Compare", elem_id="compare-tab", elem_classes="hide-small"):
                compare = self._compare_tab()
            studio = None
            if self.settings.operator is not None:  # an operator exists: the studio (signed in, or the page's login)
                from .web_studio import StudioTab

                studio = StudioTab(self, render, _take_upload, _delete_upload)
                with gr.Tab("Studio", elem_id="studio-tab", elem_classes="hide-small"):
                    studio_parts = studio.build()
            self._wire_chat(chat, conv)
            self._wire_compare(compare, conv)
            demo.load(self.from_query, None, [chat.domain, chat.examples, chat.disclaimer, compare.domain], api_name=False)
            if studio is not None:
                studio.wire(studio_parts, demo)
        return demo

    def _chat_tab(self) -> SimpleNamespace:
        settings, c = self.settings, SimpleNamespace()
        choices = [("Auto (router picks)", AUTO)] + self.domain_choices()
        with gr.Row(equal_height=True):
            c.domain = gr.Radio(choices, value=AUTO, label="Specialist", elem_id="domain", scale=4)
            c.region = gr.Dropdown([("Auto", AUTO), *((code, code) for code in provenance.REGIONS)], value=AUTO,
                                   label="Where you are", elem_id="region", scale=1, min_width=120,
                                   info="Rules and emergency numbers differ by place")
        c.chatbot = gr.Chatbot(elem_id="chat", height=520, label="Chat", buttons=["copy"],
                               placeholder="Ask a legal, health or store-support question.")
        with gr.Row():
            c.message = gr.Textbox(placeholder="Type your question and press Enter", show_label=False, scale=8,
                                   max_lines=6, elem_id="message", max_length=settings.max_message_chars)
            c.send = gr.Button("Send", variant="primary", scale=1, elem_id="send")
        c.disclaimer = gr.Markdown(self.disclaimer_for(AUTO), elem_id="disclaimer")
        with gr.Group(visible=False, elem_id="correction") as c.correction_box:
            c.correction = gr.Textbox(label="Suggest a better answer (optional)", lines=3, max_length=8000,
                                      elem_id="correction-text")
            c.reason = gr.Textbox(label="Why? (optional)", max_length=1000, elem_id="correction-reason")
            c.send_correction = gr.Button("Send suggestion", size="sm", elem_id="send-correction")
        c.feedback_note = gr.Markdown("👍/👎 ratings are stored, with e-mail addresses and phone numbers removed, "
                                      "to improve the assistants.", elem_classes="footer-line", elem_id="feedback-note")
        c.examples = gr.Dataset(components=[c.message], samples=self.examples_for(AUTO), label="Examples", elem_id="examples")
        with gr.Accordion("Attach documents to this conversation", open=False, elem_classes="hide-small"):
            gr.Markdown(f"Searched with the knowledge base for your conversation only; never shown to others; "
                        f"removed when you clear the chat or leave. Up to {settings.max_uploads} files, "
                        f"{settings.max_upload_mb} MB each ({', '.join(UPLOAD_TYPES)}).")
            c.upload = gr.File(file_count="multiple", file_types=UPLOAD_TYPES, label="Documents")
            c.upload_status = gr.Markdown()
        with gr.Accordion("Inspect the answer (route, passages, prompt, timings)", open=False, elem_id="inspect"):
            gr.Markdown("Shows the last answer; click an answer in the chat to inspect that one.", elem_classes="footer-line")
            c.inspect_md = gr.Markdown(elem_id="inspect-trace")
            c.inspect_prompt = gr.JSON(label="Exact prompt sent to the model", elem_id="inspect-prompt")
        return c

    def _compare_tab(self) -> SimpleNamespace:
        k = SimpleNamespace()
        gr.Markdown("One question, answered side by side. Say which answer is better: it is stored as a "
                    "preference pair that trains the next adapter version.")
        with gr.Row():
            k.domain = gr.Dropdown(self.domain_choices(),
                                   value=next(iter(self.domains)), label="Specialist", scale=1)
            k.mode = gr.Radio([("Base model vs specialist", "base"), ("Live vs candidate version", "candidate")],
                              value="base", label="Compare", scale=2)
            k.retrieval = gr.Checkbox(value=True, label="Use the knowledge base", scale=1)
        k.question = gr.Textbox(label="Question", max_length=self.settings.max_message_chars, elem_id="compare-question")
        k.go = gr.Button("Answer both", variant="primary")
        with gr.Row():
            k.left = gr.Markdown(elem_id="compare-left")
            k.right = gr.Markdown(elem_id="compare-right")
        with gr.Row():
            k.left_better = gr.Button("⬅ Left is better", size="sm")
            k.right_better = gr.Button("Right is better ➡", size="sm")
        k.note = gr.Markdown(elem_classes="footer-line")
        k.state = gr.State(None)
        return k

    def _wire_chat(self, c: SimpleNamespace, conv: gr.State) -> None:
        outputs, inspect_out = [c.chatbot, conv, c.message, c.disclaimer], [c.inspect_md, c.inspect_prompt]
        limit = self.settings.max_batch  # concurrent chat events; they share the engine's decoding batch
        c.message.submit(self.respond, [c.message, c.domain, c.chatbot, conv], outputs, api_name="chat",
                         concurrency_limit=limit).then(self.inspect_answer, [conv], inspect_out, api_name=False)
        c.send.click(self.respond, [c.message, c.domain, c.chatbot, conv], outputs, api_name=False,
                     concurrency_limit=limit).then(self.inspect_answer, [conv], inspect_out, api_name=False)
        c.chatbot.retry(self.retry, [c.domain, c.chatbot, conv], outputs, api_name=False,
                        concurrency_limit=limit).then(self.inspect_answer, [conv], inspect_out, api_name=False)
        c.chatbot.select(self.on_select, [conv], inspect_out, api_name=False)
        c.chatbot.undo(self.undo, [c.chatbot, conv], [c.chatbot, conv, c.message], api_name=False)
        c.chatbot.clear(self.clear, [conv], outputs, api_name=False)
        c.chatbot.like(self.on_like, [conv], [conv, c.correction_box, c.feedback_note], api_name=False)
        c.send_correction.click(self.on_correction, [c.correction, c.reason, conv],
                                [c.correction, c.reason, c.correction_box, c.feedback_note], api_name=False)
        c.domain.change(self.pick_domain, [c.domain], [c.examples, c.disclaimer], api_name=False)
        c.region.change(self.pick_region, [c.region, conv], [conv], api_name=False)
        c.examples.click(lambda sample: sample[0], [c.examples], [c.message], api_name=False)
        c.upload.upload(self.attach, [c.upload, conv, c.domain], [c.upload_status, conv, c.upload], api_name=False)

    def _wire_compare(self, k: SimpleNamespace, conv: gr.State) -> None:
        k.go.click(self.run_compare, [k.question, k.domain, k.mode, k.retrieval, conv], [k.left, k.right, k.state, k.note],
                   api_name=False, concurrency_limit=self.settings.max_batch)
        k.left_better.click(self.prefer_left, [k.state], [k.state, k.note], api_name=False)
        k.right_better.click(self.prefer_right, [k.state], [k.state, k.note], api_name=False)

    # -- chat handlers -----------------------------------------------------------------------------------

    def _limit(self, request: gr.Request | None) -> str:
        """The client's address, after taking one request from its rate-limit bucket (Busy when it is empty)."""
        client = self.services.client(request)
        self.services.limiter.check(client)
        return client

    @user_errors
    def respond(self, text: str, chosen: str, messages: list, state: Conversation | None, override: bool = False,
                request: gr.Request = None):
        state = state or Conversation()
        client = self._limit(request)
        chat = self.services.get()
        stream = chat.stream(ChatRequest(message=text, history=state.history, domain=chosen, uploads=state.uploads,
                                         session_id=state.session_id, override=override, client=client, region=state.region))
        answer = next(stream)  # validation and routing happen here, before the chat changes
        messages = [*messages, {"role": "user", "content": text}, {"role": "assistant", "content": render(answer, self.domains)}]
        yield messages, state, "", gr.update()
        for answer in stream:
            messages[-1] = {"role": "assistant", "content": render(answer, self.domains)}
            yield messages, state, "", gr.update()
        # each turn keeps its domain: a question routed elsewhere later is not sent another domain's turns
        state.history += [{"role": "user", "content": text, "domain": answer.domain},
                          {"role": "assistant", "content": answer.text, "domain": answer.domain}]
        state.answers.append(answer)
        yield messages, state, "", self.disclaimer_for(answer.domain if answer.domain in self.domains else AUTO)

    @staticmethod
    def drop_last(messages: list, state: Conversation) -> tuple[list, str]:
        """Remove the last question and its answer; returns the messages left and the question."""
        if not state.answers:
            return messages, ""
        question = state.history[-2]["content"]
        state.history, state.answers = state.history[:-2], state.answers[:-1]
        return messages[:-2], question

    @user_errors
    def retry(self, chosen: str, messages: list, state: Conversation | None, request: gr.Request = None):
        if not state or not state.answers:
            raise gr.Error("Nothing to retry yet.", print_exception=False)
        last = state.answers[-1]
        messages, question = self.drop_last(messages, state)
        override = chosen != AUTO and last.route.method == "router" and chosen != last.domain
        yield from self.respond(question, chosen, messages, state, override=override, request=request)

    @user_errors
    def undo(self, messages: list, state: Conversation | None):
        state = state or Conversation()
        messages, question = self.drop_last(messages, state)
        return messages, state, question

    @user_errors
    def clear(self, state: Conversation | None):
        _forget(state)
        return [], Conversation(), "", self.disclaimer_for(AUTO)

    @user_errors
    def pick_domain(self, chosen: str):
        return gr.update(samples=self.examples_for(chosen)), self.disclaimer_for(chosen)

    @user_errors
    def pick_region(self, chosen: str, state: Conversation | None) -> Conversation:
        state = state or Conversation()
        state.region = provenance.check_region(chosen)  # a forged value gets a clear error, not a stack trace
        return state

    @user_errors
    def attach(self, files: list | None, state: Conversation | None, chosen: str, request: gr.Request = None):
        state = state or Conversation()
        paths = [Path(f if isinstance(f, str) else getattr(f, "path", None) or f.name) for f in files or []]
        try:
            if not paths:
                return "", state, None
            self._limit(request)
            chat = self.services.get()
            spec = chat.domains[chosen] if chosen in chat.domains else next(iter(chat.domains.values()))
            embedder = chat.retriever.kb.embedder if chat.retriever else None
            lines = []
            for path in paths:
                name = path.name
                try:
                    uploaded = _take_upload(self.demo, path)  # only a file this browser uploaded, used once
                    if name in state.uploads.files:
                        continue
                    n = state.uploads.add(uploaded, spec, embedder, self.settings, name=name)
                    lines.append(f"✓ {name}: {n} passages")
                except AssistantsError as exc:
                    lines.append(f"✗ {exc}")
            return "\n\n".join(lines), state, None
        finally:  # the text is in the session's memory now; nothing uploaded stays on disk or downloadable.
            # A refused path inside the upload folder is the copy Gradio made of what the event named (the
            # app writes no other files there): it goes too. Paths outside the folder are never touched.
            for path in paths:
                _delete_upload(self.demo, path)

    @user_errors
    def on_like(self, state: Conversation | None, data: gr.LikeData, request: gr.Request = None):
        state = state or Conversation()
        self._limit(request)
        index = data.index[0] if isinstance(data.index, (list, tuple)) else data.index
        turn = index // 2
        if data.liked is None or not (0 <= turn < len(state.answers)):
            return state, gr.update(visible=False), gr.update()
        rating = "up" if data.liked else "down"
        answer = state.answers[turn]
        self.services.get().rate(answer.id, rating, session_id=state.session_id, rater=_rater(request))
        state.rated = (answer.id, rating)
        return state, gr.update(visible=True), "Thanks! Rating saved. You can also suggest a better answer below."

    @user_errors
    def on_correction(self, text: str, why: str, state: Conversation | None, request: gr.Request = None):
        self._limit(request)
        if not state or not state.rated:
            raise gr.Error("Rate an answer first (thumbs up or down).", print_exception=False)
        if not (text or "").strip() and not (why or "").strip():
            raise gr.Error("Type a suggested answer or a reason first.", print_exception=False)
        self.services.get().rate(state.rated[0], state.rated[1], text or None, why or None, state.session_id, _rater(request))
        return "", "", gr.update(visible=False), "Thanks! Your suggestion was saved."

    @user_errors
    def inspect_answer(self, state: Conversation | None, index: int | None = None):
        if not state or not state.answers:
            return "Nothing to inspect yet.", None
        answer = state.answers[-1 if index is None else min(index, len(state.answers) - 1)]
        return trace_markdown(answer, self.domains), shown_prompt(answer)

    @user_errors
    def on_select(self, state: Conversation | None, data: gr.SelectData):
        index = data.index[0] if isinstance(data.index, (list, tuple)) else data.index
        return self.inspect_answer(state, (index or 0) // 2)

    @user_errors
    def from_query(self, request: gr.Request):
        # ?domain=support opens one specialist and hides the selector (a store embedding its support bot)
        wanted = (request.query_params.get("domain") or "").lower() if request else ""
        choices = [("Auto (router picks)", AUTO), *self.domain_choices()]  # specialists created since the start too
        if wanted in self.domains:
            return (gr.update(choices=choices, value=wanted, visible=False), gr.update(samples=self.examples_for(wanted)),
                    self.disclaimer_for(wanted), gr.update(choices=self.domain_choices()))
        return gr.update(choices=choices), gr.update(), gr.update(), gr.update(choices=self.domain_choices())

    # -- compare handlers --------------------------------------------------------------------------------

    @user_errors
    def run_compare(self, question: str, chosen: str, mode: str, use_retrieval: bool, state: Conversation | None,
                    request: gr.Request = None):
        client = self._limit(request)
        chat = self.services.get()
        sides = compare_sides(chat, chosen, mode)
        answers = []
        session_id = state.session_id if state else uuid.uuid4().hex
        for label, use_adapter, adapter in sides:
            asked = ChatRequest(message=question, domain=chosen, use_retrieval=use_retrieval, use_adapter=use_adapter,
                                adapter=adapter, session_id=session_id, client=client)
            for answer in chat.stream(asked):
                shown = [f"**{lab}**\n\n{a.text}" for (lab, _, _), a in zip(sides, answers + [answer])]
                yield *(shown + ["*waiting…*"] * (2 - len(shown))), None, ""
            answers.append(answer)
        yield *(f"**{lab}**\n\n{render(a, self.domains)}" for (lab, _, _), a in zip(sides, answers)), (session_id, answers), ""

    def _prefer(self, which: int, pair: tuple | None, request: gr.Request | None):
        self._limit(request)
        if not pair:
            raise gr.Error("Answer a question first.", print_exception=False)
        session_id, answers = pair
        chosen, rejected = answers[which], answers[1 - which]
        # a preference pair: the rejected answer, corrected by the chosen one (a DPO pair on export)
        rater = _rater(request)
        self.services.get().rate(rejected.id, "down", correction=chosen.text, origin="compare", rater=rater,
                                 reason=f"compare: preferred {chosen.adapter['label']}", session_id=session_id)
        self.services.get().rate(chosen.id, "up", reason="compare: preferred", session_id=session_id, origin="compare", rater=rater)
        return None, f"Thanks! Stored: {chosen.adapter['label']} preferred over {rejected.adapter['label']}."

    @user_errors
    def prefer_left(self, pair: tuple | None, request: gr.Request = None):
        return self._prefer(0, pair, request)

    @user_errors
    def prefer_right(self, pair: tuple | None, request: gr.Request = None):
        return self._prefer(1, pair, request)


def _rater(request: gr.Request | None) -> str:
    """The logged-in user's name (``ASSISTANTS_AUTH``) as the rater; anonymous without a login."""
    name = (getattr(request, "username", None) or "") if request is not None else ""
    return re.sub(r"[^\w.@+-]", "_", name)[:64]


def trace_markdown(answer: Answer, domains: dict) -> str:
    """The trace of one answer as markdown: route, passages (cited ones marked), adapter, tokens, timings."""
    r = answer.route
    lines = [f"**Answer** `{answer.id}` · **domain** {answer.domain} · **adapter** {answer.adapter.get('label')}",
             f"**Route** ({r.method}, confidence {r.confidence:.0%}): " + ", ".join(f"{k} {v:.0%}" for k, v in r.scores.items())]
    if answer.sources:
        lines += ["", "| # | passage | score | cited |", "|---|---|---|---|"]
        lines += [f"| {i} | {p.title} (`{p.id}`) | {p.score:.3f} | {'✓' if p.cited else ''} |" for i, p in enumerate(answer.sources, 1)]
    else:
        lines.append("No passages were quoted.")
    lines += ["", "**Tokens** " + ", ".join(f"{k} {v}" for k, v in answer.usage.items()),
              "**Timings** " + ", ".join(f"{k.removesuffix('_ms')} {v:.0f} ms" for k, v in answer.timings.items())]
    if answer.notices:
        lines.append("**Notices** " + "; ".join(answer.notices))
    return "\n\n".join(lines[:2]) + "\n" + "\n".join(lines[2:])


def shown_prompt(answer: Answer) -> list[dict]:
    """The prompt for the Inspect panel, without the system message's text.

    The assistant declines to recite its instructions (a fixed answer, and a leak check on the output),
    so the panel does not show them either. They are not secret: they are in the public repo, in
    ``assistants/domains/<domain>.yaml``, and SECURITY.md says so.
    """
    return [{"role": "system", "content": f"(the {answer.domain} system prompt: see assistants/domains/{answer.domain}.yaml)"}
            if m.get("role") == "system" else m for m in answer.prompt]


def compare_sides(chat, domain: str, mode: str) -> list[tuple[str, bool, str | None]]:
    """(label, use_adapter, adapter name) for the two sides of a comparison."""
    info = chat.engine.adapter_for(domain)
    if mode == "candidate":
        candidate = chat.engine.candidate_for(domain)
        if info is None or candidate is None:
            raise AssistantsError(f"no candidate version of the {domain} adapter to compare: train one with "
                                  f"`python -m assistants train prefs --domain {domain}`")
        return [(f"Live ({info.label})", True, None), (f"Candidate ({candidate})", True, candidate)]
    if info is None:
        raise AssistantsError(f"the {domain} specialist has no adapter yet, so it would be the base model on both sides")
    return [("Base model", False, None), (f"Specialist ({info.label})", True, None)]


def _source_line(i: int, p) -> str:
    """[n] title (score) ✓ · where its rules apply · reviewed date (or due for review) · links to its sources."""
    parts = [f"[{i}] {_escape(p.title)} ({p.score:.2f}){' ✓' if p.cited else ''}"]
    if p.jurisdictions:
        parts.append(", ".join(provenance.place_name(c) for c in p.jurisdictions))
    if p.due_for_review:
        parts.append(f"⚠️ due for review (last reviewed {p.reviewed})")
    elif p.reviewed:
        parts.append(f"reviewed {p.reviewed}")
    links = [f"[{_escape(s['name'])}]({s['url']})" for s in p.sources if str(s.get("url", "")).startswith("https://")
             and not any(c in s["url"] for c in " ()<>")]
    if links:
        parts.append("sources: " + ", ".join(links[:4]))
    return " · ".join(parts)


def _escape(text: str) -> str:
    """Passage text shown inside our own markup: no tags of its own, no markdown links or emphasis."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("[", "&#91;").replace("*", "&#42;")


def _take_upload(demo: gr.Blocks, path: Path) -> Path:
    """``path`` when it is a file uploaded through Gradio's upload route and not used yet, else BadFile.

    An event's FileData can name any path (the probe attached /etc/passwd that way). Gradio's own check
    is on too (``has_launched``); this one does not depend on it: the file must sit inside Gradio's
    upload folder, with no link leading out, and be one Gradio recorded as uploaded. The upload
    folder's names carry a secret hash, and each file is deleted once attached, so a file can only
    be attached by the page that uploaded it, once.
    """
    from gradio.utils import get_upload_folder

    folder = Path(get_upload_folder()).resolve()
    real = path.resolve()
    recorded = {str(Path(p).resolve()) for p in getattr(demo, "upload_file_set", set())}
    if not real.is_relative_to(folder) or str(real) not in recorded or path.is_symlink() or not real.is_file():
        raise BadFile(f"{path.name[:80]}: not a file uploaded from this page; attach it with the upload button")
    return real


def _delete_upload(demo: gr.Blocks, path: Path) -> None:
    """Remove an uploaded file (ours only: inside Gradio's upload folder) and forget it."""
    from gradio.utils import get_upload_folder

    real = path.resolve()
    if real.is_relative_to(Path(get_upload_folder()).resolve()) and real.is_file():
        real.unlink(missing_ok=True)
    files = getattr(demo, "upload_file_set", set())
    files.discard(str(path))
    files.discard(str(real))


def _forget(state: Conversation | None) -> None:
    """Called by Gradio when a session ends: uploaded documents go with it."""
    if state is None:
        return
    state.uploads = SessionDocs()
    state.history.clear()
