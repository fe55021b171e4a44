"""Does the energy of f(m)'s block-transform coefficients predict the gate's per-step regret beyond class and stats?

    python docs/experiments/gate_energy_probe.py detection energy   # class, stats and 38 energy features
    python docs/experiments/gate_energy_probe.py detection base     # class and stats only

Reads greedy's cached steps (``python -m agents.learnability --greedy-cache runs/gate/greedy_TASK.npz``). Level q of
codec v2 codes the first C_q = (1, 4, 8, 16, 24, 32)[q] coefficients, so the energy of the coefficients it drops is
the texture's part of its distortion. Features: the concept one-hot, the stats, and (``energy``) log(1 + 10 e) of the
mean energy e of each of the 32 coefficients over the concept's positions and of the energy each level drops.
A stand-alone replication of the gate's ``compact_ensemble`` (five 128-128 MLPs, reward regression, each stopped
early on its own fifth of the fitting images, mean output), scored by the gate's 5-fold cross-validation: prints
the share of the best fixed level's immediate regret removed.
"""
from __future__ import annotations

import sys

import numpy as np
import torch

LEVEL_CHANNELS = (1, 4, 8, 16, 24, 32)


def features(data: np.lib.npyio.NpzFile, with_energy: bool) -> np.ndarray:
    parts = [data["obs_concept"], data["obs_stats"]]
    if with_energy:
        f, mask = data["obs_features"], data["obs_mask"]
        energy = (f ** 2).sum((2, 3)) / mask.sum((1, 2, 3)).clip(min=1)[:, None]  # (N, 32)
        dropped = np.stack([energy[:, c:].sum(1) for c in LEVEL_CHANNELS], 1)
        parts += [np.log1p(10 * energy), np.log1p(10 * dropped)]
    x = np.concatenate(parts, 1).astype(np.float32)
    return (x - x.mean(0)) / (x.std(0) + 1e-6)


def fit(x: np.ndarray, target: np.ndarray, x_val: np.ndarray, target_val: np.ndarray, seed: int,
        epochs: int = 90, check_every: int = 10) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 128), torch.nn.ReLU(), torch.nn.Linear(128, 128),
                              torch.nn.ReLU(), torch.nn.Linear(128, target.shape[1]))
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    xs, ts, rng = torch.tensor(x), torch.tensor(target), np.random.default_rng(seed)
    best = (np.inf, None)
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(x))
        for start in range(0, len(order), 64):
            rows = order[start:start + 64]
            loss = ((net(xs[rows]) - ts[rows]) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        if epoch % check_every == 0:
            with torch.no_grad():
                chosen = net(torch.tensor(x_val)).argmax(1).numpy()
            regret = -target_val[np.arange(len(x_val)), chosen].mean()
            if regret < best[0]:
                best = (regret, {k: v.clone() for k, v in net.state_dict().items()})
    net.load_state_dict(best[1])
    return net


def main(task: str, mode: str, folds: int = 5, members: int = 5) -> float:
    torch.set_num_threads(1)
    data = np.load(f"runs/gate/greedy_{task}.npz")
    x = features(data, mode == "energy")
    candidates, image = data["candidates"], data["image"]
    relative = candidates - candidates.max(1, keepdims=True)
    target = (relative / relative.std()).astype(np.float32)
    splits = np.array_split(np.random.default_rng(0).permutation(np.unique(image)), folds)
    chosen = np.zeros(len(x), np.int64)
    for k, held in enumerate(splits):
        test = np.isin(image, held)
        rest = np.concatenate([s for j, s in enumerate(splits) if j != k])
        outputs = []
        for m in range(members):
            val_images = np.random.default_rng(1 + m).permutation(rest)[:len(rest) // 5]
            train = np.isin(image, rest) & ~np.isin(image, val_images)
            val = np.isin(image, val_images)
            net = fit(x[train], target[train], x[val], target[val], m)
            with torch.no_grad():
                outputs.append(net(torch.tensor(x[test])))
        chosen[test] = torch.stack(outputs).mean(0).argmax(1).numpy()
    regret = candidates.max(1) - candidates[np.arange(len(x)), chosen]
    fixed = min((candidates.max(1) - candidates[:, lv]).sum() for lv in range(candidates.shape[1]))
    share = 1.0 - regret.sum() / fixed
    print(f"{task} {mode}: the ensemble removes {share:.1%} of the best fixed level's immediate regret")
    return share


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[2] not in ("energy", "base"):
        raise SystemExit("usage: gate_energy_probe.py TASK energy|base")
    main(sys.argv[1], sys.argv[2])
