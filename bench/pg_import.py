"""Time ``opentime import`` of generated profiles into PostgreSQL (COPY + one merge per batch).

    python3 -m bench.pg_import                  # 1,000,000 profiles, ~1 min
    python3 -m bench.pg_import --rows 100000    # quicker

Generates a JSONL file of ``--rows`` profiles like the demo's (a few hundred bytes each), creates a
fresh schema in the test database at 127.0.0.1:5432 (``--url`` to use another server), runs the
real command (``python3 -m app import FILE --database-url URL``) in a subprocess, prints its wall time
and rows per second, then re-runs it (every row unchanged) and drops the schema.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import orjson

from tests.servers import clean_env

DEFAULT_URL = "postgresql://root@127.0.0.1:5432/test"


def write_profiles(path: Path, rows: int) -> None:
    with path.open("wb", buffering=1 << 20) as out:
        for i in range(rows):
            row = {
                "recipient_id": f"cust-{i:07d}",
                "first_name": f"Name{i % 997}",
                "tier": ("gold", "silver", "bronze")[i % 3],
                "points": i * 7 % 10_000,
                "city": f"City{i % 113}",
                "recommendations": [{"sku": f"sku-{(i + k) % 5000}", "title": f"Item {k}"} for k in range(3)],
            }
            out.write(orjson.dumps(row) + b"\n")


async def execute(url: str, statement: str) -> None:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def timed_import(path: Path, url: str, batch_size: int) -> tuple[float, str]:
    command = [sys.executable, "-m", "app", "import", str(path), "--database-url", url]
    command += ["--batch-size", str(batch_size)]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=clean_env(), check=False)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"import failed ({result.returncode}):\n{result.stdout}\n{result.stderr[-2000:]}")
    return elapsed, result.stdout.strip()


def main() -> None:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--url", default=DEFAULT_URL, help="server and database (a fresh schema is made)")
    args = parser.parse_args()
    schema = f"bench_{secrets.token_hex(4)}"
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "profiles.jsonl"
        start = time.perf_counter()
        write_profiles(path, args.rows)
        size = path.stat().st_size
        print(f"generated {args.rows:,} profiles ({size / 1e6:.0f} MB) in {time.perf_counter() - start:.1f}s")
        asyncio.run(execute(args.url, f"CREATE SCHEMA {schema}"))
        try:
            url = f"{args.url}?search_path={schema}"
            for label in ("import (all new)", "re-import (all unchanged)"):
                elapsed, report = timed_import(path, url, args.batch_size)
                print(f"{label}: {elapsed:.1f}s, {args.rows / elapsed:,.0f} rows/s -- {report}")
        finally:
            asyncio.run(execute(args.url, f"DROP SCHEMA {schema} CASCADE"))


if __name__ == "__main__":
    main()
