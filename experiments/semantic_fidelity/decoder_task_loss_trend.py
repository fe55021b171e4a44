"""Does training the decoder with the task networks' losses raise what an independent network reads at level 0?

    python experiments/semantic_fidelity/decoder_task_loss_trend.py --steps 400 --eval-every 100 \
        --json experiments/semantic_fidelity/trend.json

Codec ``tiny`` (codec v2): F and E frozen; G_l, G_g and attention trained with random per-concept levels (level 0
drawn with probability ``--level0-share``, the others uniform) on L1 + L_P (eq. 11) + w * sum of the training losses
of the -v1 task networks (segmentation cross-entropy, FCOS's per-pixel thing cross-entropy, classification BCE:
rlasc_harness.stage3.task_training_loss, the differentiable stand-in of eq. 4-9). No adversarial term (a trend run).
Every ``--eval-every`` steps, every concept at level 0 on the first ``--eval-images`` test images: data-set mIoU by
the -v3 segmenter (never trained against) and by the -v1 one (trained against), and PSNR.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from codec_models.checkpoint import load_codec
from codec_models.datasets import load_dataset
from codec_models.perceptual import perceptual_loss
from rlasc_env.tasks import make_task
from rlasc_env.tasks.networks import WEIGHTS_DIR
from rlasc_harness.stage3 import task_training_loss

NUM_CLASSES = 19


def dataset_miou(pred: torch.Tensor, ref: torch.Tensor, inter: np.ndarray, union: np.ndarray) -> None:
    valid = ref < NUM_CLASSES
    for c in range(NUM_CLASSES):
        p, r = (pred == c) & valid, (ref == c) & valid
        inter[c] += int((p & r).sum())
        union[c] += int((p | r).sum())


@torch.no_grad()
def evaluate(codec, scorers, images, labels, batch: int = 16) -> dict[str, float]:
    codec.eval()
    stats = {name: (np.zeros(NUM_CLASSES), np.zeros(NUM_CLASSES)) for name in scorers}
    mse = []
    for i in range(0, len(images), batch):
        x, y = images[i:i + batch], labels[i:i + batch]
        analysis = codec.analyse(x)
        levels = torch.zeros(len(x), codec.num_classes, dtype=torch.long)
        x_hat = codec.decode(analysis, levels).clamp(0, 1)
        mse.append(((x_hat - x) ** 2).flatten(1).mean(1))
        for name, net in scorers.items():
            dataset_miou(net(x_hat).argmax(1), y, *stats[name])
    out = {f"miou_{name}": float(np.mean([i / u for i, u in zip(*stats[name]) if u > 0])) for name in scorers}
    out["psnr"] = float((10 * torch.log10(1 / torch.cat(mse).clamp_min(1e-10))).mean())
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--eval-images", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--task-weight", type=float, default=1.0)
    parser.add_argument("--level0-share", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    codec = load_codec("tiny")
    trained = [codec.local, codec.global_, codec.attention]
    for p in codec.parameters():
        p.requires_grad_(False)
    for m in trained:
        m.requires_grad_(True)
    opt = torch.optim.Adam([p for m in trained for p in m.parameters()], lr=args.lr)
    losses = {t: make_task(t) for t in ("segmentation", "detection", "classification")}  # -v1 networks
    for task in losses.values():
        task.network.requires_grad_(False)
    scorers = {"v3": make_task("segmentation", weights=str(WEIGHTS_DIR / "v3" / "segmentation.pt")).network.eval(),
               "v1": losses["segmentation"].network.eval()}
    train = load_dataset("streets", split="train", preset="tiny", size=2000)
    test = load_dataset("streets", split="test", preset="tiny", size=args.eval_images)
    test_x = torch.stack([test[i][0] for i in range(len(test))])
    test_y = torch.stack([torch.as_tensor(test[i][1]).long() for i in range(len(test))])
    history = [{"step": 0, "seconds": 0.0, **evaluate(codec, scorers, test_x, test_y)}]
    print(history[-1], flush=True)
    t0 = time.perf_counter()
    for step in range(1, args.steps + 1):
        idx = rng.integers(0, len(train), args.batch_size)
        x = torch.stack([train[int(i)][0] for i in idx])
        y = torch.stack([torch.as_tensor(train[int(i)][1]).long() for i in idx])
        for m in trained:
            m.train()
        with torch.no_grad():
            analysis = codec.analyse(x)
        draws = rng.random((len(x), codec.num_classes)) < args.level0_share
        levels = torch.as_tensor(np.where(draws, 0, rng.integers(1, codec.num_levels, draws.shape)), dtype=torch.long)
        x_hat = codec.decode(analysis, levels)
        loss = (x_hat - x).abs().mean() + perceptual_loss(codec.perceptual, x, x_hat).mean()
        task_terms = {t: task_training_loss(task, x_hat, x, y) for t, task in losses.items()}
        loss = loss + args.task_weight * sum(task_terms.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % args.eval_every == 0 or step == args.steps:
            history.append({"step": step, "seconds": time.perf_counter() - t0, "loss": loss.item(),
                            **{f"loss_{t}": v.item() for t, v in task_terms.items()},
                            **evaluate(codec, scorers, test_x, test_y)})
            print(history[-1], flush=True)
            if args.json is not None:
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                 "history": history}, indent=1) + "\n")


if __name__ == "__main__":
    main()
