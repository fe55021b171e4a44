"""How far can exact policy improvement over the preview rule go? Coordinate ascent with peeks, on the protocol.

Rollout policy iteration (agents/rollout.py) fits, from rollouts on training images, one step of policy improvement
over its current policy: per concept, the level of best return with every other concept at the policy's level. This
script performs that step *exactly*, on each test image, by peeking at returns (so it is a reference, like greedy, not
a legal policy): starting from a leaderboard row's allocation (default the preview rule's), it visits the concepts in
coding order and sets each to the level of best episode return with the others at their current levels (the return
is L(0) - L(final) whatever the path, eq. 14, so one ``EpisodeCore.finish`` pass per candidate). ``--passes P``
repeats the sweep: after enough passes the allocation is a coordinate-wise local optimum of the return.

The benchmark score of each pass says how much of greedy's lead an observation-only policy could gain if it learned
one (two, ...) exact improvement steps perfectly: the ceiling of rollout policy iteration's fit at that many
iterations.

    python experiments/rollout/coordinate_ascent.py --task segmentation --passes 2 --out runs/ca_seg.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="segmentation")
    parser.add_argument("--start", default="preview_rule", help="results row whose allocation starts the ascent")
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--chunk", type=int, default=8, help="images side by side")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from rlasc_env.engine import copy_slot, make_engine, reset_slots
    from rlasc_env.registration import CURRENT_ID
    from rlasc_env.results import read_results
    from rlasc_env.score import benchmark_score

    name = CURRENT_ID.split("/")[-1]
    doc = read_results(ROOT / "results" / name / args.task / f"{args.start}.json")
    episodes = {e["image"]: e for e in doc["seeds"][0]["episodes"]}
    engine = make_engine(CURRENT_ID, task=args.task, observation="paper", sizes={"test": args.images})
    images = engine.parts("test").images
    q_levels = engine.num_levels
    c = args.chunk
    core = engine.core("test", c + c * q_levels)
    m = core.M
    start_returns, pass_returns = [], [[] for _ in range(args.passes)]
    changed = [0] * args.passes
    replay_diff = 0.0  # the start allocation's return as replayed here against the results file's
    t0 = time.perf_counter()
    for lo in range(0, args.images, c):
        chunk = list(range(lo, min(lo + c, args.images)))
        n = len(chunk)
        pristine = np.arange(n)
        reset_slots(core, images, pristine, chunk)
        alloc = np.zeros((n, m), np.int64)
        order = []
        for i, image in enumerate(chunk):
            e = episodes[image]
            alloc[i, e["concepts"]] = e["levels"]
            order.append(list(e["concepts"]))
            start_returns.append(float(e["return"]))
        best = np.array([episodes[image]["return"] for image in chunk], np.float64)
        for p in range(args.passes):
            for j in range(max(len(o) for o in order)):
                rows = [i for i in range(n) if len(order[i]) > j]
                slots = c + np.arange(len(rows) * q_levels)
                trial = np.repeat(alloc[rows], q_levels, axis=0)
                for r, i in enumerate(rows):
                    copy_slot(core, int(pristine[i]), slots[r * q_levels:(r + 1) * q_levels].tolist())
                    trial[r * q_levels:(r + 1) * q_levels, order[i][j]] = np.arange(q_levels)
                returns, _ = core.finish(slots, trial)
                returns = returns.reshape(len(rows), q_levels)
                if p == 0 and j == 0:
                    replay_diff = max(replay_diff, max(abs(returns[r, alloc[i, order[i][0]]] - best[i])
                                                       for r, i in enumerate(rows)))
                for r, i in enumerate(rows):
                    q = int(np.argmax(returns[r]))
                    if returns[r, q] > returns[r, alloc[i, order[i][j]]] + 1e-9:
                        alloc[i, order[i][j]] = q
                        changed[p] += 1
                    best[i] = float(returns[r].max())
            pass_returns[p].extend(best.tolist())
        print(f"{lo + n}/{args.images} images, {time.perf_counter() - t0:.0f} s: start {np.mean(start_returns):.4f}, "
              + ", ".join(f"pass {p + 1} {np.mean(r):.4f}" for p, r in enumerate(pass_returns)), flush=True)
    report = {"env_id": CURRENT_ID, "task": args.task, "start": args.start, "images": args.images,
              "seconds": time.perf_counter() - t0, "command": "python " + " ".join(sys.argv),
              "start_replay_max_diff": replay_diff,
              "start_return": float(np.mean(start_returns)),
              "start_score": float(benchmark_score(np.array(start_returns), args.task)),
              "passes": [{"pass": p + 1, "mean_return": float(np.mean(r)),
                          "score": float(benchmark_score(np.array(r), args.task)), "levels_changed": changed[p]}
                         for p, r in enumerate(pass_returns)]}
    print(json.dumps(report, indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
