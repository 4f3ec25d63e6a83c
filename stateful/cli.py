"""``python -m stateful SUBCOMMAND``: fuzz, replay, faults, bench (see shared/CONTRACT.md).

Exit codes for every subcommand: 0 nothing wrong found, 1 a finding, 2 a
harness or usage error (and 130 for a bench stopped by Ctrl-C, which has
nothing to report).  Usage errors are one line on stderr naming the option
or file.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import sys
from typing import Callable, Sequence

from stateful.errors import HarnessError, UsageError

EXIT_OK, EXIT_FINDING, EXIT_HARNESS = 0, 1, 2
#: a run stopped by Ctrl-C before it had anything to report (the shell's convention: 128 + SIGINT)
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line and exit code 2, as CONTRACT asks."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def _positive(convert: Callable[[str], float]) -> Callable[[str], float]:
    """An argparse ``type``: ``convert``, refusing zero and below, infinity and nan."""

    def parse(text: str) -> float:
        value = convert(text)
        if not 0 < value < math.inf:  # also refuses nan
            raise argparse.ArgumentTypeError(f"must be a positive number, not {text}")
        return value

    parse.__name__ = convert.__name__  # argparse's "invalid int value" names the type by it
    return parse


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m stateful", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    fuzz = commands.add_parser("fuzz", help="run a fuzz campaign and report")
    fuzz.add_argument("--target", default="model", help="model (default) or nova")
    fuzz.add_argument("--fault", action="append", default=[], help="turn on a fault switch (repeatable; 'all')")
    fuzz.add_argument("--faults-from", action="append", default=[], metavar="FILE.py", help="extra fault switches")
    fuzz.add_argument("--max-examples", type=int, help="stop after N examples")
    fuzz.add_argument("--duration", type=float, help="stop after this many wall-clock seconds")
    fuzz.add_argument("--seed", type=int, help="deterministic campaign")
    fuzz.add_argument("--workers", type=int, default=1, help="parallel worker processes sharing the database")
    fuzz.add_argument("--db", default=".hypothesis/examples", help="directory, redis://host:port/N, or none")
    fuzz.add_argument("--regressions", default="tests/regressions", help="where regression files are written")
    fuzz.add_argument("--profile", default="dev", help="Hypothesis settings profile: ci, dev, nightly")
    fuzz.add_argument("--schedule", default="virtual", help="virtual (default), pct, sequential, wallclock")
    fuzz.add_argument(
        "--shrink-seconds",
        type=float,
        default=300.0,
        help="bound on each of the two stages of shrinking one finding: "
        "Hypothesis's shrink, then minimizing its recording by replay",
    )
    fuzz.add_argument(
        "--serializable",
        action="store_true",
        help="also check that each concurrent step ends as some serial order of its operations would",
    )
    fuzz.add_argument("--report-dir", default="reports", help="where fuzz-report.html and .json are written")
    fuzz.add_argument("--json", action="store_true", help="print the report as one JSON object, nothing else")

    replay = commands.add_parser("replay", help="replay regression files")
    replay.add_argument("paths", nargs="+", metavar="FILE_OR_DIR")
    replay.add_argument("--timeline", action="store_true", help="print each interleaving as columns")
    replay.add_argument("--svg", metavar="PATH", help="write the interleaving as an SVG image")
    replay.add_argument("--faults-from", action="append", default=[], metavar="FILE.py")
    replay.add_argument(
        "--save-to", metavar="DIR", help="copy each file that replays as recorded into DIR (e.g. tests/regressions)"
    )

    faults = commands.add_parser("faults", help="list the fault catalogue")
    faults.add_argument("--target", action="append", help="only this target (repeatable)")
    faults.add_argument("--faults-from", action="append", default=[], metavar="FILE.py")
    faults.add_argument("--json", action="store_true")

    bench = commands.add_parser("bench", help="benchmarks, as ratios against in-process baselines")
    bench.add_argument("--quick", action="store_true", help="a run under 2 minutes")
    bench.add_argument("--json", action="store_true")
    bench.add_argument("--write-docs", metavar="PATH", help="also write the table as Markdown to PATH")
    bench.add_argument(
        "--seeds", type=_positive(int), help="seeds per fault and schedule strategy (default 5; --quick 1)"
    )
    bench.add_argument(
        "--seconds", type=_positive(float),
        help="wall-clock cap of each seed's campaign, of its shrink and of each frontrun run (default 60; --quick 2)",
    )
    bench.add_argument("--jobs", type=_positive(int), default=1, help="campaigns run at once, one process each")
    bench.add_argument("--svg", metavar="PATH", help="also draw the detection rows as an SVG image")
    bench.add_argument(
        "--render", metavar="FILE.json", help="print (and write) the table of a saved bench --json run; run nothing"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
        handler = {"fuzz": _fuzz, "replay": _replay, "faults": _faults, "bench": _bench}[args.command]
        return handler(args)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_HARNESS
    except HarnessError as error:
        print(f"harness error: {type(error).__name__}: {error}", file=sys.stderr)
        return EXIT_HARNESS


def _fuzz(args: argparse.Namespace) -> int:
    from stateful.campaign import Campaign, CampaignOptions, CampaignReport
    from stateful.progress import ProgressLine, summary
    from stateful.report import PeriodicReport, write_reports

    options = CampaignOptions(
        target=args.target,
        faults=args.fault,
        faults_from=args.faults_from,
        max_examples=args.max_examples,
        duration=args.duration,
        seed=args.seed,
        workers=args.workers,
        db=args.db,
        regressions=args.regressions,
        profile=args.profile,
        schedule=args.schedule,
        serializable=args.serializable,
        shrink_seconds=args.shrink_seconds,
    )
    progress = ProgressLine.for_stream(sys.stderr, enabled=not args.json)
    periodic = PeriodicReport(args.report_dir)

    def on_update(report: CampaignReport) -> None:
        progress.update(report)
        periodic.update(report)

    report = Campaign(options, on_update).run()
    progress.close()
    html_path, _ = write_reports(report, args.report_dir)
    if args.json:
        print(json.dumps(report.to_json()))
    else:
        print(summary(report, html_path))
    return report.exit_code


def _replay(args: argparse.Namespace) -> int:
    from pathlib import Path

    from stateful.faults import catalogue, load_faults_file
    from stateful.regression import files_under, load, write
    from stateful.replay import replay_case
    from stateful.timeline import recording_timeline, svg_timeline

    paths = list(files_under(args.paths))
    if not paths:
        raise UsageError(f"replay: no regression files under {' '.join(args.paths)}")
    for faults_file in args.faults_from:
        load_faults_file(faults_file)  # a bad --faults-from is an error even if no file names its faults

    @functools.cache
    def known(target: str) -> set[str]:
        return set(catalogue(target, args.faults_from))

    cases = [load(path, known) for path in paths]  # every file validated before any replay
    exit_code = EXIT_OK
    for case in cases:
        verdict = replay_case(case, args.faults_from)
        mark = "ok  " if verdict.as_recorded else "DIFF"
        print(f"{mark} {case.path}: {verdict.message}")
        if not verdict.as_recorded:
            exit_code = EXIT_FINDING
        elif args.save_to:
            print(f"     saved as {write(case, args.save_to)}")
        if args.timeline:
            print(recording_timeline(verdict.replay.recording))
        if args.svg:
            svg_path = Path(args.svg) if len(cases) == 1 else Path(args.svg) / f"{Path(str(case.path)).stem}.svg"
            svg_path.parent.mkdir(parents=True, exist_ok=True)
            svg_path.write_text(svg_timeline(verdict.replay.recording, f"{case.path}: {verdict.message}"))
    return exit_code


def _faults(args: argparse.Namespace) -> int:
    from stateful.faults import TARGETS, catalogue

    rows = []
    for target in args.target or TARGETS:
        for fault in catalogue(target, args.faults_from).values():
            rows.append({"name": fault.name, "target": fault.target, "bug": fault.bug, "description": fault.description})
    if args.json:
        print(json.dumps(rows))
        return EXIT_OK
    width = max([len(row["name"]) for row in rows] + [4])
    for row in rows:
        print(f"{row['name']:<{width}}  {row['target']:<5}  {row['description']}\n{'':<{width}}         {row['bug']}")
    return EXIT_OK


def _bench(args: argparse.Namespace) -> int:
    from stateful.bench import budget_for, load_results, measure, publish

    def log(line: str) -> None:
        print(f"bench: {line}", file=sys.stderr, flush=True)

    for option, path in (("--write-docs", args.write_docs), ("--svg", args.svg)):
        if path and not os.access(os.path.dirname(os.path.abspath(path)), os.W_OK):
            raise UsageError(f"{option} {path}: its directory does not exist or is not writable")
    if args.render:
        if args.quick or args.seeds or args.seconds or args.jobs != 1:
            raise UsageError("--render draws a saved run: --quick, --seeds, --seconds and --jobs are for running one")
        results = load_results(args.render)
    else:
        try:
            results = measure(args.quick, budget_for(args.quick, args.seeds, args.seconds), args.jobs, log)
        except KeyboardInterrupt:
            print("bench: interrupted; nothing written", file=sys.stderr)
            return EXIT_INTERRUPTED
    publish(results, as_json=args.json, docs_path=args.write_docs, svg_path=args.svg)
    return EXIT_OK
