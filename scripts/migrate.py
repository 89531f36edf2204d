"""Apply every service's migrations (each service also does it at start-up)."""

from __future__ import annotations

import os
from pathlib import Path

from clarin_common.db import ensure_database_sync, migrate_sync
from clarin_common.settings import CommonSettings

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    os.chdir(ROOT)
    dsn = CommonSettings().database_url
    ensure_database_sync(dsn)
    for migrations in sorted(ROOT.glob("services/*/migrations")):
        if not any(migrations.glob("*.sql")):
            continue
        schema = migrations.parent.name
        applied = migrate_sync(dsn, schema, migrations)
        print(f"{schema}: {len(applied)} migration(s) applied")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
