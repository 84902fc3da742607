"""A small CNN, trained from scratch, that tries to tell simulated photos from real ones.

Input: photos as uint8 (N, S, S, 3). Training takes random ``crop`` px crops (with flips)
so the network judges skin, lesions and camera traces rather than the framing alone; a
photo's score is the mean over a fixed grid of crops. No pretrained weights: nothing is
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


def _grid_crops(x, crop: int, n: int = 3):
    """A fixed n×n grid of crops of every photo: (N·n², 3, crop, crop)."""
    s = x.shape[-1]
    pos = np.linspace(0, s - crop, n).round().astype(int)
    return [x[:, :, y : y + crop, z : z + crop] for y in pos for z in pos]


def cnn_scores(
    images: np.ndarray, y: np.ndarray, folds: list[tuple], crop: int = 96, epochs: int = 12, seed: int = 0
) -> np.ndarray:
    """Out-of-fold P(simulated) per photo. ``images`` uint8 (N, S, S, 3), S ≥ ``crop``."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    X = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).float().div_(255.0)
    X = (X - 0.5) / 0.25
    Y = torch.from_numpy(y.astype(np.float32))
    s = X.shape[-1]
    score = np.zeros(len(y))
    for k, (tr, te) in enumerate(folds):
        torch.manual_seed(seed + k)  # layer initialisation reads torch's default generator
        net = _net(torch)
        opt = torch.optim.Adam(net.parameters(), lr=2e-3, weight_decay=1e-4)
        pos_w = torch.tensor(float((y[tr] == 0).sum()) / max(1.0, float((y[tr] == 1).sum())))
        loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_w)
        tr_t = torch.from_numpy(tr)
        for _ in range(epochs):
            net.train()
            for b in torch.randperm(len(tr), generator=gen).split(32):
                idx = tr_t[b]
                oy, ox = torch.randint(0, s - crop + 1, (2,), generator=gen).tolist()
                xb = X[idx, :, oy : oy + crop, ox : ox + crop]
                if torch.rand(1, generator=gen).item() < 0.5:
                    xb = xb.flip(-1)
                opt.zero_grad()
                loss_fn(net(xb).squeeze(1), Y[idx]).backward()
                opt.step()
        net.eval()
        with torch.no_grad():
            xt = X[torch.from_numpy(te)]
            logits = torch.stack([net(c).squeeze(1) for c in _grid_crops(xt, crop)]).mean(0)
        score[te] = torch.sigmoid(logits).numpy()
    return score
