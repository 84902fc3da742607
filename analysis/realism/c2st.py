"""Classifier two-sample tests: can a classifier tell simulated photos from real ones?

Out-of-fold scores from folds grouped by patient (a patient's photos are all in one
fold, so a classifier cannot win by recognising a person it saw in training; a
``patient_id`` present in both folders is one group, so the same person is never on
both sides of a split), pooled
into one ROC AUC. Its 95 % CI comes from a bootstrap over patients (each side's
patients resampled with replacement), because photos of one patient are not
independent. AUC 0.5: the classifier cannot tell the folders apart; 1.0: it always can.

Two classifiers: a random forest on the fixed statistics of
:mod:`analysis.realism.features`, and a small CNN trained from scratch on random crops
(:mod:`analysis.realism.cnn`).
"""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold


def grouped_folds(y: np.ndarray, groups: np.ndarray, seed: int = 0, max_splits: int = 5) -> list[tuple]:
    """(train, test) index pairs, each patient in one test fold; as many folds as the
    side with fewer patients allows (at least 2, at most ``max_splits``)."""
    n_split = int(min(max_splits, min(len(np.unique(groups[y == c])) for c in (0, 1))))
    cv = StratifiedGroupKFold(n_splits=max(2, n_split), shuffle=True, random_state=seed)
    return list(cv.split(np.zeros(len(y)), y, groups))


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic (ties count half): the same number as
    :func:`sklearn.metrics.roc_auc_score`, without its input checks (a bootstrap calls it
    a thousand times)."""
    from scipy.stats import rankdata

    pos = y == 1
    n1, n0 = int(pos.sum()), int((~pos).sum())
    return float((rankdata(score)[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def bootstrap_auc(y: np.ndarray, score: np.ndarray, groups: np.ndarray, n_boot: int = 1000, seed: int = 0):
    """ROC AUC and its 95 % percentile CI from resampling patients within each class."""
    rng = np.random.default_rng(seed)
    idx = {c: [np.flatnonzero((groups == g) & (y == c)) for g in np.unique(groups[y == c])] for c in (0, 1)}
    aucs = []
    for _ in range(n_boot):
        take = [np.concatenate([idx[c][j] for j in rng.integers(0, len(idx[c]), len(idx[c]))]) for c in (0, 1)]
        t = np.concatenate(take)
        aucs.append(roc_auc(y[t], score[t]))
    lo, hi = np.percentile(aucs, [2.5, 97.5])
    return roc_auc(y, score), float(lo), float(hi)


def feature_scores(
    X: np.ndarray, y: np.ndarray, groups: np.ndarray, seed: int = 0, repeats: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold P(simulated) from a random forest on the fixed statistics, averaged over
    ``repeats`` different grouped fold splits (one split of few patients is a noisy
    draw), and the forest's feature importances from a fit on all photos.

    A forest rather than a linear model: real photos come in several framings (close-ups,
    the side of a face), so "real" is not one side of a hyperplane in these statistics.
    """
    from sklearn.ensemble import RandomForestClassifier

    def model(k):
        return RandomForestClassifier(200, min_samples_leaf=3, random_state=seed + k, n_jobs=1)

    score = np.zeros(len(y))
    for r in range(repeats):
        for k, (tr, te) in enumerate(grouped_folds(y, groups, seed + r)):
            score[te] += model(k).fit(X[tr], y[tr]).predict_proba(X[te])[:, 1] / repeats
    return score, model(0).fit(X, y).feature_importances_


def summary(name: str, y, score, groups, seed: int = 0) -> dict:
    """The JSON block of one classifier: AUC, CI, photo and patient counts."""
    auc, lo, hi = bootstrap_auc(y, score, groups, seed=seed)
    return {
        "classifier": name,
        "auc": auc,
        "ci_low": lo,
        "ci_high": hi,
        "n_real": int((y == 0).sum()),
        "n_sim": int((y == 1).sum()),
        "n_real_patients": len(np.unique(groups[y == 0])),
        "n_sim_patients": len(np.unique(groups[y == 1])),
    }
