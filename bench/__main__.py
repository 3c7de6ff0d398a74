"""`make bench`: the benchmark suite. Figures only; nothing here asserts a timing.

    python -m bench                 # every suite (about 8 minutes on 2 cores)
    python -m bench pipeline e2e    # some
    python -m bench --quick         # fewer runs: a smoke test of the suite itself
    python -m bench --summary       # only rebuild the table from bench/results/*.json

Each suite writes ``bench/results/<suite>.json``; the table of figures against their
targets goes to ``bench/results/summary.md``, to the terminal and into README.md's
"Performance" section.
"""

from __future__ import annotations

import argparse
import json
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime

from bench import accept, e2e, fairness, footprint, pipeline, push, report, scale, search
from bench.common import RESULTS, Result

SUITES: dict[str, Callable[[bool], Result]] = {
    "pipeline": pipeline.main,
    "accept": accept.main,
    "e2e": e2e.main,
    "push": push.main,
    "footprint": footprint.main,
    "scale": scale.main,
    "fairness": fairness.main,
    "search": search.main,
}


def write_summary(*, readme: bool) -> list[str]:
    """The tables, from every suite's latest results; into README.md only when ``readme``."""
    results = {path.stem: json.loads(path.read_text()) for path in RESULTS.glob("*.json")}
    dates = sorted(r["measured_at"][:10] for r in results.values())
    cpus = {r["machine"]["cpus"] for r in results.values()}
    commits = sorted({str(r.get("commit")) for r in results.values()})
    when = f"{dates[0]} to {dates[-1]}" if dates and dates[0] != dates[-1] else \
        dates[0] if dates else "never"
    quick = sorted(name for name, r in results.items() if r.get("quick"))
    took = sum(r.get("seconds") or 0 for r in results.values())
    lines = [f"Measured {when} on {'/'.join(map(str, sorted(cpus)))} cores by `make bench` "
             f"(commit {', '.join(commits)}; {took / 60:.1f} minutes)"
             + (f"; **quick runs** (not for comparison): {', '.join(quick)}" if quick else "")
             + ".", "", *report.summary(results)]
    for name, table in (("pipeline", pipeline.table), ("e2e", report.e2e_table),
                        ("accept", report.accept_table), ("push", report.push_table),
                        ("scale", scale.table), ("fairness", fairness.table),
                        ("search", search.table)):
        if name in results:
            lines += ["", *table(Result(name, results[name]["figures"]))]
    notes = [note for r in results.values() for note in r.get("notes", [])]
    if notes:
        lines += ["", *(f"- {note}" for note in notes)]
    (RESULTS / "summary.md").write_text("\n".join(lines) + "\n")
    if readme:
        _update_readme(lines)
    return lines


def _update_readme(lines: list[str]) -> None:
    """Put the tables into README.md's Performance section, between its markers."""
    readme = RESULTS.parent.parent / "README.md"
    text = readme.read_text()
    begin, end = "<!-- bench:begin -->", "<!-- bench:end -->"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        readme.write_text(f"{head}{begin}\n" + "\n".join(lines) + f"\n{end}"
                          + rest.split(end, 1)[1])


def _exit_on(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("suites", nargs="*", metavar="SUITE",
                        help=f"some of: {', '.join(SUITES)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="fewer runs (a smoke test)")
    parser.add_argument("--summary", action="store_true", help="only rebuild the tables")
    args = parser.parse_args()
    unknown = set(args.suites) - set(SUITES)
    if unknown:
        parser.error(f"unknown suite(s): {', '.join(sorted(unknown))}")
    # The stacks run in sessions of their own, out of reach of a terminal's signals: a
    # SIGTERM or SIGHUP to the bench unwinds it, so that each suite stops what it started.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _exit_on)
    started_all = time.monotonic()
    if not args.summary:
        for name in args.suites or SUITES:
            started = time.monotonic()
            print(f"\n## {name} ({datetime.now(UTC):%H:%M:%S})", flush=True)
            result = SUITES[name](args.quick)
            path = result.save(quick=args.quick, seconds=time.monotonic() - started)
            print(f"  -> {path.relative_to(RESULTS.parent.parent)} "
                  f"in {time.monotonic() - started:.0f} s", flush=True)
    # Only a full run of every suite speaks for the README.
    complete = not args.summary and not args.quick and not args.suites
    print("\n" + "\n".join(write_summary(readme=complete or args.summary)))
    print(f"\n(make bench: {(time.monotonic() - started_all) / 60:.1f} minutes)")


if __name__ == "__main__":
    main()
