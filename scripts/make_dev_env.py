"""Write `.env` from `.env.example` with a freshly generated Ed25519 key pair, NATS
passwords and a fresh key for the webhooks' secrets at rest.

`make run` calls it when `.env` is absent, so that a new checkout does not sign
tokens with the key committed in the repository.
"""

from __future__ import annotations

import re
import secrets
import sys
from pathlib import Path

from cryptography.fernet import Fernet

from clarin_common.auth import generate_key_pair

ROOT = Path(__file__).resolve().parents[1]


def render(example: str, private: str, public: str) -> str:
    def replace(name: str, pem: str, text: str) -> str:
        pattern = re.compile(rf'^{name}="-----BEGIN [^"]*"\n', re.MULTILINE)
        if not pattern.search(text):
            raise SystemExit(f'.env.example has no {name}="…" block')
        return pattern.sub(lambda _: f'{name}="{pem}"\n', text, count=1)

    text = replace("CLARIN_JWT_PUBLIC_KEY", public, example)
    text = replace("AUTH_JWT_PRIVATE_KEY", private, text)
    # a NATS password per role for the embedded server (infra/nats/auth.conf)
    text = re.sub(
        r"^(NATS_[A-Z]+_PASSWORD)=.*$",
        lambda m: f"{m.group(1)}={secrets.token_hex(16)}",
        text,
        flags=re.MULTILINE,
    )
    text, found = re.subn(
        r"^WEBHOOKS_SECRET_KEY=.*$",
        lambda _: f"WEBHOOKS_SECRET_KEY={Fernet.generate_key().decode()}",
        text,
        count=1,
        flags=re.MULTILINE,
    )
    if not found:
        raise SystemExit(".env.example has no WEBHOOKS_SECRET_KEY= line")
    return text.replace(
        "# The committed development signing key (refused outside dev/test).",
        "# Generated for this checkout by scripts/make_dev_env.py.",
    )


def main() -> int:
    target = ROOT / ".env"
    if target.exists():
        return 0
    private, public = generate_key_pair()
    target.write_text(render((ROOT / ".env.example").read_text(), private, public))
    target.chmod(0o600)
    print("wrote .env with a fresh development key pair", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
