"""The command line: ``python -m tinyattn.exercises grade SUBMISSION.ipynb [MORE ...]``.

Options ``--json results.json``, ``--timeout 60`` (seconds per cell), ``--jobs 1`` (kernels at a
time); see tinyattn.exercises.grader. Exit status: 0, 2 for a usage error, 130 after Ctrl-C
(the submissions graded by then are written).
"""

from __future__ import annotations

import argparse
import sys

from . import grader


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tinyattn.exercises",
                                     description="Homework tools for tinyattn's exercise notebooks.")
    commands = parser.add_subparsers(dest="command", required=True)
    g = commands.add_parser("grade", help="execute submissions and run every checker on them",
                            description=grader.__doc__.split("\n\n")[0])
    g.add_argument("submissions", nargs="+",
                   help="notebooks (.ipynb), or folders: every .ipynb directly inside is one student")
    g.add_argument("--json", metavar="RESULTS.json",
                   help="also write the results (Gradescope's results.json shape for one submission)")
    g.add_argument("--timeout", type=float, default=60.0,
                   help="seconds each cell (the student's and each check) may run (default 60)")
    g.add_argument("--jobs", type=int, default=1,
                   help="submissions graded at a time, each in its own kernel (default 1)")
    args = parser.parse_args(argv)
    try:
        submissions = grader.find_submissions(args.submissions)
    except FileNotFoundError as e:
        parser.error(str(e))
    if not submissions:
        parser.error(f"no .ipynb notebooks in {' '.join(args.submissions)}")
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    try:
        grader.check_timeout(args.timeout)
        if args.json:
            grader.check_json_path(args.json)
    except ValueError as e:
        parser.error(str(e))
    try:
        grader.grade(submissions, json_path=args.json, timeout=args.timeout, jobs=args.jobs)
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
