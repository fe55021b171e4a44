"""A learned context model for the label map: how far below the hand-made contexts does it go, in real bytes?

    python experiments/semantic_fidelity/label_map_learned.py --hidden 256 --steps 6000 \
        --eval-json docs/eval_v7/results.json --json experiments/semantic_fidelity/label_map_learned.json

The label map r_s (eq. 27) is sent losslessly; with `-v7`'s codec (`tiny-sf3`) it is 0.237 of level 0's 0.295 bpp.
Its coder today is a static count table over three causal neighbours (left, up, up-right: `entropy.LabelMapModel`
"wnne"). Here a small network predicts each label from a wider causal neighbourhood instead: the classes of the
``OFFSETS`` pixels (three to the left, and seven in each of the three rows above) and the row, each embedded, then a
two-layer MLP to the 19 class logits. It is trained by cross-entropy on the maps F makes of the first ``--train``
training images; it is scored on the first ``--test`` test images by

- the ideal code length (bits per pixel), beside count tables' fitted here (W, N, NE and W, N, NW, NE; smoothing
  0.1) and the real bytes of the codec's own label coder (its shipped table);
- real bytes: each test map range-coded with constriction's ``Categorical`` under the network's probabilities;
- a round trip: the first ``--decode-check`` maps decoded back in wavefront order (pixel (i, j) at step j + 4i, every
  context pixel earlier; both sides compute each wavefront's probabilities alike), compared with the originals,
  with the decode time per map;
- the same network with 8-bit integer weights and activations and an integer softmax table
  (:class:`IntegerContextModel`), whose probabilities are bit-exact whatever the batch: each map encoded with its
  probabilities computed in one batch, the first ``--decode-check`` decoded wavefront by wavefront;
- with ``--eval-json`` (an ``evaluate.py`` results.json of this codec on the first N test images): the BD-metrics of
  RL-ASC against every curve, recomputed with each RL-ASC point moved left by the mean label saving on those N images
  (the label section is the only part of a file that changes). ``--savings-from`` reuses an earlier run's savings
  for another evaluation, without training.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import constriction
import numpy as np
import torch
from torch import nn

from codec_models import entropy
from codec_models.checkpoint import load_codec
from codec_models.datasets import load_dataset

M = 19  # classes; index M stands for "outside the image"
OFFSETS = [(0, -1), (0, -2), (0, -3)] + [(di, dj) for di in (-1, -2, -3) for dj in range(-3, 4)]
PAD = 3


def gather_context(maps: torch.Tensor) -> torch.Tensor:
    """(B, H, W) labels -> (B, H, W, K) classes at the causal ``OFFSETS`` (M outside the image)."""
    b, h, w = maps.shape
    padded = torch.full((b, h + PAD, w + 2 * PAD), M, dtype=torch.long)
    padded[:, PAD:, PAD:PAD + w] = maps
    return torch.stack([padded[:, PAD + di:PAD + di + h, PAD + dj:PAD + dj + w] for di, dj in OFFSETS], -1)


class ContextMLP(nn.Module):
    """P(label | causal neighbours, row): one embedding per (offset, class), one per row bucket, an MLP."""

    def __init__(self, height: int, dim: int = 8, hidden: int = 128) -> None:
        super().__init__()
        self.neighbours = nn.Embedding(len(OFFSETS) * (M + 1), dim)
        self.rows = nn.Embedding(height, dim)
        self.mlp = nn.Sequential(nn.Linear((len(OFFSETS) + 1) * dim, hidden), nn.ReLU(),
                                 nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, M))
        self.register_buffer("shift", torch.arange(len(OFFSETS)) * (M + 1))

    def forward(self, context: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        e = self.neighbours(context + self.shift).flatten(-2)
        return self.mlp(torch.cat([e, self.rows(rows)], -1))


def count_bits(train: np.ndarray, test: np.ndarray, keys: tuple[int, ...], alpha: float = 0.1) -> float:
    """Ideal bits per pixel of ``test`` under static counts of ``train`` over the OFFSETS indexed by ``keys``."""
    def ctx(maps):
        c = gather_context(torch.as_tensor(maps))[..., list(keys)].numpy()
        flat = np.zeros(c.shape[:-1], np.int64)
        for k in range(c.shape[-1]):
            flat = flat * (M + 1) + c[..., k]
        return flat.ravel()

    c_train, c_test = ctx(train), ctx(test)
    _, inv = np.unique(np.concatenate([c_train, c_test]), return_inverse=True)
    counts = np.zeros((inv.max() + 1, M))
    np.add.at(counts, (inv[:len(c_train)], train.ravel()), 1)
    i_test = inv[len(c_train):]
    p = (counts[i_test, test.ravel()] + alpha) / (counts[i_test].sum(1) + alpha * M)
    return float(-np.log2(p).sum() / test.size)


def probabilities(model: ContextMLP, context: torch.Tensor, rows: torch.Tensor) -> np.ndarray:
    """float64 class probabilities, rounded to 2^-20 so that encoder and decoder see the same numbers."""
    with torch.no_grad():
        p = torch.softmax(model(context, rows).double(), -1).numpy()
    p = np.maximum(np.round(p * 2 ** 20), 1.0)
    return p / p.sum(-1, keepdims=True)


def wave_groups(h: int, w: int) -> list[torch.Tensor]:
    """Raster positions grouped by wavefront t = j + 4 i (each causal context pixel of a group is in an earlier one)."""
    ii, jj = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    t = (jj + 4 * ii).reshape(-1)
    return [torch.nonzero(t == k).ravel() for k in range(int(t.max()) + 1)]


def group_probabilities(model: ContextMLP, label_map: torch.Tensor, idx: torch.Tensor) -> np.ndarray:
    """The probabilities of one wavefront, computed the same way (same shapes, same values) on both sides: a
    batch of another size may round differently, and the decoder would desynchronise."""
    h, w = label_map.shape
    context = gather_context(label_map[None])[0].reshape(-1, len(OFFSETS))[idx]
    return probabilities(model, context, idx // w)


def encode_wave(model: ContextMLP, label_map: torch.Tensor) -> np.ndarray:
    """Range-code the map wavefront by wavefront, the order :func:`decode_wave` reads."""
    h, w = label_map.shape
    encoder = constriction.stream.queue.RangeEncoder()
    categorical = constriction.stream.model.Categorical(perfect=False)
    flat = label_map.reshape(-1)
    for idx in wave_groups(h, w):
        encoder.encode(flat[idx].numpy().astype(np.int32), categorical, group_probabilities(model, label_map, idx))
    return encoder.get_compressed()


def decode_wave(model: ContextMLP, words: np.ndarray, h: int, w: int) -> torch.Tensor:
    decoder = constriction.stream.queue.RangeDecoder(words)
    categorical = constriction.stream.model.Categorical(perfect=False)
    flat = torch.full((h * w,), M, dtype=torch.long)  # undecoded pixels are never in a context
    for idx in wave_groups(h, w):
        symbols = decoder.decode(categorical, group_probabilities(model, flat.view(h, w), idx))
        flat[idx] = torch.as_tensor(symbols, dtype=torch.long)
    return flat.view(h, w)


def projection(evaluation: dict, saving_bpp: list[float]) -> dict:
    """``evaluate.py``'s BD-metrics (data-set metrics, RL-ASC against each curve) before and after every RL-ASC
    point (``rlasc*`` curves) moves left by the mean label saving over the evaluation's images: the label section's
    bytes are the only part of the file that changes."""
    from rlasc_harness.evaluate_codecs.bd import bd_table
    from rlasc_harness.evaluate_codecs.metrics import DATASET_KEYS, INDEPENDENT_KEY
    from rlasc_harness.evaluate_codecs.runner import BD_TESTS, bd_curves

    n = int(evaluation["images"])
    if len(saving_bpp) < n:
        raise SystemExit(f"the evaluation has {n} images, --test gave {len(saving_bpp)}: use --test {n} or more")
    shift = float(np.mean(saving_bpp[:n]))
    cfg = evaluation["config"]
    moved = {name: [dict(p, bpp=p["bpp"] - shift) if name.startswith("rlasc") else p for p in points]
             for name, points in evaluation["codecs"].items()}
    out: dict = {"images": n, "shift_bpp": shift}
    for label, codecs in (("before", evaluation["codecs"]), ("after", moved)):
        curves = bd_curves(codecs)
        anchors = [k for k in curves if k != "rlasc"]
        out[label] = {}
        for task, metric in [*DATASET_KEYS.items(), ("segmentation_independent", INDEPENDENT_KEY)]:
            table = bd_table(curves, list(BD_TESTS), anchors, metric, cfg["bd_method"], cfg["bd_min_overlap"])
            out[label][task] = {pair.split("_vs_")[1]: {"bd_metric": e.get(f"bd_{metric}"), "bd_rate": e.get("bd_rate")}
                                for pair, e in table.items() if pair.startswith("rlasc_vs_")}
    return out


class IntegerContextModel:
    """The trained MLP with integer weights (8 bits) and activations (8 bits unsigned), the softmax an integer table.

    Every product and sum is an integer below 2^53, so float64 BLAS returns the same numbers whatever the batch size
    or summation order, and the remaining steps (a multiplication by a constant, floor, a table lookup, one division)
    are exactly rounded IEEE operations: the probabilities of a pixel are bit-identical whether the encoder computes
    the whole map in one batch or the decoder one wavefront at a time, on any IEEE machine.
    """

    TABLE_STEP = 1 / 16  # logit resolution of the softmax table (nats)
    TABLE_SIZE = 16 * 24  # differences beyond 24 nats get the floor probability

    def __init__(self, model: ContextMLP, calib_context: torch.Tensor, calib_rows: torch.Tensor) -> None:
        def w(t: torch.Tensor) -> np.ndarray:
            return t.detach().double().numpy()

        emb_n, emb_r = w(model.neighbours.weight), w(model.rows.weight)
        scale = 127 / max(np.abs(emb_n).max(), np.abs(emb_r).max())
        self.emb_n, self.emb_r = np.round(emb_n * scale), np.round(emb_r * scale)
        self.shift = model.shift.numpy()
        self.layers: list[tuple[np.ndarray, np.ndarray, float | None]] = []
        linears = [model.mlp[0], model.mlp[2], model.mlp[4]]
        a = self._embed(calib_context.numpy(), calib_rows.numpy())
        for k, lin in enumerate(linears):
            wq_scale = 127 / np.abs(w(lin.weight)).max()
            wq, bq = np.round(w(lin.weight) * wq_scale), np.round(w(lin.bias) * scale * wq_scale)
            acc = a @ wq.T + bq
            if k < len(linears) - 1:
                requant = 255 / max(float(np.maximum(acc, 0).max()), 1.0)
                self.layers.append((wq, bq, requant))
                a = np.clip(np.floor(np.maximum(acc, 0) * requant + 0.5), 0, 255)
                scale = scale * wq_scale * requant
            else:
                self.layers.append((wq, bq, None))
                self.to_table = 1 / (scale * wq_scale * self.TABLE_STEP)  # logit units -> table index
        self.table = np.maximum(np.round(2.0 ** 20 * np.exp(-self.TABLE_STEP * np.arange(self.TABLE_SIZE))), 1.0)

    def _embed(self, context: np.ndarray, rows: np.ndarray) -> np.ndarray:
        e = self.emb_n[context + self.shift].reshape(len(context), -1)
        return np.concatenate([e, self.emb_r[rows]], -1)

    def probabilities(self, context: torch.Tensor, rows: torch.Tensor) -> np.ndarray:
        a = self._embed(context.numpy(), rows.numpy())
        for wq, bq, requant in self.layers:
            acc = a @ wq.T + bq
            if requant is not None:
                a = np.clip(np.floor(np.maximum(acc, 0) * requant + 0.5), 0, 255)
        index = np.minimum(np.floor((acc.max(-1, keepdims=True) - acc) * self.to_table), self.TABLE_SIZE - 1)
        p = self.table[index.astype(np.int64)] + 1.0  # integers: the sum is exact
        return p / p.sum(-1, keepdims=True)


def encode_batch(qmodel: IntegerContextModel, label_map: torch.Tensor) -> np.ndarray:
    """The whole map's probabilities in one batch, coded in wavefront order (the order :func:`decode_int` reads)."""
    h, w = label_map.shape
    context = gather_context(label_map[None])[0].reshape(-1, len(OFFSETS))
    order = torch.cat(wave_groups(h, w))
    p = qmodel.probabilities(context, torch.arange(h).repeat_interleave(w))
    encoder = constriction.stream.queue.RangeEncoder()
    encoder.encode(label_map.reshape(-1)[order].numpy().astype(np.int32),
                   constriction.stream.model.Categorical(perfect=False), p[order.numpy()])
    return encoder.get_compressed()


