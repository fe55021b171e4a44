"""Perceptual network phi and the perceptual loss L_P = ||phi(x) - phi(x_hat)||^2 (eq. 11).

Two feature networks are available:

* ``"vgg16"``: torchvision's VGG16 with ImageNet weights, used when those weights are in the
  local torch cache (``$TORCH_HOME/hub/checkpoints/vgg16-397923af.pth``). Nothing is downloaded.
* ``"streets-vgg"`` (default): a narrow network of the same VGG layout, built with
  torchvision's ``vgg.make_layers``, trained by this project on the embedded data (with a
  segmentation head, so its features keep spatial and semantic detail) and shipped with the
  codec weights. Reports name which one ran.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import vgg as tv_vgg

from . import fast_paths

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VGG16_FILE = "vgg16-397923af.pth"


def _vgg_cfg(widths: tuple[int, ...]) -> list[int | str]:
    cfg: list[int | str] = []
    for w in widths:
        cfg += [w, w, "M"]
    return cfg


class MaxPool2x2(nn.MaxPool2d):
    """``nn.MaxPool2d(2, 2)`` with the same outputs, bit for bit, and a faster inference path.

    Without autograd (the environment's reward and preview), the maximum of the four strided 2x2 sub-grids is taken
    with ``torch.maximum``: max is exact, so the values are those of ``max_pool2d``, which on the CPU is several
    times slower on NCHW tensors (issue 30). With autograd, or for odd sizes, it is ``max_pool2d`` itself (its
    gradient goes to one element of each window)."""

    def __init__(self) -> None:
        super().__init__(kernel_size=2, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        if ((torch.is_grad_enabled() and x.requires_grad) or x.dim() != 4 or x.shape[-1] % 2 or x.shape[-2] % 2
                or not fast_paths.enabled()):
            return super().forward(x)
        return torch.maximum(torch.maximum(x[..., 0::2, 0::2], x[..., 0::2, 1::2]),
                             torch.maximum(x[..., 1::2, 0::2], x[..., 1::2, 1::2]))


def _fast_pools(layers: nn.Module | list[nn.Module]) -> list[nn.Module]:
    """The layers with every 2x2, stride-2, unpadded ``nn.MaxPool2d`` replaced by :class:`MaxPool2x2`."""
    out: list[nn.Module] = []
    for layer in layers:
        plain = (isinstance(layer, nn.MaxPool2d) and not isinstance(layer, MaxPool2x2)
                 and layer.kernel_size in (2, (2, 2)) and layer.stride in (2, (2, 2))
                 and layer.padding in (0, (0, 0)) and layer.dilation in (1, (1, 1)) and not layer.ceil_mode
                 and not layer.return_indices)
        out.append(MaxPool2x2() if plain else layer)
    return out


class PerceptualNet(nn.Module):
    """phi: VGG-layout feature stacks; ``features(x)`` returns the activation of every stage."""

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64), num_classes: int = 19, name: str = "streets-vgg") -> None:
        super().__init__()
        self.name = name
        layers = _fast_pools(tv_vgg.make_layers(_vgg_cfg(widths), batch_norm=False))
        self.stages = nn.ModuleList()
        stage: list[nn.Module] = []
        for layer in layers:
            if isinstance(layer, nn.MaxPool2d):
                self.stages.append(nn.Sequential(*stage))
                stage = [layer]
            else:
                stage.append(layer)
        self.seg_head = nn.Conv2d(sum(widths), num_classes, 1) if num_classes else None
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def features(self, x: Tensor, stages: int | None = None) -> list[Tensor]:
        """phi's feature maps of ``x`` (eq. 11), stage by stage; only the first ``stages`` when given."""
        h = (x - self.mean) / self.std
        feats = []
        for stage in self.stages[:stages]:
            h = stage(h)
            feats.append(h)
        return feats

    def forward(self, x: Tensor) -> Tensor:
        """Segmentation logits (training objective of the project's phi)."""
        feats = self.features(x)
        size = x.shape[-2:]
        stacked = torch.cat([F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in feats], 1)
        return self.seg_head(stacked)


class VGG16Features(nn.Module):
    """torchvision VGG16 (ImageNet weights from the local cache) cut after relu1_2..relu4_3."""

    name = "vgg16"
    CUTS = (4, 9, 16, 23)

    def __init__(self, weights_path: Path) -> None:
        super().__init__()
        model = tv_vgg.vgg16(weights=None)
        model.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True))
        body = model.features[: self.CUTS[-1]]
        self.stages = nn.ModuleList()
        for a, b in zip((0,) + self.CUTS[:-1], self.CUTS):
            cut = body[a:b]  # keeps VGG16's layer names (state-dict keys)
            self.stages.append(nn.Sequential(OrderedDict(zip(cut._modules.keys(), _fast_pools(list(cut))))))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    features = PerceptualNet.features


def local_vgg16_weights() -> Path | None:
    """Path of torchvision's VGG16 ImageNet weights in the local torch cache, if present."""
    home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
    path = home / "hub" / "checkpoints" / VGG16_FILE
    return path if path.is_file() else None


def perceptual_loss(phi: nn.Module, x: Tensor, x_hat: Tensor, x_features: list[Tensor] | None = None) -> Tensor:
    """L_P (eq. 11), per image: mean squared feature distance averaged over phi's stages.

    ``x_features`` lets callers pass cached phi(x) of the original. Returns shape (B,).
    """
    ref = x_features if x_features is not None else phi.features(x)
    return feature_distance(ref, phi.features(x_hat))


