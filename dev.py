#!/usr/bin/env python3
"""One-command set-up and entry points for a fresh clone (needs only Python 3.11+).

    python3 dev.py test   [pytest args]   # the whole test suite (CI profile)
    python3 dev.py fuzz   [fuzz args]     # a fuzz campaign on the embedded target
    python3 dev.py stateful ARGS...       # any `python -m stateful` subcommand

Each command first makes sure .venv exists and holds this project (editable)
with its test extras and real Nova (the ``nova`` extra, so that tests/nova
runs instead of skipping); the install is redone only when pyproject.toml
changes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PYTHON = VENV / "bin" / "python"
STAMP = VENV / ".installed-from"
EXTRAS = "test,nova"


def ensure_environment() -> None:
    if sys.version_info < (3, 11):
        sys.exit("dev.py: Python 3.11 or newer is needed")
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + EXTRAS.encode()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == wanted and PYTHON.exists():
        return
    if not PYTHON.exists():
        print("dev.py: creating .venv", file=sys.stderr)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("dev.py: installing the project into .venv", file=sys.stderr)
    subprocess.run(
        [str(PYTHON), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-e", f".[{EXTRAS}]"],
        cwd=ROOT,
        check=True,
    )
    STAMP.write_text(wanted)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"test", "fuzz", "stateful"}:
        print(__doc__, file=sys.stderr)
        return 2
    ensure_environment()
    command, rest = argv[0], argv[1:]
    if command == "test":
        args = ["-m", "pytest", "--hypothesis-profile=ci", *rest]
    elif command == "fuzz":
        args = ["-m", "stateful", "fuzz", *(rest or ["--duration", "60"])]
    else:
        args = ["-m", "stateful", *rest]
    os.chdir(ROOT)
    os.execv(str(PYTHON), [str(PYTHON), *args])
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
