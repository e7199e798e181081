"""The web page at ``/`` in headless Chromium: upload a recording (real EmoDB when present), read the three attributes and their
uncertainty off the page and compare them with ``POST /predict``; a bad upload shows an error and no numbers.

Needs Debian's ``chromium`` and ``chromium-driver`` (``make deps`` installs them) and selenium; the driver is
the system one (``/usr/bin/chromedriver``), passed explicitly, so Selenium Manager never downloads anything.
"""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
pytest.importorskip("onnxruntime")
pytest.importorskip("uvicorn")
sf = pytest.importorskip("soundfile")
pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[test]')")

from toy import compare_bundle  # noqa: E402

pytestmark = pytest.mark.slow

ATTRIBUTES = ("arousal", "valence", "dominance")
SHOWN_DECIMALS = 2  # the page shows mean, std and duration with toFixed(2)
WAIT_S = 30


def _find(name: str, *fallbacks: str) -> str | None:
    for candidate in (name, *fallbacks):
        found = shutil.which(candidate)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def server_url(tmp_path_factory):
    """The real service (uvicorn in a thread on a free loopback port) serving a tiny ComParE bundle."""
    from server import serving

    with serving(compare_bundle(tmp_path_factory.mktemp("web"))) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    """Headless Debian Chromium through the system chromedriver (no Selenium Manager, no downloads)."""
    chromium = _find("chromium", "chromium-browser")
    driver_path = _find("chromedriver")
    if chromium is None or driver_path is None:
        pytest.skip("headless Chromium is not installed (needs Debian's chromium and chromium-driver: "
                    "`sudo apt-get install chromium chromium-driver` or `make deps` as root)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1200,900"):
        options.add_argument(argument)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SE_OFFLINE", "true")  # an explicit driver path already skips Selenium Manager; belt and braces
        driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _upload(driver, url: str, file: Path) -> None:
    """Open the page, choose ``file`` in the form and press Predict."""
    from selenium.webdriver.common.by import By

    driver.get(url + "/")
    driver.find_element(By.ID, "file").send_keys(str(file.resolve()))
    driver.find_element(By.ID, "predict-button").click()


def _text(driver, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id).text.strip()


def _shown_number(driver, element_id: str) -> float:
    text = _text(driver, element_id)
    try:
        return float(text)
    except ValueError:
        raise AssertionError(f"#{element_id} shows {text!r}, not a number") from None


