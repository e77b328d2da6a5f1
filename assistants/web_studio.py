"""The Studio tab: create, train, try and delete specialists from the browser (operator only).

Shown when the server has an operator (ASSISTANTS_ADMIN, or the ASSISTANTS_AUTH login). With a
separate ASSISTANTS_ADMIN the tab first asks for the operator's sign-in; with only ASSISTANTS_AUTH the
logged-in user is the operator. Every handler checks the session's operator flag (kept server-side in
``gr.State``), so hidden controls cannot be called by a visitor either.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from .chat import ChatRequest
from .documents import SUFFIXES
from .studio import DISCLAIMER, MIN_EXAMPLES, SYSTEM_PROMPT, Upload

SIGNED_OUT = "Sign in as the operator to create and train specialists."


class StudioTab:
    """Layout (``build``), wiring and handlers of the Studio tab; ``ui`` is the ChatUI it belongs to."""

    def __init__(self, ui, render, take_upload, delete_upload):
        # the chat tab's answer renderer and upload guards, handed in (web imports this module, not the reverse)
        self.ui, self.services, self.settings = ui, ui.services, ui.settings
        self.render, self.take_upload, self.delete_upload = render, take_upload, delete_upload

    # -- layout ----------------------------------------------------------------------------------------

    def build(self) -> SimpleNamespace:
        s = SimpleNamespace()
        s.operator = gr.State(False)
        with gr.Column(visible=True, elem_id="studio-signin") as s.signin:
            gr.Markdown(SIGNED_OUT)
            with gr.Row():
                s.user = gr.Textbox(label="Operator", max_length=100, scale=2, elem_id="studio-user")
                s.password = gr.Textbox(label="Password", type="password", max_length=200, scale=2, elem_id="studio-password")
                s.signin_button = gr.Button("Sign in", scale=1, elem_id="studio-signin-button")
            s.signin_note = gr.Markdown()
        with gr.Column(visible=False, elem_id="studio-body") as s.body:
            gr.Markdown("### Specialists\nShipped specialists are read-only; the ones created here live in the data "
                        "folder and survive restarts.")
            s.table = gr.Dataframe(headers=["name", "kind", "title", "documents", "passages", "adapter", "candidate"],
                                   interactive=False, elem_id="studio-table")
            s.refresh = gr.Button("Refresh", size="sm")
            with gr.Accordion("Create a specialist", open=True, elem_id="studio-create"):
                with gr.Row():
                    s.name = gr.Textbox(label="Name (a-z, 0-9, _; the API model name)", max_length=32, elem_id="studio-name")
                    s.title = gr.Textbox(label="Title", max_length=60, elem_id="studio-title")
                    s.emoji = gr.Textbox(label="Emoji", max_length=16, elem_id="studio-emoji")
                s.description = gr.Textbox(label="Description (one line: what it covers)", max_length=300,
                                           elem_id="studio-description")
                s.prompt = gr.Textbox(label="System prompt ({title} and {description} are filled in)", lines=4,
                                      value=SYSTEM_PROMPT, max_length=4000, elem_id="studio-prompt")
                s.disclaimer = gr.Textbox(label="Disclaimer shown with every answer", value=DISCLAIMER, max_length=600,
                                          elem_id="studio-disclaimer")
                s.docs = gr.File(label="Documents", file_count="multiple", file_types=sorted(SUFFIXES), elem_id="studio-docs")
                s.examples = gr.Textbox(label=f"Example questions, one per line (at least {MIN_EXAMPLES})", lines=8,
                                        max_length=100_000, elem_id="studio-examples")
                s.create = gr.Button("Create specialist", variant="primary", elem_id="studio-create-button")
                s.create_note = gr.Markdown(elem_id="studio-create-note")
            with gr.Accordion("Train an adapter", open=False, elem_id="studio-train"):
                with gr.Row():
                    s.train_name = gr.Dropdown([], label="Specialist (created here)", elem_id="studio-train-name")
                    s.steps = gr.Number(value=30, precision=0, minimum=1, maximum=2000, label="Steps (8 examples each)")
                    s.train = gr.Button("Train adapter", variant="primary", elem_id="studio-train-button")
                    s.cancel = gr.Button("Cancel training", variant="stop", elem_id="studio-cancel")
                s.job = gr.Markdown("No training job yet.", elem_id="studio-job")
                s.log = gr.Textbox(label="Log", lines=6, interactive=False, elem_id="studio-log")
                with gr.Row():
                    s.version = gr.Textbox(label="Version", max_length=10, elem_id="studio-version")
                    s.force = gr.Checkbox(label="Promote even though the gate failed")
                    s.promote = gr.Button("Promote", elem_id="studio-promote")
                    s.discard = gr.Button("Discard", elem_id="studio-discard")
                s.version_note = gr.Markdown()
            with gr.Accordion("Prompt workbench", open=False, elem_id="studio-workbench"):
                gr.Markdown("Edit the system prompt or retrieval settings and ask the same questions with the saved and "
                            "the edited spec side by side. Saving keeps the old spec, so it can be restored.")
                with gr.Row():
                    s.bench_name = gr.Dropdown([], label="Specialist", elem_id="studio-bench-name")
                    s.bench_k = gr.Number(value=3, precision=0, minimum=1, maximum=8, label="Passages (k)")
                    s.bench_evidence = gr.Number(value=3, precision=0, minimum=0, maximum=10,
                                                 label="Evidence sentences per passage (0 = whole passages)")
                s.bench_prompt = gr.Textbox(label="System prompt (edited)", lines=4, max_length=4000, elem_id="studio-bench-prompt")
                s.bench_questions = gr.Textbox(label="Questions, one per line (up to 5)", lines=3, max_length=4000,
                                               elem_id="studio-bench-questions")
                s.bench_go = gr.Button("Ask both", variant="primary", elem_id="studio-bench-go")
                with gr.Row():
                    s.bench_saved = gr.Markdown(elem_id="studio-bench-saved")
                    s.bench_edited = gr.Markdown(elem_id="studio-bench-edited")
                with gr.Row():
                    s.bench_save = gr.Button("Save the edit as the spec", elem_id="studio-bench-save")
                    s.bench_history = gr.Dropdown([], label="Earlier specs", elem_id="studio-bench-history")
                    s.bench_restore = gr.Button("Restore", elem_id="studio-bench-restore")
                s.bench_note = gr.Markdown()
            with gr.Accordion("Delete a specialist", open=False):
                with gr.Row():
                    s.delete_name = gr.Dropdown([], label="Specialist (created here)", elem_id="studio-delete-name")
                    s.delete_sure = gr.Checkbox(label="Yes, delete its documents, passages and adapters")
                    s.delete = gr.Button("Delete", variant="stop", elem_id="studio-delete")
                s.delete_note = gr.Markdown()
            s.timer = gr.Timer(2.0, active=False)
        return s

    def wire(self, s: SimpleNamespace, demo: gr.Blocks) -> None:
        lists = [s.table, s.train_name, s.bench_name, s.delete_name]
        opts = dict(api_name=False, concurrency_limit=1, concurrency_id="studio")
        demo.load(self.on_load, None, [s.operator, s.signin, s.body, s.timer, *lists], api_name=False)
        s.signin_button.click(self.sign_in, [s.user, s.password], [s.operator, s.signin, s.body, s.timer, s.signin_note, *lists],
                              api_name=False)
        s.refresh.click(self.lists, [s.operator], lists, api_name=False)
        s.create.click(self.create, [s.operator, s.name, s.title, s.emoji, s.description, s.prompt, s.disclaimer, s.docs,
                                     s.examples], [s.create_note, s.docs, *lists], **opts)
        s.train.click(self.train, [s.operator, s.train_name, s.steps], [s.job, s.log, s.version], api_name=False)
        s.cancel.click(self.cancel, [s.operator], [s.job, s.log, s.version], api_name=False)
        s.timer.tick(self.job_view, [s.operator], [s.job, s.log, s.version], api_name=False, show_progress="hidden")
        s.promote.click(self.promote, [s.operator, s.train_name, s.version, s.force], [s.version_note, *lists], **opts)
        s.discard.click(self.discard, [s.operator, s.train_name, s.version], [s.version_note, *lists], **opts)
        s.bench_name.change(self.bench_load, [s.operator, s.bench_name],
                            [s.bench_prompt, s.bench_k, s.bench_evidence, s.bench_questions, s.bench_history], api_name=False)
        s.bench_go.click(self.bench_ask, [s.operator, s.bench_name, s.bench_prompt, s.bench_k, s.bench_evidence,
                                          s.bench_questions], [s.bench_saved, s.bench_edited], api_name=False,
                         concurrency_limit=self.settings.max_batch)
        s.bench_save.click(self.bench_save, [s.operator, s.bench_name, s.bench_prompt, s.bench_k, s.bench_evidence],
                           [s.bench_note, s.bench_history], **opts)
        s.bench_restore.click(self.bench_restore, [s.operator, s.bench_name, s.bench_history],
                              [s.bench_note, s.bench_prompt, s.bench_k, s.bench_evidence, s.bench_history], **opts)
        s.delete.click(self.delete, [s.operator, s.delete_name, s.delete_sure], [s.delete_note, s.delete_sure, *lists], **opts)

    # -- who may use it --------------------------------------------------------------------------------

    def _is_login_operator(self, request: gr.Request | None) -> bool:
        """Logged in through the page's login (ASSISTANTS_AUTH, or ASSISTANTS_ADMIN accepted there) as the operator."""
        operator = self.settings.operator
        user = getattr(request, "username", None) if request else None
        return bool(operator and user and secrets.compare_digest(str(user).encode(), operator[0].encode()))

    def _check(self, operator: bool) -> None:
        if not operator:
            raise gr.Error(SIGNED_OUT, print_exception=False)

    def on_load(self, request: gr.Request):
        if self._is_login_operator(request):
            return True, gr.update(visible=False), gr.update(visible=True), gr.Timer(active=True), *self.lists(True)
        return False, gr.update(visible=True), gr.update(visible=False), gr.Timer(active=False), *([gr.update()] * 4)

    def sign_in(self, user: str, password: str, request: gr.Request = None):
        self.ui._limit(request)  # guessing passwords costs the rate limit
        operator = self.settings.operator
        given = f"{user or ''}:{password or ''}".encode()
        if operator is None or not secrets.compare_digest(given, ":".join(operator).encode()):
            time.sleep(0.5)
            return False, gr.update(), gr.update(), gr.Timer(active=False), "Wrong operator name or password.", \
                *([gr.update()] * 4)
        return True, gr.update(visible=False), gr.update(visible=True), gr.Timer(active=True), "", *self.lists(True)

    # -- handlers --------------------------------------------------------------------------------------

    def lists(self, operator: bool):
        self._check(operator)
        rows = self.services.studio().listing()
        table = [[r["name"], "created" if r["created"] else "shipped", f"{r['emoji']} {r['title']}".strip(), r["documents"],
                  r["passages"], r["adapter"] or "base model", r["candidate"] or ""] for r in rows]
        created = [r["name"] for r in rows if r["created"]]
        every = [r["name"] for r in rows]
        first = created[0] if created else None
        return (table, gr.update(choices=created, value=first), gr.update(choices=every),
                gr.update(choices=created, value=first))

    def create(self, operator, name, title, emoji, description, prompt, disclaimer, files, examples,
               progress=gr.Progress()):
        self._check(operator)
        paths = [Path(f if isinstance(f, str) else getattr(f, "path", None) or f.name) for f in files or []]
        try:
            docs = [Upload(p.name, self.take_upload(self.ui.demo, p).read_bytes()) for p in paths]
            prompt = (prompt or "").replace("{title}", (title or "").strip()).replace("{description}", (description or "").strip())
            result = self.services.studio().create(name, title, description, docs, examples or "", emoji=emoji,
                                                   system_prompt=prompt, disclaimer=disclaimer,
                                                   progress=lambda fraction, text: progress(fraction, desc=text))
        finally:
            for p in paths:
                self.delete_upload(self.ui.demo, p)
        skipped = "".join(f"\n- skipped {n}: {why}" for n, why in result["failed"].items())
        note = (f"✓ **{result['name']}** is live: {result['passages']} passages, answering with the base model (no adapter). "
                f"Ask it in the Chat tab (Auto routes to it), or train its adapter below.{skipped}")
        return note, None, *self.lists(True)

    def job_view(self, operator: bool):
        if not operator:
            return gr.update(), gr.update(), gr.update()
        return job_markdown(self.services.studio().jobs.current())

    def train(self, operator, name, steps, request: gr.Request = None):
        self._check(operator)
        self.ui._limit(request)
        if not name:
            raise gr.Error("Pick a specialist created here to train.", print_exception=False)
        self.services.studio().train(name, int(steps or 30))
        return self.job_view(True)

    def cancel(self, operator):
        self._check(operator)
        self.services.studio().jobs.cancel()
        return self.job_view(True)

    def promote(self, operator, name, version, force):
        self._check(operator)
        return f"✓ {self.services.studio().promote(name, (version or '').strip(), bool(force))}", *self.lists(True)

    def discard(self, operator, name, version):
        self._check(operator)
        return f"✓ {self.services.studio().discard(name, (version or '').strip())}", *self.lists(True)

    def bench_load(self, operator, name):
        self._check(operator)
        if not name:
            return "", 3, 3, "", gr.update(choices=[])
        studio = self.services.studio()
        spec = studio.spec(name)
        return (spec.system_prompt, spec.retrieval.k, spec.retrieval.evidence_first, "\n".join(spec.examples[:2]),
                gr.update(choices=studio.history(name), value=None))

    def bench_ask(self, operator, name, prompt, k, evidence, questions, request: gr.Request = None):
        self._check(operator)
        client = self.ui._limit(request)
        studio = self.services.studio()
        edited = studio.edited(name, {"system_prompt": prompt, "k": k, "evidence_first": evidence})
        asked = [q.strip() for q in (questions or "").splitlines() if q.strip()][:5]
        if not asked:
            raise gr.Error("Write at least one question.", print_exception=False)
        chat = studio.chat
        sides = {"saved": [], "edited": []}
        for question in asked:
            for side, spec in (("saved", None), ("edited", edited)):
                answer = None
                for answer in chat.stream(ChatRequest(message=question, domain=name, spec=spec, client=client)):
                    pass
                sides[side].append(f"**{question}**\n\n{self.render(answer, chat.domains)}")
        return ("### Saved spec\n\n" + "\n\n".join(sides["saved"]), "### Edited spec\n\n" + "\n\n".join(sides["edited"]))

    def bench_save(self, operator, name, prompt, k, evidence):
        self._check(operator)
        studio = self.services.studio()
        message = studio.save(name, {"system_prompt": prompt, "k": k, "evidence_first": evidence})
        return f"✓ {message}", gr.update(choices=studio.history(name))

    def bench_restore(self, operator, name, version):
        self._check(operator)
        studio = self.services.studio()
        if not version:
            raise gr.Error("Pick an earlier spec to restore.", print_exception=False)
        message = studio.restore(name, version)
        spec = studio.spec(name)
        return (f"✓ {message}", spec.system_prompt, spec.retrieval.k, spec.retrieval.evidence_first,
                gr.update(choices=studio.history(name), value=None))

    def delete(self, operator, name, sure):
        self._check(operator)
        if not name:
            raise gr.Error("Pick a specialist created here to delete.", print_exception=False)
        if not sure:
            raise gr.Error("Tick the box to confirm the deletion.", print_exception=False)
        return f"✓ {self.services.studio().delete(name)}", False, *self.lists(True)


