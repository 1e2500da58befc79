"""What ``chatpulse up`` plans to run (pure)."""

from pathlib import Path

from chatpulse.run.plan import UpOptions, build_plan, kafka_address, local_url, simulated_channels
from chatpulse.settings import Settings
from chatpulse.stack.secrets import StackSecrets


def test_simulated_mode_starts_fake_twitch_first_and_points_ingest_at_it() -> None:
    settings = Settings(api_port=8123)
    plan = build_plan(settings, UpOptions(sim_channels=40, fake_twitch_port=6999, python="py"))
    assert [child.name for child in plan.children] == ["fake-twitch", "ingest", "process", "api"]
    fake, ingest, process, api = plan.children
    assert fake.argv[:4] == ["py", "-m", "chatpulse", "fake-twitch"]
    assert "--simulate" in fake.argv
    assert fake.argv[fake.argv.index("--port") + 1] == "6999"
    assert fake.argv[fake.argv.index("--channels") + 1] == "40"
    assert fake.ready is not None
    assert ingest.env["CHATPULSE_TWITCH_IRC_URL"] == "irc://127.0.0.1:6999"
    assert ingest.env["CHATPULSE_CHANNELS"].split(",") == plan.channels
    assert plan.channels == [f"streamer{i:04d}" for i in range(40)]
    assert list(process.argv) == ["py", "-m", "chatpulse", "process"]
    assert api.env == {"CHATPULSE_API_HOST": "127.0.0.1", "CHATPULSE_API_PORT": "8123"}
    assert api.ready is not None
    assert plan.dashboard_url == "http://127.0.0.1:8123/"


def test_real_channels_mode_has_no_fake_twitch() -> None:
    plan = build_plan(Settings(), UpOptions(channels=["shroud", "xqc"], python="py"))
    assert [child.name for child in plan.children] == ["ingest", "process", "api"]
    ingest = plan.children[0]
    assert ingest.env == {"CHATPULSE_CHANNELS": "shroud,xqc"}  # default ircs:// Twitch URL


def test_simulated_channel_names_are_distinct_valid_logins() -> None:
    for count in (1, 36, 120):
        names = simulated_channels(count)
        assert len(names) == len(set(names)) == count
        assert all(Settings(channels=names).channels == names for _ in [0])


def test_addresses() -> None:
    assert kafka_address(Settings(kafka_bootstrap_servers="k1:19092,k2:19092")) == ("k1", 19092)
    assert local_url("0.0.0.0", 80, "/readyz") == "http://127.0.0.1:80/readyz"
    assert local_url("::1", 8000) == "http://[::1]:8000/"


def test_secure_mode_runs_each_service_as_its_own_principal() -> None:
    own = {
        name: {"CHATPULSE_KAFKA_SASL_USERNAME": user}
        for name, user in (("ingest", "ingest"), ("process", "processor"), ("api", "api"))
    }
    plan = build_plan(Settings(api_port=8123), UpOptions(python="py", service_env=own))
    fake, ingest, process, api = plan.children
    assert "CHATPULSE_KAFKA_SASL_USERNAME" not in fake.env
    assert ingest.env["CHATPULSE_KAFKA_SASL_USERNAME"] == "ingest"
    assert process.env == {"CHATPULSE_KAFKA_SASL_USERNAME": "processor"}
    assert api.env["CHATPULSE_KAFKA_SASL_USERNAME"] == "api"
    assert api.env["CHATPULSE_API_PORT"] == "8123"


def test_an_api_with_a_certificate_is_waited_for_and_shown_over_https(tmp_path: Path) -> None:
    secrets = StackSecrets(tmp_path / "secrets")
    secrets.ensure([])
    settings = Settings(
        api_port=8124, api_tls_cert=secrets.server_cert, api_tls_key=secrets.server_key
    )
    plan = build_plan(settings, UpOptions(python="py", api_ca=secrets.ca_cert))
    assert plan.dashboard_url == "https://127.0.0.1:8124/"
    assert local_url("127.0.0.1", 1, "/x", "https") == "https://127.0.0.1:1/x"
