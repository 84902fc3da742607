"""``power.html``: the power study's summary table and curves in one self-contained file."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pandas as pd
from jinja2 import Template

from .dataset import atomic_write_text

_TEMPLATE = Template("""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>trialsim power study</title>
<style>
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em} h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.85em} td,th{border:1px solid #ddd;padding:3px 7px;text-align:right}
th{background:#f4f4f4} img{max-width:100%} .note{color:#555;font-size:.9em}
</style></head><body>
<h1>Power study: {{ name }}</h1>
<p class="note">{{ replicates }} replicate trials per grid point; methods {{ methods|join(', ') }};
study seed {{ seed }}. Each replicate: simulate → render → embed → PC1 → linear mixed model
(t with patients − 1 df). Rejection at α = 0.05. Bias, RMSE and coverage are on the standardised
effect (÷ residual SD) against the realised truth. ± are Monte Carlo standard errors.</p>
{% if curve %}<h2>Power curves</h2><img alt="power curve" src="data:image/png;base64,{{ curve }}">{% endif %}
<h2>Summary</h2>
{{ table }}
<h2>Study</h2><pre>{{ spec }}</pre>
</body></html>""")


def _curve_png(summary: pd.DataFrame) -> str | None:
    lmm = summary[summary["test"] == "lmm"]
    if "effect" not in lmm.columns or lmm["effect"].nunique() < 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    other = [c for c in lmm.columns if c not in ("effect",) and c in summary.attrs.get("grid", [])]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    for keys, g in lmm.groupby(["method"] + other, sort=True):
        g = g.sort_values("effect")
        label = " ".join(str(k) for k in (keys if isinstance(keys, tuple) else (keys,)))
        ax.errorbar(
            g["effect"].astype(float),
            g["rejection_rate"],
            yerr=1.96 * g["rejection_mcse"],
            marker="o",
            capsize=3,
            label=label,
        )
    ax.axhline(0.05, color="grey", ls=":", lw=1)
    ax.axhline(0.8, color="grey", ls="--", lw=1)
    ax.set_xlabel("effect (severity units, last − first treatment)")
    ax.set_ylabel("rejection rate (LMM, α = 0.05)")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def write_power_report(out: Path, summary: pd.DataFrame, replicates: pd.DataFrame, spec: dict) -> Path:
    import yaml

    summary = summary.copy()
    summary.attrs["grid"] = list(spec.get("grid", {}))
    curve = _curve_png(summary)
    if curve is not None:
        from .dataset import atomic_write_bytes

        atomic_write_bytes(Path(out) / "power_curve.png", base64.b64decode(curve))
    fmt = summary.copy()
    for c in fmt.columns:
        if fmt[c].dtype.kind == "f":
            fmt[c] = fmt[c].map(lambda v: "" if pd.isna(v) else f"{v:.3f}")
    html = _TEMPLATE.render(
        name=spec["base"].get("name", "study"),
        replicates=spec["replicates"],
        methods=spec["methods"],
        seed=spec["seed"],
        curve=curve,
        table=fmt.to_html(index=False, border=0),
        spec=yaml.safe_dump({k: spec[k] for k in ("grid", "methods", "replicates", "seed")}),
    )
    path = Path(out) / "power.html"
    atomic_write_text(path, html)
    return path
