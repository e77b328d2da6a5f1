"""End to end in a real browser: Debian's headless Chromium, driven by selenium, opens the sample
store page, which embeds the app in an iframe; types a question; waits for the streamed answer;
clicks thumbs-up; saves a screenshot."""

import functools
import http.server
import shutil
import threading
from pathlib import Path

import pytest

from assistants.services import Services
from assistants.settings import REPO_ROOT
from tests.conftest import ScriptedEngine
from tests.test_api import Server, free_port
from tests.test_studio import studio_settings, tiny_base  # noqa: F401 (fixtures)

pytestmark = pytest.mark.browser
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic", "--window-size=1000,900"]


@pytest.fixture
def browser(tmp_path):
    if not (CHROMIUM and DRIVER):
        pytest.skip("Chromium/chromedriver not installed (Debian packages chromium chromium-driver; .ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS + [f"--user-data-dir={tmp_path / 'profile'}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture
def static_site():
    """examples/ served on its own port, as another site would serve its page."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(REPO_ROOT / "examples"))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()


def test_embedded_support_chat(browser, static_site, settings, tiny_chat, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    with Server(Services.ready(settings, tiny_chat)) as app:
        browser.get(f"{static_site}/embed.html?app={app.url}")
        wait = WebDriverWait(browser, 120)
        wait.until(EC.frame_to_be_available_and_switch_to_it((By.ID, "assistant")))
        box = wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, "#message textarea")))
        wait.until(lambda d: "Sample store help center" in d.find_element(By.ID, "disclaimer").text)
        assert not any(e.is_displayed() for e in browser.find_elements(By.ID, "domain"))  # ?domain=support hides the selector
        box.send_keys("How do I return an item?")
        box.send_keys(Keys.ENTER)
        wait.until(lambda d: "Support specialist" in d.find_element(By.ID, "chat").text)
        wait.until(lambda d: "Sample store help center" in d.find_element(By.ID, "chat").text)  # finished: disclaimer shown
        assert "How do I return an item?" in browser.find_element(By.ID, "chat").text
        like = wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, "#chat button[aria-label='Like']")))
        like.click()
        wait.until(lambda d: "Rating saved" in d.find_element(By.ID, "feedback-note").text)
        assert [r["rating"] for r in tiny_chat.store.rated("support")] == ["up"]
        shot = tmp_path / "embedded-chat.png"
        browser.switch_to.default_content()
        browser.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        out = Path(settings.home) / "screenshots"
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, out / shot.name)


# a model whose output is an XSS payload
XSS = ('Here you go <script>window.__xss=1</script> <img src=x onerror="window.__xss=2"> '
       '[click me](javascript:window.__xss=3) <a href="javascript:window.__xss=4">link</a> done')


def test_model_output_cannot_run_script_in_the_browser(browser, settings):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    from assistants.chat import ChatService
    from assistants.domains import load_domains

    chat = ChatService(settings, load_domains(), ScriptedEngine(XSS), None, None)
    with Server(Services.ready(settings, chat)) as app:
        browser.get(app.url + "/?domain=support")
        wait = WebDriverWait(browser, 120)
        box = wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, "#message textarea")))
        box.send_keys("hi")
        box.send_keys(Keys.ENTER)
        wait.until(lambda d: "done" in d.find_element(By.ID, "chat").text and "Sample store" in d.find_element(By.ID, "chat").text)
        chat_el = browser.find_element(By.ID, "chat")
        assert not chat_el.find_elements(By.TAG_NAME, "script")
        for link in chat_el.find_elements(By.TAG_NAME, "a"):
            assert not (link.get_attribute("href") or "").lower().startswith("javascript:")
            try:
                link.click()
            except Exception:
                pass
        assert browser.execute_script("return window.__xss === undefined")


def test_studio_creates_a_specialist_in_the_browser(browser, studio_settings, embedder, tmp_path):
    """The operator signs in on the Studio tab, fills the form, uploads two documents, creates the specialist;
    it is in the chat's selector at once and answers an auto-routed question. A visitor sees only the sign-in."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.test_studio import DOCS, EXAMPLES, OPERATOR, make_chat

    chat = make_chat(studio_settings, embedder)
    docs = []
    for name, data in DOCS.items():
        (tmp_path / name).write_bytes(data)
        docs.append(str(tmp_path / name))
    try:
        with Server(Services.ready(studio_settings, chat)) as app:
            browser.get(app.url)
            wait = WebDriverWait(browser, 120)
            tab = wait.until(EC.element_to_be_clickable((By.XPATH, "//button[@role='tab'][contains(., 'Studio')]")))
            tab.click()
            assert not any(e.is_displayed() for e in browser.find_elements(By.ID, "studio-create"))  # a visitor: sign-in only
            field = lambda id_: wait.until(  # noqa: E731  (a Gradio textbox is a textarea; a password box an input)
                EC.element_to_be_clickable((By.CSS_SELECTOR, f"#{id_} textarea, #{id_} input")))
            field("studio-user").send_keys("op")
            field("studio-password").send_keys("wrong")
            browser.find_element(By.ID, "studio-signin-button").click()
            wait.until(lambda d: "Wrong operator" in d.find_element(By.ID, "studio-signin").text)
            field("studio-password").clear()
            field("studio-password").send_keys(OPERATOR[1])
            browser.find_element(By.ID, "studio-signin-button").click()
            wait.until(lambda d: d.find_element(By.ID, "studio-create").is_displayed())
            field("studio-name").send_keys("tax")
            field("studio-title").send_keys("Tax")
            field("studio-description").send_keys("Personal tax: Self Assessment, penalties and VAT.")
            browser.find_element(By.CSS_SELECTOR, "#studio-docs input[type=file]").send_keys("\n".join(docs))
            wait.until(lambda d: all(Path(n).stem in d.find_element(By.ID, "studio-docs").text for n in DOCS))
            field("studio-examples").send_keys(EXAMPLES)  # a multi-line box: each newline is Enter, a new line
            browser.find_element(By.ID, "studio-create-button").click()
            wait.until(lambda d: "is live" in d.find_element(By.ID, "studio-create-note").text)
            assert "tax" in chat.domains and chat.retriever.kb.count("tax") >= 4
            assert "tax" in browser.find_element(By.ID, "studio-table").text
            browser.find_element(By.XPATH, "//button[@role='tab'][contains(., 'Chat')]").click()
            browser.refresh()  # a new page load lists the new specialist in the selector
            wait.until(lambda d: "Tax" in d.find_element(By.ID, "domain").text)
            box = wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, "#message textarea")))
            box.send_keys("When is the deadline for my online self assessment tax return?", Keys.ENTER)
            wait.until(lambda d: "Tax specialist" in d.find_element(By.ID, "chat").text)
            assert "base model (no adapter)" in browser.find_element(By.ID, "chat").text
    finally:
        chat.engine.scheduler.close()
