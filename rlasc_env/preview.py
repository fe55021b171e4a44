"""Level preview: what each quantization level of the next concept would cost and buy, as the encoder can measure it.

The encoder holds the decoder, so before it picks a level for concept m it can code m at every level q and look at
the result, the way a classic encoder's rate-distortion optimisation tries its modes. Per level q:

- ``rate``: lam * (psi with m at q - psi with m at level 0) / (H*W), the rate term of eq. 13 for this step, exact
  (the concept's real bitstream section at each level);
- ``perceptual``: eta * (L_P with y(m, 0) - L_P with y(m, q)), eq. 11's drop when the local generator's picture of
  the concept at level q, y(m, q) = G_l(f_hat(m)) (eq. 28), replaces the concept's region of the current
  reconstruction; the global generator and the attention fusion (eq. 30-31) are not rerun, and the task network
  is not run, so this is an estimate of the perceptual part of the step's reward, not the reward.

Both are in reward units (eq. 14). ``preview_stats`` scales them by the concept's stake, s = max_q rate + max_q
|perceptual|, so they lie in [-1, 1] and keep their ratio (which level a reward-maximising chooser would pick from
them is unchanged), and adds s itself on a log scale.
"""
from __future__ import annotations

import numpy as np
import torch

from codec_models import fast_paths
from codec_models.perceptual import window_features

from .chunks import network_chunk
from .reward import rate_term

__all__ = ["level_preview", "observation_key", "preview_entries", "preview_stats", "preview_size", "current_x_hat",
           "pasted_levels", "STAKE_FLOOR"]

STAKE_FLOOR = 1e-4
"""Stakes below this (a concept of a few pixels) count as this in the log-scale entry."""


def preview_size(num_levels: int) -> int:
    """Number of stats entries the preview adds: the log stake, then Q rate and Q perceptual entries."""
    return 1 + 2 * int(num_levels)


def preview_entries(stats, num_levels: int):
    """(rate, perceptual) rows, each (B, Q), of a batch of ``stats`` (NumPy or torch) that end with the preview."""
    q = int(num_levels)
    return stats[:, -2 * q:-q], stats[:, -q:]


def current_x_hat(core, slots: np.ndarray) -> torch.Tensor:
    """x_hat (k,3,H,W) of ``slots`` at their current levels, rebuilding only those of them a memoized step left
    stale (the core's ``x_hat`` property would rebuild every stale slot, also those not asked for)."""
    stale = slots[core.hat_stale[slots] & core.started[slots]]
    if len(stale):
        core._decode(stale)
    return core.x_hat_store[torch.as_tensor(slots, device=core.device)]


def observation_key(core, slot: int) -> tuple[int, tuple[int, ...]]:
    """What the preview of a slot depends on: its image and the levels of the concepts coded so far (the concept
    previewed is the next one in the fixed coding order)."""
    return int(core.image_key[slot]), tuple(core.levels_np[slot, core.order[slot, :core.t[slot]]].tolist())


