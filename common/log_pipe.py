"""`python -m common.log_pipe FILE`: copy stdin to FILE, rotating it so a service's log never grows without bound.

`./manage.sh up` runs the producer and the scaler in the background with their
output piped through this (`service > >(python -m common.log_pipe log)`), so
everything they print, tracebacks of a crash included, lands in `.run/logs`,
and a long run or a crash loop keeps at most `SERVICE_LOG_BACKUPS` older files
of `SERVICE_LOG_MAX_BYTES` each (`FILE.1` the newest of them). Lines are never
split between two files. It exits when the service's output closes.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from common.env import SettingsError, env_int

#: Default of SERVICE_LOG_MAX_BYTES: a log file is rotated before it passes this size.
DEFAULT_MAX_BYTES = 5 * 1024 * 1024
#: Default of SERVICE_LOG_BACKUPS: rotated files kept (FILE.1 ... FILE.N).
DEFAULT_BACKUPS = 2


@dataclass(frozen=True)
class LogPipeSettings:
    max_bytes: int = DEFAULT_MAX_BYTES
    backups: int = DEFAULT_BACKUPS

    @classmethod
    def from_environment(cls) -> LogPipeSettings:
        return cls(
            env_int("SERVICE_LOG_MAX_BYTES", DEFAULT_MAX_BYTES, minimum=1),
            env_int("SERVICE_LOG_BACKUPS", DEFAULT_BACKUPS, minimum=0),
        )


class RotatingFile:
    def __init__(self, path: Path, settings: LogPipeSettings) -> None:
        self.path = path
        self.settings = settings
        self.output = path.open("ab")
        self.size = self.output.tell()

    def write(self, line: bytes) -> None:
        if self.size and self.size + len(line) > self.settings.max_bytes:
            self._rotate()
        self.output.write(line)
        self.output.flush()
        self.size += len(line)

    def _rotate(self) -> None:
        self.output.close()
        for number in range(self.settings.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{number}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{number + 1}"))
        if self.settings.backups > 0:
            self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink(missing_ok=True)
        self.output = self.path.open("ab")
        self.size = 0

    def close(self) -> None:
        self.output.close()


def copy(source: BinaryIO, sink: RotatingFile) -> None:
    for line in iter(source.readline, b""):
        sink.write(line[: sink.settings.max_bytes])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.log_pipe", description=__doc__)
    parser.add_argument("file", type=Path)
    args = parser.parse_args(argv)
    try:
        settings = LogPipeSettings.from_environment()
    except SettingsError as error:
        parser.error(str(error))
    sink = RotatingFile(args.file, settings)
    try:
        copy(sys.stdin.buffer, sink)
    finally:
        sink.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
