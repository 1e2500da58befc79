"""Find the Java 17 runtime both servers run on.

Cassandra 5.0 installs a SecurityManager at start, which JDK 24+ refuses, so a newer default
``java`` (e.g. a Temurin 25 on PATH) must not be picked; Kafka runs on the same JVM for simplicity.
"""

import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

from chatpulse.stack.errors import JavaNotFoundError

__all__ = ["REQUIRED_JAVA", "find_java", "java_major_version"]

REQUIRED_JAVA = 17
_DEBIAN_JAVA17 = Path("/usr/lib/jvm/java-17-openjdk-amd64")
_VERSION = re.compile(r'version "(\d+)(?:\.(\d+))?')


def java_major_version(java: Path) -> int | None:
    """The major version ``java -version`` reports (None when it does not run)."""
    try:
        done = subprocess.run(  # noqa: S603 - a path we chose, no shell
            [str(java), "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    match = _VERSION.search(done.stderr + done.stdout)
    if match is None:
        return None
    major = int(match.group(1))
    # Java 8 and older report "1.8.0_x".
    return int(match.group(2) or 0) if major == 1 else major


def _candidates() -> list[Path]:
    found: list[Path] = []
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        found.append(Path(java_home) / "bin" / "java")
    found.append(_DEBIAN_JAVA17 / "bin" / "java")
    on_path = shutil.which("java")
    if on_path:
        found.append(Path(on_path))
    return found


@cache
def find_java() -> Path:
    """The ``java`` binary of a Java 17 runtime: $JAVA_HOME, the Debian JDK 17, then PATH."""
    seen: list[str] = []
    for java in _candidates():
        if not java.is_file():
            continue
        major = java_major_version(java)
        if major == REQUIRED_JAVA:
            return java
        seen.append(f"{java} is Java {major if major is not None else '?'}")
    detail = f" ({'; '.join(seen)})" if seen else ""
    raise JavaNotFoundError(
        f"Java {REQUIRED_JAVA} is required to run Kafka and Cassandra but none was found{detail}; "
        f"install OpenJDK {REQUIRED_JAVA} or set JAVA_HOME to one"
    )
