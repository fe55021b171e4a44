"""Task networks H of eq. 4 (Section II-B), small enough to ship (< 1 MB of weights each).

No pretrained PSPNet / Mask R-CNN / VGG weights are reachable here, so the project trains
its own small stand-ins on the embedded "streets" data (``python train_tasks.py``):

- :class:`SegNetH`: semantic segmentation, a mini PSPNet (dilated residual trunk at 1/4
  resolution, pyramid pooling head, one low-level skip at 1/2) -> 19 class logits per pixel.
- detection: ``FCOSDetH``, a torchvision FCOS detector on a small backbone + FPN
  (:mod:`rlasc_env.tasks.detector`), one box per object; checkpoint version 2. (Version 1 held
  DetNetH, a dense class-map network whose boxes were connected components: touching objects
  merged. It is gone; its checkpoints are refused with the command that retrains.)
- :class:`ClsNetH`: multi-label image classifier (which of the 19 classes the image holds),
  a strided CNN with global average + max pooling and a linear head (the -v1 classification H).
- :class:`SegPresenceH`: presence read off a segmentation H's predicted area shares, with a
  per-class calibration (the -v2 classification H).

All are different architectures from the codec's segmenter F (a U-Net with instance
norm, ``codec_models.segmenter``) and are trained separately; they use batch norm, which is
per-sample in eval mode, so H's output on one image does not depend on the batch.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from codec_models.checkpoint import CheckpointError, check_format, safe_load
from codec_models.classes import NUM_TRAIN_CLASSES, TRAIN_ID

TASK_FORMAT = "rlasc-task"
TASK_VERSION = 1
# Checkpoint versions that differ from TASK_VERSION, per task: detection 2 = FCOSDetH (v1 was DetNetH).
TASK_VERSIONS: dict[str, int] = {"detection": 2}
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"

# Thing classes of the detection task (train ids); the detector's labels are these train ids.
THING_NAMES: tuple[str, ...] = ("pole", "traffic light", "traffic sign", "person", "rider", "car", "truck",
                                "bus", "train", "motorcycle", "bicycle")
THING_TRAIN_IDS: tuple[int, ...] = tuple(TRAIN_ID[n] for n in THING_NAMES)
NUM_DET_CLASSES = len(THING_TRAIN_IDS) + 1  # background + thing classes (training.det_targets' dense classes)


def conv_bn_relu(cin: int, cout: int, kernel: int = 3, stride: int = 1, dilation: int = 1,
                 groups: int = 1) -> nn.Sequential:
    """Convolution + batch norm + ReLU (the unit of all three task networks)."""
    pad = dilation * (kernel // 2)
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, pad, dilation=dilation, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def _normalize(x: Tensor) -> Tensor:
    return x * 2.0 - 1.0


class DilatedBlock(nn.Module):
    """Residual block of two 3x3 convolutions, the second dilated (PSPNet's dilated ResNet trunk)."""

    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_bn_relu(channels, channels),
            nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation, bias=False),
            nn.BatchNorm2d(channels))

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x + self.body(x))


class PyramidPooling(nn.Module):
    """PSPNet's pyramid pooling module: pool to bins, 1x1 reduce, upsample, concatenate."""

    def __init__(self, channels: int, bins: tuple[int, ...] = (1, 2, 4)) -> None:
        super().__init__()
        reduced = channels // len(bins)
        self.bins = bins
        self.stages = nn.ModuleList(conv_bn_relu(channels, reduced, kernel=1) for _ in bins)
        self.out_channels = channels + reduced * len(bins)

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        feats = [x]
        for b, stage in zip(self.bins, self.stages):
            pooled = stage(F.adaptive_avg_pool2d(x, (min(b, size[0]), min(b, size[1]))))
            feats.append(F.interpolate(pooled, size=size, mode="bilinear", align_corners=False))
        return torch.cat(feats, 1)


