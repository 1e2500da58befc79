"""One client connection to the fake server: Twitch's login, CAP, JOIN/PART, PING/PONG.

A session sees its server only through :class:`SessionHost`: the rules it applies, the
counters it adds to, and the two calls that put it in a channel's stream and take it out.
"""

import asyncio
import contextlib
import logging
import re
import zlib
from typing import Protocol

from chatpulse.fake_twitch.source import Source
from chatpulse.ingest.errors import IrcParseError
from chatpulse.ingest.irc.parser import parse_line

__all__ = ["KNOWN_CAPS", "Session", "SessionHost"]

logger = logging.getLogger(__name__)

KNOWN_CAPS = frozenset({"twitch.tv/tags", "twitch.tv/commands", "twitch.tv/membership"})
_ANONYMOUS = re.compile(r"justinfan\d+")
_NICK = re.compile(r"[a-z0-9_]{1,25}")
_CHANNEL = re.compile(r"[a-z0-9_]{1,25}")
_SERVER = ":tmi.twitch.tv"


class SessionHost(Protocol):
    """What a session needs from the server that accepted it."""

    source: Source  # the room ids announced in ROOMSTATE
    reject_tokens: frozenset[str]
    suspended_channels: frozenset[str]
    answer_pings: bool
    quit_delay_s: float
    join_log: list[tuple[float, int, str]]
    close_log: list[tuple[float, int]]
    login_failures: int
    pings_answered: int
    pongs_received: int

    def enter(self, session: "Session", channel: str) -> None:
        """``session`` joined ``channel``: start sending it the channel's lines."""
        ...

    def leave(self, session: "Session", channel: str) -> None:
        """``session`` left ``channel`` (or closed): stop sending it the channel's lines."""
        ...


