"""Simulated chatters: a Zipf-skewed pool (a few users write most messages, as in real chat)."""

import random
from bisect import bisect
from dataclasses import dataclass
from functools import lru_cache
from itertools import accumulate

from chatpulse.fake_twitch.vocab import COLORS, NAME_PARTS, NON_LATIN_NAMES
from chatpulse.ingest.irc.parser import escape_tag_value

__all__ = ["User", "UserPool"]


@dataclass(frozen=True, slots=True)
class User:
    login: str
    display_name: str
    display_tag: str  # display_name escaped for a tag value
    user_id: str
    color: str
    badges: str
    badge_info: str
    mod: int
    subscriber: int
    user_type: str
    vip: str  # ";vip=1" or "" (Twitch omits the tag for non-VIPs)


def _make_user(rng: random.Random, index: int) -> User:
    login = f"{rng.choice(NAME_PARTS)}{rng.choice(NAME_PARTS)}{rng.randrange(10_000)}"[:25]
    if rng.random() < 0.03:
        display = rng.choice(NON_LATIN_NAMES) + str(index)
    else:
        display = login.title() if rng.random() < 0.5 else login
    months = rng.choice((0, 0, 0, 1, 2, 3, 6, 12, 24, 40))
    mod = 1 if rng.random() < 0.01 else 0
    vip = ";vip=1" if not mod and rng.random() < 0.005 else ""
    badges = []
    if mod:
        badges.append("moderator/1")
    if vip:
        badges.append("vip/1")
    if months:
        badges.append(f"subscriber/{min(months, 24)}")
    if rng.random() < 0.1:
        badges.append("premium/1")
    if rng.random() < 0.05:
        badges.append(f"bits/{rng.choice((1, 100, 1000, 5000))}")
    return User(
        login=login,
        display_name=display,
        display_tag=escape_tag_value(display),
        user_id=str(rng.randrange(10_000_000, 999_999_999)),
        color=rng.choice(COLORS),
        badges=",".join(badges),
        badge_info=f"subscriber/{months}" if months else "",
        mod=mod,
        subscriber=1 if months else 0,
        user_type="mod" if mod else "",
        vip=vip,
    )


@lru_cache(maxsize=64)
def _cumulative_weights(size: int, exponent: float) -> list[float]:
    return list(accumulate(1.0 / (i + 1) ** exponent for i in range(size)))


class UserPool:
    """``size`` users, picked with Zipf weights; each user is made on first pick."""

    def __init__(self, rng: random.Random, size: int, exponent: float = 1.05) -> None:
        self._rng = rng
        self._cumulative = _cumulative_weights(size, exponent)
        self._users: dict[int, User] = {}

    def pick(self) -> User:
        index = bisect(self._cumulative, self._rng.random() * self._cumulative[-1])
        index = min(index, len(self._cumulative) - 1)
        user = self._users.get(index)
        if user is None:
            user = self._users[index] = _make_user(self._rng, index)
        return user
