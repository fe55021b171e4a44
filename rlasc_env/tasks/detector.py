"""The detection task network H (eq. 7): a torchvision FCOS detector on a small backbone + FPN.

H is a real one-stage detector built with ``torchvision.models.detection.FCOS`` (anchor-free,
per-location classification, box regression and centre-ness; losses: focal, GIoU, BCE), trained
from scratch on the embedded streets data (``weights=None, weights_backbone=None``: no pretrained
weights are reachable here). Its labels are Cityscapes *train ids* (FCOS ``num_classes`` = 19;
only the thing classes :data:`~rlasc_env.tasks.networks.THING_TRAIN_IDS` ever get positives).

Design for 64x128 images whose objects are 1-60 pixels wide (median person 2x7, car 10x7):

- no resizing: ``min_size``/``max_size`` are the native 64/128 (torchvision's default would
  upscale to 800), ``image_mean``/``image_std`` are the streets data's;
- :class:`SmallBackbone`: a strided CNN (batch norm) with outputs at strides 2, 4, 8 and 16,
  joined by torchvision's ``FeaturePyramidNetwork``; the FCOS head runs on all four levels, so
  the many thin objects (poles, people, 1-3 px wide) are found on the stride-2 level;
- :class:`PixelCentreAnchors`: FCOS's anchor *points* sit at pixel centres ``j*s + s/2 - 0.5``
  instead of torchvision's ``j*s``: FCOS makes a location positive only if it lies strictly inside
  a box, and with integer boxes the default points miss every 1-px-wide object and half of the
  2-px-wide ones at stride 2. Anchor sizes equal the strides (FCOS's convention), so level s takes
  objects whose largest centre-to-side distance is in [4s, 8s) (the first level from 0, the last
  without an upper bound).

Any model with torchvision's detection interface (eval mode: ``model(list of 3xHxW images in
[0, 1]) -> list of {"boxes" xyxy, "labels", "scores"}``) can replace it in
:class:`~rlasc_env.tasks.detection.DetectionTask`; its labels must be train ids, or pass a
``label_map`` from its labels to train ids.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.detection import FCOS
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.fcos import FCOSHead
from torchvision.ops import FeaturePyramidNetwork

from codec_models.classes import NUM_TRAIN_CLASSES

DETECTOR_NAME = "FCOSDetH"
# Per-channel mean / std of the streets train split (RGB in [0, 1]), FCOS's input normalisation.
STREETS_MEAN = (0.39, 0.39, 0.38)
STREETS_STD = (0.19, 0.18, 0.19)


def _conv_bn_relu(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, dilation, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SmallBackbone(nn.Module):
    """Strided CNN + FPN: ``OrderedDict`` of FPN maps at strides 2, 4, 8, 16 (``out_channels`` each).

    ``widths[0]`` is a full-resolution stem; ``widths[1:]`` are the stages at strides 2, 4, 8, 16,
    each a strided 3x3 convolution and ``depth - 1`` more (the stride-8/16 ones dilated by 2).
    """

    def __init__(self, widths: tuple[int, ...] = (12, 24, 32, 48, 64), fpn_width: int = 32, depth: int = 2) -> None:
        super().__init__()
        self.stem = _conv_bn_relu(3, widths[0])
        self.stages = nn.ModuleList()
        cin = widths[0]
        for i, w in enumerate(widths[1:]):
            layers = [_conv_bn_relu(cin, w, stride=2)]
            layers += [_conv_bn_relu(w, w, dilation=1 if i < 2 else 2) for _ in range(depth - 1)]
            self.stages.append(nn.Sequential(*layers))
            cin = w
        self.fpn = FeaturePyramidNetwork(list(widths[1:]), fpn_width)
        self.out_channels = fpn_width
        self.strides = tuple(2 ** (i + 1) for i in range(len(widths) - 1))

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        h = self.stem(x)
        feats = OrderedDict()
        for i, stage in enumerate(self.stages):
            h = stage(h)
            feats[str(i)] = h
        return self.fpn(feats)


class PixelCentreAnchors(AnchorGenerator):
    """Anchors (FCOS: anchor points) centred on pixel centres ``j*s + s/2 - 0.5`` of each level."""

    def grid_anchors(self, grid_sizes: list[list[int]], strides: list[list[Tensor]]) -> list[Tensor]:
        anchors = super().grid_anchors(grid_sizes, strides)
        out = []
        for a, (sh, sw) in zip(anchors, strides):
            off = torch.stack([sw, sh, sw, sh]).to(a) / 2 - 0.5
            out.append(a + off)
        return out


def build_detector(widths: tuple[int, ...] = (12, 24, 32, 48, 64), fpn_width: int = 32, depth: int = 2,
                   head_convs: int = 2, num_classes: int = NUM_TRAIN_CLASSES, min_size: int = 64,
                   max_size: int = 128, score_thresh: float = 0.05, nms_thresh: float = 0.5,
                   detections_per_img: int = 100) -> FCOS:
    """H for detection: torchvision FCOS (no pretrained weights) on :class:`SmallBackbone`.

    ``min_size``/``max_size`` are GeneralizedRCNNTransform's resize bounds (native 64x128: no
    resize); ``score_thresh`` is the post-processing floor (the task applies its own, higher,
    threshold; mAP uses every detection above the floor). ``fpn_width`` must be a multiple of 32
    (FCOSHead's GroupNorm has 32 groups).
    """
    backbone = SmallBackbone(tuple(widths), fpn_width, depth)
    sizes = tuple((s,) for s in backbone.strides)
    anchors = PixelCentreAnchors(sizes, ((1.0,),) * len(sizes))
    model = FCOS(backbone, num_classes, min_size=min_size, max_size=max_size, image_mean=list(STREETS_MEAN),
                 image_std=list(STREETS_STD), anchor_generator=anchors, score_thresh=score_thresh,
                 nms_thresh=nms_thresh, detections_per_img=detections_per_img, topk_candidates=300,
                 head=FCOSHead(fpn_width, 1, num_classes, num_convs=head_convs))
    return model


def detector_losses(model: FCOS, images: Tensor | list[Tensor], targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """FCOS's training losses (focal classification, GIoU regression, centre-ness BCE) in any mode.

    Unlike ``model(images, targets)`` this does not need ``model.train()``, so batch-norm
    statistics stay frozen in eval mode; it is differentiable w.r.t. the images (stage III's L_task).
    """
    images = list(images)
    targets = [{"boxes": t["boxes"].to(images[0].device).float().reshape(-1, 4),
                "labels": t["labels"].to(images[0].device).long()} for t in targets]
    image_list, targets = model.transform(images, targets)
    features = list(model.backbone(image_list.tensors).values())
    head_outputs = model.head(features)
    anchors = model.anchor_generator(image_list, features)
    num_anchors_per_level = [x.size(2) * x.size(3) for x in features]
    return model.compute_loss(targets, head_outputs, anchors, num_anchors_per_level)


def detector_kwargs(model: nn.Module) -> dict[str, Any]:
    """The constructor arguments recorded in checkpoints (``_rlasc_kwargs`` set by the trainer)."""
    return dict(getattr(model, "_rlasc_kwargs", {}))
