"""The dashboard in headless Chromium (Debian's package, driven by Playwright).

It must load without console errors or content security policy violations (the API sends a
policy that allows only the site's own files), show the leaderboard, and raise a channel's live
counter when a new stats record arrives. Screenshots go to build/screenshots/.
"""

import os
import subprocess
import time
from pathlib import Path

import pytest
from api_support import KnownStream, running_api, write_rows
from confluent_kafka import Producer
from playwright.sync_api import ConsoleMessage, expect, sync_playwright
from playwright.sync_api import Error as PlaywrightError

from chatpulse.models import ChatSpike, TopChatter, TopEmote, WindowStats, encode
from chatpulse.settings import Settings
from chatpulse.stack import Stack
from chatpulse.stack.cli import stack_environment
from chatpulse.topics import Topics
from conftest import principal_settings

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

CHROMIUM = Path("/usr/bin/chromium")
CERTUTIL = "/usr/bin/certutil"  # NSS's, from libnss3-tools (`make chromium` installs it)
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
def _counted(n: int, noun: str) -> str:
    """How the dashboard writes a count of something: "1 timeout", "0 bans"."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


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
            # messages a moderator deleted are struck through, marked "deleted"
            recent = sorted(stream.of("alpha"), key=lambda m: (m.sent_at, m.id))[-30:]
            struck = [m for m in reversed(recent) if m.id in stream.deleted]
            assert struck
            deleted_rows = page.locator("#messages li.deleted")
            expect(deleted_rows).to_have_count(len(struck))
            expect(deleted_rows.first.locator("s")).to_have_text(struck[0].text)
            expect(deleted_rows.first.locator(".tag")).to_have_text("deleted")
            expect(page.locator("#messages li:not(.deleted) s")).to_have_count(0)
            moderation = stream.window_table()[("alpha", "1m", newest)].moderation
            expect(page.locator("#live-moderation")).to_have_text(
                f"{moderation['message_deleted']} deleted · "
                f"{_counted(moderation['timeout'], 'timeout')} · "
                f"{_counted(moderation['ban'], 'ban')}"
            )
            # the minute's chatter sessions, as seeded (sessions that ended there: mean, p90)
            sessions = stream.window_table()[("alpha", "1m", newest)].sessions()
            assert sessions["sessions_ended"] > 0
            assert sessions["session_mean_s"] < 59.5  # written as seconds, not minutes
            expect(page.locator("#live-sessions")).to_have_text(
                f"{sessions['sessions_started']} started · {sessions['sessions_ended']} ended · "
                f"mean {round(sessions['session_mean_s'])}s · p90 {sessions['session_p90_s']}s"
            )

            # this minute's top chatters, from the newest 1m window
            window = stream.window_table()[("alpha", "1m", newest)]
            chatters = page.locator("#chatters li")
            expect(chatters).to_have_count(min(10, len(window.users)))
            top = window.top_chatters()[0]
            expect(chatters.nth(0)).to_contain_text(top["login"])
            expect(chatters.nth(0).locator(".count")).to_have_text(str(top["count"]))

            # the channel's chat spikes: listed newest first, and a red point on the chart at
            # each (the chart's third series holds the messages of the spike minutes only)
            spikes = stream.spikes("alpha")
            assert 2 <= len(spikes) < 10
            listed = page.locator("#spikes li")
            expect(listed).to_have_count(len(spikes))
            expect(listed.nth(0)).to_contain_text(f"{spikes[0]['messages']} messages")
            expect(page.locator("#spikes-empty")).to_be_hidden()
            marked = "state.chart.data[2].filter((v) => v !== null)"
            page.wait_for_function(f"{marked}.length === {len(spikes)}")
            assert page.evaluate(marked) == [s["messages"] for s in reversed(spikes)]

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

            # a banned user's history: the messages up to the ban struck through
            banned = page.locator("#messages li.deleted button.who").first
            banned_login = banned.get_attribute("data-login")
            banned.click()
            expect(page.locator("#history-title")).to_have_text(f"{banned_login} in alpha")
            theirs = [m for m in stream.of("alpha") if m.user_login == banned_login]
            expect(page.locator("#history li")).to_have_count(len(theirs))
            expect(page.locator("#history li.deleted")).to_have_count(
                len([m for m in theirs if m.id in stream.deleted])
            )

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
                deleted_messages=2,
                timeouts=1,
                sessions_started=4,
                sessions_ended=3,
                session_mean_s=125.4,
                session_p90_s=250,
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
            expect(page.locator("#live-moderation")).to_have_text("2 deleted · 1 timeout · 0 bans")
            expect(page.locator("#live-sessions")).to_have_text(
                "4 started · 3 ended · mean 2m 5s · p90 4m 10s"
            )
            # a spike on the live stream: listed first and marked on the chart at once
            spike = ChatSpike(
                "alpha", "1m", newest, newest + 60_000, before + 17, baseline_median=2.0, factor=3.0
            )
            producer.produce(
                Topics.from_settings(settings).stats, key=b"alpha", value=encode(spike)
            )
            producer.flush(10)
            expect(listed).to_have_count(len(spikes) + 1, timeout=5000)
            expect(listed.nth(0)).to_contain_text(f"{before + 17} messages")
            # (a median of 2: the ratio has one decimal at most, no rounding to agree on)
            expect(listed.nth(0)).to_contain_text(f"{(before + 17) / 2:.1f}\u00d7 the usual 2")
            page.wait_for_function(f"{marked}.length === {len(spikes) + 1}")
            assert page.evaluate(f"{marked}.at(-1)") == before + 17
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


def _trusting_home(home: Path, ca: Path) -> Path:
    """A HOME whose NSS database (where Chromium on Linux looks for locally trusted roots)
    trusts ``ca`` to identify web servers."""
    nssdb = home / ".pki" / "nssdb"
    nssdb.mkdir(parents=True)
    database = f"sql:{nssdb}"
    subprocess.run([CERTUTIL, "-N", "-d", database, "--empty-password"], check=True)
    trust = [CERTUTIL, "-A", "-d", database, "-n", "chatpulse stack CA", "-t", "C,,", "-i"]
    subprocess.run([*trust, str(ca)], check=True)
    return home


@pytest.mark.secure
@pytest.mark.skipif(not CHROMIUM.exists(), reason="run `make chromium` (part of `make test`)")
@pytest.mark.skipif(not Path(CERTUTIL).exists(), reason="run `make chromium` (libnss3-tools)")
def test_dashboard_over_https_on_the_secured_stack(secure_stack: Stack, tmp_path: Path) -> None:
    """The API as its ``api`` principal, over HTTPS with the stack's certificate; Chromium
    trusts the stack's CA (not: ignores certificate errors), and the policy lets the
    dashboard's own scripts run."""
    admin = principal_settings(stack_environment(secure_stack, "admin"))
    windows = dict(zip(admin.windows, admin.window_sizes_ms, strict=True))
    stream = KnownStream.build(windows, {"tlsalpha": 36, "tlsbeta": 12})
    write_rows(admin, stream)  # as chatpulse_admin: the api role may only read
    newest = stream.starts("tlsalpha", "1m")[0]
    before = stream.window_table()[("tlsalpha", "1m", newest)].messages
    ca = secure_stack.secrets.ca_cert
    home = _trusting_home(tmp_path / "home", ca)
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            problems.append(message.text)

    api_settings = principal_settings(stack_environment(secure_stack, "api"))
    with running_api(api_settings, ca=ca) as api, sync_playwright() as pw:
        url = f"{api.base_url}/#channel=tlsalpha"
        assert url.startswith("https://127.0.0.1:")
        # Without the CA, Chromium refuses the stack's certificate: the trust comes from it.
        stranger = pw.chromium.launch(
            executable_path=str(CHROMIUM), args=ARGS, env={**os.environ, "HOME": str(tmp_path)}
        )
        try:
            with pytest.raises(PlaywrightError, match="ERR_CERT_AUTHORITY_INVALID"):
                stranger.new_page().goto(url)
        finally:
            stranger.close()

        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), args=ARGS, env={**os.environ, "HOME": str(home)}
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", on_console)
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.add_init_script(WATCH_CSP)
            response = page.goto(url)
            assert response is not None
            assert response.status == 200
            headers = response.headers
            assert "script-src 'self'" in headers["content-security-policy"]
            assert headers["strict-transport-security"].startswith("max-age=")
            security = response.security_details()
            assert security is not None
            assert security.get("issuer") == "chatpulse stack CA"

            expect(page.locator("#ch-title")).to_have_text("tlsalpha")
            expect(page.locator("#total-messages")).to_have_text("36")
            expect(page.locator("#live-messages")).to_have_text(str(before))
            # the live stream (server-sent events, the API reading channel-stats as `api`)
            expect(page.locator("#status-text")).to_have_text("live · tlsalpha")
            expect(page.locator("#messages li")).to_have_count(30)

            update = WindowStats("tlsalpha", "1m", newest, newest + 60_000, before + 11, 7)
            producer = Producer(admin.kafka_client_config())
            producer.produce(
                Topics.from_settings(admin).stats, key=b"tlsalpha", value=encode(update)
            )
            assert producer.flush(30) == 0
            expect(page.locator("#live-messages")).to_have_text(str(before + 11), timeout=15000)
            expect(page.locator("#live-chatters")).to_have_text("7")
            page.screenshot(path=str(tmp_path / "dashboard-https.png"), full_page=True)
            violations = page.evaluate("window.cspViolations")
            clean = list(problems)

            # The watch sees a violation when there is one: an injected inline script.
            page.evaluate(INJECT)
            page.wait_for_function("window.cspViolations.length > 0")
            injected = page.evaluate("[window.cspViolations, window.injected === true]")
            page.close()
        finally:
            browser.close()
    assert violations == []
    assert clean == []
    assert injected == [["script-src-elem inline"], False]
