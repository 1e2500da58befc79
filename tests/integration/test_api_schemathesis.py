"""Property-based test of the API against its own OpenAPI document (schemathesis + hypothesis).

Every operation except the endless live stream is fuzzed with schema-valid and schema-invalid
inputs on the real app and stack; schemathesis's checks fail on any 5xx, undocumented status,
content type, header or body that breaks the documented schema.
"""

from datetime import UTC, datetime, timedelta, timezone

import hypothesis
import pytest
import requests
import schemathesis
from api_support import KnownStream, running_api, write_rows
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from chatpulse.settings import Settings

pytestmark = [pytest.mark.timeout(900), pytest.mark.slow]

EXAMPLES_PER_OPERATION = 40


# schemathesis's negative-data strategies use the ``random`` module, which hypothesis deprecates
# (a library matter, not ours).
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
def test_api_conforms_to_its_openapi(settings: Settings) -> None:
    windows = dict(zip(settings.windows, settings.window_sizes_ms, strict=True))
    # "somechannel" is the schema's example channel, so generated cases also reach real data.
    write_rows(settings, KnownStream.build(windows, {"somechannel": 30, "other": 5}))
    with running_api(settings) as api:
        base_url = str(api.base_url).rstrip("/")
        schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
        session = requests.Session()
        tested = []
        for result in schema.get_all_operations():
            operation = result.ok()
            if operation.path.endswith("/live"):
                continue  # an endless stream; covered by test_api_live
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

                @given(case=operation.as_strategy(generation_mode=mode))
                @hypothesis.settings(
                    max_examples=EXAMPLES_PER_OPERATION,
                    deadline=None,
                    database=None,
                    suppress_health_check=list(HealthCheck),
                    derandomize=True,
                )
                def check(case: schemathesis.Case) -> None:
                    # Rules no OpenAPI schema can state: an opaque cursor that this API did
                    # not sign is refused (400), from..to must not span over 31 days nor run
                    # backwards (422), and a search must have 1-5 words of at most 40
                    # characters (422). Only there the "schema-valid input must be accepted"
                    # check does not apply.
                    query = set(case.query or ())
                    opaque = bool({"cursor", "before", "q"} & query) or {"from", "to"} <= query
                    case.call_and_validate(
                        base_url=base_url,
                        session=session,
                        timeout=10,
                        excluded_checks=[positive_data_acceptance] if opaque else [],
                    )

                try:
                    check()
                except hypothesis.errors.Unsatisfiable:
                    # No invalid input exists for an operation without parameters.
                    assert mode is GenerationMode.NEGATIVE
                    assert not operation.path_parameters
                    assert not operation.query
            tested.append(f"{operation.method.upper()} {operation.path}")
        assert len(tested) == 12, tested
        assert "GET /api/v1/channels/{channel}/users/{login}/messages" in tested
        assert "GET /api/v1/channels/{channel}/spikes" in tested


_limit = timedelta(hours=23, minutes=59)
_offsets = st.one_of(
    st.sampled_from([timezone(-_limit), UTC, timezone(_limit)]),
    st.builds(timezone, st.timedeltas(min_value=-_limit, max_value=_limit)),
)
# The ends of the calendar with the extreme offsets, mixed with anything in between.
_moments = st.one_of(
    st.sampled_from([datetime.min, datetime.max, datetime(1970, 1, 1)]),
    st.datetimes(),
)
_times = st.builds(
    lambda moment, zone: moment.replace(tzinfo=zone).isoformat(),
    _moments,
    st.one_of(st.none(), _offsets),
)


def test_any_time_parameter_is_answered_without_5xx(settings: Settings) -> None:
    """Times anywhere in 0001..9999 with any UTC offset (schemathesis rarely reaches the ends)."""
    windows = dict(zip(settings.windows, settings.window_sizes_ms, strict=True))
    write_rows(settings, KnownStream.build(windows, {"alpha": 10}))
    with running_api(settings) as api:

        @given(
            path=st.sampled_from(["stats", "messages", "users/alu1/messages"]),
            low=st.one_of(st.none(), _times),
            high=st.one_of(st.none(), _times),
        )
        @hypothesis.settings(max_examples=150, deadline=None, database=None, derandomize=True)
        def check(path: str, low: str | None, high: str | None) -> None:
            if path != "messages":
                params = {k: v for k, v in (("from", low), ("to", high)) if v is not None}
            else:
                params = {"before": low} if low is not None else {}
            response = api.get(f"/api/v1/channels/alpha/{path}", params=params)
            assert response.status_code in (200, 422), (params, response.text)
            if response.status_code == 422:
                assert response.headers["content-type"] == "application/problem+json"

        check()
