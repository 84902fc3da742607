"""Train a reader (:mod:`analysis.reader.network`) on simulated photos, resumably.

Steps: 1. render the training photos (:func:`~trialsim.reader.photos.training_set`; a tenth
of the people held out for validation); 2. train on random crops, one epoch at a time, a
checkpoint after each (weights, optimiser, log; written atomically); 3. standardise the
outputs over the training photos, score the held-out photos, and write the reader folder
(:func:`analysis.reader.files.save_reader`), its log and model card. Each epoch's crops and
order come from ``(seed, epoch)``, so a resumed run ends with the same weights as an
uninterrupted one on the CPU.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from analysis.atomic import atomic_write_bytes, atomic_write_text
from analysis.reader.files import CONFIG, save_reader
from analysis.reader.network import GROUPS, STRIDE, build_network, prepare

from ..dataset import claim_output, write_marker
from ..protocol import load_protocol
from .photos import TrainingSet, training_set

CHECKPOINT = "checkpoint.pt"
LOG = "training_log.json"


class ReaderOptions(BaseModel):
    """``trialsim train-reader``'s options (units: photos, px, epochs)."""

    model_config = ConfigDict(extra="forbid")
    protocol: Path
    out: Path
    photos: int = Field(2000, ge=16, le=100_000)
    seed: int = Field(0, ge=0)
    image_size: int = Field(256, ge=64, le=1024, multiple_of=32)
    crop: int = Field(128, ge=32, le=1024, multiple_of=32)
    epochs: int = Field(12, ge=1, le=1000)
    batch_size: int = Field(32, ge=1, le=1024)
    lr: float = Field(2e-3, gt=0, le=1)
    width: int = Field(32, ge=4, le=256)
    input: Literal["haemoglobin", "rgb"] = "haemoglobin"
    overwrite: bool = False
    progress: bool = True


