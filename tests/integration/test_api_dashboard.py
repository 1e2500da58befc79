"""The dashboard in headless Chromium (Debian's package, driven by Playwright).

It must load without console errors or content security policy violations (the API sends a
policy that allows only the site's own files), show the leaderboard, and raise a channel's live
counter when a new stats record arrives. Screenshots go to build/screenshots/.
"""

import time
from pathlib import Path

import pytest
from api_support import KnownStream, running_api, write_rows
from confluent_kafka import Producer
from playwright.sync_api import ConsoleMessage, expect, sync_playwright

from chatpulse.models import TopChatter, TopEmote, WindowStats, encode
from chatpulse.settings import Settings
from chatpulse.topics import Topics

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Runs before the page's own scripts: records every violation of the content security policy.
WATCH_CSP = """
window.cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.cspViolations.push(`${e.effectiveDirective} ${e.blockedURI}`);
});
"""
# An inline script added to the page, as an injection would: the policy must block it.
INJECT = """() => {
  const script = document.createElement("script");
  script.textContent = "window.injected = true";
  document.body.appendChild(script);
}"""


@pytest.mark.skipif(not CHROMIUM.exists(), reason="run `make chromium` (part of `make test`)")
def test_dashboard_shows_leaderboard_and_live_counter(settings: Settings) -> None:
    windows = dict(zip(settings.windows, settings.window_sizes_ms, strict=True))
    stream = KnownStream.build(windows, {"alpha": 40, "beta": 25, "gamma": 9})
    write_rows(settings, stream)
    newest = stream.starts("alpha", "1m")[0]
    before = stream.window_table()[("alpha", "1m", newest)].messages
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            problems.append(message.text)

    with running_api(settings) as api, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", on_console)
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.add_init_script(WATCH_CSP)
            page.goto(f"{api.base_url}/#channel=alpha")

            rows = page.locator("#leaderboard tbody tr")
            expect(rows).to_have_count(3)
            expect(rows.nth(0)).to_contain_text("alpha")
            expect(page.locator("#ch-title")).to_have_text("alpha")
            expect(page.locator("#total-messages")).to_have_text("40")
            expect(page.locator("#live-messages")).to_have_text(str(before))
            expect(page.locator("#status-text")).to_have_text("live · alpha")
            expect(page.locator("#messages li")).to_have_count(30)

            # this minute's top chatters, from the newest 1m window
            window = stream.window_table()[("alpha", "1m", newest)]
            chatters = page.locator("#chatters li")
            expect(chatters).to_have_count(min(10, len(window.users)))
            top = window.top_chatters()[0]
            expect(chatters.nth(0)).to_contain_text(top["login"])
            expect(chatters.nth(0).locator(".count")).to_have_text(str(top["count"]))

            # a name in recent messages opens that user's history
            name = page.locator("#messages li button.who").first
            login = name.get_attribute("data-login")
            assert login
            said = [m for m in stream.of("alpha") if m.user_login == login]
            name.click()
            expect(page.locator("#history-card")).to_be_visible()
            expect(page.locator("#history-title")).to_have_text(f"{login} in alpha")
            expect(page.locator("#history li")).to_have_count(len(said))
            newest_said = max(said, key=lambda m: m.sent_at)
            expect(page.locator("#history li").first).to_contain_text(newest_said.text)

            # the search box: every message of alpha with both words, any case
            wanted = {"kappa", "gg"}
            found = [m for m in stream.of("alpha") if wanted <= set(m.text.lower().split())]
            assert 0 < len(found) < 50
            page.locator("#search-q").fill("Kappa GG")
            page.locator("#search-q").press("Enter")
            expect(page.locator("#search-results li")).to_have_count(len(found))
            expect(page.locator("#search-note")).to_have_text(f"{len(found)} found")
            page.locator("#search-results li button.who").first.click()
            expect(page.locator("#history-title")).to_contain_text(" in alpha")

            producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers})
            update = WindowStats(
                "alpha",
                "1m",
                newest,
                newest + 60_000,
                before + 17,
                9,
                top_emotes=[TopEmote("25", "Kappa", 6), TopEmote("88", "PogChamp", 2)],
                closed=False,
                top_chatters=[TopChatter("alu1", 5), TopChatter("alu6", 3)],
            )
            producer.produce(
                Topics.from_settings(settings).stats, key=b"alpha", value=encode(update)
            )
            producer.flush(10)
            started = time.monotonic()
            expect(page.locator("#live-messages")).to_have_text(str(before + 17), timeout=5000)
            assert time.monotonic() - started < 5
            expect(page.locator("#live-chatters")).to_have_text("9")
            # the live record's top chatters replace the list
            expect(chatters).to_have_count(2)
            expect(chatters.nth(0)).to_contain_text("alu1")
            expect(chatters.nth(0).locator(".count")).to_have_text("5")
            page.screenshot(path=str(SCREENSHOTS / "dashboard.png"), full_page=True)

            phone = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
            phone.on("console", on_console)
            phone.add_init_script(WATCH_CSP)
            phone.goto(f"{api.base_url}/#channel=beta")
            expect(phone.locator("#ch-title")).to_have_text("beta")
            expect(phone.locator("#total-messages")).to_have_text("25")
            phone.screenshot(path=str(SCREENSHOTS / "dashboard-phone.png"), full_page=True)
            violations = [
                page.evaluate("window.cspViolations"),
                phone.evaluate("window.cspViolations"),
            ]
            assert problems == []

            # The watch and the console check see a violation: an injected inline script is
            # refused, reported, and does not run.
            page.evaluate(INJECT)
            page.wait_for_function("window.cspViolations.length > 0")
            injected = page.evaluate("[window.cspViolations, window.injected === true]")
            page.close()
            phone.close()
        finally:
            browser.close()
    assert violations == [[], []]
    assert injected == [["script-src-elem inline"], False]
    assert len(problems) == 1
    assert "violates the following Content Security Policy directive" in problems[0]
