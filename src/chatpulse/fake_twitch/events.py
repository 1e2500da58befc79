"""Simulated USERNOTICE, CLEARCHAT and CLEARMSG lines, with the tags Twitch sends.

Each function draws from a :class:`SimulatedChannel` (the simulator's channel, seen only
through what these lines need), so the same channel state always gives the same lines.
"""

import random
from typing import Protocol

from chatpulse.fake_twitch.users import User, UserPool
from chatpulse.ingest.irc.parser import escape_tag_value

__all__ = ["SimulatedChannel", "clearchat", "clearmsg", "usernotice"]

_PLANS = (("Prime", "Prime"), ("1000", "Tier 1"), ("2000", "Tier 2"), ("3000", "Tier 3"))


class SimulatedChannel(Protocol):
    """What an event line needs from the channel it happens in."""

    rng: random.Random
    name: str
    room: str  # the channel's room-id tag
    users: UserPool
    recent: list[tuple[str, User, str]]  # (message id, author, text), oldest first

    def new_id(self) -> str:
        """A fresh message id drawn from ``rng``."""
        ...


def usernotice(sim: SimulatedChannel, ts: int) -> str:
    rng, user = sim.rng, sim.users.pick()
    kind = rng.choices(
        ("sub", "resub", "subgift", "submysterygift", "raid", "announcement"),
        weights=(3, 5, 2, 1, 1, 1),
    )[0]
    plan, plan_name = rng.choice(_PLANS)
    text = ""
    if kind in ("sub", "resub"):
        months = 1 if kind == "sub" else rng.randint(2, 60)
        params = {
            "cumulative-months": str(months),
            "months": "0",
            "multimonth-duration": "1",
            "multimonth-tenure": "0",
            "should-share-streak": "0",
            "sub-plan-name": f"Channel Subscription ({sim.name})",
            "sub-plan": plan,
            "was-gifted": "false",
        }
        system = f"{user.display_name} subscribed with {plan_name}."
        if kind == "resub":
            system += f" They've subscribed for {months} months!"
            text = rng.choice(("", "love the streams", "PogChamp 2 years!", "hi chat 👋"))
    elif kind == "subgift":
        recipient = sim.users.pick()
        params = {
            "gift-months": "1",
            "months": str(rng.randint(1, 12)),
            "origin-id": f"{rng.getrandbits(64):016x}",
            "recipient-display-name": recipient.display_name,
            "recipient-id": recipient.user_id,
            "recipient-user-name": recipient.login,
            "sub-plan-name": f"Channel Subscription ({sim.name})",
            "sub-plan": plan if plan != "Prime" else "1000",
        }
        system = f"{user.display_name} gifted a Tier 1 sub to {recipient.display_name}!"
    elif kind == "submysterygift":
        count = rng.choice((1, 5, 10, 20, 50))
        params = {
            "mass-gift-count": str(count),
            "origin-id": f"{rng.getrandbits(64):016x}",
            "sub-plan": "1000",
        }
        system = f"{user.display_name} is gifting {count} Tier 1 Subs to {sim.name}'s community!"
    elif kind == "raid":
        viewers = rng.randint(2, 20_000)
        params = {
            "displayName": user.display_name,
            "login": user.login,
            "profileImageURL": f"https://static-cdn.jtvnw.net/jtv_user_pictures/{user.login}-70x70.png",
            "viewerCount": str(viewers),
        }
        system = f"{viewers} raiders from {user.display_name} have joined!"
    else:
        params = {"color": rng.choice(("PRIMARY", "BLUE", "GREEN", "ORANGE", "PURPLE"))}
        system = ""
        text = rng.choice(("Giveaway tonight!", "New video is out ✨", "Be nice in chat"))
    # Twitch orders tags as "key=value" strings: msg-param-sub-plan-name before msg-param-sub-plan.
    ordered = sorted(params.items(), key=lambda item: f"msg-param-{item[0]}=")
    param_tags = "".join(f"msg-param-{k}={escape_tag_value(v)};" for k, v in ordered)
    trailing = f" :{text}" if text else ""
    return (
        f"@badge-info={user.badge_info};badges={user.badges};color={user.color};"
        f"display-name={user.display_tag};emotes=;flags=;id={sim.new_id()};login={user.login};"
        f"mod={user.mod};msg-id={kind};{param_tags}room-id={sim.room};"
        f"subscriber={user.subscriber};system-msg={escape_tag_value(system)};tmi-sent-ts={ts};"
        f"user-id={user.user_id};user-type={user.user_type}{user.vip} "
        f":tmi.twitch.tv USERNOTICE #{sim.name}{trailing}"
    )


def clearchat(sim: SimulatedChannel, ts: int) -> str:
    rng = sim.rng
    roll = rng.random()
    if roll < 0.01:
        return f"@room-id={sim.room};tmi-sent-ts={ts} :tmi.twitch.tv CLEARCHAT #{sim.name}"
    user = sim.users.pick()
    duration = "" if roll < 0.1 else f"ban-duration={rng.choice((1, 10, 60, 600, 86400))};"
    return (
        f"@{duration}room-id={sim.room};target-user-id={user.user_id};tmi-sent-ts={ts} "
        f":tmi.twitch.tv CLEARCHAT #{sim.name} :{user.login}"
    )


def clearmsg(sim: SimulatedChannel, ts: int) -> str:
    # A message is deleted once: take it out of the recent ones.
    msg_id, user, text = sim.recent.pop(sim.rng.randrange(len(sim.recent)))
    return (
        f"@login={user.login};room-id=;target-msg-id={msg_id};tmi-sent-ts={ts} "
        f":tmi.twitch.tv CLEARMSG #{sim.name} :{text}"
    )