class SegNetH(nn.Module):
    """Mini PSPNet for semantic segmentation (the paper's H for eq. 5-6): logits (B, M, H, W).

    ``flip_average`` (the -v2 H) averages the soft-max over the image and its mirror image at inference: +0.016
    data-set mIoU on the first 200 test images for the -v1 weights (0.578 -> 0.594), at twice the inference cost.
    """

    def __init__(self, num_classes: int = NUM_TRAIN_CLASSES, width: int = 40, dilations: tuple[int, ...] = (1, 2, 4),
                 skip_width: int = 16, decoder_width: int = 32, flip_average: bool = False) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.flip_average = flip_average
        self.width = width
        self.stem = conv_bn_relu(3, skip_width, stride=2)                 # 1/2
        self.down = conv_bn_relu(skip_width, width, stride=2)             # 1/4
        self.trunk = nn.Sequential(*(DilatedBlock(width, d) for d in dilations))
        self.ppm = PyramidPooling(width)
        self.fuse = conv_bn_relu(self.ppm.out_channels, width, kernel=1)
        self.refine = nn.Sequential(conv_bn_relu(width + skip_width, decoder_width, kernel=1),
                                    conv_bn_relu(decoder_width, decoder_width))
        self.head = nn.Conv2d(decoder_width, num_classes, 1)

    def logits(self, x: Tensor) -> Tensor:
        """Class logits (B, M, H, W) of one forward pass."""
        size = x.shape[-2:]
        low = self.stem(_normalize(x))
        h = self.fuse(self.ppm(self.trunk(self.down(low))))
        h = F.interpolate(h, size=low.shape[-2:], mode="bilinear", align_corners=False)
        h = self.head(self.refine(torch.cat([h, low], 1)))
        return F.interpolate(h, size=size, mode="bilinear", align_corners=False)

    def forward(self, x: Tensor) -> Tensor:
        """Logits (B, M, H, W). With ``flip_average``, in eval mode only: the log of the soft-max averaged over the
        image and its mirror image (test-time augmentation; training is unchanged)."""
        if not self.flip_average or self.training:
            return self.logits(x)
        both = self.logits(torch.cat([x, x.flip(-1)])).softmax(1)
        return torch.log((both[:x.shape[0]] + both[x.shape[0]:].flip(-1)) / 2 + 1e-8)

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """Label map (B, H, W) int64 of train ids."""
        return self(x).max(1).indices  # argmax(1)'s indices (first maximum on ties), faster on NCHW on the CPU


class ClsNetH(nn.Module):
    """Multi-label classifier (the classification H of eq. 8-9): presence logits (B, M).

    A strided CNN (strides 2 to 16) whose global average + max pooled features feed a linear
    head. A 1x1 auxiliary head on the stride-8 features predicts coarse class maps; it is used
    only as an extra training signal (dense supervision makes the short training converge)
    and never in ``forward`` -- unless ``map_presence``: then each class's presence logit also
    gets ``scale_c * (log(f_c) - log(min_fraction)) + bias_c``, where f_c is the class's mean
    soft-max probability over that coarse map (its predicted area share), since the ground-truth
    presence of eq. 8 is "class covers >= min_fraction of the pixels". The defaults
    (``map_presence=False``) are the network of checkpoints written before this option.
    """

    def __init__(self, num_classes: int = NUM_TRAIN_CLASSES, widths: tuple[int, ...] = (16, 32, 48, 64),
                 map_presence: bool = False, min_fraction: float = 0.005) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.map_presence = map_presence
        self.min_fraction = min_fraction
        if map_presence:
            self.presence_scale = nn.Parameter(torch.ones(num_classes))
            self.presence_bias = nn.Parameter(torch.zeros(num_classes))
        self.stages = nn.ModuleList()
        cin = 3
        for w in widths:
            self.stages.append(nn.Sequential(conv_bn_relu(cin, w, stride=2), conv_bn_relu(w, w)))
            cin = w
        self.aux_stage = len(widths) - 2
        self.aux_head = nn.Conv2d(widths[self.aux_stage], num_classes, 1)
        self.dropout = nn.Dropout(0.1)
        self.head = nn.Linear(2 * cin, num_classes)

    def features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(last-stage features, auxiliary coarse class logits at stride 8)."""
        h, aux = _normalize(x), None
        for i, stage in enumerate(self.stages):
            h = stage(h)
            if i == self.aux_stage:
                aux = self.aux_head(h)
        return h, aux

    def forward_with_aux(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(presence logits (B, M), coarse class logits (B, M, H/8, W/8)) for training."""
        h, aux = self.features(x)
        pooled = torch.cat([h.mean((2, 3)), h.amax((2, 3))], 1)
        logits = self.head(self.dropout(pooled))
        if self.map_presence:
            share = torch.softmax(aux, 1).mean((2, 3))
            logits = logits + self.presence_scale * (torch.log(share + 1e-4) - math.log(self.min_fraction)) \
                + self.presence_bias
        return logits, aux

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_with_aux(x)[0]

    @torch.no_grad()
    def predict(self, x: Tensor, threshold: float = 0.5) -> Tensor:
        """Presence vector (B, M) float in {0, 1}."""
        return (torch.sigmoid(self(x)) >= threshold).float()


