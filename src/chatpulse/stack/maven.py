"""Resolve a server's jars from Maven Central with ``mvn``, once, into a cache outside the repo.

Layout: ``<cache>/<server>-<version>/lib/*.jar`` (``<cache>`` is ``~/.cache/chatpulse/jars``, or
``$XDG_CACHE_HOME/chatpulse/jars``). Maven writes into a temporary sibling directory that is
renamed into place only when it succeeded, so an interrupted download is never taken for complete.
"""

import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from chatpulse.stack.errors import MavenError

__all__ = ["Artifact", "default_cache_dir", "pom_xml", "resolve_jars"]

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Artifact:
    """A Maven coordinate ``group:artifact:version``."""

    group: str
    artifact: str
    version: str

    def __str__(self) -> str:
        return f"{self.group}:{self.artifact}:{self.version}"


def default_cache_dir() -> Path:
    """Where resolved jars are kept (shared by every stack of this user)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "chatpulse" / "jars"


def pom_xml(name: str, artifacts: Sequence[Artifact]) -> str:
    """A throw-away POM whose only purpose is to list the artifacts to copy."""
    deps = "\n".join(
        "    <dependency>"
        f"<groupId>{escape(a.group)}</groupId>"
        f"<artifactId>{escape(a.artifact)}</artifactId>"
        f"<version>{escape(a.version)}</version>"
        "</dependency>"
        for a in artifacts
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>chatpulse.stack</groupId>
  <artifactId>{escape(name)}-jars</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
{deps}
  </dependencies>
</project>
"""


def _find_mvn() -> str:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise MavenError(
            "Maven (mvn) is required to download the Kafka and Cassandra jars but is not on PATH; "
            "install Maven (e.g. apt-get install maven)"
        )
    return mvn


def resolve_jars(
    name: str,
    version: str,
    artifacts: Sequence[Artifact],
    *,
    cache_dir: Path | None = None,
    java_home: Path | None = None,
    progress: Progress | None = None,
) -> Path:
    """Return ``<cache>/<name>-<version>/lib``, downloading it with Maven first when missing."""
    root = cache_dir or default_cache_dir()
    final = root / f"{name}-{version}"
    lib = final / "lib"
    if lib.is_dir():
        return lib
    mvn = _find_mvn()
    root.mkdir(parents=True, exist_ok=True)
    say = progress or logger.info
    say(f"downloading {name} {version} jars from Maven Central (once; cached in {final})")
    work = Path(tempfile.mkdtemp(prefix=f".{name}-{version}.", dir=root))
    try:
        (work / "pom.xml").write_text(pom_xml(name, artifacts), encoding="utf-8")
        env = dict(os.environ)
        if java_home is not None:
            env["JAVA_HOME"] = str(java_home)
        command = [
            mvn,
            "-B",
            "-q",
            "-f",
            str(work / "pom.xml"),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={work / 'lib'}",
        ]
        done = subprocess.run(  # noqa: S603 - fixed arguments, no shell
            command, cwd=work, env=env, capture_output=True, text=True, check=False
        )
        if done.returncode != 0 or not any((work / "lib").glob("*.jar")):
            tail = " | ".join((done.stdout + done.stderr).strip().splitlines()[-5:])
            raise MavenError(f"mvn could not resolve {name} {version}: {tail or 'no jars copied'}")
        try:
            work.rename(final)
        except OSError:
            # Another process finished the same download first: use theirs.
            if not lib.is_dir():
                raise
        say(f"{name} {version}: {sum(1 for _ in lib.glob('*.jar'))} jars ready")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return lib
