"""Would a semantic term in the level preview help? Episode returns of argmax(-rate + wp * perceptual + ws * semantic):

    python experiments/preview_rule/semantic_paste_rule.py --reference original --weights 1.1,0 1.1,0.5 1.1,1 1.1,2 0.8,1

``semantic`` is the drop of the task loss L_S (from level 0) when the local generator's picture y(m, q) of every level
is pasted into the concept's region of the current reconstruction, the same paste as SemanticCoding-v4's perceptual
entry (rlasc_env/preview.py). Its references are the ground truth (``--reference ground_truth``: what the reward
uses; the encoder does not have it) or the task network on the original image (``original``: what an encoder can
compute). Played on the first ``--images`` test images; the rule's weights are chosen on them, so this bounds what
the term could add rather than fitting it. Results in docs/env_v4.md, "A semantic term".
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import tyro

from rlasc_harness.config import TrainAgentConfig
from rlasc_env.engine import run_copies
from rlasc_harness.runner import make_engine
from rlasc_env import make_task
from rlasc_env.preview import level_preview, observation_key, pasted_levels
from rlasc_env.versions import ENV_PINS, with_pinned_weights


@dataclass
class SemanticConfig:
    weights: tuple[str, ...] = ("1.1,0", "1.1,0.5", "1.1,1", "1.1,2", "0.8,1")
    """wp,ws pairs."""
    reference: Literal["ground_truth", "original"] = "original"
    task: str = "segmentation"
    split: Literal["train", "test"] = "test"
    """train: choose the weights on training images (the gap closure line is then for the test flags only)."""
    images: int = 48
    best_fixed: float = 1.9757
    greedy: float = 2.5575
    threads: int = 1


def main(cfg: SemanticConfig) -> dict[str, float]:
    torch.set_num_threads(cfg.threads)
    agent_cfg = TrainAgentConfig(env_id="rlasc/SemanticCoding-v4", eval_images=cfg.images)
    engine = make_engine(agent_cfg, cfg.task, "cpu")
    pairs = [tuple(float(v) for v in w.split(",")) for w in cfg.weights]
    core = engine.core(cfg.split, 8 * len(pairs))
    task_kwargs = with_pinned_weights(ENV_PINS[agent_cfg.env_id], cfg.task, None) or {}  # the id's task weights
    own = (make_task(cfg.task, reference="original", device="cpu", **task_kwargs)
           if cfg.reference == "original" else None)
    memo: dict[tuple, np.ndarray] = {}

    @torch.inference_mode()
    def semantic_drop(slots: np.ndarray) -> np.ndarray:
        keys = [observation_key(core, s) for s in slots.tolist()]
        todo = [j for j, key in enumerate(keys) if key not in memo]
        if todo:
            ss, q = slots[todo], core.Q
            slot_t = torch.as_tensor(ss)
            pasted = pasted_levels(core, ss, core.y_levels[slot_t])  # y(m, q) filled by level_preview
            if own is None:
                sem, _ = core.task.loss(pasted, [core.refs[s] for s in ss.tolist() for _ in range(q)])
            else:
                refs = own.references_for(core.images[slot_t], core.store.labels[slot_t], None)
                sem, _ = own.loss(pasted, [refs[i] for i in range(len(ss)) for _ in range(q)])
            sem = sem.double().cpu().numpy().reshape(len(ss), q)
            for row, j in enumerate(todo):
                memo[keys[j]] = sem[row, :1] - sem[row]
        return np.stack([memo[key] for key in keys])

    def rule(wp: float, ws: float):
        def act(obs: dict[str, np.ndarray], slots: np.ndarray) -> np.ndarray:
            slots = np.asarray(slots, np.int64)
            rate, perceptual = level_preview(core, slots)  # also fills y(m, q) of every level
            return (-rate + wp * perceptual + ws * semantic_drop(slots)).argmax(1).astype(np.int64)
        return act

    started = time.time()
    records = run_copies(core, engine.parts(cfg.split).images, list(range(cfg.images)), [rule(*p) for p in pairs],
                         engine.metric_name)
    out = {}
    for (wp, ws), recs in zip(pairs, records):
        ret = float(np.mean([r.episode_return for r in recs]))
        out[f"{wp},{ws}"] = ret
        gap = (f", gap closure {(ret - cfg.best_fixed) / (cfg.greedy - cfg.best_fixed):.3f}"
               if cfg.split == "test" else "")
        print(f"{cfg.split} {cfg.reference} wp {wp} ws {ws}: return {ret:.4f}{gap}")
    print(f"{time.time() - started:.0f} s")
    return out


if __name__ == "__main__":
    main(tyro.cli(SemanticConfig))
