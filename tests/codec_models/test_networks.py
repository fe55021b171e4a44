"""Forward passes of every network of the codec, the quantizer (eq. 24-25) and the losses."""
from __future__ import annotations

import pytest
import torch

from codec_models.classifier import ConceptClassifier, classification_loss
from codec_models.codec import SemanticCodec
from codec_models.config import CodecConfig, codec_preset
from codec_models.discriminator import MultiScaleDiscriminator, discriminator_hinge_loss, generator_hinge_loss
from codec_models.encoder import FeatureExtractor, concept_masks, split_concepts
from codec_models.generators import AttentionFusion, GlobalGenerator, LocalGenerator
from codec_models.perceptual import PerceptualNet, perceptual_loss
from codec_models.quantizer import LevelQuantizer
from codec_models.segmenter import Segmenter

B, H, W, M, N = 2, 32, 64, 19, 4


@pytest.fixture()
def batch():
    torch.manual_seed(0)
    images = torch.rand(B, 3, H, W)
    labels = torch.randint(0, 5, (B, H // 8, W // 8)).repeat_interleave(8, 1).repeat_interleave(8, 2)
    labels[:, :3, :5] = 7  # a small object smaller than one 8x8 block
    return images, labels


def test_segmenter_shapes(batch):
    images, _ = batch
    net = Segmenter(M, (4, 8, 16))
    assert net(images).shape == (B, M, H, W)
    assert net.predict(images).dtype == torch.int64


def test_encoder_is_bounded_at_one_eighth(batch):
    images, _ = batch
    f = FeatureExtractor(16, N)(images)
    assert f.shape == (B, N, H // 8, W // 8)
    assert f.abs().max() <= 1


def test_concept_masks_and_split(batch):
    _, labels = batch
    mask, area = concept_masks(labels, M)
    assert mask.shape == area.shape == (B, M, H // 8, W // 8)
    torch.testing.assert_close(area.sum(1), torch.ones(B, H // 8, W // 8))
    assert mask[0, 7, 0, 0] == 1  # a class smaller than a block still gets its position
    f = torch.rand(B, N, H // 8, W // 8)
    parts = split_concepts(f, mask)
    assert parts.shape == (B, M, N, H // 8, W // 8)
    assert (parts[:, 10] == 0).all()  # absent class -> zero map (eq. 2)


def test_quantizer_hard_forward_soft_backward():
    q = LevelQuantizer((2, 4, 8), soft_sigma=1.0)
    f = torch.linspace(-1, 1, 101, requires_grad=True)
    for level, k in enumerate((2, 4, 8)):
        out = q(f, level)
        assert torch.unique(out.detach()).numel() <= k
        centres = q.centres(level)
        nearest = centres[(f.detach().unsqueeze(-1) - centres).abs().argmin(-1)]
        torch.testing.assert_close(out.detach(), nearest)  # eq. 24
        out.sum().backward()
        assert f.grad is not None and f.grad.abs().sum() > 0  # eq. 25 gives gradients
        f.grad = None
    idx = q.indices(f.detach(), 2)
    torch.testing.assert_close(q.dequantize(idx, 2), q(f.detach(), 2))


def test_quantizer_finer_levels_reduce_error():
    q = LevelQuantizer((2, 3, 4, 6, 8, 12))
    f = torch.rand(10000) * 2 - 1
    errors = [(q(f, level) - f).abs().mean().item() for level in range(6)]
    assert errors == sorted(errors, reverse=True)


def test_generators_and_attention(batch):
    _, labels = batch
    onehot = torch.nn.functional.one_hot(labels, M).permute(0, 3, 1, 2).float()
    feats = torch.rand(B, N, H // 8, W // 8) * 2 - 1
    local = LocalGenerator(N, M, channels=8, res_blocks=5)
    concepts = torch.rand(3, N, H // 8, W // 8)
    ids = torch.tensor([0, 7, 3])
    y = local.concept_images(concepts, ids) if hasattr(local, "concept_images") else local.run_heads(local.run_trunk(concepts), ids)
    assert y.shape == (3, 3, H, W) and y.min() >= 0 and y.max() <= 1
    x_l = LocalGenerator.compose(y, ids, torch.tensor([0, 0, 1]), labels)
    assert x_l.shape == (B, 3, H, W)
    # a head is specific to its class: the same features through another head differ
    y_other = local.run_heads(local.run_trunk(concepts), torch.tensor([1, 7, 3]))
    assert not torch.allclose(y[0], y_other[0])
    x_g = GlobalGenerator(N, M, channels=8, hidden=8)(feats, onehot)
    assert x_g.shape == (B, 3, H, W)
    att = AttentionFusion(N, 8)
    weights = att.weights(feats)
    torch.testing.assert_close(weights.sum(1), torch.ones(B, H, W))  # W_l + W_g = 1 (eq. 31)
    assert att(feats, x_l, x_g).shape == (B, 3, H, W)


def test_discriminator_and_hinge_losses(batch):
    images, labels = batch
    onehot = torch.nn.functional.one_hot(labels, M).permute(0, 3, 1, 2).float()
    disc = MultiScaleDiscriminator(M, channels=8, scales=2)
    outs = disc(images, onehot)
    assert len(outs) == 2 and outs[1].shape[-1] < outs[0].shape[-1]
    real = [torch.full_like(o, 2.0) for o in outs]
    fake = [torch.full_like(o, -2.0) for o in outs]
    assert discriminator_hinge_loss(real, fake).item() == 0.0  # both well classified (eq. 32)
    assert generator_hinge_loss(fake).item() == pytest.approx(2.0)


def test_classifier_loss_and_perceptual(batch):
    images, _ = batch
    clf = ConceptClassifier(N, M)
    concepts = torch.rand(4, N, 4, 8)
    mask = torch.zeros(4, 4, 8)
    mask[:, :2] = 1
    logits = clf(concepts, mask)
    assert logits.shape == (4, M)
    assert classification_loss(logits, torch.tensor([0, 1, 2, 3])).item() > 0
    phi = PerceptualNet((4, 8), M)
    assert phi(images).shape == (B, M, H, W)
    lp = perceptual_loss(phi, images, images)
    assert lp.shape == (B,) and torch.all(lp == 0)
    assert torch.all(perceptual_loss(phi, images, images.flip(-1)) > 0)


def test_codec_decode_is_differentiable(batch):
    images, labels = batch
    codec = SemanticCodec(codec_preset("test"))
    analysis = codec.analyse(images, labels)
    levels = torch.randint(0, codec.num_levels, (B, M))
    x_hat = codec.decode(analysis, levels)
    assert x_hat.shape == images.shape and 0 <= x_hat.min() and x_hat.max() <= 1
    x_hat.mean().backward()
    assert codec.encoder.project.weight.grad.abs().sum() > 0


def test_config_validation():
    with pytest.raises(ValueError, match="multiple of 8"):
        CodecConfig(height=30).validate()
    with pytest.raises(ValueError, match="unknown codec preset"):
        codec_preset("huge")
    cfg = codec_preset("tiny")
    assert CodecConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown codec config keys"):
        CodecConfig.from_dict({**cfg.to_dict(), "bogus": 1})


def test_level_synthesis_option_decodes_and_depends_on_the_level():
    """block_basis + level_synthesis: G_l's skip has a correction per level, selected by each concept's level."""
    from codec_models.codec import SemanticCodec
    from codec_models.config import codec_preset

    torch.manual_seed(0)
    codec = SemanticCodec(codec_preset("test-v2", block_basis=True, level_synthesis=True)).eval()
    with torch.no_grad():
        codec.local.level_synthesis.normal_()
        concepts = torch.randn(2, 4, 4, 8)
        ids = torch.tensor([0, 5])
        masks = torch.ones(2, 4, 8)
        a = codec.concept_images(concepts, ids, torch.tensor([2, 2]), masks)
        b = codec.concept_images(concepts, ids, torch.tensor([2, 0]), masks)
    assert a.shape == (2, 3, 32, 64)
    assert torch.equal(a[0], b[0]) and not torch.equal(a[1], b[1])


def test_quantization_matrix_steps_grow_over_the_channels():
    """channel_step_ratio r: channel c of n quantized with the level's step times r ** (c / (n - 1)); hard values are
    the nearest centres of each channel's grid, indices round-trip, eq. 25's gradient flows, r = 1 is eq. 24."""
    flat, graded = LevelQuantizer((5, 9, 33), num_channels=4), LevelQuantizer((5, 9, 33), channel_step_ratio=8.0,
                                                                               num_channels=4)
    f = (torch.rand(2, 4, 3, 5) * 2 - 1).requires_grad_()
    for level, k in enumerate((5, 9, 33)):
        step = 2.0 / (k - 1) * 8.0 ** (torch.arange(4) / 3.0)
        out = graded(f, level)
        grid = torch.round(f.detach().clamp(-1, 1) / step.view(4, 1, 1)).clamp(-(k - 1) // 2, (k - 1) // 2)
        torch.testing.assert_close(out.detach(), grid * step.view(4, 1, 1))
        idx = graded.indices(f.detach(), level)
        assert idx.min() >= 0 and idx.max() < k
        torch.testing.assert_close(graded.dequantize(idx, level), out.detach())
        sym = idx[0].flatten(1)  # (n, P): the decoder's layout, channels first
        torch.testing.assert_close(graded.dequantize(sym, level, channel_dim=0), out.detach()[0].flatten(1))
        out.sum().backward()
        assert f.grad is not None and f.grad.abs().sum() > 0
        f.grad = None
        assert torch.equal(flat.indices(f.detach(), level), LevelQuantizer((5, 9, 33)).indices(f.detach(), level))
    coarse = (graded(f.detach(), 2) - f.detach()).abs().mean((0, 2, 3))
    assert coarse[-1] > 2 * coarse[0]  # the last channel's step is 8x the first's


def test_quantization_matrix_needs_odd_centres_and_a_ratio_of_one_or_more():
    from codec_models.config import codec_preset

    with pytest.raises(ValueError, match="odd"):
        LevelQuantizer((2, 4, 8), channel_step_ratio=4.0, num_channels=2)
    with pytest.raises(ValueError, match=">= 1"):
        LevelQuantizer((3, 5), channel_step_ratio=0.5, num_channels=2)
    with pytest.raises(ValueError, match="odd"):
        codec_preset("test-v2", channel_step_ratio=4.0)
    cfg = codec_preset("test-v2", level_centers=(3, 5, 9), channel_step_ratio=4.0)
    assert "channel_step_ratio" in cfg.id_dict() and "channel_step_ratio" not in codec_preset("test-v2").id_dict()