def feature_distance(ref: list[Tensor], out: list[Tensor]) -> Tensor:
    """L_P from phi's activations of the originals (``ref``) and of the reconstructions (``out``), per image (B,)."""
    return sum((a - b).pow(2).flatten(1).mean(1) for a, b in zip(ref, out)) / len(out)


def _stage_layout(stage: nn.Module) -> tuple[bool, int]:
    """(whether the stage starts with a 2x2 stride-2 max pool, its number of 3x3 stride-1 'same' convolutions) of a
    VGG-layout stage; anything else raises ``ValueError`` (:func:`window_features` cannot bound its reach)."""
    layers = list(stage.children()) if isinstance(stage, nn.Sequential) else [stage]
    pool, convs = False, 0
    for i, layer in enumerate(layers):
        if isinstance(layer, nn.MaxPool2d) and i == 0 and layer.kernel_size in (2, (2, 2)) \
                and layer.stride in (2, (2, 2)) and layer.padding in (0, (0, 0)) and not layer.ceil_mode:
            pool = True
        elif isinstance(layer, nn.Conv2d) and layer.kernel_size == (3, 3) and layer.stride == (1, 1) \
                and layer.padding == (1, 1) and layer.dilation == (1, 1) and layer.groups == 1:
            convs += 1
        elif not isinstance(layer, (nn.ReLU, nn.Identity)):
            raise ValueError(f"phi stage layer {layer!r}: not a VGG-layout layer")
    return pool, convs


def _grow(box: tuple[int, int, int, int], by: int, height: int, width: int) -> tuple[int, int, int, int]:
    top, bottom, left, right = box
    return max(0, top - by), min(height, bottom + by), max(0, left - by), min(width, right + by)


def _run_valid(stage: nn.Module, h: Tensor, crop: tuple[int, int, int, int], height: int, width: int
               ) -> tuple[Tensor, tuple[int, int, int, int]]:
    """A VGG-layout stage on a crop whose extent at the stage's output resolution is ``crop``: each 3x3 convolution
    zero-pads only the sides where the crop meets the picture's edge (the full pass's own padding) and shrinks the
    others by one position, so nothing outside the valid part is computed. Returns the output and its extent."""
    top, bottom, left, right = crop
    layers = list(stage.children()) if isinstance(stage, nn.Sequential) else [stage]
    for layer in layers:
        if isinstance(layer, nn.Conv2d):
            pads = (int(left == 0), int(right == width), int(top == 0), int(bottom == height))
            if any(pads):
                h = F.pad(h, pads)
            h = F.conv2d(h, layer.weight, layer.bias)
            top, bottom = top + 1 - pads[2], bottom - 1 + pads[3]
            left, right = left + 1 - pads[0], right - 1 + pads[1]
        else:
            h = layer(h)
    return h, (top, bottom, left, right)


def window_features(phi: nn.Module, base: list[Tensor], pictures: Tensor, box: tuple[int, int, int, int]
                    ) -> list[tuple[Tensor, tuple[int, int, int, int]]]:
    """phi's stage activations of ``pictures`` (P,3,H,W) where they can differ from those of a base picture.

    The pictures equal the base picture outside ``box`` = (top, bottom, left, right) (pixel rows top:bottom,
    columns left:right); ``base`` is phi.features of the base picture (batch 1). Per stage this returns the
    activations inside the window of positions that box can reach, (P,C,h,w), and that window at the stage's
    resolution; outside it the pictures' activations are the base's. Each stage runs on a crop of its input with
    its receptive margin (one position per 3x3 convolution, aligned to its pool), each convolution on its valid part
    only (:func:`_run_valid`; at the picture's edges it zero-pads like the full pass), so the activations inside the
    window are those of a full pass up to float rounding (issue 30: the level preview pastes a concept's picture
    into an otherwise unchanged reconstruction)."""
    if len(base) != len(phi.stages):
        raise ValueError(f"base has {len(base)} stage activations, phi has {len(phi.stages)} stages")
    height, width = pictures.shape[-2:]
    dirty = box
    prev: Tensor | None = None
    out: list[tuple[Tensor, tuple[int, int, int, int]]] = []
    for s, stage in enumerate(phi.stages):
        pool, convs = _stage_layout(stage)
        out_h, out_w = (height // 2, width // 2) if pool else (height, width)
        if pool:
            dirty = (dirty[0] // 2, -(-dirty[1] // 2), dirty[2] // 2, -(-dirty[3] // 2))
        window = _grow(dirty, convs, out_h, out_w)  # the positions the change reaches
        crop = _grow(window, convs, out_h, out_w)  # what computes them: the margin of the convolutions
        scale = 2 if pool else 1
        top, bottom, left, right = (v * scale for v in crop)
        if s == 0:
            h = (pictures[..., top:bottom, left:right] - phi.mean) / phi.std
        else:
            h = base[s - 1][..., top:bottom, left:right].expand(len(pictures), -1, -1, -1).clone()
            p_top, p_bottom, p_left, p_right = prev_window
            h[..., p_top - top:p_bottom - top, p_left - left:p_right - left] = prev
        h, ext = _run_valid(stage, h, crop, out_h, out_w)
        vals = h[..., window[0] - ext[0]:window[1] - ext[0], window[2] - ext[2]:window[3] - ext[2]]
        out.append((vals, window))
        prev, prev_window, dirty, height, width = vals, window, window, out_h, out_w
    return out
