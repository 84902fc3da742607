"""A small CNN, trained from scratch, that tries to tell simulated photos from real ones.

Input: photos as uint8 (N, S, S, 3), seen by the network as their detail layers (lightness
and CIELAB a* minus a Gaussian blur of SD 4 px at 256 px, plus the blurred a* contrast):
what is left is texture, pores, lesion edges, noise and compression, not the overall
colour or brightness, which differ more between patients than between folders and which
the fixed statistics already cover. Training takes random ``crop`` px crops (with flips)
so the network judges skin and camera traces rather than the framing alone; a photo's
score is the mean over a fixed grid of crops. No pretrained weights: nothing is
downloaded. Trained per grouped fold (:func:`analysis.realism.c2st.grouped_folds`).
"""

from __future__ import annotations

import numpy as np


def _net(torch):
    nn = torch.nn

    def block(i, o):
        return [nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2)]

    return nn.Sequential(
        *block(3, 16), *block(16, 32), *block(32, 48), *block(48, 64),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(64, 1),
    )  # fmt: skip


def detail_layers(images: np.ndarray) -> np.ndarray:
    """(N, 3, S, S) float32: L and a* detail (minus a blur of SD 4 px at 256 px) and the a*
    band between SD 1 and 8 px, each in CIELAB units over 4."""
    import cv2

    s = images.shape[1] / 256.0
    out = np.zeros((len(images), 3) + images.shape[1:3], np.float32)
    for i, rgb in enumerate(images):
        lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).astype(np.float32)
        L, a = lab[..., 0] * (100 / 255), lab[..., 1]
        out[i, 0] = L - cv2.GaussianBlur(L, (0, 0), 4 * s)
        out[i, 1] = a - cv2.GaussianBlur(a, (0, 0), 4 * s)
        out[i, 2] = cv2.GaussianBlur(a, (0, 0), 1 * s) - cv2.GaussianBlur(a, (0, 0), 8 * s)
    return out / 4.0


def _grid_crops(x, crop: int, n: int = 3):
    """A fixed n×n grid of crops of every photo: (N·n², 3, crop, crop)."""
    s = x.shape[-1]
    pos = np.linspace(0, s - crop, n).round().astype(int)
    return [x[:, :, y : y + crop, z : z + crop] for y in pos for z in pos]


def cnn_scores(
    images: np.ndarray,
    y: np.ndarray,
    folds: list[tuple],
    crop: int = 96,
    epochs: int = 25,
    seed: int = 0,
    threads: int = 1,
) -> np.ndarray:
    """Out-of-fold P(simulated) per photo. ``images`` uint8 (N, S, S, 3), S ≥ ``crop``.

    ``threads``: torch threads while training (restored after). One by default: a network
    this small on batches of 32 crops gains little from more, and on shared cores more
    threads made it several times slower.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _train_and_score(torch, images, y, folds, crop, epochs, seed)
    finally:
        torch.set_num_threads(before)


def _train_and_score(torch, images, y, folds, crop, epochs, seed) -> np.ndarray:
    """:func:`cnn_scores` with torch's threads set."""
    gen = torch.Generator().manual_seed(seed)
    X = torch.from_numpy(detail_layers(images))
    Y = torch.from_numpy(y.astype(np.float32))
    s = X.shape[-1]
    score = np.zeros(len(y))
    for k, (tr, te) in enumerate(folds):
        with torch.random.fork_rng(devices=[]):  # weights from our seed, global RNG untouched
            torch.manual_seed(seed + k)
            net = _net(torch)
        opt = torch.optim.Adam(net.parameters(), lr=2e-3, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
        pos_w = torch.tensor(float((y[tr] == 0).sum()) / max(1.0, float((y[tr] == 1).sum())))
        loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_w)
        tr_t = torch.from_numpy(tr)
        for _ in range(epochs):
            net.train()
            for b in torch.randperm(len(tr), generator=gen).split(32):
                idx = tr_t[b]
                off = torch.randint(0, s - crop + 1, (len(idx), 2), generator=gen).tolist()
                xb = torch.stack([X[i, :, oy : oy + crop, ox : ox + crop] for i, (oy, ox) in zip(idx.tolist(), off)])
                flip = torch.rand(len(idx), generator=gen) < 0.5
                xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
                opt.zero_grad()
                loss_fn(net(xb).squeeze(1), Y[idx]).backward()
                opt.step()
            sched.step()
        net.eval()
        with torch.no_grad():
            xt = X[torch.from_numpy(te)]
            logits = torch.stack([net(c).squeeze(1) for c in _grid_crops(xt, crop)]).mean(0)
        score[te] = torch.sigmoid(logits).numpy()
    return score
