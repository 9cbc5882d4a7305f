"""What every colorray command line shares: one-line errors instead of usage dumps or tracebacks."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad argument prints a single ``error: ...`` line and exits with status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def fail(error: object, code: int = 2) -> int:
    """Print the first line of ``error`` as ``error: ...`` on stderr; return the exit status."""
    text = str(error).strip()
    print(f"error: {text.splitlines()[0] if text else type(error).__name__}", file=sys.stderr)
    return code
