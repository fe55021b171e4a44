"""Small in-process engines shared by the agent and harness tests (no network: an L1 task, a striped segmenter)."""
from __future__ import annotations

import copy

import torch
from torch import nn

from rlasc_env.engine import Engine, EnvSpec
from rlasc_env.tasks import Task


class PixelL1Task(Task):
    """Test task without a network: L_S = mean |x_hat - x|, metric = the same."""

    name = "agents-pixel"
    metric_name = "l1"

    def __init__(self) -> None:
        super().__init__(nn.Identity(), "ground_truth", "identity")

    def references(self, images, labels):
        return [image.detach().clone() for image in images]

    def loss(self, x_hat, references):
        err = (x_hat - torch.stack(references).to(x_hat.device)).abs().flatten(1).mean(1).cpu()
        return err, err


class Stripes(nn.Module):
    """A segmenter F with a fixed label map: vertical stripes of the given classes (K = len(classes))."""

    def __init__(self, classes: tuple[int, ...]) -> None:
        super().__init__()
        self.classes = classes

    def predict(self, x):
        width = x.shape[3]
        cols = torch.arange(width, device=x.device) * len(self.classes) // width
        ids = torch.tensor(self.classes, device=x.device)[cols]
        return ids.view(1, 1, -1).expand(x.shape[0], x.shape[2], width).clone()


def make_engine(codec, dataset, classes: tuple[int, ...] | None = None) -> Engine:
    if classes is not None:
        codec = copy.deepcopy(codec)
        codec.segmenter = Stripes(classes)
    # a small lambda so that the levels trade off against the (untrained) reconstruction
    return Engine(EnvSpec(task=PixelL1Task(), codec=codec, lam=0.02, images={"train": dataset, "test": dataset}))