def job_markdown(job: dict | None):
    """(status markdown, log text, version) of the studio's training job, for the tab and its timer."""
    if not job:
        return "No training job yet.", "", gr.update()
    total, step = job.get("total") or 0, job.get("step") or 0
    bar = "▓" * round(20 * step / total) + "░" * (20 - round(20 * step / total)) if total else ""
    eta = f", about {_duration(job['eta_s'])} left" if job.get("eta_s") and job.get("running") else ""
    loss = f", loss {job['loss']:.3f}" if isinstance(job.get("loss"), (int, float)) else ""
    lines = [f"**{job['name']}**: {job['status']}", f"`{bar}` step {step} of {total}{loss}{eta}"]
    if job.get("eval_total"):
        lines.append(f"evaluation: {job.get('eval_done', 0)} of {job['eval_total']} held-out questions")
    result = job.get("result") or {}
    version = result.get("version")
    if result.get("gate"):
        lines.append(gate_table(result["gate"], version))
    return "\n\n".join(lines), "\n".join(job.get("log", [])), (version or gr.update())


def gate_table(gate: dict, version: str) -> str:
    base, new = gate["metrics"]["base"], gate["metrics"]["adapter"]
    rows = [("key-fact recall", "key_fact_recall"), ("cites a given passage", "citation_rate"),
            ("cites the right passage", "right_passage")]
    table = [f"| held-out questions ({gate['questions']}) | base model | {version} |", "|---|---|---|"]
    table += [f"| {label} | {base[key]:.0%} | {new[key]:.0%} |" for label, key in rows]
    verdict = "✓ gate passed" if gate["passed"] else "✗ gate failed: " + "; ".join(gate["failures"])
    return "\n".join(table) + f"\n\n{verdict}. Promote or discard {version}."


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"
