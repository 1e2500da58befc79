"""When the ingest replaces a failed producer: never for fencing or refused permissions, at most
``limit`` times in any period."""

from confluent_kafka import KafkaError

from chatpulse.ingest.replacement import NOT_REPLACEABLE, Replacements


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fatal(code: int) -> KafkaError:
    return KafkaError(code, "test", fatal=True)


def test_a_fatal_transaction_state_error_is_replaced_up_to_the_limit_per_period() -> None:
    clock = Clock()
    replacements = Replacements(2, period_s=600, clock=clock)
    error = fatal(KafkaError._STATE)
    assert replacements.allow(error)
    clock.now += 100
    assert replacements.allow(fatal(KafkaError.INVALID_TXN_STATE))
    assert replacements.recent == 2
    clock.now += 100
    assert not replacements.allow(error)  # a third within 10 minutes: the ingest stops
    clock.now += 401  # the first replacement is more than 600 s old now
    assert replacements.allow(error)
    assert replacements.recent == 2


def test_fencing_and_refused_permissions_are_never_replaced() -> None:
    replacements = Replacements(100)
    for code in NOT_REPLACEABLE:
        assert not replacements.allow(fatal(code))
    assert replacements.recent == 0
    assert KafkaError.PRODUCER_FENCED in NOT_REPLACEABLE
    assert KafkaError._FENCED in NOT_REPLACEABLE


def test_a_limit_of_zero_never_replaces() -> None:
    assert not Replacements(0).allow(fatal(KafkaError.INVALID_TXN_STATE))
