#!/usr/bin/env python3
"""Write the secret env files that kustomize's secretGenerator reads (never in git).

    python3 scripts/k8s-secrets.py [--dir manifests/base/secrets] [--print-token]

Only missing files are written (mode 0600), so running it again keeps existing values;
delete a file to rotate its secret. `--print-token` prints the admin API token (for
`pkbs login --token ...`) and nothing else.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path

DEFAULT_DIR = Path(__file__).resolve().parent.parent / "manifests" / "base" / "secrets"


def config_safe_token() -> str:
    """A random token that nats-server reads as a string where its config names it as
    an environment variable ($NATS_PASSWORD): one starting with a digit or '-' would be
    read as a number, and the server would not start."""
    return "p" + secrets.token_urlsafe(32)


def contents() -> dict[str, str]:
    return {
        "nats.env": f"user=pkbs\npassword={config_safe_token()}\n",
        "admin.env": f"token={secrets.token_urlsafe(32)}\n",
        "webdav.env": f"user=pkbs\npassword={secrets.token_urlsafe(32)}\n",
        "jobtoken.env": f"secret={secrets.token_urlsafe(32)}\n",
    }


def write_missing(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in contents().items():
        path = directory / name
        if path.exists():
            continue
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        written.append(path)
    return written


def read_token(directory: Path) -> str:
    for line in (directory / "admin.env").read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "token":
            return value.strip()
    raise SystemExit(f"no token= line in {directory / 'admin.env'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--print-token", action="store_true")
    args = parser.parse_args(argv)
    written = write_missing(args.dir)
    if args.print_token:
        print(read_token(args.dir))
        return 0
    for path in written:
        print(f"secrets: wrote {path}", file=sys.stderr)
    if not written:
        print(f"secrets: {args.dir} already complete (delete a file to rotate it)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
