"""First-run helper for `make run`: create `.env` from `.env.example` with a fresh client key.

The key is printed once, here, and never again (the gateway does not log keys).
Run as `python -m gateway.dotenv_setup`; it does nothing when `.env` exists.
"""
import os
import secrets
import sys
from pathlib import Path


def create_env(target=Path(".env"), template=Path(".env.example")):
    """Write `target` from `template` with a new API key; return the key, or None if it existed."""
    if target.exists():
        return None
    key = "sk-" + secrets.token_urlsafe(32)
    lines = template.read_text(encoding="utf-8").splitlines() if template.exists() else []
    lines = [f"API_KEYS={key}" if line.startswith("API_KEYS=") else line for line in lines]
    if not any(line.startswith("API_KEYS=") for line in lines):
        lines.append(f"API_KEYS={key}")
    descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as env_file:
        env_file.write("\n".join(lines) + "\n")
    return key


def main():
    """Create .env when missing and show its key once."""
    key = create_env()
    if key:
        print("Created .env with a new client API key (shown only now, keep it safe):",
              file=sys.stderr)
        print(f"    {key}", file=sys.stderr)
        print("Add CLOUDFLARE_ACCOUNT_ID and CLOUDFLARE_API_TOKEN to .env to reach Workers AI.",
              file=sys.stderr)


if __name__ == "__main__":
    main()
