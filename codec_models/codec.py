"""The semantic codec: E, F, quantizer, G_l, G_g, attention, plus its real bitstream.

``SemanticCodec`` holds the networks of Sections II-A and III-B and the code tables fitted
after training. Its tensor path (:meth:`analyse`, :meth:`decode`) is what training and the
RL environment use; :meth:`compress` / :meth:`decompress` take an image through real bytes.
Both paths give the same reconstruction for the same levels.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import bitstream, entropy
from .bitstream import BitstreamError
from .classifier import ConceptClassifier
from .config import CodecConfig
from .discriminator import MultiScaleDiscriminator
from .encoder import FeatureExtractor, concept_masks
from .generators import AttentionFusion, GlobalGenerator, LocalGenerator
from .perceptual import PerceptualNet
from .quantizer import LevelQuantizer
from .segmenter import Segmenter


@dataclass
class Analysis:
    """Everything the encoder side knows about a batch of images (computed once)."""

    labels: Tensor  # (B,H,W) int64 label map s
    onehot: Tensor  # (B,M,H,W)
    features: Tensor  # (B,n,h,w) f, unquantized
    mask: Tensor  # (B,M,h,w) s_d(m): positions coded for concept m
    area: Tensor  # (B,M,h,w) share of each block's pixels in class m
    quantized: Tensor  # (Q,B,n,h,w) f quantized at every level

    @property
    def present(self) -> Tensor:
        """(B,M) bool: classes present in each label map."""
        return self.mask.flatten(2).amax(-1) > 0


class SemanticCodec(nn.Module):
    """RL-ASC semantic encoder/decoder with entropy-coded per-concept bitstreams."""

    def __init__(self, config: CodecConfig) -> None:
        super().__init__()
        cfg = config.validate()
        self.config = cfg
        m, n = cfg.num_classes, cfg.code_channels
        aware = self.level_aware
        merged_channels = n + 1 if aware else n  # codec v2: merged f_hat plus the merged level plane
        self.segmenter = Segmenter(m, cfg.segmenter_widths)
        self.encoder = FeatureExtractor(cfg.feature_channels, n, norm=cfg.encoder_norm_kind,
                                        bound=cfg.encoder_bound_kind, block_basis=cfg.block_basis)
        self.quantizer = LevelQuantizer(cfg.level_centers, cfg.soft_sigma, cfg.level_channels, cfg.channel_step_ratio,
                                        n)
        self.classifier = ConceptClassifier(n, m)
        self.local = LocalGenerator(n, m, cfg.local_channels, cfg.local_res_blocks, level_aware=aware,
                                    norm=cfg.uses_local_norm, skip=cfg.uses_local_skip, block_basis=cfg.block_basis,
                                    num_levels=cfg.num_levels if cfg.level_synthesis else 0,
                                    output=cfg.local_output)
        self.global_ = GlobalGenerator(merged_channels, m, cfg.global_channels, cfg.spade_hidden)
        self.attention = AttentionFusion(merged_channels, cfg.attention_channels)
        self.perceptual = PerceptualNet(cfg.perceptual_widths, m)
        self.discriminator = MultiScaleDiscriminator(m, cfg.disc_channels, cfg.disc_scales)
        self.tables: entropy.SymbolTables | None = None
        self.label_model: entropy.LabelMapModel | None = None
        self._codec_id: bytes | None = None

    # ----------------------------------------------------------------- properties
    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def num_levels(self) -> int:
        return self.config.num_levels

    @property
    def level_aware(self) -> bool:
        """Codec v2: the decoder is told each concept's level (and G_l its mask)."""
        return self.config.uses_level_input

    @property
    def bitstream_version(self) -> int:
        """Bitstream format this codec writes and reads: 1 (codec v1), 2 (codec v2: 16-bit concept CRCs),
        3 (codec v2 whose label model has the up-right context, ``entropy.LabelMapModel`` "wnne"), 4 (codec v2
        with the shared base section of the level-0 concepts, ``CodecConfig.base_section``)."""
        if self.config.architecture < 2:
            return 1
        if self.config.base_section:
            return 4
        return 3 if self.label_model is not None and self.label_model.neighbours == "wnne" else 2

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def _split_base(self, parsed: bitstream.ParsedStream, level0: list[int], mask: Tensor, strict: bool
                    ) -> dict[int, tuple[int, np.ndarray | bytes, bool]]:
        """Format 4: decode the base section into the level-0 symbols of the concepts ``level0`` (class order);
        a damaged base leaves them all to the fallback."""
        tables, _ = self._require_tables()
        counts = [int((mask[m] > 0).sum()) for m in level0]
        damaged = {m: (0, b"", False) for m in level0}
        if not parsed.base_ok:
            return damaged
        try:
            symbols = entropy.decode_base(parsed.base_payload, 0, counts, tables)
        except BitstreamError:
            if strict:
                raise
            return damaged
        used = -(-sum(entropy.base_code_length(s, 0, tables) for s in symbols) // 8)
        if used != len(parsed.base_payload):
            if strict:
                raise BitstreamError(f"base section holds {len(parsed.base_payload)} bytes, its concepts' code "
                                     f"words fill {used}")
            return damaged
        return {m: (0, sym, True) for m, sym in zip(level0, symbols)}

    @property
    def codec_id(self) -> bytes:
        """4-byte fingerprint of weights and code tables, written in every bitstream header."""
        if self._codec_id is None:
            digest = hashlib.sha256(repr(self.config.id_dict()).encode())
            for name, tensor in sorted(self.inference_state().items()):
                digest.update(name.encode())
                digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
            if self.tables is not None:
                for name, tensor in sorted(self.tables.state_dict().items()):
                    digest.update(tensor.cpu().numpy().tobytes())
            if self.label_model is not None and self.label_model.neighbours != "wn":  # ("wn" ids stay as they were)
                digest.update(self.label_model.state_dict()["counts"].numpy().tobytes())
            self._codec_id = digest.digest()[:4]
        return self._codec_id

    def inference_state(self) -> dict[str, Tensor]:
        skip = ("discriminator.",)
        return {k: v for k, v in self.state_dict().items() if not k.startswith(skip)}

    def invalidate_id(self) -> None:
        self._codec_id = None

    # ----------------------------------------------------------------- encoder side
    def check_images(self, images: Tensor) -> Tensor:
        """Validate a (3,H,W) or (B,3,H,W) float image batch in [0,1]; return (B,3,H,W)."""
        if not isinstance(images, Tensor):
            raise TypeError(f"image must be a torch.Tensor, not {type(images).__name__}")
        if images.dim() == 3:
            images = images.unsqueeze(0)
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"image must have shape (3,H,W) or (B,3,H,W), got {tuple(images.shape)}")
        h, w = images.shape[-2:]
        if h % 8 or w % 8 or h < 8 or w < 8 or h > 8192 or w > 8192:
            raise ValueError(f"image size {h}x{w} must be a multiple of 8 in [8, 8192] (this codec was trained at "
                             f"{self.config.height}x{self.config.width})")
        if not images.is_floating_point():
            raise ValueError(f"image must be a float tensor in [0,1], got dtype {images.dtype}")
        if images.numel() and (images.min() < 0 or images.max() > 1):
            raise ValueError("image values must lie in [0, 1]")
        return images.to(self.device, torch.float32)

    def segment(self, images: Tensor) -> Tensor:
        """s = F(x): label map (B,H,W)."""
        return self.segmenter.predict(images)

    def analyse(self, images: Tensor, labels: Tensor | None = None) -> Analysis:
        """Encode once: label map (F, or given ground truth), f = E(x), masks, all levels."""
        if labels is None:
            labels = self.segment(images)
        labels = labels.to(images.device).long()
        mask, area = concept_masks(labels, self.num_classes)
        features = self.encoder(images)
        onehot = F.one_hot(labels, self.num_classes).permute(0, 3, 1, 2).float()
        return Analysis(labels, onehot, features, mask, area, self.quantizer.all_levels(features))

    # ----------------------------------------------------------------- decoder side
    @staticmethod
    def select_levels(analysis: Analysis, levels: Tensor) -> Tensor:
        """Quantized features of each (image, concept) at its level: (B,M,n,h,w)."""
        q = analysis.quantized  # (Q,B,n,h,w)
        batch = torch.arange(q.shape[1], device=q.device).view(-1, 1).expand_as(levels)
        return q[levels, batch]

    def level_value(self, levels: Tensor) -> Tensor:
        """The decoder's level plane value (q+1)/Q of level indices."""
        return (levels.to(torch.float32) + 1.0) / self.num_levels

    def merged_features(self, analysis: Analysis, per_concept: Tensor, levels: Tensor | None = None) -> Tensor:
        """f_hat fed to G_g and the attention module: concepts merged by area share.

        Codec v2 appends the merged level plane sum_m area(m) * (a(m)+1)/Q, so G_g and the
        attention know how finely each region was coded; ``levels`` (B,M) is then required.
        """
        area = analysis.area
        merged = (per_concept * area.unsqueeze(2)).sum(1)
        if not self.level_aware:
            return merged
        if levels is None:
            raise ValueError("codec v2 merges features with their levels: pass levels (B,M)")
        plane = (area * self.level_value(levels).view(*levels.shape, 1, 1)).sum(1, keepdim=True)
        return torch.cat([merged, plane], dim=1)

    def concept_images(self, concepts: Tensor, class_ids: Tensor, levels: Tensor | None = None,
                       masks: Tensor | None = None) -> Tensor:
        """y(m) = G_l(f_hat(m)) (eq. 28) for (P,n,h,w) masked concept features -> (P,3,H,W).

        Codec v2 also needs each concept's level (P,) and mask s_d(m) (P,h,w) or (P,1,h,w).
        """
        planes = None
        if self.level_aware:
            if levels is None or masks is None:
                raise ValueError("codec v2's G_l needs the concepts' levels and masks")
            masks = masks.view(concepts.shape[0], 1, *concepts.shape[-2:]).to(concepts.dtype)
            planes = masks * self.level_value(levels).view(-1, 1, 1, 1)
        inputs = self.local.trunk_input(concepts, planes, masks)
        return self.local.run_heads(self.local.run_trunk(inputs), class_ids, self.local.skip_logits(concepts, levels))

    def fuse(self, merged: Tensor, onehot: Tensor, x_local: Tensor) -> Tensor:
        """x_hat = W_l ⊙ x_l + W_g ⊙ G_g(f_hat, s) (eq. 30-31)."""
        return self.attention(merged, x_local, self.global_(merged, onehot))

    def decode(self, analysis: Analysis, levels: Tensor, return_parts: bool = False):
        """Reconstruct x_hat (B,3,H,W) with each concept at ``levels`` (B,M) (differentiable)."""
        per_concept = self.select_levels(analysis, levels) * analysis.mask.unsqueeze(2)
        batch_index, class_ids = analysis.present.nonzero(as_tuple=True)
        y = self.concept_images(per_concept[batch_index, class_ids], class_ids, levels[batch_index, class_ids],
                                analysis.mask[batch_index, class_ids])
        x_local = LocalGenerator.compose(y, class_ids, batch_index, analysis.labels)
        merged = self.merged_features(analysis, per_concept, levels)
        x_hat = self.fuse(merged, analysis.onehot, x_local)
        if return_parts:
            return x_hat, {"per_concept": per_concept, "batch_index": batch_index, "class_ids": class_ids,
                           "x_local": x_local}
        return x_hat

    # ----------------------------------------------------------------- levels
    def level_map(self, levels: Mapping[int, int] | None) -> list[int]:
        """Validate a {class id: level} mapping; return the level of every class (default highest)."""
        out = [self.num_levels - 1] * self.num_classes
        if levels is None:
            return out
        if not isinstance(levels, Mapping):
            raise TypeError("levels must be a mapping {class id: level index}")
        for cls, lvl in levels.items():
            if isinstance(cls, bool) or not isinstance(cls, (int, np.integer)) or not 0 <= int(cls) < self.num_classes:
                raise ValueError(f"class id {cls!r} out of range [0, {self.num_classes})")
            if isinstance(lvl, bool) or not isinstance(lvl, (int, np.integer)) or not 0 <= int(lvl) < self.num_levels:
                raise ValueError(f"level {lvl!r} for class {cls} out of range [0, {self.num_levels})")
            out[int(cls)] = int(lvl)
        return out

    # ----------------------------------------------------------------- bitstream
    def _require_tables(self) -> tuple[entropy.SymbolTables, entropy.LabelMapModel]:
        if self.tables is None or self.label_model is None:
            raise RuntimeError("this codec has no fitted code tables; run codec_models.training.fit_code_tables "
                               "(train_codec.py does it after stage I)")
        return self.tables, self.label_model

    def concept_symbols(self, analysis: Analysis, index: int, class_id: int, level: int) -> np.ndarray:
        """Quantization indices (n, P) of concept ``class_id`` of image ``index`` at ``level``."""
        positions = analysis.mask[index, class_id] > 0
        idx = self.quantizer.indices(analysis.features[index], level)  # (n,h,w)
        kept = self.config.channels_at(level)  # codec v2: coarse levels send fewer channels
        return idx[:kept, positions].cpu().numpy()

    def encode_concept(self, analysis: Analysis, index: int, class_id: int, level: int) -> bytes:
        """r(m) = Huffman(f_hat(m)) (eq. 26): the payload of one concept."""
        tables, _ = self._require_tables()
        return entropy.encode_symbols(self.concept_symbols(analysis, index, class_id, level), level, tables,
                                      self.config.coder)

    def concept_bits(self, analysis: Analysis, index: int, class_id: int, level: int) -> int:
        """Bits that concept ``class_id`` at ``level`` adds to the file (eq. 27): its entry, payload and CRC; in
        format 4 at level 0, its pair-code words in the base section (the base's final padding is the file's:
        :meth:`file_bits`)."""
        if self.bitstream_version >= bitstream.BASE_SECTION_VERSION and level == 0:
            tables, _ = self._require_tables()
            return entropy.base_code_length(self.concept_symbols(analysis, index, class_id, 0), 0, tables)
        n = len(self.encode_concept(analysis, index, class_id, level))
        return 8 * (2 + bitstream.varint_size(n) + n + bitstream.CONCEPT_CRC_BYTES[self.bitstream_version])

    def base_bits(self, height: int, width: int, label_len: int) -> int:
        """Bits of a file without any concept: header, label map, their CRCs (and format 4's base CRC)."""
        return 8 * bitstream.section_sizes(self.stream_header(height, width, []), label_len, [])

    def file_bits(self, base_bits: int, concept_bits: int, level0_bits: int) -> int:
        """Bits of the whole file from :meth:`base_bits`, the sum of :meth:`concept_bits` over its concepts, and
        the part of that sum at level 0: format 4 pads the base section to a byte."""
        pad = (-level0_bits) % 8 if self.bitstream_version >= bitstream.BASE_SECTION_VERSION else 0
        return base_bits + concept_bits + pad

    def assemble(self, height: int, width: int, label_payload: bytes, concepts: list[tuple[int, int]],
                 payload: Callable[[int, int], bytes], symbols: Callable[[int], np.ndarray]) -> bytes:
        """Pack a file: ``concepts`` (class id, level) in class order, ``payload(m, q)`` the section of a concept
        and, in format 4, ``symbols(m)`` the level-0 symbols of a concept at level 0 (its code words go to the
        base section)."""
        if self.bitstream_version < bitstream.BASE_SECTION_VERSION:
            header = self.stream_header(height, width, concepts)
            return bitstream.pack(header, label_payload, [payload(m, q) for m, q in concepts])
        tables, _ = self._require_tables()
        coded = [(m, q) for m, q in concepts if q > 0]
        base = entropy.encode_base([symbols(m) for m, q in concepts if q == 0], 0, tables)
        header = self.stream_header(height, width, coded)
        return bitstream.pack(header, label_payload, [payload(m, q) for m, q in coded], base)

    def encode_labels(self, labels: Tensor) -> bytes:
        """r_s: the label map coded losslessly (eq. 27)."""
        _, model = self._require_tables()
        return entropy.encode_label_map(labels.cpu().numpy().astype(np.uint8), model)

    def stream_header(self, height: int, width: int, concepts: list[tuple[int, int]]) -> bitstream.StreamHeader:
        cfg = self.config
        return bitstream.StreamHeader(height=height, width=width, codec_id=self.codec_id, num_classes=cfg.num_classes,
                                      num_levels=cfg.num_levels, channels=cfg.code_channels, coder=cfg.coder,
                                      concepts=concepts, version=self.bitstream_version)

    @torch.no_grad()
    def compress(self, image: Tensor, levels: Mapping[int, int] | None = None, labels: Tensor | None = None) -> bytes:
        """Image (3,H,W) in [0,1] -> bytes. ``levels``: {class id: level}, absent -> highest."""
        level_of = self.level_map(levels)
        images = self.check_images(image)
        if images.shape[0] != 1:
            raise ValueError("compress takes one image (3,H,W)")
        self._require_tables()
        analysis = self.analyse(images, None if labels is None else labels.view(1, *labels.shape[-2:]))
        present = analysis.present[0].nonzero().flatten().tolist()
        concepts = [(m, level_of[m]) for m in present]
        return self.assemble(images.shape[-2], images.shape[-1], self.encode_labels(analysis.labels[0]), concepts,
                             lambda m, q: self.encode_concept(analysis, 0, m, q),
                             lambda m: self.concept_symbols(analysis, 0, m, 0))

    @torch.no_grad()
    def decompress(self, data: bytes, strict: bool = True) -> Tensor:
        """Bytes -> image (3,H,W). Invalid bytes raise :class:`BitstreamError`.

        ``strict=False`` (after a noisy channel): a damaged concept falls back to its coarsest
        reconstruction (level 0, most probable symbol per channel); only a damaged header raises.
        """
        return self.decompress_with_info(data, strict)[0]

    @torch.no_grad()
    def decompress_with_info(self, data: bytes, strict: bool = True) -> tuple[Tensor, dict]:
        tables, label_model = self._require_tables()
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError("data must be bytes")
        parsed = bitstream.unpack(bytes(data), strict=strict, expected_codec_id=self.codec_id,
                                  version=self.bitstream_version)
        head = parsed.header
        cfg = self.config
        if (head.num_classes, head.num_levels, head.channels) != (cfg.num_classes, cfg.num_levels, cfg.code_channels):
            raise BitstreamError("bitstream shape (classes, levels, channels) does not match this codec")
        try:
            labels_np = entropy.decode_label_map(parsed.label_payload, head.height, head.width, label_model)
        except BitstreamError:
            if strict:
                raise
            labels_np = np.zeros((head.height, head.width), np.uint8)
        labels = torch.from_numpy(labels_np.astype(np.int64)).to(self.device).unsqueeze(0)
        mask, area = concept_masks(labels, self.num_classes)
        present = set((mask[0].flatten(1).amax(1) > 0).nonzero().flatten().tolist())
        coded = {m for m, _ in head.concepts}
        base_levels = head.has_base
        if strict and (not coded <= present if base_levels else coded != present):
            raise BitstreamError("concept list in the header does not match the decoded label map")
        n, h, w = cfg.code_channels, head.height // 8, head.width // 8
        levels = torch.zeros(1, self.num_classes, dtype=torch.long, device=self.device)
        quantized = torch.zeros(self.num_levels, 1, n, h, w, device=self.device)
        damaged: list[int] = []
        sections = {m: (q, payload, ok) for (m, q), payload, ok in
                    zip(head.concepts, parsed.concept_payloads, parsed.concept_ok)}
        if base_levels:
            sections.update(self._split_base(parsed, sorted(present - coded), mask[0], strict))
        for m in sorted(present):
            positions = mask[0, m] > 0
            count = int(positions.sum())
            q, payload, ok = sections.get(m, (0, b"", False))
            symbols = None
            if isinstance(payload, np.ndarray):  # format 4: decoded with the base section
                symbols = payload
            elif ok:
                try:
                    symbols = entropy.decode_symbols(payload, q, count, tables, head.coder)
                except BitstreamError:
                    if strict:
                        raise
            if symbols is None:
                damaged.append(m)
                q = 0
                symbols = np.repeat(tables.probabilities(0).argmax(-1)[:, None], count, axis=1)
            values = self.quantizer.dequantize(torch.from_numpy(np.asarray(symbols, np.int64)).to(self.device), q,
                                              channel_dim=0)
            quantized[q, 0][:values.shape[0], positions] = values  # channels a level does not send stay 0
            levels[0, m] = q
        onehot = F.one_hot(labels, self.num_classes).permute(0, 3, 1, 2).float()
        analysis = Analysis(labels, onehot, quantized[-1], mask, area, quantized)
        x_hat = self.decode(analysis, levels)[0]
        return x_hat, {"labels": labels[0], "levels": levels[0], "damaged": damaged, "label_ok": parsed.label_ok}