@torch.inference_mode()
def level_preview(core, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rate, perceptual), each (k, Q) float64 in reward units, for the next concept of each live slot of ``core``
    (an :class:`rlasc_env.env.EpisodeCore`). A state seen before (another rollout of the same image and levels so
    far) is served by ``core.parts.preview_memo``, the same floats; slots that share a state in one call share
    one computation."""
    slots = np.asarray(slots, np.int64)
    memo = core.preview_memo
    memo.validate()
    raw: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(slots)
    todo: dict[tuple[int, tuple[int, ...]], list[int]] = {}
    for j, slot in enumerate(slots.tolist()):
        key = observation_key(core, slot)
        raw[j] = memo.get(key)
        if raw[j] is None:
            todo.setdefault(key, []).append(j)
    if todo:
        firsts = np.array([rows[0] for rows in todo.values()], np.int64)
        bpp, drop = _measure(core, slots[firsts])
        for i, (key, rows) in enumerate(todo.items()):
            memo.put(key, (bpp[i], drop[i]))
            for j in rows:
                raw[j] = (bpp[i], drop[i])
    bpp = np.stack([r[0] for r in raw])  # type: ignore[index]
    drop = np.stack([r[1] for r in raw])  # type: ignore[index]
    return core.lam_slot[slots, None] * bpp, core.eta * drop


def _measure(core, slots: np.ndarray, windowed: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per slot and level: the bits per pixel the concept adds over level 0, and L_P's drop from level 0 with
    y(m, q) pasted. Computes y(m, q) for every level and keeps it in the core's concept image cache, and the
    concept's bitstream section size at every level (both reused by the step).

    ``windowed`` (default: ``codec_models.fast_paths.windowed_preview_enabled()``, off) runs phi on the pasted
    pictures only where they can differ from the current reconstruction (:func:`_windowed_drops`); otherwise phi runs
    on the whole pictures (:func:`_grouped_perceptual_loss`). The two agree to float rounding (tested)."""
    if windowed is None:
        windowed = fast_paths.windowed_preview_enabled()
    q, dev, st = core.Q, core.device, core.store
    k = len(slots)
    cls = core.order[slots, core.t[slots]]
    bpp = np.zeros((k, q))
    for i, (s, m) in enumerate(zip(slots.tolist(), cls.tolist())):
        bits = np.array([core._concept_bits(s, m, lv) for lv in range(q)], np.float64)
        bpp[i] = rate_term(bits, bits[0], core.pixels)
    slot_t, cls_t = torch.as_tensor(slots, device=dev), torch.as_tensor(cls, device=dev)
    y = _concept_levels(core, slots, cls)
    region = (st.labels[slot_t] == cls_t.view(-1, 1, 1)).unsqueeze(1)  # (k,1,H,W)
    for i, (s, m) in enumerate(zip(slots.tolist(), cls.tolist())):
        for lv in range(q):
            if not core.y_ready[s, m, lv]:
                core.y_levels[s, lv] = torch.where(region[i], y[i, lv], core.y_levels[s, lv])
                core.y_ready[s, m, lv] = True
    pasted = pasted_levels(core, slots, y)
    if windowed:
        return bpp, _windowed_drops(core, slots, pasted, region)
    lp = _grouped_perceptual_loss(core.phi, pasted, [f[slot_t] for f in core.phi_feats], q)
    lp = lp.double().cpu().numpy()
    return bpp, lp[:, :1] - lp


def _concept_levels(core, slots: np.ndarray, cls: np.ndarray) -> torch.Tensor:
    """y(m, q) (k, Q, 3, H, W) of each slot's concept ``cls`` at every level (eq. 28), one G_l call for all.

    Slots holding the same image would need G_l once per (image, concept), since y(m, q) depends on nothing else,
    but the batch's composition changes the last bits of G_l's floats (measured in session 23: the default command
    then trains another policy), so every slot keeps its own pictures, as in the reference path."""
    q, dev, st = core.Q, core.device, core.store
    s_t = torch.as_tensor(slots, device=dev).repeat_interleave(q)
    m_t = torch.as_tensor(cls, device=dev).repeat_interleave(q)
    q_t = torch.arange(q, device=dev).repeat(len(slots))
    masks = st.mask[s_t, m_t].unsqueeze(1)
    y = core.codec.concept_images(st.quantized[q_t, s_t] * masks, m_t, q_t, masks)
    return y.view(len(slots), q, 3, core.height, core.width)


def _base_features(core, slots: np.ndarray) -> list[torch.Tensor]:
    """phi's activations of the current x_hat of ``slots``: those the step kept (``core.phi_hat``), the others
    computed here (and kept)."""
    x_hat = current_x_hat(core, slots)  # rebuilds stale slots first (which drops what was kept of them)
    missing = np.flatnonzero(~core.phi_hat_ok[slots])
    if len(missing):
        size = network_chunk(x_hat.device)
        for a in range(0, len(missing), size):
            rows = missing[a:a + size]
            core._keep_phi_hat(slots[rows], core.phi.features(x_hat[torch.as_tensor(rows, device=x_hat.device)]))
    sel = torch.as_tensor(slots, device=core.device)
    return [f[sel] for f in core.phi_hat]


