import re, pytest
import test_security as T
from test_security import *  # noqa fixtures
from assistants import web, safety, chat as chatmod, limits, api

def test_m1(chat, tmp_path, upload_dir, monkeypatch):
    monkeypatch.setattr(web, "_take_upload", lambda demo, path: path)
    T.test_attach_refuses_server_files_and_uses_an_upload_once(chat, tmp_path, upload_dir)

def test_m2(chat, monkeypatch):
    monkeypatch.setattr(chatmod.ChatService, "_check_tokens", lambda *a: None)
    T.test_messages_over_the_token_limit_get_413_fast(chat, "漢" * 4000)

def test_m6(chat, monkeypatch):
    monkeypatch.setattr(limits.TrustedProxies, "trusts", lambda self, peer: True)
    T.test_forwarded_for_from_an_untrusted_peer_is_ignored(chat)

def test_m9(settings, tiny_chat, monkeypatch):
    monkeypatch.setattr(web, "shown_prompt", lambda a: a.prompt)
    T.test_inspect_panel_hides_the_system_prompt(settings, tiny_chat)

def test_m11(tiny_chat, monkeypatch):
    monkeypatch.setattr(safety, "USER_CONTROL", re.compile("(?!x)x"))
    T.test_control_tokens_in_message_and_history_are_removed(tiny_chat)

def test_m12(chat, monkeypatch):
    monkeypatch.setattr(safety, "_HOMOGLYPHS", str.maketrans({}))
    monkeypatch.setattr(safety, "normalise", lambda t: t)
    T.test_injected_upload_never_reaches_the_prompt(chat)

def test_m8(chat, monkeypatch):
    monkeypatch.setattr(api.RequestGuard, "_too_large", lambda self: (_ for _ in ()).throw(RuntimeError()))
    T.test_body_over_the_limit_is_413_and_not_echoed(chat)

def test_m10(chat, monkeypatch):
    monkeypatch.setattr(web, "_forget", lambda state: None)
    T.test_clear_and_session_end_drop_uploads(chat)

def test_m14(chat, slow, monkeypatch):
    async def run_all(stream, http):
        a = None
        for a in stream: pass
        return a
    monkeypatch.setattr(api, "_run_unless_gone", run_all)
    T.test_disconnected_client_stops_generation(chat, slow, False)

def test_m3(chat, slow, monkeypatch):
    monkeypatch.setattr(limits.ClientSlots, "full", lambda self, c, extra=0: None)
    T.test_one_client_cannot_hold_more_than_its_share(chat, slow)

def test_m5(chat, monkeypatch):
    monkeypatch.setattr(api.RequestGuard, "UPLOAD", "/nothing")
    T.test_rate_limit_covers_uploads(chat)

def test_m15(chat, monkeypatch):
    import gradio as gr
    orig = gr.mount_gradio_app
    monkeypatch.setattr(gr, "mount_gradio_app", lambda *a, **k: orig(*a, **{**k, "show_error": True}))
    T.test_unexpected_ui_errors_do_not_leak_details(chat, monkeypatch)
