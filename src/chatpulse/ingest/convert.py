"""Turn parsed IRC lines into wire records: PRIVMSG -> ChatMessage, others -> ChatEvent.

Lines that carry no chat data (PING, numerics, JOIN, ROOMSTATE, ...) give None. A data line
that cannot become a record raises :class:`ConvertError`, whose ``reason`` goes to the
dead-letter topic with the raw line.
"""

from chatpulse.ingest.errors import ConvertError
from chatpulse.ingest.irc.parser import DATA_COMMANDS, IrcMessage, prefix_nick
from chatpulse.models import ChatEvent, ChatMessage, Emote

__all__ = [
    "KNOWN_COMMANDS",
    "MAX_EPOCH_MS",
    "MAX_MESSAGE_ID_CHARS",
    "MAX_NUMBER",
    "parse_emotes",
    "to_record",
]

# Every other command Twitch sends (and numerics, all digits): a line with a command outside
# these is dead-lettered, not silently skipped (a changed protocol shows in the dead letters).
KNOWN_COMMANDS = DATA_COMMANDS | frozenset(
    {
        "PING",
        "PONG",
        "JOIN",
        "PART",
        "CAP",
        "NOTICE",
        "RECONNECT",
        "ROOMSTATE",
        "USERSTATE",
        "GLOBALUSERSTATE",
        "HOSTTARGET",
        "WHISPER",
        "MODE",
    }
)

# USERNOTICE msg-ids renamed on the wire; every other msg-id is kept as it comes.
_EVENT_TYPES = {"sub": "subscription"}
_ACTION_HEAD = "\x01ACTION"
_PARAM_PREFIX = "msg-param-"
# The end of year 9999 in epoch ms: what Kafka, a CQL timestamp and a Python datetime all take
# (chatpulse.models.EpochMs). How far from now a time may be is the service's check.
MAX_EPOCH_MS = 253_402_300_799_999
# Numeric tags (bits, ban-duration) up to 2^53 - 1: a JSON number every reader takes exactly.
MAX_NUMBER = 2**53 - 1
_MAX_DIGITS = 16  # more digits than MAX_NUMBER has: refused before int() (which caps at 4300)
# A chat message's id: Twitch sends a UUID (36 characters). The API pages messages with a
# cursor holding the id, base64 JSON of at most 512 characters (api.cursors): 48 characters
# fit whatever they are (a control character takes 6 bytes in JSON, so 288 bytes, plus a
# 25-character channel and the time), so a length check is all the hot path needs.
MAX_MESSAGE_ID_CHARS = 48


def _long_message_id(msg: IrcMessage, msg_id: str) -> ConvertError:
    return ConvertError(
        f"tag id is longer than {MAX_MESSAGE_ID_CHARS} characters ({len(msg_id)}): {msg_id[:40]!r}",
        msg.raw,
    )


def _twitch_id(msg: IrcMessage, key: str, value: str) -> str:
    """``value`` when it is a canonical Twitch id (decimal, 1 to 2^53 - 1); else ConvertError.

    Twitch user and room ids are numbers; the processor keeps numeric chatters in bitmaps and
    anything else in a small bounded list, so a made-up id is refused here, with its reason.
    """
    if not (value.isascii() and value.isdigit()) or value[0] == "0":
        raise ConvertError(
            f"tag {key} is not a Twitch id (a decimal number from 1, no leading zero): "
            f"{value[:40]!r}",
            msg.raw,
        )
    if len(value) >= _MAX_DIGITS and (len(value) > _MAX_DIGITS or int(value) > MAX_NUMBER):
        raise ConvertError(f"tag {key} is out of range (over 2^53 - 1): {value[:40]!r}", msg.raw)
    return value


def _optional_twitch_id(msg: IrcMessage, key: str) -> str:
    """The tag's canonical Twitch id, or "" when the tag is missing or empty."""
    value = msg.tags.get(key)
    return _twitch_id(msg, key, value) if value else ""