def _split(ts: TrainingSet, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of training and held-out photos: a tenth of the people (at least one) held out."""
    people = np.unique(ts.patient)
    rng = np.random.default_rng([seed, 1])
    held = rng.choice(people, max(1, len(people) // 10), replace=False) if len(people) > 1 else people[:0]
    test = np.isin(ts.patient, held)
    return np.flatnonzero(~test), np.flatnonzero(test)


def _batches(ts: TrainingSet, idx: np.ndarray, opts: ReaderOptions, epoch: int):
    """One epoch of (inputs, density, severity) crops of the prepared inputs ``ts.inputs``,
    order and crops from ``(seed, epoch)``."""
    rng = np.random.default_rng([opts.seed, 2, epoch])
    order = rng.permutation(idx)
    c, cells = opts.crop, opts.crop // STRIDE
    span = (opts.image_size - c) // STRIDE
    for s in range(0, len(order), opts.batch_size):
        take = order[s : s + opts.batch_size]
        oy, ox = rng.integers(0, span + 1, (2, len(take)))
        flip = rng.random(len(take)) < 0.5
        x = np.stack(
            [ts.inputs[i, :, y * STRIDE : y * STRIDE + c, z * STRIDE : z * STRIDE + c] for i, y, z in zip(take, oy, ox)]
        )
        d = np.stack([ts.density[i, :, y : y + cells, z : z + cells] for i, y, z in zip(take, oy, ox)])
        x[flip], d[flip] = x[flip][..., ::-1], d[flip][..., ::-1]
        yield np.ascontiguousarray(x), np.ascontiguousarray(d), ts.severity[take].astype(np.float32)


def _loss(net, x, d, s):
    import torch

    dens, sev = net(torch.from_numpy(x))
    target = torch.from_numpy(d)
    # per-cell fit (where), per-group count fit (how many), severity fit; weighted to similar sizes at the start
    per_cell = torch.nn.functional.mse_loss(dens, target) * 1e3
    counts = torch.nn.functional.mse_loss(dens.sum(dim=(2, 3)), target.sum(dim=(2, 3))) * 0.05
    severity = torch.nn.functional.mse_loss(sev, torch.from_numpy(s))
    return per_cell + counts + severity


def _save_checkpoint(out: Path, net, opt, epoch: int, log: list) -> None:
    import torch

    buf = io.BytesIO()
    torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "epoch": epoch, "log": log}, buf)
    atomic_write_bytes(out / CHECKPOINT, buf.getvalue())


def _resume(out: Path, net, opt) -> tuple[int, list]:
    import torch

    path = out / CHECKPOINT
    if not path.exists():
        return 0, []
    state = torch.load(path, weights_only=True)
    net.load_state_dict(state["net"])
    opt.load_state_dict(state["opt"])
    return int(state["epoch"]), list(state["log"])


def _start_at_the_mean(net, ts: TrainingSet, idx: np.ndarray) -> None:
    """Heads' biases at the training photos' mean density per group and mean severity, so that
    training starts from the right totals instead of spending its first epochs finding them."""
    import torch

    per_cell = np.maximum(ts.density[idx].mean(axis=(0, 2, 3)), 1e-6)
    with torch.no_grad():
        net.density.bias.copy_(torch.from_numpy(np.log(np.expm1(per_cell)).astype(np.float32)))
        net.severity.bias.fill_(float(ts.severity[idx].mean()))


def _claim(out: Path, opts: ReaderOptions, protocol_yaml: str) -> None:
    """Make ``out`` a reader folder: new, resumed (a checkpoint of the same inputs), or replaced with --overwrite."""
    from ..dataset import MARKER
    from ..errors import BadInput

    inputs = json.dumps(opts.model_dump(mode="json", exclude={"out", "overwrite", "progress"})) + protocol_yaml
    digest = hashlib.sha256(inputs.encode("utf-8")).hexdigest()
    resuming = (out / CHECKPOINT).exists()
    if claim_output(out, "reader", None if resuming else "--overwrite", opts.overwrite):
        same = json.loads((out / MARKER).read_text()).get("inputs_sha256") == digest if resuming else False
        if resuming and not same and not opts.overwrite:
            raise BadInput(
                "the folder holds an unfinished reader trained with other options or protocol; "
                "rerun with the same ones to resume, or pass --overwrite to start again",
                file=str(out),
                field="--out",
            )
        if opts.overwrite:
            for name in (CHECKPOINT, CONFIG, LOG, "MODEL_CARD.md", "weights.safetensors"):
                (out / name).unlink(missing_ok=True)
    write_marker(out, "reader", inputs)


def full_loss(net, ts: TrainingSet, idx: np.ndarray, batch: int = 32) -> float:
    """The training loss over whole photos ``idx`` (no crops, no flips): a fixed yardstick."""
    import torch

    net.eval()
    total = 0.0
    with torch.inference_mode():
        for s in range(0, len(idx), batch):
            take = idx[s : s + batch]
            total += float(_loss(net, ts.inputs[take], ts.density[take], ts.severity[take].astype(np.float32))) * len(
                take
            )
    return total / max(len(idx), 1)


def _epoch(net, opt, ts: TrainingSet, idx: np.ndarray, opts: ReaderOptions, epoch: int) -> float:
    net.train()
    total, n = 0.0, 0
    for x, d, s in _batches(ts, idx, opts, epoch):
        loss = _loss(net, x, d, s)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total, n = total + float(loss.detach()) * len(x), n + len(x)
    return total / max(n, 1)


THRESHOLDS = (0.01, 0.02, 0.03, 0.05, 0.08, 0.12)  # density-peak thresholds tried per group


def _read(net, inputs: np.ndarray, batch: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Severity and density maps of prepared ``inputs`` (:func:`~analysis.reader.network.prepare`)."""
    import torch

    net.eval()
    sev, maps = [], []
    with torch.inference_mode():
        for s in range(0, len(inputs), batch):
            d, v = net(torch.from_numpy(inputs[s : s + batch]))
            maps.append(d.numpy())
            sev.append(v.numpy())
    return np.concatenate(sev), np.concatenate(maps)


def detection_scores(maps: np.ndarray, lesions, photo_ids, thresholds) -> pd.DataFrame:
    """Precision, recall, F1 and count error per group of density ``maps`` (N, groups, h, w) against
    ``lesions`` (``photo``, ``group``, ``x``, ``y``, ``radius``) of photos ``photo_ids``."""
    from analysis.reader.detect import detections, match, scores

    rows = []
    for j, i in enumerate(photo_ids):
        m = match(detections(maps[j], thresholds), lesions[lesions["photo"] == i])
        m["count_error"] = maps[j].sum(axis=(1, 2)) - m["true"].to_numpy()
        rows.append(m)
    return scores(pd.concat(rows, ignore_index=True))


def choose_thresholds(maps: np.ndarray, lesions, photo_ids) -> dict:
    """Per group, the peak threshold of :data:`THRESHOLDS` with the best F1 on these (simulated) photos."""
    best = {}
    for g in GROUPS:
        f1 = [detection_scores(maps, lesions, photo_ids, t).set_index("group").loc[g, "f1"] for t in THRESHOLDS]
        f1 = np.nan_to_num(np.asarray(f1, float), nan=-1.0)
        best[g] = float(THRESHOLDS[int(np.argmax(f1))])
    return best


def evaluate(net, ts: TrainingSet, idx: np.ndarray, thresholds: dict) -> dict:
    """Held-out figures: severity RMSE and Spearman, count error and detection quality per group."""
    from scipy import stats

    if not len(idx):
        return {}
    sev_hat, maps_all = _read(net, ts.inputs[idx])
    by_group = detection_scores(maps_all, ts.lesions, idx, thresholds)
    true = ts.severity[idx]
    return {
        "photos": int(len(idx)),
        "severity_rmse": float(np.sqrt(np.mean((sev_hat - true) ** 2))),
        "severity_spearman": float(stats.spearmanr(sev_hat, true).statistic) if len(idx) > 2 else float("nan"),
        "by_group": json.loads(by_group.to_json(orient="records")),
    }


def _output_stats(net, ts: TrainingSet, idx: np.ndarray, batch: int = 32) -> tuple[list, list]:
    import torch

    out = []
    with torch.inference_mode():
        for s in range(0, len(idx), batch):
            d, v = net(torch.from_numpy(ts.inputs[idx[s : s + batch]]))
            out.append(np.column_stack([v.numpy(), d.sum(dim=(2, 3)).numpy()]))
    o = np.concatenate(out).astype(float)
    return o.mean(0).tolist(), (o.std(0) + 1e-9).tolist()


def _finish(out: Path, net, ts: TrainingSet, split, opts: ReaderOptions, protocol, log: list, t0: float) -> dict:
    """Standardisation, thresholds, held-out figures; the reader folder, its log and model card."""
    from .card import model_card

    train_idx, test_idx = split
    log.append({"epoch": opts.epochs, "loss": full_loss(net, ts, train_idx), "whole_photos": True})
    mean, scale = _output_stats(net, ts, train_idx)
    # thresholds chosen on (simulated) training photos, judged on the held-out people
    pick = train_idx[:: max(1, len(train_idx) // 300)]
    thresholds = choose_thresholds(_read(net, ts.inputs[pick])[1], ts.lesions, pick)
    held_out = evaluate(net, ts, test_idx, thresholds)
    config = {
        "width": opts.width,
        "groups": list(GROUPS),
        "image_size": opts.image_size,
        "input": opts.input,
        "embedding_mean": mean,
        "embedding_scale": scale,
        "thresholds": thresholds,
        "seed": opts.seed,
        "trained_on": {"protocol": protocol.name, "photos": int(len(train_idx)), "held_out": int(len(test_idx))},
    }
    save_reader(out, net, config)
    record = {
        "options": opts.model_dump(mode="json"),
        "epochs": log,
        "held_out": held_out,
        "seconds": time.perf_counter() - t0,
    }
    atomic_write_text(out / LOG, json.dumps(record, indent=2))
    atomic_write_text(out / "MODEL_CARD.md", model_card(config, record, protocol))
    (out / CHECKPOINT).unlink(missing_ok=True)
    return config


def train_reader(opts: ReaderOptions) -> dict:
    """Train and write a reader folder at ``opts.out``; returns its config. Reruns resume."""
    import torch
    from tqdm.auto import tqdm

    if opts.crop > opts.image_size:
        from ..errors import BadInput

        raise BadInput(
            "the crop is larger than the photos", field="--crop", allowed=f"≤ --image-size ({opts.image_size})"
        )
    protocol = load_protocol(opts.protocol)
    out = Path(opts.out)
    _claim(out, opts, protocol.to_yaml())
    t0 = time.perf_counter()
    # 1. the training photos
    ts = training_set(protocol, opts.photos, opts.image_size, opts.seed, opts.progress)
    ts.inputs = prepare(ts.photos, opts.input, opts.progress)
    train_idx, test_idx = _split(ts, opts.seed)
    # 2. training, from the last checkpoint if there is one
    net = build_network(opts.width, len(GROUPS), seed=opts.seed, kind=opts.input)
    _start_at_the_mean(net, ts, train_idx)
    opt = torch.optim.Adam(net.parameters(), lr=opts.lr)
    start, log = _resume(out, net, opt)
    if start == 0:
        log.append({"epoch": 0, "loss": full_loss(net, ts, train_idx), "whole_photos": True})
    bar = tqdm(range(start, opts.epochs), desc="reader", unit="epoch", disable=not opts.progress)
    for epoch in bar:
        loss = _epoch(net, opt, ts, train_idx, opts, epoch)
        log.append({"epoch": epoch + 1, "loss": loss})
        bar.set_postfix(loss=f"{loss:.4f}")
        _save_checkpoint(out, net, opt, epoch + 1, log)
    # 3. standardisation, held-out figures, the reader folder
    config = _finish(out, net, ts, (train_idx, test_idx), opts, protocol, log, t0)
    return config
