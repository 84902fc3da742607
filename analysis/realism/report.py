"""``realism.html``: one self-contained page (figures inline) for the realism test."""

from __future__ import annotations

import base64
import html
import io

import numpy as np
import pandas as pd

_SHOWN = ("L_mean", "a_mean", "b_mean", "hp1_sd", "hp3_sd", "spectrum_slope", "spot_count", "spot_contrast",
          "highlight_frac", "edge_frac", "sat_mean", "a_hp_sd")  # fmt: skip


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, metadata={"Software": None})
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def fig_distributions(table: pd.DataFrame) -> str:
    """Per statistic, the real and the simulated distributions side by side (seaborn)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, axes = plt.subplots(3, 4, figsize=(13, 8), constrained_layout=True)
    for ax, col in zip(axes.ravel(), _SHOWN):
        sns.kdeplot(data=table, x=col, hue="folder", common_norm=False, fill=True, ax=ax, warn_singular=False)
        ax.set_ylabel("")
    return _png(fig)


def fig_tiles(table: pd.DataFrame, images: np.ndarray, col: str, n: int = 6) -> str:
    """The photos the classifier finds most simulated and most real, each with its folder."""
    import matplotlib.pyplot as plt

    order = np.argsort(table[col].to_numpy())
    picks = [("most real", order[:n]), ("most simulated", order[::-1][:n])]
    fig, axes = plt.subplots(2, n, figsize=(2 * n, 4.6), constrained_layout=True)
    for r, (label, idx) in enumerate(picks):
        for c, i in enumerate(idx):
            ax = axes[r, c]
            ax.imshow(images[i])
            ax.set_title(f"{table['folder'].iat[i]} p={table[col].iat[i]:.2f}", fontsize=8)
            ax.axis("off")
        axes[r, 0].text(-0.1, 0.5, label, transform=axes[r, 0].transAxes, rotation=90, va="center", ha="right")
    return _png(fig)


def render_html(result: dict, table: pd.DataFrame, images: np.ndarray) -> str:
    """The page: headline, classifier table, difficulty table, distributions, tiles."""
    rows = "".join(
        f"<tr><td>{html.escape(t['classifier'])}</td><td>{t['auc']:.3f}</td>"
        f"<td>{t['ci_low']:.3f}–{t['ci_high']:.3f}</td><td>{t['n_real']}</td><td>{t['n_sim']}</td></tr>"
        for t in result["classifiers"]
    )
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>trialsim realism</title>",
        "<style>body{font-family:sans-serif;max-width:1200px;margin:auto}td,th{padding:2px 10px}"
        "table{border-collapse:collapse}tr:nth-child(even){background:#f3f3f3}</style></head><body>",
        "<h1>Realism: simulated versus real photos</h1>",
        f"<p>Real: <code>{html.escape(result['real_dir'])}</code>; simulated: "
        f"<code>{html.escape(result['sim_dir'])}</code>.</p>",
        f"<h2>Can a classifier tell them apart? Headline ROC AUC {result['headline_auc']:.3f}</h2>",
        "<p>Out-of-fold scores, folds grouped by patient; 95 % CI from a bootstrap over patients. "
        "0.5: indistinguishable; 1.0: always told apart.</p>",
        f"<table><tr><th>classifier</th><th>AUC</th><th>95 % CI</th><th>real</th><th>simulated</th></tr>{rows}</table>",
    ]
    parts += _difficulty_html(result.get("difficulty") or {})
    parts.append("<h2>Image statistics, real and simulated</h2>")
    parts.append(f"<img src='{fig_distributions(table)}' style='max-width:100%'>")
    for col in [c for c in table.columns if c.startswith("p_sim_")]:
        parts.append(f"<h2>What gives the simulation away ({html.escape(col[6:])} classifier)</h2>")
        parts.append(f"<img src='{fig_tiles(table, images, col)}' style='max-width:100%'>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _difficulty_html(diff: dict) -> list[str]:
    if not diff:
        return ["<h2>Analysis difficulty</h2><p>Not measured: a severity reference is missing on one side.</p>"]
    out = [
        "<h2>Analysis difficulty</h2><p>Within-patient Spearman of the default analysis's PC1 with the severity "
        "reference, per patient.</p><table><tr><th>folder</th><th>reference</th><th>median</th><th>per patient</th></tr>"
    ]
    for side in ("real", "sim"):
        d = diff[side]
        per = ", ".join(f"{k}: {v:.2f}" for k, v in d["spearman_per_patient"].items() if v is not None)
        out.append(
            f"<tr><td>{side}</td><td>{html.escape(d['severity_column'])}</td>"
            f"<td>{d['spearman_median']:.3f}</td><td>{per}</td></tr>"
        )
    out.append("</table>")
    return out