def _required(msg: IrcMessage, key: str) -> str:
    value = msg.tags.get(key)
    if not value:
        raise ConvertError(f"missing tag {key}", msg.raw)
    return value


def _number(msg: IrcMessage, key: str, default: int | None = None) -> int:
    value = msg.tags.get(key)
    if not value:
        if default is None:
            raise ConvertError(f"missing tag {key}", msg.raw)
        return default
    if not value.isascii() or not value.isdigit():
        raise ConvertError(f"tag {key} is not a non-negative integer: {value[:40]!r}", msg.raw)
    number = int(value) if len(value) <= _MAX_DIGITS else MAX_NUMBER + 1
    if number > MAX_NUMBER:
        raise ConvertError(f"tag {key} is out of range (over 2^53 - 1): {value[:40]!r}", msg.raw)
    return number


def _sent_at(msg: IrcMessage) -> int:
    sent_at = _number(msg, "tmi-sent-ts")
    if sent_at > MAX_EPOCH_MS:
        raise ConvertError(
            f"tag tmi-sent-ts is not a time (epoch ms past year 9999): {sent_at}", msg.raw
        )
    return sent_at


def _channel(msg: IrcMessage) -> str:
    channel = msg.channel
    if not channel:
        raise ConvertError("no #channel parameter", msg.raw)
    return channel.lower()


def _split_action(text: str) -> tuple[str, bool]:
    if text.startswith(_ACTION_HEAD) and text.endswith("\x01") and len(text) > len(_ACTION_HEAD):
        body = text[len(_ACTION_HEAD) : -1]
        if not body or body.startswith(" "):
            return body[1:], True
    return text, False


def parse_emotes(value: str, text_length: int) -> list[Emote]:
    """Parse ``id:s-e,s-e/id2:s-e``; indices clamped to the text, malformed ranges skipped."""
    emotes: list[Emote] = []
    if not value or text_length <= 0:
        return emotes
    last = text_length - 1
    for group in value.split("/"):
        emote_id, _, ranges = group.partition(":")
        if not emote_id:
            continue
        for span in ranges.split(","):
            start_text, _, end_text = span.partition("-")
            if not (start_text.isascii() and start_text.isdigit()):
                continue
            if not (end_text.isascii() and end_text.isdigit()):
                continue
            start, end = int(start_text), min(int(end_text), last)
            if start <= end:
                emotes.append(Emote(id=emote_id, start=start, end=end))
    emotes.sort(key=lambda emote: (emote.start, emote.end))
    return emotes


def _badges(value: str) -> dict[str, str]:
    if not value:
        return {}
    badges = {}
    for item in value.split(","):
        name, _, version = item.partition("/")
        if name:
            badges[name] = version
    return badges


def _chat_message(msg: IrcMessage) -> ChatMessage:
    # The hot path (one call per chat line): the common case inline, the checks' messages
    # from the helpers above when a tag is missing or malformed.
    params, tags = msg.params, msg.tags
    get = tags.get
    if len(params) < 2:
        raise ConvertError("PRIVMSG without text", msg.raw)
    text, is_action = params[-1], False
    if text.startswith(_ACTION_HEAD):
        text, is_action = _split_action(text)
    msg_id, user_id, sent = get("id"), get("user-id"), get("tmi-sent-ts")
    if not msg_id:
        msg_id = _required(msg, "id")
    if len(msg_id) > MAX_MESSAGE_ID_CHARS:
        raise _long_message_id(msg, msg_id)
    if not user_id:
        user_id = _required(msg, "user-id")
    # A canonical id of up to 15 digits is always in range: the full check only past that.
    if not (len(user_id) < _MAX_DIGITS and user_id.isdigit() and user_id.isascii()) or (
        user_id[0] == "0"
    ):
        _twitch_id(msg, "user-id", user_id)
    room_id = get("room-id")
    if room_id and not (
        len(room_id) < _MAX_DIGITS and room_id.isdigit() and room_id.isascii() and room_id[0] != "0"
    ):
        _twitch_id(msg, "room-id", room_id)
    sent_at = (
        int(sent)
        if sent and len(sent) <= 13 and sent.isascii() and sent.isdigit()  # up to year 2286
        else _sent_at(msg)
    )
    channel = params[0]
    channel = channel[1:].lower() if channel.startswith("#") and len(channel) > 1 else _channel(msg)
    prefix = msg.prefix
    # The nick ends at "!" or "@" (RFC 2812); prefix_nick inline, for the hot path.
    login = prefix.partition("!")[0] if prefix else ""
    if "@" in login:
        login = prefix_nick(login)
    login = login or get("login") or ""
    emotes, bits, badges = get("emotes"), get("bits"), get("badges")
    return ChatMessage(
        id=msg_id,
        channel=channel,
        user_id=user_id,
        user_login=login.lower(),
        text=text,
        sent_at=sent_at,
        channel_id=room_id or "",
        display_name=get("display-name", ""),
        is_action=is_action,
        emotes=parse_emotes(emotes, len(text)) if emotes else [],
        bits=_number(msg, "bits", 0) if bits else 0,
        badges=_badges(badges) if badges else {},
        reply_parent_msg_id=get("reply-parent-msg-id") or None,
    )