def _wait_for_result(driver, element_id: str) -> None:
    """Wait until ``#element_id`` shows a number, or the status box an error (then fail with it)."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def done(d):
        status = d.find_element(By.ID, "status")
        if "error" in (status.get_attribute("class") or ""):
            return "error"
        text = d.find_element(By.ID, element_id).text.strip()
        try:
            float(text)
            return "number"
        except ValueError:
            return False

    try:
        outcome = WebDriverWait(driver, WAIT_S, poll_frequency=0.1).until(done)
    except TimeoutException:
        raise AssertionError(f"no result on the page within {WAIT_S} s; status: {_text(driver, 'status')!r}") from None
    assert outcome == "number", f"the page shows an error: {_text(driver, 'status')!r}"


def _wait_for_error(driver) -> str:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, WAIT_S, poll_frequency=0.1).until(
        lambda d: "error" in (d.find_element(By.ID, "status").get_attribute("class") or ""))
    return _text(driver, "status")


def _assert_no_numbers(driver) -> None:
    from selenium.webdriver.common.by import By

    assert not driver.find_element(By.ID, "results").is_displayed(), "results are shown beside the error"
    for attribute in ATTRIBUTES:
        for suffix in ("value", "std"):
            shown = driver.find_element(By.ID, f"{attribute}-{suffix}").get_attribute("textContent").strip()
            assert shown == "", f"#{attribute}-{suffix} still holds {shown!r}"


def _close(shown: float, exact: float) -> bool:
    """``shown`` is ``exact`` as the page rounds it (toFixed(2); a tie may round either way)."""
    return abs(shown - exact) <= 0.5 * 10 ** -SHOWN_DECIMALS + 1e-9


@pytest.fixture(scope="module")
def recording(request, tmp_path_factory) -> Path:
    """A real EmoDB recording of 1.5 to 4 s; where EmoDB is absent (as in CI), a generated speech-like FLAC."""
    try:
        files = request.getfixturevalue("emodb_files")
    except pytest.skip.Exception:
        files = []
    for file in files:
        if 1.5 < sf.info(str(file)).duration < 4.0:
            return file
    rate = 16000
    t = np.arange(2 * rate) / rate
    signal = (0.3 * np.sin(2 * np.pi * 140 * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2
              + 0.01 * np.random.default_rng(1).normal(size=t.size)).astype(np.float32)
    file = tmp_path_factory.mktemp("audio") / "generated.flac"
    sf.write(str(file), signal, rate)
    return file


def test_an_uploaded_recording_shows_the_services_prediction(browser, server_url: str, recording: Path) -> None:
    import httpx

    _upload(browser, server_url, recording)
    _wait_for_result(browser, "arousal-value")
    for attribute in ATTRIBUTES:
        _wait_for_result(browser, f"{attribute}-std")
    shown = {a: _shown_number(browser, f"{a}-value") for a in ATTRIBUTES}
    shown.update({f"{a}_std": _shown_number(browser, f"{a}-std") for a in ATTRIBUTES})
    shown["duration"] = _shown_number(browser, "duration")
    assert recording.name in _text(browser, "status")

    with httpx.Client(base_url=server_url, timeout=60) as http:
        response = http.post("/predict", files={"file": (recording.name, recording.read_bytes(), "audio/flac")})
    assert response.status_code == 200, response.text
    answer = response.json()
    for key, value in shown.items():
        assert math.isfinite(answer[key]) and _close(value, answer[key]), (key, value, answer[key])

    # the bars: the mark at the mean on the 1..7 scale, inside the +-std band
    from selenium.webdriver.common.by import By

    for attribute in ATTRIBUTES:
        mark = browser.find_element(By.ID, f"{attribute}-mark")
        band = browser.find_element(By.ID, f"{attribute}-band")
        scale = mark.find_element(By.XPATH, "..")
        assert mark.is_displayed() and scale.size["width"] > 0
        at = (mark.location["x"] + 1 - scale.location["x"]) / scale.size["width"]  # the mark's margin-left is -1px
        expected = (min(7.0, max(1.0, answer[attribute])) - 1) / 6
        assert at == pytest.approx(expected, abs=0.02), attribute
        assert band.location["x"] <= mark.location["x"] + 3 <= band.location["x"] + band.size["width"] + 6


def test_a_bad_upload_shows_an_error_and_no_numbers(browser, server_url: str, recording: Path,
                                                    tmp_path: Path) -> None:
    bad = tmp_path / "noise.wav"
    bad.write_bytes(np.random.default_rng(0).bytes(5000))
    _upload(browser, server_url, bad)
    message = _wait_for_error(browser)
    assert "415" in message and "noise.wav" in message, message
    _assert_no_numbers(browser)

    # after a good prediction, a bad upload on the same page must not leave the old numbers beside its error
    _upload(browser, server_url, recording)
    _wait_for_result(browser, "arousal-value")
    from selenium.webdriver.common.by import By

    browser.find_element(By.ID, "file").send_keys(str(bad.resolve()))
    browser.find_element(By.ID, "predict-button").click()
    message = _wait_for_error(browser)
    assert "noise.wav" in message, message
    _assert_no_numbers(browser)


@pytest.fixture(scope="module")
def three_minutes(emodb_files: list[Path], tmp_path_factory) -> Path:
    """About 3 minutes: EmoDB utterances joined by 1 to 2 s of near-silence."""
    rng = np.random.default_rng(5)
    parts, total = [], 0
    for file in emodb_files[::3]:
        utterance = sf.read(file, dtype="float32")[0]
        gap = np.zeros(int(rng.uniform(1.0, 2.0) * 16000), np.float32)
        parts += [utterance, gap]
        total += len(utterance) + len(gap)
        if total > 180 * 16000:
            break
    signal = np.concatenate(parts) + (rng.normal(size=total) * 1e-4).astype(np.float32)
    path = tmp_path_factory.mktemp("long") / "three-minutes.flac"
    sf.write(str(path), signal, 16000)
    return path


def test_a_long_upload_shows_a_timeline_with_one_band_per_segment(browser, server_url: str,
                                                                  three_minutes: Path) -> None:
    import httpx
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from serdistill.data.segments import find_segments

    assert sf.info(str(three_minutes)).duration > 170
    expected = len(find_segments(three_minutes))
    _upload(browser, server_url, three_minutes)
    WebDriverWait(browser, 120, poll_frequency=0.2).until(
        lambda d: d.find_element(By.ID, "timeline").is_displayed()
        or "error" in (d.find_element(By.ID, "status").get_attribute("class") or ""))
    assert browser.find_element(By.ID, "timeline").is_displayed(), _text(browser, "status")
    assert not browser.find_element(By.ID, "results").is_displayed()  # no bars for a long upload
    assert int(_text(browser, "segment-count")) == expected >= 40
    for attribute in ATTRIBUTES:
        bands = browser.find_elements(By.CSS_SELECTOR, f"#timeline-{attribute} rect.segment")
        assert len(bands) == expected, attribute
    assert browser.find_element(By.ID, "player").is_displayed()  # the audio player, with the upload
    with httpx.Client(base_url=server_url, timeout=120) as http:
        answer = http.post("/predict?segments=true", files={"file": (three_minutes.name, three_minutes.read_bytes(),
                                                                         "audio/flac")}).json()
    shown = [float(b.get_attribute("data-mean"))
             for b in browser.find_elements(By.CSS_SELECTOR, "#timeline-arousal rect.segment")]
    np.testing.assert_allclose(shown, [s["arousal"] for s in answer["segments"]], atol=1e-6)


def test_the_page_says_what_the_model_was_trained_on(browser, server_url: str) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server_url + "/")
    WebDriverWait(browser, WAIT_S).until(lambda d: "Model trained on" in _text(d, "model-text"))
    text = _text(browser, "model-text")
    assert "development CCC of the students" in text, text