def _windowed_drops(core, slots: np.ndarray, pasted: torch.Tensor, region: torch.Tensor) -> np.ndarray:
    """(k, Q) float64: L_P (eq. 11) with y(m, 0) pasted minus L_P with y(m, q) pasted, from phi's activations inside
    the windows the concept's bounding box reaches (``codec_models.perceptual.window_features``). Outside them the
    pasted pictures' activations are the current x_hat's, so their squared distances to phi(x) cancel in the
    difference; inside, the sums are taken in float64."""
    q, k = core.Q, len(slots)
    base = _base_features(core, slots)
    sel = torch.as_tensor(slots, device=core.device)
    target = [f[sel] for f in core.phi_feats]
    drops = np.zeros((k, q))
    rows_any, cols_any = region[:, 0].any(2), region[:, 0].any(1)  # (k,H), (k,W)
    for i in range(k):
        rows, cols = torch.nonzero(rows_any[i]).flatten(), torch.nonzero(cols_any[i]).flatten()
        if not len(rows):
            continue
        box = (int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)
        parts = window_features(core.phi, [b[i:i + 1] for b in base], pasted[i * q:(i + 1) * q], box)
        lp = torch.zeros(q, dtype=torch.float64, device=core.device)
        for (vals, (top, bottom, left, right)), fx in zip(parts, target):
            diff = vals - fx[i:i + 1, :, top:bottom, left:right]
            lp += diff.pow(2).flatten(1).sum(1, dtype=torch.float64) / fx[i].numel()
        lp = (lp / len(parts)).cpu().numpy()
        drops[i] = lp[0] - lp
    return drops


def _grouped_perceptual_loss(phi, pasted: torch.Tensor, feats: list[torch.Tensor], q: int) -> torch.Tensor:
    """(k, Q): L_P (eq. 11, ``codec_models.perceptual.perceptual_loss``) of ``pasted`` (k * Q pictures, Q per
    slot) against phi(x) of each slot (``feats``, k rows each), broadcast over the Q pictures of a slot rather than
    copied Q times; the same floats as ``perceptual_loss`` on the repeated features."""
    k = len(feats[0])
    per_pass = max(1, network_chunk(pasted.device) // q)  # slots per phi pass (rlasc_env.chunks.CPU_NETWORK_CHUNK)
    rows = []
    for s in range(0, k, per_pass):
        out = phi.features(pasted[s * q:(s + per_pass) * q])
        n = len(out[0]) // q
        rows.append(sum((a.view(n, q, *a.shape[1:]) - b[s:s + n].unsqueeze(1)).pow(2).flatten(2).mean(2)
                        for a, b in zip(out, feats)) / len(out))
    return torch.cat(rows)


def pasted_levels(core, slots: np.ndarray, y: torch.Tensor) -> torch.Tensor:
    """(k * Q, 3, H, W): the current reconstruction of each slot with the next concept's region replaced by its
    picture at every level, ``y`` (k, Q, 3, H, W) (the local generator's y(m, q); outside the region it is unused)."""
    slots = np.asarray(slots, np.int64)
    slot_t = torch.as_tensor(slots, device=core.device)
    cls_t = torch.as_tensor(core.order[slots, core.t[slots]], device=core.device)
    region = (core.store.labels[slot_t] == cls_t.view(-1, 1, 1)).unsqueeze(1)  # (k,1,H,W)
    return torch.where(region.unsqueeze(1), y, current_x_hat(core, slots).unsqueeze(1)).flatten(0, 1)


def preview_stats(rate: np.ndarray, perceptual: np.ndarray) -> np.ndarray:
    """(k, 1 + 2Q) stats entries: [log10 stake / 4 + 1 clipped to [-1, 1], rate / stake, perceptual / stake]."""
    stake = rate.max(1) + np.abs(perceptual).max(1)
    scale = np.maximum(stake, STAKE_FLOOR)[:, None]
    log_stake = np.clip(np.log10(np.maximum(stake, STAKE_FLOOR)) / 4.0 + 1.0, -1.0, 1.0)[:, None]
    return np.concatenate([log_stake, rate / scale, np.clip(perceptual / scale, -1.0, 1.0)], 1)