class Session:
    """A connected client; the server writes chat lines to it with :meth:`send`."""

    def __init__(
        self,
        server: SessionHost,
        session_id: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.server = server
        self.id = session_id
        self.reader, self.writer = reader, writer
        self.nick: str | None = None
        self.password: str | None = None
        self.caps: set[str] = set()
        self.logged_in = False
        self.channels: set[str] = set()
        self.closed = False

    def __repr__(self) -> str:
        return f"Session(id={self.id}, nick={self.nick!r})"

    def send(self, lines: list[str]) -> None:
        """Write lines in one write (Twitch packs several lines per TCP segment)."""
        if self.closed or not lines:
            return
        if "twitch.tv/tags" not in self.caps:
            lines = [line.split(" ", 1)[1] if line.startswith("@") else line for line in lines]
        self.writer.write(("\r\n".join(lines) + "\r\n").encode())

    def close(self) -> None:
        """Leave every channel and close after flushing what was written (a graceful FIN)."""
        if self.closed:
            return
        self.closed = True
        self.server.close_log.append((asyncio.get_running_loop().time(), self.id))
        for name in self.channels:
            self.server.leave(self, name)
        self.channels.clear()
        self.writer.close()

    async def run(self) -> None:
        try:
            while not self.closed and (data := await self.reader.readline()):
                line = data.decode(errors="replace").rstrip("\r\n")
                if line:
                    self._handle(line)
        except (ConnectionError, OSError, ValueError) as exc:  # ValueError: a line over 64 KiB
            logger.debug("session %d: %s", self.id, exc)
        finally:
            self.close()
            with contextlib.suppress(ConnectionError, OSError):
                await self.writer.wait_closed()

    def _handle(self, line: str) -> None:
        try:
            msg = parse_line(line)
        except IrcParseError:
            return
        command, params = msg.command, msg.params
        if command == "CAP":
            self._cap(params)
        elif command == "PASS" and params:
            self.password = params[-1]
        elif command == "NICK" and params:
            self._login(params[0])
        elif command == "PING":
            self._pong(params)
        elif command == "PONG":
            self.server.pongs_received += 1
        elif command == "QUIT":
            self._quit()
        elif not self.logged_in:
            return
        elif command in ("JOIN", "PART") and params:
            for name in params[0].split(","):
                channel = name.strip().removeprefix("#").lower()
                (self._join if command == "JOIN" else self._part)(channel)
        elif command != "PRIVMSG":
            self.send([f"{_SERVER} 421 {self.nick} {command} :Unknown command"])

    def _quit(self) -> None:
        delay = self.server.quit_delay_s
        if delay > 0:  # lines keep flowing for a while, as they do from Twitch
            asyncio.get_running_loop().call_later(delay, self.close)
        else:
            self.close()

    def _pong(self, params: list[str]) -> None:
        if self.server.answer_pings:
            self.send([f"{_SERVER} PONG tmi.twitch.tv :{params[-1] if params else ''}"])
            self.server.pings_answered += 1

    def _cap(self, params: list[str]) -> None:
        sub = params[0].upper() if params else ""
        if sub == "LS":
            self.send([f"{_SERVER} CAP * LS :{' '.join(sorted(KNOWN_CAPS))}"])
        elif sub == "REQ":
            wanted = params[-1].split()
            if set(wanted) <= KNOWN_CAPS:
                self.caps.update(wanted)
                self.send([f"{_SERVER} CAP * ACK :{' '.join(wanted)}"])
            else:
                self.send([f"{_SERVER} CAP * NAK :{' '.join(wanted)}"])

    def _login(self, nick: str) -> None:
        failure = None
        if not _NICK.fullmatch(nick):
            failure = "Invalid NICK"
        elif self.password is not None and not _ANONYMOUS.fullmatch(nick):
            token = self.password.removeprefix("oauth:")
            if not self.password.startswith("oauth:"):
                failure = "Improperly formatted auth"
            elif not token or token in self.server.reject_tokens:
                failure = "Login authentication failed"
        elif self.password is None and not _ANONYMOUS.fullmatch(nick):
            failure = "Improperly formatted auth"
        if failure is not None:
            self.server.login_failures += 1
            self.send([f"{_SERVER} NOTICE * :{failure}"])
            self.close()
            return
        self.nick, self.logged_in = nick, True
        welcome = [
            f"{_SERVER} 001 {nick} :Welcome, GLHF!",
            f"{_SERVER} 002 {nick} :Your host is tmi.twitch.tv",
            f"{_SERVER} 003 {nick} :This server is rather new",
            f"{_SERVER} 004 {nick} :-",
            f"{_SERVER} 375 {nick} :-",
            f"{_SERVER} 372 {nick} :You are in a maze of twisty passages, all alike.",
            f"{_SERVER} 376 {nick} :>",
        ]
        if not _ANONYMOUS.fullmatch(nick):
            welcome.append(
                f"@badge-info=;badges=;color=;display-name={nick};emote-sets=0;"
                f"user-id={zlib.crc32(nick.encode())};user-type= {_SERVER} GLOBALUSERSTATE"
            )
        self.send(welcome)

    def _join(self, name: str) -> None:
        server, nick = self.server, self.nick
        server.join_log.append((asyncio.get_running_loop().time(), self.id, name))
        if not _CHANNEL.fullmatch(name) or name in server.suspended_channels:
            self.send(
                [
                    f"@msg-id=msg_channel_suspended {_SERVER} NOTICE #{name} "
                    ":This channel does not exist or has been suspended."
                ]
            )
            return
        if name in self.channels:
            return
        self.send(
            [
                f":{nick}!{nick}@{nick}.tmi.twitch.tv JOIN #{name}",
                f":{nick}.tmi.twitch.tv 353 {nick} = #{name} :{nick}",
                f":{nick}.tmi.twitch.tv 366 {nick} #{name} :End of /NAMES list",
                f"@emote-only=0;followers-only=-1;r9k=0;room-id={server.source.room_id(name)};"
                f"slow=0;subs-only=0 {_SERVER} ROOMSTATE #{name}",
            ]
        )
        self.channels.add(name)
        server.enter(self, name)

    def _part(self, name: str) -> None:
        if name in self.channels:
            self.channels.discard(name)
            self.server.leave(self, name)
            self.send([f":{self.nick}!{self.nick}@{self.nick}.tmi.twitch.tv PART #{name}"])
