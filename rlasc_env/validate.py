"""Replay results files on their pinned ids: ``python -m rlasc_env.validate FILE...``.

Exit status 0 when every file replays (every protocol image present, the id's pins, each return within 1e-5), 1
otherwise, with one line per problem naming the file, seed and image (:func:`rlasc_env.results.validate_results`).
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", help="results/<id name>/<task>/<algo>.json files")
    parser.add_argument("--atol", type=float, default=None, help="largest return difference accepted (1e-5)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    import torch

    from .results import REPLAY_ATOL, ResultsError, validate_results

    torch.set_num_threads(args.threads)
    failed = 0
    for path in args.files:
        try:
            replay = validate_results(path, atol=REPLAY_ATOL if args.atol is None else args.atol)
        except (ResultsError, FileNotFoundError, ValueError) as exc:
            print(f"REFUSED {path}: {exc}")
            failed += 1
            continue
        if replay.ok:
            worst = max(replay.max_diff.values(), default=0.0)
            print(f"ok {path}: {len(replay.max_diff)} seed(s) replay, largest return difference {worst:.1e}")
        else:
            failed += 1
            print(f"REFUSED {path}:")
            for problem in replay.problems[:50]:
                print(f"  {problem}")
            if len(replay.problems) > 50:
                print(f"  ... and {len(replay.problems) - 50} more")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
