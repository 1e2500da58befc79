"""One IRC connection's read path, fed from an in-memory stream (no network)."""

import asyncio

from chatpulse.ingest.irc.connection import IrcConnection, Received


async def read_all(chunks: list[bytes]) -> tuple[IrcConnection, list[list[Received]]]:
    batches: list[list[Received]] = []

    async def deliver(conn: IrcConnection, batch: list[Received]) -> None:
        batches.append(batch)

    conn = IrcConnection(
        7,
        "127.0.0.1",
        1,
        ssl_context=None,
        nick="justinfan42",
        token=None,
        deliver=deliver,
        ping_interval_s=60.0,
        pong_timeout_s=10.0,
        connect_timeout_s=1.0,
    )
    reader = asyncio.StreamReader()

    async def feed() -> None:  # one chunk per socket read
        for chunk in chunks:
            reader.feed_data(chunk)
            await asyncio.sleep(0.01)
        reader.feed_eof()

    await asyncio.gather(feed(), conn._read_loop(reader))
    return conn, batches


async def test_lines_split_across_reads_and_several_per_read() -> None:
    long_text = "x" * 3000
    stream = (
        b":tmi.twitch.tv 001 justinfan42 :Welcome, GLHF!\r\n"
        b":justinfan42!justinfan42@justinfan42.tmi.twitch.tv JOIN #chan\r\n"
        b"@id=1;tmi-sent-ts=5 :a!a@a PRIVMSG #chan :" + long_text.encode() + b"\r\n"
        b"@id=2 :a!a@a PRIVMSG #chan :caf\xc3\xa9 \xf0\x9f\x98\x80\r\n"
        b"PING :tmi.twitch.tv\n"  # a bare LF is accepted too
        b":tmi.twitch.tv RECONNECT\r\n"
    )
    # cut in the middle of a line and of a multi-byte character
    cut1, cut2 = 20, stream.index(b"\xf0") + 2
    conn, batches = await read_all([stream[:cut1], stream[cut1:cut2], stream[cut2:]])
    lines = [r for batch in batches for r in batch]
    assert [r.msg.command for r in lines if r.msg] == [
        "001",
        "JOIN",
        "PRIVMSG",
        "PRIVMSG",
        "PING",
        "RECONNECT",
    ]
    assert lines[2].msg is not None
    assert lines[2].msg.trailing == long_text
    assert lines[3].raw == "@id=2 :a!a@a PRIVMSG #chan :café 😀"
    assert all(r.connection == 7 and r.error is None for r in lines)
    assert len(batches) == 2  # the first read held no whole line
    assert conn.joined == {"chan"}
    assert conn.reconnect_requested.is_set()
    assert conn.closed.is_set()  # EOF closes the connection


async def test_bad_lines_are_delivered_with_a_reason() -> None:
    _, batches = await read_all([b"\xff\xfebad\r\n@only-tags\r\n\r\n:tmi.twitch.tv PING :x\r\n"])
    (batch,) = batches
    assert [(r.raw, r.error.reason if r.error else None) for r in batch] == [
        ("\ufffd\ufffdbad", "invalid UTF-8"),
        ("@only-tags", "tags without a command"),
        (":tmi.twitch.tv PING :x", None),
    ]


async def test_an_unterminated_giant_line_closes_the_connection() -> None:
    conn, batches = await read_all([b"PRIVMSG #c :" + b"y" * (2 * 1024 * 1024)])
    assert batches == []
    assert conn.closed.is_set()


async def test_an_oversized_line_is_dead_lettered_and_the_connection_reads_on() -> None:
    # One over the bound within a read, one longer than a read (cut while it streams in):
    # each becomes one parse error with its length; the lines around them are kept.
    first = b"@id=1 :a!a@a PRIVMSG #chan :before\r\n"
    inline = b"@id=big1 :a!a@a PRIVMSG #chan :" + b"x" * 70_000 + b"\r\n"
    streamed = b"@id=big2 :a!a@a PRIVMSG #chan :" + b"y" * 300_000 + b"\r\n"
    last = b"@id=2 :a!a@a PRIVMSG #chan :after\r\n"
    chunks = [first + inline[:1000], inline[1000:] + streamed[:100_000]]
    chunks += [streamed[i : i + 100_000] for i in range(100_000, len(streamed), 100_000)]
    chunks.append(last)
    _conn, batches = await read_all(chunks)
    lines = [line for batch in batches for line in batch]
    assert [line.msg.tags["id"] if line.msg else line.error.reason for line in lines] == [
        "1",
        "line over 65536 bytes (70031 characters)",
        f"line over 65536 bytes ({len(streamed)} bytes), dropped",
        "2",
    ]
    assert lines[2].raw.startswith("@id=big2 ")
    assert len(lines[2].raw) == 16_384  # only the head is kept for the dead letter
