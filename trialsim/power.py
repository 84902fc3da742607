"""Monte Carlo power studies: many simulated trials per design, each simulated and analysed.

A study is a base protocol, a grid of design changes (``effect=0,0.25,0.5``,
``patients=4,8``, ``blocks=2,4`` or any dotted protocol field) and R replicates per
grid point. Each replicate has a seed derived from (study seed, grid point values,
replicate index), so results depend neither on worker count nor on order. Rows are
appended to ``replicates.csv`` as replicates finish; a rerun skips what is there.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from .errors import BadInput
from .protocol import load_protocol, protocol_from_dict

REPLICATE_COLUMNS = [
    "grid_point",
    "replicate",
    "seed",
    "method",
    "test",
    "contrast",
    "estimate",
    "ci_low",
    "ci_high",
    "p_value",
    "known",
    "estimate_raw",
    "known_raw",
    "error",
]
METHODS = ("ae", "pixel-pca", "oracle")
ALPHA = 0.05

# short grid keys and the protocol field they change
GRID_ALIASES = {
    "patients": "patients.n",
    "blocks": "schedule.blocks",
    "period_days": "schedule.period_days",
    "run_in_days": "schedule.run_in_days",
    "photos_per_day": "observation.photos_per_day",
    "nuisance": "rendering.nuisance",
    "image_size": "rendering.image_size",
    "ar1_rho": "dynamics.ar1_rho",
    "ar1_sd": "dynamics.ar1_sd",
    "sd_obs": "dynamics.sd_obs",
    "drift_sd_per_day": "dynamics.drift_sd_per_day",
}


def apply_grid_point(base: dict, point: dict[str, float]) -> dict:
    """A protocol dict with ``point``'s changes applied.

    ``effect`` sets the contrast (last treatment − first) by moving the last
    treatment's effect to ``first + effect``; other keys are aliases above or dotted
    protocol paths such as ``treatments.1.effect_sd``.
    """
    d = json.loads(json.dumps(base))
    for key, value in point.items():
        if key == "effect":
            tr = d["treatments"]
            if len(tr) < 2:
                raise BadInput("the grid key 'effect' needs a protocol with two treatments", field="--grid effect")
            tr[-1]["effect"] = float(tr[0]["effect"]) + float(value)
            continue
        path = GRID_ALIASES.get(key, key).split(".")
        node = d
        for part in path[:-1]:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        last = path[-1]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
        if path == ["patients", "n"]:
            d["patients"].pop("ids", None)
    return d


def _parse_value(text: str):
    try:
        v = float(text)
    except ValueError:
        return text
    return int(v) if v.is_integer() and "." not in text else v


def parse_grid(items: list[str]) -> dict[str, list]:
    grid: dict[str, list] = {}
    for item in items:
        if "=" not in item:
            raise BadInput(
                f"expected KEY=V1,V2,… got {item!r}",
                field="--grid",
                allowed="effect, " + ", ".join(GRID_ALIASES) + " or a dotted protocol field",
            )
        k, vals = item.split("=", 1)
        values = [_parse_value(v.strip()) for v in vals.split(",") if v.strip()]
        if not values:
            raise BadInput(f"no values for {k!r}", field="--grid")
        grid[k.strip()] = values
    return grid


def grid_points(grid: dict[str, list]) -> list[dict]:
    points = [{}]
    for k, values in grid.items():
        points = [dict(p, **{k: v}) for p in points for v in values]
    return points


def point_key(point: dict) -> str:
    return ";".join(f"{k}={point[k]}" for k in sorted(point)) or "base"


def replicate_seed(study_seed: int, point: dict, replicate: int) -> int:
    ss = np.random.SeedSequence(int(study_seed), spawn_key=(zlib.crc32(point_key(point).encode()), int(replicate)))
    return int(ss.generate_state(1)[0] & 0x7FFFFFFF)


@dataclass
class PowerStudy:
    base: dict  # resolved base protocol as plain data
    grid: dict[str, list]
    replicates: int
    methods: list[str]
    seed: int = 0
    keep_images: bool = False
    source: str = "<protocol>"
    points: list[dict] = field(default_factory=list)

    def __post_init__(self):
        self.points = grid_points(self.grid)
        for k, values in self.grid.items():
            bad = [v for v in values if k == "effect" and not isinstance(v, (int, float))]
            if bad:
                raise BadInput(
                    f"non-numeric value(s) {bad}",
                    field=f"--grid {k}",
                    allowed="numbers (severity units, last − first treatment)",
                )
        for p in self.points:  # every grid point must be a valid protocol
            source = f"{self.source} with --grid {point_key(p)}"
            try:
                d = apply_grid_point(self.base, p)
            except (KeyError, IndexError, ValueError, TypeError) as e:
                raise BadInput(
                    f"cannot apply the grid point ({e.__class__.__name__}: {e})",
                    file=source,
                    field="--grid",
                    allowed="effect, "
                    + ", ".join(GRID_ALIASES)
                    + " or a dotted protocol field such as treatments.1.effect_sd",
                ) from None
            protocol_from_dict(d, source=source)
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods:
            raise BadInput(f"unknown method(s) {bad}", field="--method", allowed=", ".join(METHODS))

    @classmethod
    def from_cli(
        cls, protocol_path, replicates: int, grid: list[str], methods: str, seed: int = 0, keep_images: bool = False
    ) -> PowerStudy:
        p = load_protocol(protocol_path)
        ms = [m.strip() for m in methods.split(",") if m.strip()]
        if ms == ["all"]:
            ms = list(METHODS)
        return cls(
            base=p.resolved(),
            grid=parse_grid(grid),
            replicates=replicates,
            methods=ms,
            seed=seed,
            keep_images=keep_images,
            source=str(protocol_path),
        )

    def tasks(self) -> list[dict]:
        return [
            {"point": p, "key": point_key(p), "replicate": r, "seed": replicate_seed(self.seed, p, r)}
            for p in self.points
            for r in range(self.replicates)
        ]


def _rows_from_results(res: dict, task: dict) -> list[dict]:
    truth = {t["contrast"]: t for t in (res.get("truth") or [])}
    rows = []
    for pop in res["population"]:
        tr = truth.get(pop["contrast"], {})
        rows.append(
            {
                "method": pop["method"],
                "test": "lmm",
                "contrast": pop["contrast"],
                "estimate": pop.get("estimate_std"),
                "ci_low": pop.get("ci_low_std"),
                "ci_high": pop.get("ci_high_std"),
                "p_value": pop["p_value"],
                "known": tr.get("realised_std"),
                "estimate_raw": pop["estimate"],
                "known_raw": tr.get("realised"),
                "error": pop.get("error") or "",
            }
        )
    # per-patient tests: a replicate "detects" with a test when the majority of patients reject
    pats = pd.DataFrame(res.get("patients", []))
    if len(pats):
        for (method, contrast, test), g in pats.groupby(["method", "contrast", "test"], sort=True):
            share = float((g["p_value"] < ALPHA).mean())
            rows.append(
                {
                    "method": method,
                    "test": f"patients:{test}",
                    "contrast": contrast,
                    "estimate": float(g["estimate"].mean()),
                    "ci_low": np.nan,
                    "ci_high": np.nan,
                    "p_value": float(np.median(g["p_value"])),
                    "known": np.nan,
                    "estimate_raw": share,
                    "known_raw": np.nan,
                    "error": "",
                }
            )
    for r in rows:
        r.update(grid_point=task["key"], replicate=task["replicate"], seed=task["seed"])
    return rows


def run_replicate(args) -> list[dict]:
    """Simulate and analyse one replicate; failures become rows with ``error`` set."""
    from analysis.pipeline import AnalysisConfig, analyze

    from .simulate import simulate

    base, task, methods, keep_dir = args
    work = Path(tempfile.mkdtemp(prefix="trialsim-rep-"))
    try:
        d = apply_grid_point(base, task["point"])
        d["seed"] = task["seed"]
        protocol = protocol_from_dict(d)
        renderer = "none" if methods == ["oracle"] else None
        simulate(protocol, work / "dataset", renderer=renderer, progress=False)
        res = analyze(
            work / "dataset",
            work / "analysis",
            AnalysisConfig(method=",".join(methods), seed=task["seed"], progress=False, report=False),
        )
        rows = _rows_from_results(res, task)
    except Exception as e:
        rows = [
            {
                "grid_point": task["key"],
                "replicate": task["replicate"],
                "seed": task["seed"],
                "method": m,
                "test": "lmm",
                "contrast": "",
                "estimate": np.nan,
                "ci_low": np.nan,
                "ci_high": np.nan,
                "p_value": np.nan,
                "known": np.nan,
                "estimate_raw": np.nan,
                "known_raw": np.nan,
                "error": f"{e.__class__.__name__}: {e}"[:300],
            }
            for m in methods
        ]
    finally:
        if keep_dir:
            dest = Path(keep_dir) / task["key"].replace(";", "_") / f"replicate_{task['replicate']:04d}"
            if dest.exists():
                shutil.rmtree(dest)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(work), dest)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return rows


def _read_done(path: Path) -> pd.DataFrame:
    """Rows already recorded; a line cut short by a kill is dropped (and rewritten later)."""
    if not path.exists():
        return pd.DataFrame(columns=REPLICATE_COLUMNS)
    text = path.read_text(encoding="utf-8")
    cut = None
    if text and not text.endswith("\n"):
        # the last block was cut by a kill: drop its replicate entirely (it is rerun)
        last = text[text.rfind("\n") + 1 :]
        text = text[: text.rfind("\n") + 1]
        parts = last.split(",")
        if len(parts) > 1:
            cut = (parts[0], parts[1])
    from io import StringIO

    if not text.strip():
        return pd.DataFrame(columns=REPLICATE_COLUMNS)
    df = pd.read_csv(StringIO(text), keep_default_na=False, na_values=[""], dtype={"grid_point": str})
    if cut is not None:
        df = df[~((df["grid_point"] == cut[0]) & (df["replicate"].astype(str) == cut[1]))]
    return df.reset_index(drop=True)


def _append(path: Path, rows: list[dict], columns: list[str]) -> None:
    block = pd.DataFrame(rows, columns=columns).to_csv(
        index=False, header=False, lineterminator="\n", float_format="%.10g"
    )
    with open(path, "a", encoding="utf-8") as f:
        f.write(block)
        f.flush()


def _mcse_prop(p: float, n: int) -> float:
    return math.sqrt(p * (1 - p) / n) if n > 0 else float("nan")


def summarise(rep: pd.DataFrame, grid: dict[str, list]) -> pd.DataFrame:
    """Power, type-I error, bias, RMSE and coverage per grid point, method and test, with MC SEs."""
    out = []
    for (gp, method, test), g in rep.groupby(["grid_point", "method", "test"], sort=False):
        failed = g["error"].notna() & (g["error"].astype(str).str.len() > 0)
        ok = g[~failed & g["p_value"].notna()]
        n = len(ok)
        point = dict(kv.split("=", 1) for kv in gp.split(";")) if gp != "base" else {}
        null = "effect" in point and float(point["effect"]) == 0.0
        reject = float((ok["p_value"] < ALPHA).mean()) if n else float("nan")
        row = {
            **{k: _parse_value(v) for k, v in point.items()},
            "grid_point": gp,
            "method": method,
            "test": test,
            "replicates": len(g),
            "failed": int(failed.sum()),
            "rejection_rate": reject,
            "rejection_mcse": _mcse_prop(reject, n),
        }
        row["power"] = reject if not null else float("nan")
        row["type1_error"] = reject if null else float("nan")
        err = (ok["estimate"] - ok["known"]).astype(float)
        err = err[np.isfinite(err)]
        if len(err):
            row["bias"] = float(err.mean())
            row["bias_mcse"] = float(err.std(ddof=1) / math.sqrt(len(err))) if len(err) > 1 else float("nan")
            rmse = float(np.sqrt((err**2).mean()))
            row["rmse"] = rmse
            row["rmse_mcse"] = (
                float((err**2).std(ddof=1) / (2 * rmse * math.sqrt(len(err))))
                if len(err) > 1 and rmse > 0
                else float("nan")
            )
            has_ci = ok[np.isfinite(ok["ci_low"].astype(float)) & np.isfinite(ok["known"].astype(float))]
            if len(has_ci):
                cov = float(((has_ci["ci_low"] <= has_ci["known"]) & (has_ci["known"] <= has_ci["ci_high"])).mean())
                row["coverage"] = cov
                row["coverage_mcse"] = _mcse_prop(cov, len(has_ci))
        out.append(row)
    cols = list(grid) + [
        "grid_point",
        "method",
        "test",
        "replicates",
        "failed",
        "power",
        "type1_error",
        "rejection_rate",
        "rejection_mcse",
        "bias",
        "bias_mcse",
        "rmse",
        "rmse_mcse",
        "coverage",
        "coverage_mcse",
    ]
    df = pd.DataFrame(out)
    return df.reindex(columns=[c for c in cols if c in df.columns or c in grid])


def run_power(
    study: PowerStudy, out: str | Path, workers: int = 1, scheduler: str | None = None, progress: bool = True
) -> pd.DataFrame:
    """Run (or finish) ``study`` into ``out``; returns the summary table."""
    from .dataset import atomic_write_text, write_csv
    from .scaleout import run_local, run_on_cluster

    out = Path(out)
    # reach the cluster before writing anything, so a wrong address leaves no folder behind
    client = None
    if scheduler:
        from .scaleout import connect

        client = connect(scheduler)
    out.mkdir(parents=True, exist_ok=True)
    spec = {
        "base": study.base,
        "grid": study.grid,
        "replicates": study.replicates,
        "methods": study.methods,
        "seed": study.seed,
    }
    spec_path = out / "study.yaml"
    spec_text = yaml.safe_dump(spec, sort_keys=False)
    if spec_path.exists():
        prev = yaml.safe_load(spec_path.read_text())
        same = {k: prev.get(k) for k in ("base", "grid", "methods", "seed")} == {
            k: spec[k] for k in ("base", "grid", "methods", "seed")
        }
        if not same:
            raise BadInput(
                "the folder holds a different study (protocol, grid, methods or seed); use another --out",
                file=str(spec_path),
                field="--out",
            )
    atomic_write_text(spec_path, spec_text)

    rep_path = out / "replicates.csv"
    # grid_point and replicate lead (a cut line is recognised by them), then one column per grid key
    columns = REPLICATE_COLUMNS[:2] + list(study.grid) + REPLICATE_COLUMNS[2:]
    done = _read_done(rep_path)
    # rewrite what survived (drops a half-written last block) before appending more
    write_csv(rep_path, done.reindex(columns=columns))
    done_keys = set(zip(done["grid_point"].astype(str), done["replicate"].astype(int)))
    todo = [t for t in study.tasks() if (t["key"], t["replicate"]) not in done_keys]
    keep_dir = str(out / "images") if study.keep_images else None
    args = [(study.base, t, study.methods, keep_dir) for t in todo]
    todo_points = {(t["key"], t["replicate"]): t["point"] for t in todo}

    it = run_on_cluster(run_replicate, args, client) if client else run_local(run_replicate, args, workers)
    bar = None
    if progress and args:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(study.tasks()), initial=len(study.tasks()) - len(todo), desc="replicates", unit="trial")
    for _, rows in it:
        _append(rep_path, [dict(r, **todo_points[(r["grid_point"], r["replicate"])]) for r in rows], columns)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()

    if client is not None:
        client.close()
    rep = _read_done(rep_path)
    order = {t["key"]: i for i, t in enumerate(study.tasks())}
    rep = (
        rep.assign(_o=rep["grid_point"].map(order))
        .sort_values(["_o", "replicate", "method", "test", "contrast"], kind="stable")
        .drop(columns="_o")
    )
    write_csv(rep_path, rep.reindex(columns=columns))
    summary = summarise(rep, study.grid)

    write_csv(out / "summary.csv", summary)
    from .power_report import write_power_report

    write_power_report(out, summary, rep, spec)
    return summary
