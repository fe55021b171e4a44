"""Task networks H on a CUDA device in one command, for a session lent a GPU (issue 11's classification target).

    python experiments/task_networks/device_task_networks.py --out "$OUT" --minutes 7    # on the device machine
    python experiments/task_networks/device_task_networks.py --out /tmp/smoke --smoke    # CPU check of the same code path

Runs four chains side by side, each a sequence of ``train_tasks.py`` commands (so every result has the command
that makes it, and each stage resumes with ``--resume``):

- ``e2e``: the shipped -v2 segmenter -> SegPresenceH calibration + end-to-end fine-tuning (``--presence-finetune-steps``);
- ``ft``: the -v2 segmenter fine-tuned further (``--init-from``), then the same presence chain;
- ``scratch``: a SegNetH trained from scratch with a larger batch, then the presence chain;
- ``wide``: the same with ``--width 64``.

Each chain first times a few training steps of its segmenter (all chains at once, so the timing includes their
contention for the GPU) and sizes its step counts to the ``--minutes`` budget. Everything goes to
``{out}/work``; at the end ``{out}/summary.json`` lists each chain's figures and ``{out}/task_runs.tgz`` holds the
weights, JSON records, logs and tensorboard runs (the device returns at most 8 files).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # run as a script from any folder
V2 = REPO / "rlasc_env" / "weights" / "v2"


def time_steps(width: int, batch_size: int, device: str, steps: int) -> float:
    """Seconds per training step of a SegNetH (forward, backward, Adam) on augmented streets batches."""
    from rlasc_env.tasks.networks import SegNetH
    from rlasc_env.tasks.training import TrainTasksConfig, augment_batch, load_split, training_objective

    cfg = TrainTasksConfig(progress=False)
    images, labels = load_split(cfg, "train", None)
    loss_fn, _ = training_objective("segmentation", labels)
    net = SegNetH(width=width).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    start = 0.0
    for step in range(steps + 5):
        if step == 5:
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.time()
        idx = torch.randint(0, images.shape[0], (batch_size,), generator=gen)
        x, lab = augment_batch(images[idx].to(device).float() / 255.0, labels[idx].to(device).long(), gen, 0.35)
        loss = loss_fn(net(x), lab)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss.item()
    return (time.time() - start) / steps


def budget_steps(chains: tuple[str, ...], per_step: dict[str, float], budget: float) -> dict[str, dict[str, int]]:
    """Step counts of each chain that fill ``budget`` seconds, from the timed seconds per step."""
    reserve = 75.0  # evaluation, presence calibration and start-up of each stage
    usable = max(budget - reserve, 60.0) * 0.85
    steps = {}
    for n in chains:
        if n == "e2e":
            steps[n] = {"seg": 0, "presence": int(usable / per_step[n] / 500) * 500}
        else:  # 0.65 of the time for the segmenter, 0.35 for the presence fine-tune (batch 16, e2e's step)
            presence_step = per_step["e2e"] * per_step[n] / per_step["scratch"]
            steps[n] = {"seg": int(usable * 0.65 / per_step[n] / 500) * 500,
                        "presence": int(usable * 0.35 / presence_step / 500) * 500}
    return steps


def render_split(split_size: tuple[str, int | None]) -> None:
    """Render one streets split into the disk cache."""
    from rlasc_env.tasks.training import TrainTasksConfig, load_split

    load_split(TrainTasksConfig(progress=False), *split_size)


def chain_commands(name: str, work: Path, steps: dict[str, int], device: str, batch: int, test_size: int,
                   threads: int) -> list[list[str]]:
    """The train_tasks.py commands of one chain."""
    out, run = work / name, work / name / "run"
    common = ["--device", device, "--threads", str(threads), "--no-progress", "--resume", "--test-size",
              str(test_size), "--state-every", "500"]
    seg_ckpt = str(V2 / "segmentation.pt")
    cmds = []
    if name == "ft":
        cmds.append(["--task", "segmentation", "--init-from", seg_ckpt, "--flip-average", "--seed", "5",
                     "--lr", "1e-3", "--batch-size", str(batch), "--steps", str(steps["seg"])])
    elif name in ("scratch", "wide"):
        cmds.append(["--task", "segmentation", "--flip-average", "--seed", "3", "--lr", "2e-3",
                     "--batch-size", str(batch), "--steps", str(steps["seg"])]
                    + (["--width", "64"] if name == "wide" else []))
    if name != "e2e":
        seg_ckpt = str(out / "segmentation.pt")
    cmds.append(["--task", "classification", "--segmenter", seg_ckpt, "--seed", "2", "--batch-size", "16",
                 "--presence-finetune-steps", str(steps["presence"]), "--presence-weight", "5",
                 "--presence-finetune-lr", "3e-4"])
    return [[sys.executable, str(REPO / "train_tasks.py")] + c + common + ["--out-dir", str(out),
                                                                           "--run-dir", str(run)] for c in cmds]


def run_chain(name: str, commands: list[list[str]], log: Path) -> subprocess.Popen:
    """Start one chain's commands, one after the other, in a background shell."""
    script = " && ".join(" ".join(f"'{a}'" for a in c) for c in commands)
    return subprocess.Popen(["bash", "-c", script], stdout=log.open("w"), stderr=subprocess.STDOUT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--minutes", type=float, default=7.0, help="wall budget of the training chains")
    parser.add_argument("--smoke", action="store_true", help="tiny step counts on the CPU: checks the code path")
    parser.add_argument("--steps", default="", help='fixed step counts as JSON, {"ft": {"seg": 8000, "presence": '
                                                     '4000}, ...}: only these chains, no timing')
    args = parser.parse_args()
    out = Path(args.out)
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    device = "cpu" if args.smoke else "cuda"
    if not args.smoke and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: run on a GPU machine, or pass --smoke for a CPU check")
    started = time.time()
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    spawn = multiprocessing.get_context("spawn")  # no CUDA state crosses a fork
    with ProcessPoolExecutor(3, mp_context=spawn) as pool:  # render and cache the splits once, side by side
        list(pool.map(render_split, (("train", None), ("val", None), ("test", 1000))))
    data_seconds = time.time() - started
    chains = tuple(json.loads(args.steps)) if args.steps else ("e2e", "ft", "scratch", "wide")
    budget = 60.0 * args.minutes - data_seconds
    batch = 32
    per_step: dict[str, float] = {}
    if args.steps:
        steps = json.loads(args.steps)
    else:
        with ProcessPoolExecutor(len(chains), mp_context=spawn) as pool:  # time each chain's steps, all at once
            futures = {n: pool.submit(time_steps, 64 if n == "wide" else 40, 16 if n == "e2e" else batch,
                                      device, 2 if args.smoke else 40) for n in chains}
            per_step = {n: f.result() for n, f in futures.items()}
        steps = {n: {"seg": 2, "presence": 2} for n in chains} if args.smoke else budget_steps(
            chains, per_step, budget - (time.time() - started - data_seconds))
    print(f"data {data_seconds:.0f} s; seconds per step {per_step}; steps {steps}", flush=True)
    procs = {}
    for n in chains:
        cmds = chain_commands(n, work, steps[n], device, 2 if args.smoke else batch, 8 if args.smoke else 1000,
                              1 if args.smoke else 2)
        (work / n).mkdir(parents=True, exist_ok=True)
        (work / n / "commands.txt").write_text("\n".join(" ".join(c) for c in cmds) + "\n")
        procs[n] = run_chain(n, cmds, work / n / "log.txt")
    limit = started + 60.0 * args.minutes + 150.0
    for n, p in procs.items():
        try:
            p.wait(timeout=max(1.0, limit - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            print(f"{n}: killed at the time limit (its state.pt resumes it)", flush=True)
    summary = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu", "steps": steps,
               "seconds_per_step": per_step, "data_seconds": round(data_seconds, 1),
               "wall_seconds": round(time.time() - started, 1), "chains": {}}
    for n in chains:
        entry: dict = {"returncode": procs[n].returncode}
        for task in ("segmentation", "classification"):
            path = work / n / f"{task}.json"
            if path.is_file():
                meta = json.loads(path.read_text())["meta"]
                figs = meta["figures"]
                entry[task] = {k: figs.get(k) for k in ("test_miou", "test_macro_ap", "test_degraded_miou",
                                                        "test_degraded_macro_ap", "test_per_class_ap",
                                                        "test_per_class_iou") if k in figs}
                entry[task]["train_seconds"] = meta["train_seconds"]
        summary["chains"][n] = entry
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    with tarfile.open(out / "task_runs.tgz", "w:gz") as tar:
        tar.add(work, arcname="work")
    print(json.dumps({n: {t: {k: v for k, v in e.get(t, {}).items() if not isinstance(v, dict)}
                          for t in ("segmentation", "classification")} for n, e in summary["chains"].items()},
                     indent=1), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
