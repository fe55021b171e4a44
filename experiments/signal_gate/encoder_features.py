"""Does what the encoder can compute per level predict the best level? (docs/agents_v1.md, session 8)

Reads the greedy-step cache of the signal gate (``python -m rlasc_harness.learnability --task TASK
--greedy-cache runs/gate/greedy_TASK.npz``), adds per-level distortion / rate features of the concept's
coefficients (codec v2's level layout) to the class and stats, fits a reward-regression MLP on four fifths of
the images and prints the share of the best fixed level's per-step regret it removes on the held-out fifth.

    python experiments/signal_gate/encoder_features.py segmentation [runs/gate/greedy_segmentation.npz]
"""
import sys

import numpy as np
import torch

torch.set_num_threads(1)
task = sys.argv[1]
path = sys.argv[2] if len(sys.argv) > 2 else f"runs/gate/greedy_{task}.npz"
which = "greedy"
d = np.load(path)
feat, mask, concept, stats = d["obs_features"], d["obs_mask"], d["obs_concept"], d["obs_stats"]
cand, image, levels = d["candidates"], d["image"], d["levels"]
print(path, feat.shape, cand.shape, len(np.unique(image)))
C = (1, 4, 8, 16, 24, 32); K = (5, 9, 13, 17, 25, 33)
f = torch.tensor(feat, dtype=torch.float64); m = torch.tensor(mask, dtype=torch.float64)
energy = (f ** 2).sum((1, 2, 3))
area = m.sum((1, 2, 3)).clamp_min(1)
dist = []
nz = []
for q in range(6):
    k = K[q]
    idx = torch.round((f.clamp(-1, 1) + 1) * 0.5 * (k - 1))
    deq = torch.linspace(-1, 1, k, dtype=torch.float64)[idx.long()]
    deq[:, C[q]:] = 0
    deq = deq * m
    dist.append(((f - deq) ** 2).sum((1, 2, 3)))
    nz.append(((deq != 0).sum((1, 2, 3))).double())
dist = torch.stack(dist, 1); nz = torch.stack(nz, 1)
per_px = torch.log10(dist / area.unsqueeze(1) + 1e-6) / 3      # log distortion per masked cell
frac = dist / (energy.unsqueeze(1) + 1e-9)
gain = torch.log10((dist[:, :-1] - dist[:, 1:]).clamp_min(0) / area.unsqueeze(1) + 1e-6) / 3
rate = torch.log10(nz / area.unsqueeze(1) + 1e-3) / 3
extra = {"none": torch.zeros(len(f), 0),
         "dist": torch.cat([per_px, frac], 1),
         "dist+gain+rate": torch.cat([per_px, frac, gain, rate], 1)}
rel = cand - cand.max(1, keepdims=True)
target = torch.tensor(rel / rel.std(), dtype=torch.float32)
def regret(ch, rows): return float((cand[rows].max(1) - cand[rows, ch]).mean())
res = {}
for name, ex in extra.items():
    X = torch.cat([torch.tensor(concept), torch.tensor(stats), ex.float()], 1)
    removal = []
    for seed in range(3):
        rng = np.random.default_rng(seed + 1)
        imgs = np.unique(image); held = rng.permutation(imgs)[:len(imgs) // 5]
        te = np.isin(image, held); tr = ~te
        tri, tei = np.flatnonzero(tr), np.flatnonzero(te)
        # inner validation for early stopping
        inner = rng.permutation(np.unique(image[tr]))[:len(np.unique(image[tr])) // 5]
        va = np.flatnonzero(np.isin(image, inner) & tr); fi = np.flatnonzero(~np.isin(image, inner) & tr)
        torch.manual_seed(seed)
        net = torch.nn.Sequential(torch.nn.Linear(X.shape[1], 128), torch.nn.ReLU(), torch.nn.Linear(128, 128), torch.nn.ReLU(), torch.nn.Linear(128, 6))
        opt = torch.optim.Adam(net.parameters(), 1e-3)
        best = (1e9, None)
        for ep in range(150):
            perm = rng.permutation(fi)
            for s in range(0, len(perm), 64):
                r = perm[s:s+64]
                loss = torch.nn.functional.mse_loss(net(X[r]), target[r]); opt.zero_grad(); loss.backward(); opt.step()
            if ep % 10 == 9:
                with torch.no_grad(): rv = regret(net(X[va]).argmax(1).numpy(), va)
                if rv < best[0]: best = (rv, {k: v.clone() for k, v in net.state_dict().items()})
        net.load_state_dict(best[1])
        with torch.no_grad(): ch = net(X[tei]).argmax(1).numpy()
        fixed = min(regret(np.full(len(tei), q), tei) for q in range(6))
        removal.append(1 - regret(ch, tei) / fixed)
    res[name] = removal
    print(task, which, name, "regret removal vs best fixed:", np.round(removal, 3), "mean", round(float(np.mean(removal)), 3), flush=True)