def _user_notice(msg: IrcMessage) -> ChatEvent:
    tags = msg.tags
    msg_id = _required(msg, "msg-id")
    return ChatEvent(
        type=_EVENT_TYPES.get(msg_id, msg_id),
        channel=_channel(msg),
        sent_at=_sent_at(msg),
        id=_required(msg, "id"),
        channel_id=_optional_twitch_id(msg, "room-id"),
        user_id=_optional_twitch_id(msg, "user-id"),
        user_login=tags.get("login", ""),
        text=msg.params[-1] if len(msg.params) > 1 else "",
        system_msg=tags.get("system-msg", ""),
        params={k[len(_PARAM_PREFIX) :]: v for k, v in tags.items() if k.startswith(_PARAM_PREFIX)},
    )


def _clear_chat(msg: IrcMessage) -> ChatEvent:
    # CLEARCHAT has no id tag: the id is derived from what identifies the action, so the same
    # line received twice (reconnect overlap) gives the same id.
    tags = msg.tags
    channel = _channel(msg)
    sent_at = _sent_at(msg)
    room_id = _optional_twitch_id(msg, "room-id")
    target_login = msg.params[1].lower() if len(msg.params) > 1 else ""
    if not target_login:
        return ChatEvent(
            type="clear",
            channel=channel,
            sent_at=sent_at,
            channel_id=room_id,
            id=tags.get("id") or f"clearchat:{room_id or channel}:{sent_at}",
        )
    user_id = _optional_twitch_id(msg, "target-user-id")
    duration = _number(msg, "ban-duration", -1)
    return ChatEvent(
        type="ban" if duration < 0 else "timeout",
        channel=channel,
        sent_at=sent_at,
        id=tags.get("id") or f"clearchat:{room_id or channel}:{sent_at}:{user_id or target_login}",
        channel_id=room_id,
        user_id=user_id,
        user_login=target_login,
        duration_s=None if duration < 0 else duration,
    )


def _clear_msg(msg: IrcMessage) -> ChatEvent:
    target = _required(msg, "target-msg-id")
    return ChatEvent(
        type="message_deleted",
        channel=_channel(msg),
        sent_at=_sent_at(msg),
        id=msg.tags.get("id") or f"clearmsg:{target}",
        channel_id=_optional_twitch_id(msg, "room-id"),
        user_login=msg.tags.get("login", ""),
        text=msg.params[-1] if len(msg.params) > 1 else "",
        target_msg_id=target,
    )


def to_record(msg: IrcMessage) -> ChatMessage | ChatEvent | None:
    """The record for a data line, None for other lines; ConvertError when it cannot be built."""
    command = msg.command
    if command == "PRIVMSG":
        return _chat_message(msg)
    if command == "USERNOTICE":
        return _user_notice(msg)
    if command == "CLEARCHAT":
        return _clear_chat(msg)
    if command == "CLEARMSG":
        return _clear_msg(msg)
    return None
