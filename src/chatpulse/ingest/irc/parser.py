"""Parse and format IRC lines with IRCv3 tags, as Twitch sends them.

Hand-written: the grammar is small, it sits on the ingest hot path (one call per chat line),
and the IRC libraries on PyPI either skip IRCv3 tag unescaping or do it with chained
``str.replace``, which is wrong for values such as ``\\\\s`` (see docs/twitch-irc notes).

Grammar: ``[@tags SPACE] [:prefix SPACE] COMMAND [params] [SPACE :trailing]``. The trailing
parameter is kept as the last element of ``params``.
"""

import re
from dataclasses import dataclass

from chatpulse.ingest.errors import IrcParseError

__all__ = [
    "DATA_COMMANDS",
    "IrcMessage",
    "escape_tag_value",
    "format_line",
    "parse_line",
    "prefix_nick",
    "unescape_tag_value",
]

# The commands that carry chat data: de-duplicated by the client, turned into records by
# the ingest (chatpulse.ingest.convert); every other line is protocol.
DATA_COMMANDS = frozenset({"PRIVMSG", "USERNOTICE", "CLEARCHAT", "CLEARMSG"})


@dataclass(slots=True)
class IrcMessage:
    """One parsed line. ``tags`` hold unescaped values; a key sent without ``=`` maps to "".

    Read-only by convention: not ``frozen``, which costs about 1 us more per line.
    """

    tags: dict[str, str]
    prefix: str | None
    command: str
    params: list[str]
    raw: str

    @property
    def channel(self) -> str | None:
        """The channel login (no ``#``) when the first parameter names a channel."""
        if self.params and self.params[0].startswith("#"):
            return self.params[0][1:]
        return None

    @property
    def trailing(self) -> str | None:
        """The last parameter (the text of a PRIVMSG), None when there are no parameters."""
        return self.params[-1] if self.params else None

    @property
    def nick(self) -> str | None:
        """The nick of a ``nick!user@host`` or ``nick@host`` prefix (or the server name)."""
        if self.prefix is None:
            return None
        return prefix_nick(self.prefix)


def prefix_nick(prefix: str) -> str:
    """The nick of a prefix: ``prefix = servername / (nickname [["!" user] "@" host])``.

    RFC 2812 2.3.1: the nick ends at the first ``!`` or ``@``.
    """
    nick = prefix.partition("!")[0]
    return nick.partition("@")[0] if "@" in nick else nick


_UNESCAPES = {":": ";", "s": " ", "\\": "\\", "r": "\r", "n": "\n", "": ""}
# One left-to-right pass: each backslash consumes the next character (or nothing at the end).
_ESCAPE_RE = re.compile(r"\\(.?)", re.DOTALL)


def _unescape_match(match: re.Match[str]) -> str:
    char = match.group(1)
    return _UNESCAPES.get(char, char)


def unescape_tag_value(value: str) -> str:
    """Undo IRCv3 tag escaping: ``\\:`` ``\\s`` ``\\\\`` ``\\r`` ``\\n``; ``\\X`` -> X."""
    if "\\" not in value:
        return value
    return _ESCAPE_RE.sub(_unescape_match, value)


def escape_tag_value(value: str) -> str:
    """Escape a tag value so that :func:`unescape_tag_value` returns it unchanged."""
    if "\\" in value:
        value = value.replace("\\", "\\\\")
    return value.replace(";", "\\:").replace(" ", "\\s").replace("\r", "\\r").replace("\n", "\\n")


def _parse_tags(text: str, line: str) -> dict[str, str]:
    # Two loops so the common case (no escapes at all) does the least work per tag.
    tags: dict[str, str] = {}
    if "\\" not in text:
        for item in text.split(";"):
            key, _, value = item.partition("=")
            tags[key] = value
    else:
        for item in text.split(";"):
            key, _, value = item.partition("=")
            tags[key] = _ESCAPE_RE.sub(_unescape_match, value) if value else value
    if "" in tags:  # from an empty item (";;", tolerated) or "=value" (no key: malformed)
        del tags[""]
        if (";" + text).find(";=") >= 0:
            raise IrcParseError("tag without a key", line)
    return tags


# Valid commands seen, as sent -> upper case: Twitch uses a dozen, so checking each line's
# command is one dict lookup. Bounded: a broken peer sending random commands cannot grow it.
_COMMANDS: dict[str, str] = {}
_MAX_COMMANDS = 256


def _bad_command(command: str) -> bool:
    if not command.isascii():
        return True
    if command.isdigit():
        return len(command) != 3
    return not command.isalpha()


def _new_command(words: list[str], raw: str) -> str:
    """The first word as a command (upper case), remembered; IrcParseError when not one."""
    if not words or _bad_command(words[0]):
        raise IrcParseError("no valid command", raw)
    command = words[0].upper()
    if len(_COMMANDS) < _MAX_COMMANDS:
        _COMMANDS[words[0]] = command
    return command


def _skip_spaces(line: str, pos: int) -> int:
    while line.startswith(" ", pos):
        pos += 1
    return pos


def parse_line(line: str) -> IrcMessage:
    """Parse one line (a trailing CR LF is ignored); raise IrcParseError when malformed."""
    raw = line
    if line.endswith("\n"):
        line = line[:-2] if line.endswith("\r\n") else line[:-1]
    if "\r" in line or "\n" in line or "\0" in line:
        raise IrcParseError("CR, LF or NUL inside the line", raw)
    tags: dict[str, str] = {}
    pos = 0
    if line.startswith("@"):
        end = line.find(" ")
        if end < 0:
            raise IrcParseError("tags without a command", raw)
        tags = _parse_tags(line[1:end], raw)
        pos = end + 1
        if line.startswith(" ", pos):  # extra spaces (rare): not worth a call per line
            pos = _skip_spaces(line, pos)
    prefix = None
    if line.startswith(":", pos):
        end = line.find(" ", pos)
        if end < 0:
            raise IrcParseError("prefix without a command", raw)
        prefix = line[pos + 1 : end]
        if not prefix:
            raise IrcParseError("empty prefix", raw)
        pos = end + 1
        if line.startswith(" ", pos):
            pos = _skip_spaces(line, pos)
    trail = line.find(" :", pos)
    words = line[pos:].split(" ") if trail < 0 else line[pos:trail].split(" ")
    if "" in words:
        words = [word for word in words if word]
    command = _COMMANDS.get(words[0]) if words else None
    if command is None:
        command = _new_command(words, raw)
    params = words[1:]
    if trail >= 0:
        params.append(line[trail + 2 :])
    return IrcMessage(tags, prefix, command, params, raw)


def _check_middle(param: str) -> None:
    if not param or " " in param or param.startswith(":"):
        raise ValueError(f"IRC middle parameter empty, with a space or a leading ':': {param!r}")


def format_line(msg: IrcMessage) -> str:
    """The wire form of ``msg`` without CR LF (parse_line(format_line(m)) equals m but raw)."""
    parts = []
    if msg.tags:
        parts.append("@" + ";".join(f"{k}={escape_tag_value(v)}" for k, v in msg.tags.items()))
    if msg.prefix is not None:
        parts.append(":" + msg.prefix)
    parts.append(msg.command)
    if msg.params:
        for param in msg.params[:-1]:
            _check_middle(param)
            parts.append(param)
        last = msg.params[-1]
        needs_colon = not last or " " in last or last.startswith(":")
        parts.append(":" + last if needs_colon else last)
    line = " ".join(parts)
    if "\r" in line or "\n" in line or "\0" in line:
        raise ValueError("IRC parameters cannot contain CR, LF or NUL")
    return line