def decode_int(qmodel: IntegerContextModel, words: np.ndarray, h: int, w: int) -> torch.Tensor:
    decoder = constriction.stream.queue.RangeDecoder(words)
    categorical = constriction.stream.model.Categorical(perfect=False)
    flat = torch.full((h * w,), M, dtype=torch.long)
    for idx in wave_groups(h, w):
        context = gather_context(flat.view(1, h, w))[0].reshape(-1, len(OFFSETS))[idx]
        flat[idx] = torch.as_tensor(decoder.decode(categorical, qmodel.probabilities(context, idx // w)),
                                    dtype=torch.long)
    return flat.view(h, w)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--codec", default="tiny-sf3", help="codec whose F makes the maps (-v7's)")
    parser.add_argument("--train", type=int, default=1000)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--decode-check", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-json", type=Path, default=None,
                        help="an evaluate.py results.json of this codec: its RL-ASC points moved by the label saving")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--savings-from", type=Path, default=None,
                        help="with --eval-json: take the per-image savings of this earlier run's JSON, train nothing")
    args = parser.parse_args()
    if args.savings_from is not None:
        if args.eval_json is None:
            parser.error("--savings-from needs --eval-json")
        saving = json.loads(args.savings_from.read_text())["per_image_saving_bpp"]
        result = {"savings_from": str(args.savings_from), "eval_json": str(args.eval_json),
                  "projection": projection(json.loads(args.eval_json.read_text()), saving)}
        print(json.dumps(result["projection"], indent=1))
        if args.json:
            args.json.write_text(json.dumps(result, indent=1) + "\n")
        return
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    codec = load_codec(args.codec)

    def maps(split: str, n: int) -> torch.Tensor:
        ds = load_dataset("streets", split, preset="tiny", size=n, progress=False)
        x = torch.stack([ds[i][0] for i in range(len(ds))])
        with torch.no_grad():
            return torch.cat([codec.segment(x[i:i + 50]) for i in range(0, len(x), 50)]).long()

    f_train, f_test = maps("train", args.train), maps("test", args.test)
    n, h, w = f_train.shape
    out: dict = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "offsets": OFFSETS}
    at = {offset: k for k, offset in enumerate(OFFSETS)}
    wnne, w_n_nw_ne = (at[0, -1], at[-1, 0], at[-1, 1]), (at[0, -1], at[-1, 0], at[-1, -1], at[-1, 1])
    out["counts_bpp"] = {"W,N,NE": count_bits(f_train.numpy(), f_test.numpy(), wnne),
                         "W,N,NW,NE": count_bits(f_train.numpy(), f_test.numpy(), w_n_nw_ne)}
    shipped = codec.label_model  # the codec's own coder: its count table, range-coded (the bitstream's label section)
    out["shipped_coder"] = {"neighbours": shipped.neighbours, "real_bpp": float(sum(
        len(entropy.encode_label_map(m.numpy(), shipped)) for m in f_test) * 8 / f_test.numel())}
    print(out["counts_bpp"], out["shipped_coder"], flush=True)

    context = gather_context(f_train).reshape(-1, len(OFFSETS))
    rows = torch.arange(h).repeat_interleave(w).repeat(n)
    labels = f_train.reshape(-1)
    test_context = gather_context(f_test).reshape(-1, len(OFFSETS))
    test_rows = torch.arange(h).repeat_interleave(w).repeat(len(f_test))
    test_labels = f_test.reshape(-1)
    model = ContextMLP(h, hidden=args.hidden)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=args.steps, pct_start=0.05)

    def test_bpp() -> float:
        model.eval()
        with torch.no_grad():
            nll = sum(nn.functional.cross_entropy(model(test_context[i:i + 65536], test_rows[i:i + 65536]),
                                                  test_labels[i:i + 65536], reduction="sum").item()
                      for i in range(0, len(test_labels), 65536))
        model.train()
        return nll / math.log(2) / len(test_labels)

    out["curve"] = []
    start = time.time()
    for step in range(1, args.steps + 1):
        idx = torch.randint(len(labels), (args.batch,))
        loss = nn.functional.cross_entropy(model(context[idx], rows[idx]), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % max(1, args.steps // 6) == 0 or step == args.steps:
            out["curve"].append({"step": step, "seconds": round(time.time() - start, 1), "test_bpp": test_bpp()})
            print(out["curve"][-1], flush=True)
    model.eval()
    out["parameters"] = sum(p.numel() for p in model.parameters())

    start = time.time()
    streams = [encode_wave(model, m) for m in f_test]
    out["encode_seconds_per_map"] = (time.time() - start) / len(f_test)
    out["real_bpp"] = float(sum(s.nbytes for s in streams) * 8 / (len(f_test) * h * w))
    shipped_bytes = [len(entropy.encode_label_map(m.numpy(), shipped)) for m in f_test]
    out["per_image_saving_bpp"] = [(b - s.nbytes) * 8 / (h * w) for b, s in zip(shipped_bytes, streams)]
    calib = torch.randint(len(labels), (100_000,), generator=torch.Generator().manual_seed(1))
    qmodel = IntegerContextModel(model, context[calib], rows[calib])
    start = time.time()
    int_streams = [encode_batch(qmodel, m) for m in f_test]
    out["integer"] = {"real_bpp": float(sum(s.nbytes for s in int_streams) * 8 / (len(f_test) * h * w)),
                      "encode_seconds_per_map": (time.time() - start) / len(f_test), "decode_check": []}
    for i in range(min(args.decode_check, len(f_test))):
        start = time.time()
        back = decode_int(qmodel, int_streams[i], h, w)
        out["integer"]["decode_check"].append({"image": i, "seconds": round(time.time() - start, 2),
                                               "equal": bool(torch.equal(back, f_test[i]))})
    print({"integer": out["integer"]}, flush=True)
    checks = []
    for i in range(min(args.decode_check, len(f_test))):
        start = time.time()
        back = decode_wave(model, streams[i], h, w)
        checks.append({"image": i, "seconds": round(time.time() - start, 2),
                       "equal": bool(torch.equal(back, f_test[i]))})
    out["decode_check"] = checks
    print({k: out[k] for k in ("real_bpp", "encode_seconds_per_map", "decode_check", "parameters")}, flush=True)
    if args.eval_json:
        out["projection"] = projection(json.loads(args.eval_json.read_text()), out["per_image_saving_bpp"])
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
