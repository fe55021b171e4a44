"""Fine-tune SegPresenceH end to end (segmenter and calibration together) and score its macro AP on test images.

    python experiments/task_networks/presence_end_to_end.py --presence-weight 5 --steps 2000 --lr 3e-4

Starts from the shipped -v2 classification H (rlasc_env/weights/v2/classification.pt: the -v2 SegNetH, frozen,
plus the fitted calibration) and trains every parameter on the train split, flipped and degraded as in
``train_tasks.py``: the segmenter's class-weighted cross-entropy (eq. 5-6's labels) plus ``--presence-weight``
times eq. 9's presence cross-entropy through the sharpened area shares. Adam with a cosine schedule, batch 16, one
thread, seed 2 (about 12 minutes on one core). Prints the macro AP (eq. 8 presence, torchmetrics) on the first
200 and 1000 test images with per-class AP on 1000; ``--out`` saves the state dict. An experiment: nothing here is
shipped (docs/task_networks_v2.md).
"""
from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F

from rlasc_env.tasks.classification import dataset_average_precision, presence_vector
from rlasc_env.tasks.networks import load_task_network
from rlasc_env.tasks.training import TrainTasksConfig, augment_batch, load_split, training_objective


def main(presence_weight: float, steps: int, lr: float, out: str) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(2)
    gen = torch.Generator().manual_seed(2)
    net, _, _ = load_task_network("classification", "rlasc_env/weights/v2/classification.pt")
    cfg = TrainTasksConfig(progress=False)
    images, labels = load_split(cfg, "train", None)
    seg_loss, _ = training_objective("segmentation", labels)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    net.train()
    for step in range(steps):
        idx = torch.randint(0, images.shape[0], (16,), generator=gen)
        x, lab = augment_batch(images[idx].float() / 255.0, labels[idx].long(), gen, cfg.clean_fraction)
        logits = net.segmenter.logits(x)
        presence = net.logits_from_shares(torch.softmax(logits / net.temperature, 1).mean((2, 3)))
        loss = seg_loss(logits, lab) + presence_weight * F.binary_cross_entropy_with_logits(presence,
                                                                                            presence_vector(lab))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 250 == 0:
            print(f"step {step}: loss {loss.item():.4f}", flush=True)
    net.eval()
    test_images, test_labels = load_split(cfg, "test", 1000)
    with torch.no_grad():
        probs = torch.cat([torch.sigmoid(net(test_images[i:i + 100].float() / 255.0)) for i in range(0, 1000, 100)])
    targets = presence_vector(test_labels)
    first = dataset_average_precision(probs[:200].double(), targets[:200])
    whole = dataset_average_precision(probs.double(), targets)
    print(f"macro AP: first 200 test images {first['macro_ap']:.4f}, 1000 images {whole['macro_ap']:.4f}; per class "
          + " ".join(f"{v:.2f}" for v in whole["per_class_ap"]))
    if out:
        torch.save(net.state_dict(), out)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presence-weight", type=float, default=5.0)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    main(args.presence_weight, args.steps, args.lr, args.out)