class SegPresenceH(nn.Module):
    """Classification H read off a segmentation H (eq. 8's presence is an area share): presence logits (B, M).

    A :class:`SegNetH` labels every pixel; class c's predicted area share is the mean over the pixels of its
    sharpened soft-max probability, ``share_c = mean softmax(logits / temperature)_c`` (a differentiable
    stand-in for the share of pixels whose argmax is c). The presence logit is a per-class increasing
    function of it, ``softplus(raw_scale_c) * (log(share_c + 1e-4) - log(min_fraction)) + bias_c``: the
    calibration makes the sigmoid a probability for eq. 9's cross-entropy and, being increasing, leaves the
    ranking of images within a class, and so each class's average precision, that of the share itself.
    Measured on 1000 streets test images with the v1 SegNetH: macro AP 0.870 (share at temperature 0.3),
    0.856 (temperature 1), 0.866 (argmax share) against 0.806 for ClsNetH; learned heads on the shares and
    peak probabilities, or stacked with ClsNetH, did not beat the plain share (docs/task_networks_v2.md).
    """

    def __init__(self, num_classes: int = NUM_TRAIN_CLASSES, temperature: float = 0.3,
                 min_fraction: float = 0.005, flip_average: bool = False, width: int = 40) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.temperature = temperature
        self.min_fraction = min_fraction
        self.segmenter = SegNetH(num_classes, width=width, flip_average=flip_average)
        self.raw_scale = nn.Parameter(torch.full((num_classes,), math.log(math.e - 1.0)))  # softplus -> 1
        self.bias = nn.Parameter(torch.zeros(num_classes))

    def shares(self, x: Tensor) -> Tensor:
        """Predicted area share (B, M) of every class."""
        return torch.softmax(self.segmenter(x) / self.temperature, 1).mean((2, 3))

    def logits_from_shares(self, share: Tensor) -> Tensor:
        """Presence logits (B, M) from area shares (B, M)."""
        return F.softplus(self.raw_scale) * (torch.log(share + 1e-4) - math.log(self.min_fraction)) + self.bias

    def forward(self, x: Tensor) -> Tensor:
        return self.logits_from_shares(self.shares(x))

    @torch.no_grad()
    def predict(self, x: Tensor, threshold: float = 0.5) -> Tensor:
        """Presence vector (B, M) float in {0, 1}."""
        return (torch.sigmoid(self(x)) >= threshold).float()


NETWORKS: dict[str, type[nn.Module]] = {"SegNetH": SegNetH, "ClsNetH": ClsNetH, "SegPresenceH": SegPresenceH}


def build_network(name: str, **kwargs) -> nn.Module:
    """Instantiate a task network by class name (used by the checkpoint loader)."""
    if name == "FCOSDetH":  # the detection H (torchvision FCOS), built by a function
        from .detector import build_detector

        return build_detector(**kwargs)
    if name not in NETWORKS:
        raise ValueError(f"unknown task network {name!r}; known: {sorted(NETWORKS) + ['FCOSDetH']}")
    return NETWORKS[name](**kwargs)


def weight_bytes(module: nn.Module) -> int:
    """Bytes of the float32 state (parameters + buffers)."""
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


def default_weights_path(task: str) -> Path:
    """The shipped weights of ``task``: ``rlasc_env/weights/{task}.pt``."""
    return WEIGHTS_DIR / f"{task}.pt"


def task_version(task: str) -> int:
    """The checkpoint version this code reads and writes for ``task``."""
    return TASK_VERSIONS.get(task, TASK_VERSION)


def task_payload(task: str, network: nn.Module, network_name: str, network_kwargs: dict[str, Any],
                 train_config: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint dictionary of a trained task network (read back by :func:`load_task_network`)."""
    return {"format": TASK_FORMAT, "version": task_version(task), "task": task,
            "config": {"network": network_name, "network_kwargs": dict(network_kwargs), "train": dict(train_config)},
            "state": {k: v.detach().cpu() for k, v in network.state_dict().items()},
            "meta": dict(meta)}


def load_task_network(task: str, weights: str | os.PathLike | None = None,
                      device: torch.device | str = "cpu") -> tuple[nn.Module, Path, dict[str, Any]]:
    """(network in eval mode, path, meta) from a task checkpoint (``weights_only=True``).

    Raises FileNotFoundError (with the command that trains the weights) for a missing file and
    :class:`CheckpointError` for a file of another format, version or task.
    """
    path = Path(weights) if weights is not None else default_weights_path(task)
    if not path.is_file():
        raise FileNotFoundError(f"task weights {path} do not exist: run `python train_tasks.py --task {task}`"
                                + ("" if weights is None else f" --out-dir {path.parent}"))
    obj = safe_load(path)
    try:
        if task == "detection" and isinstance(obj, dict) and obj.get("version") == 1:
            raise CheckpointError(f"{path} holds a version-1 detection H (DetNetH, boxes from connected components), "
                                  "which this code no longer reads: the detection H is now a torchvision FCOS "
                                  "detector (version 2); retrain it with `python train_tasks.py --task detection`")
        check_format(obj, path, TASK_FORMAT, task_version(task))
    except CheckpointError as exc:
        raise CheckpointError(f"{exc} (task weights: retrain with `python train_tasks.py --task {task}`)") from None
    if obj.get("task") != task:
        raise CheckpointError(f"{path} holds weights of task {obj.get('task')!r}, not {task!r}")
    config = obj.get("config") or {}
    try:
        network = build_network(config["network"], **config.get("network_kwargs", {}))
        network.load_state_dict(obj["state"])
    except (KeyError, TypeError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{path}: weights do not fit the task network: {exc}") from exc
    return network.to(device).eval(), path, dict(obj.get("meta") or {})


def network_input(network: nn.Module, images: Tensor) -> Tensor:
    """A batch (B,3,H,W) (or one image 3xHxW) as float in [0, 1] on the network's device."""
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
    device = next(network.parameters()).device
    return images.detach().to(device=device, dtype=torch.float32).clamp(0.0, 1.0)
