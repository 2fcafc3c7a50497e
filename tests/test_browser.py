"""The page in a real headless Chromium (Debian's chromium + chromedriver, driven by selenium):
type a prompt, watch the progress, get a PNG with the right provenance, use the buttons, give a
model its inputs (an init image, a layout file), and check the layout on a phone-sized screen.
Screenshots are kept in the test's tmp folder."""

import base64
import json
import shutil
import time
from pathlib import Path

import pytest
from PIL import Image

from gambar.inputs import digest, read_input
from helpers_server import (  # noqa: F401
    BoxesPipeline,
    live_server,
    need,
    png_provenance,
    served_models,
)

need("fastapi")
webdriver = need("selenium.webdriver")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
# Headless flags that work on this kind of machine (shared/DEPENDENCIES.md); nothing that
# reaches the network.
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--window-size=1280,1000"]
PROMPT = "tiga bintang biru"
STEPS = 120  # enough steps (about a second) for the page to show the progress bar moving


def wait_for(driver, script, timeout=30.0, message="condition"):
    """Poll a JavaScript expression until it is truthy; its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(f"return {script};")
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {message}: {script}")


@pytest.fixture
def browser(tmp_path):
    from selenium.webdriver.chrome.service import Service

    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail("chromium and chromium-driver are needed (apt-get install chromium "
                    "chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'profile'}")
    options.add_experimental_option("prefs", {
        "download.default_directory": str(tmp_path / "downloads"),
        "download.prompt_for_download": False})
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def fetch_in_page(driver, url):
    """The bytes of `url` as the page's own fetch() gets them."""
    b64 = driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        fetch(arguments[0]).then(r => r.arrayBuffer()).then(buf => {
          let s = ""; for (const b of new Uint8Array(buf)) s += String.fromCharCode(b);
          done(btoa(s));
        }).catch(e => done("error: " + e));""", url)
    assert not b64.startswith("error"), b64
    return base64.b64decode(b64)


@pytest.mark.slow
def test_page_in_a_real_browser(browser, served_models, tmp_path, capsys):  # noqa: F811
    # A second model of a family with no sampler options: the form follows the chosen model.
    models = {**served_models, "boxes": BoxesPipeline()}
    with live_server(models, tmp_path / "results") as srv:
        browser.get(srv.url + "/")
        wait_for(browser, "document.querySelectorAll('#model option').length", message="models")
        assert browser.title == "gambar"

        # Type a prompt with a few options and submit it the way a person does.
        browser.find_element("id", "prompt").send_keys(PROMPT)
        for field, value in (("seed", "42"), ("steps", str(STEPS))):
            browser.find_element("id", field).clear()
            browser.find_element("id", field).send_keys(value)
        browser.find_element("id", "generate").click()

        # Live progress: the bar and "step k of K" move while the job runs.
        status = wait_for(browser, f"""(() => {{
            const s = document.querySelector('.job .job-status');
            const v = document.querySelector('.job progress');
            return s && /^step [1-9][0-9]* of {STEPS}$/.test(s.textContent) && v.value > 0
                   && s.textContent; }})()""", message="progress")
        assert status.endswith(f"of {STEPS}")
        progress = tmp_path / "page-progress.png"
        browser.save_screenshot(str(progress))

        # The image appears, decoded by the browser; its bytes are a PNG with provenance.
        wait_for(browser, "document.querySelector('.card img')?.naturalWidth > 0",
                 message="the image")
        card = browser.find_element("css selector", ".card")
        img = card.find_element("tag name", "img")
        assert browser.execute_script("return arguments[0].naturalWidth", img) == 32
        png = fetch_in_page(browser, img.get_attribute("src"))
        image, prov = png_provenance(png)
        assert image.size == (32, 32)
        assert (prov["prompt"], prov["seed"], prov["steps"], prov["model_sha256"]) == (
            PROMPT, 42, STEPS, served_models["tiny"].sha256)
        assert "seed 42" in card.find_element("css selector", ".meta").text
        desktop = tmp_path / "page-desktop.png"
        browser.save_screenshot(str(desktop))

        # Download saves the same PNG.
        card.find_element("css selector", "a.download").click()
        saved = tmp_path / "downloads" / "gambar-42.png"
        deadline = time.monotonic() + 20
        while not saved.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert saved.read_bytes() == png

        # "New seed": the same prompt again with another seed, as a new card.
        card.find_element("css selector", "button.variation").click()
        wait_for(browser, "document.querySelectorAll('.card').length === 2",
                 message="the variation")
        first = browser.find_elements("css selector", ".card")[0]
        assert first.get_attribute("data-seed") != "42"
        assert first.find_element("css selector", ".prompt").text == PROMPT

        # "Reuse settings" puts a result's settings back in the form.
        for field in ("prompt", "seed", "steps"):
            browser.find_element("id", field).clear()
        browser.find_elements("css selector", ".card")[1].find_element(
            "css selector", "button.reuse").click()
        values = {f: browser.find_element("id", f).get_attribute("value")
                  for f in ("prompt", "seed", "steps", "n", "sampler")}
        assert values == {"prompt": PROMPT, "seed": "42", "steps": str(STEPS), "n": "1",
                          "sampler": "dpmpp"}

        # A bad request shows the server's one-line reason instead of failing silently.
        browser.find_element("id", "prompt").clear()
        browser.find_element("id", "prompt").send_keys("   ")
        browser.find_element("id", "generate").click()
        error = wait_for(browser, "!document.getElementById('form-error').hidden && "
                         "document.getElementById('form-error').textContent",
                         message="the error")
        assert "prompt" in error

        # A phone: the viewport meta gives a 390 px layout with nothing wider than the screen.
        browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True})
        browser.refresh()
        wait_for(browser, "document.querySelectorAll('.card img').length === 2 && "
                 "[...document.querySelectorAll('.card img')].every(i => i.naturalWidth > 0)",
                 message="the gallery after a reload")
        assert browser.execute_script("return window.innerWidth") == 390
        assert browser.execute_script(
            "return document.documentElement.scrollWidth <= window.innerWidth")
        button = browser.execute_script(
            "return document.getElementById('generate').getBoundingClientRect().height")
        assert button >= 44  # big enough for a finger
        phone = tmp_path / "page-phone.png"
        browser.save_screenshot(str(phone))

        # Another model: its options replace the first one's (no steps, guidance or sampler).
        def controls():
            return browser.execute_script(
                "return [...document.querySelectorAll('#form .option [id]')].map(e => e.id)")

        assert controls()[:3] == ["steps", "guidance", "negative_prompt"]
        browser.execute_script("const s = document.getElementById('model'); s.value = 'boxes';"
                               "s.dispatchEvent(new Event('change'));")
        assert controls() == ["size"]
        assert browser.find_element("id", "size").get_attribute("max") == "64"
        browser.find_element("id", "prompt").clear()
        browser.find_element("id", "prompt").send_keys(PROMPT)
        browser.find_element("id", "generate").click()
        wait_for(browser, "document.querySelectorAll('.card img').length === 3 && "
                 "document.querySelector('.card img').naturalWidth === 16",
                 message="the boxes image")
        meta = browser.find_elements("css selector", ".card .meta")[0].text
        assert meta.endswith("boxes") and "steps" not in meta, meta

        # Inputs: a file picker under "More options" for each input the chosen model takes.
        def pickers():
            return browser.execute_script("return [...document.querySelectorAll("
                                          "'#input-options input[type=file]')].map(e => e.id)")

        def cards():
            return browser.find_elements("css selector", ".card")

        def newest_png(count, width):
            """The provenance (and image) of the first card once there are `count` cards."""
            wait_for(browser, f"document.querySelectorAll('.card img').length === {count} && "
                     f"document.querySelector('.card img').naturalWidth === {width}",
                     message=f"card {count}")
            src = cards()[0].find_element("tag name", "img").get_attribute("src")
            return png_provenance(fetch_in_page(browser, src))

        browser.find_element("css selector", "#more summary").click()
        assert pickers() == ["layout"]
        assert browser.execute_script(  # still nothing wider than the phone's screen
            "return document.documentElement.scrollWidth <= window.innerWidth")
        # A layout file that is not JSON: one line on the page, and Generate sends nothing.
        bad = tmp_path / "bad.json"
        bad.write_text("{not json")
        browser.find_element("id", "layout").send_keys(str(bad))
        note = wait_for(browser, "document.querySelector('[data-input=layout] .input-note.error')"
                        "?.textContent", message="the layout's error")
        assert note.startswith("bad.json is not valid JSON") and "\n" not in note
        picker = browser.find_element("id", "layout")  # screen readers hear why
        assert picker.get_attribute("aria-invalid") == "true"
        assert picker.get_attribute("aria-describedby") == "layout-note"
        browser.find_element("id", "generate").click()
        refusal = wait_for(browser, "!document.getElementById('form-error').hidden && "
                           "document.getElementById('form-error').textContent",
                           message="the refusal")
        assert refusal == note
        assert len(cards()) == 3 and not browser.find_elements("css selector", "#active .job")

        # A good one: the box is filled, and the PNG's provenance has the layout's digest.
        layout = tmp_path / "layout.json"
        layout.write_text(json.dumps([{"box": [0, 0, 0.5, 1],
                                                   "phrase": "a red circle"}]))
        browser.find_element("id", "layout").send_keys(str(layout))
        wait_for(browser, "document.querySelector('[data-input=layout] .input-note')"
                 ".textContent === 'layout.json: 1 box'", message="the chosen layout")
        browser.find_element("id", "seed").send_keys("7")
        browser.find_element("id", "generate").click()
        image, prov = newest_png(4, 16)
        layout_digest = digest(read_input("layout", layout))
        assert prov["inputs"] == {"layout": layout_digest} and prov["seed"] == 7
        assert (image.getpixel((4, 8)), image.getpixel((12, 8))) == (
            BoxesPipeline.colour(7), (255, 255, 255))
        assert "with layout" in cards()[0].find_element("css selector", ".meta").text
        # "New seed" sends the layout again: the page still holds what it sent.
        cards()[0].find_element("css selector", "button.variation").click()
        image, prov = newest_png(5, 16)
        assert prov["inputs"] == {"layout": layout_digest} and prov["seed"] != 7

        # The diffusion model's pickers replace the layout's: an init image, with a thumbnail.
        browser.execute_script("const s = document.getElementById('model'); s.value = 'tiny';"
                               "s.dispatchEvent(new Event('change'));")
        assert pickers() == ["init", "mask"]
        init = tmp_path / "init.png"
        picture = Image.new("RGB", (40, 40), (200, 40, 40))
        picture.paste((40, 40, 200), (0, 20, 40, 40))
        picture.save(init)
        browser.find_element("id", "init").send_keys(str(init))
        wait_for(browser, "document.querySelector('[data-input=init] .thumb')?.naturalWidth "
                 "=== 40", message="the init image's thumbnail")
        for field, value in (("seed", "11"), ("steps", "8")):
            browser.find_element("id", field).clear()
            browser.find_element("id", field).send_keys(value)
        browser.find_element("id", "generate").click()
        image, prov = newest_png(6, 32)
        assert prov["inputs"] == {"init": digest(read_input("init", init))}
        assert (prov["seed"], prov["steps"], prov["model_sha256"]) == (
            11, 8, served_models["tiny"].sha256)
        assert "with init" in cards()[0].find_element("css selector", ".meta").text
        inputs_shot = tmp_path / "page-inputs.png"
        browser.save_screenshot(str(inputs_shot))

        # After a reload the page no longer holds the inputs: "New seed" is off for those jobs.
        browser.refresh()
        wait_for(browser, "document.querySelectorAll('.card img').length === 6",
                 message="the gallery after a second reload")
        buttons = [c.find_element("css selector", "button.variation") for c in cards()]
        assert [b.is_enabled() for b in buttons] == [False, False, False, True, True, True]
        assert "init" in buttons[0].get_attribute("title")

        # No script errors and no blocked loads (the page's CSP allows only its own files).
        severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"
                  and "422" not in e["message"]]  # the deliberate bad request above
        assert severe == []

        # The API docs render from the bundled Swagger UI, with no CDN.
        browser.get(srv.url + "/docs")
        wait_for(browser, "document.querySelectorAll('.opblock').length >= 8",
                 message="the API docs")
    with capsys.disabled():
        print(f"\nbrowser screenshots: {progress} {desktop} {phone} {inputs_shot}")
