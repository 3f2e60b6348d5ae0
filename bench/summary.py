"""The benchmark records as a table: ``python bench/summary.py [--since ISO-DATE] [--markdown]``.

By default the newest record of each (name, machine, anchor, settings) is shown; ``--all`` shows every one.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results.jsonl"


def load(path: Path, since: str = "") -> list[dict]:
    """The speed comparisons of ``path`` (records with an anchor), dated at or after ``since``. Quality records
    (frontier, quickstart, long runs, MNIST in seconds) and profiles have no anchor: RESULTS.md tabulates those."""
    if not path.is_file():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if r.get("date", "") >= since and "anchor" in r]


def newest(records: list[dict]) -> list[dict]:
    latest: dict[tuple, dict] = {}
    for r in records:  # the file is in time order: later records replace earlier ones
        key = (r["name"], r["machine"], r["anchor"], r.get("theirs_settings"), r.get("ours_settings"),
               r.get("omp_wait_policy"))
        latest[key] = r
    return list(latest.values())


def table(records: list[dict], markdown: bool) -> str:
    cols = ["name", "machine", "anchor", "ours", "theirs", "unit", "ratio", "paired", "settings", "date"]
    rows = []
    for r in records:
        settings = (f"ours {r['ours_settings']} vs {r['theirs_settings']}" if "ours_settings" in r
                    else f"{r.get('after', '')}, {r.get('settings', '')}, OMP_WAIT_POLICY={r.get('omp_wait_policy')}")
        rows.append([r["name"], r["machine"], r["anchor"], f"{r['ours']:,.1f}", f"{r['theirs']:,.1f}", r["unit"],
                     f"{r['ratio']:.2f}", f"{r['ratio_paired']:.2f}" if "ratio_paired" in r else "",
                     settings, r["date"][:10]])
    if markdown:
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(str(x)) for x in [c] + [row[i] for row in rows]) for i, c in enumerate(cols)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*cols)] + [fmt.format(*row) for row in rows])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--since", default="", help="only records dated at or after this ISO date/time (UTC)")
    p.add_argument("--all", action="store_true", help="every record, not only the newest of each kind")
    p.add_argument("--markdown", action="store_true")
    args = p.parse_args(argv)
    records = load(args.results, args.since)
    if not args.all:
        records = newest(records)
    print(table(records, args.markdown) if records else f"no records in {args.results} since {args.since or 'ever'}")


if __name__ == "__main__":
    main(sys.argv[1:])
