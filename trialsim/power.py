"""Monte Carlo power studies: many simulated trials per design, each simulated and analysed.

A study is a base protocol, a grid of design changes (``effect=0,0.25,0.5``,
``patients=4,8``, ``blocks=2,4`` or any dotted protocol field) and R replicates per
grid point. Each replicate has a seed derived from (study seed, grid point values,
replicate index), so results depend neither on worker count nor on order. Rows are
appended to ``replicates.csv`` as replicates finish; a rerun skips what is there.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np
import pandas as pd
import yaml

from analysis.atomic import atomic_write_text, write_csv
from analysis.contract import METHODS, NEEDS_READER
from analysis.primary import DEFAULT_PRIMARY_TEST, check_primary_test

from .dataset import claim_output, remove_dead_work, write_marker
from .errors import BadInput, StudyFailed
from .power_bayes import add_bayes_decisions
from .power_replicate import run_replicate
from .power_table import (
    REPLICATE_COLUMNS,
    add_design,
    append_rows,
    check_done,
    parse_value,
    read_done,
    summarise,
)
from .protocol import Protocol, load_protocol, load_yaml, protocol_from_dict
from .scaleout import run_local, run_on_cluster

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
POWER_METHODS = METHODS  # sim-reader with the study's one trained reader (``reader``), fixed over the study


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
        values = [parse_value(v.strip()) for v in vals.split(",") if v.strip()]
        if not values:
            raise BadInput(f"no values for {k!r}", field="--grid")
        # ";" and "=" separate a grid point's parts in replicates.csv; a point names a folder (--keep-images)
        if any(c in item.replace("=", "", 1) for c in ";=/\\"):
            raise BadInput(f"';', '/', '\\' or a second '=' in {item!r}", field="--grid", allowed="KEY=V1,V2,…")
        repeated = sorted({str(v) for v in values if values.count(v) > 1})
        if repeated:
            raise BadInput(f"{k.strip()} lists {', '.join(repeated)} more than once", field="--grid")
        grid[k.strip()] = values
    return grid


def study_base(protocol: Protocol) -> dict:
    """The protocol as the base of a grid: resolved, but with ``observation.days`` left to follow the schedule.

    A grid point that changes ``period_days``, ``blocks`` or the run-in then observes its
    whole schedule; days the protocol fixes itself stay fixed (and a point whose schedule
    they do not match is refused by :func:`check_grid`).
    """
    d = protocol.resolved()
    if protocol.observation.days is None:
        d["observation"]["days"] = None
    return d


def _check_point(base: dict, point: dict) -> Protocol:
    """The grid point's whole protocol; raises when it cannot be built or would be cut short."""
    proto = protocol_from_dict(apply_grid_point(base, point), source=f"--grid point {point_key(point)}")
    days = base.get("observation", {}).get("days")
    if days is not None and proto.planned_days != days:
        raise BadInput(
            f"the point {point_key(point)} plans a {proto.planned_days}-day schedule, but the protocol fixes "
            f"observation.days at {days}: its trials would be cut or padded",
            field="--grid",
            allowed="remove observation.days from the protocol, so each point observes its whole schedule",
        )
    return proto


def check_grid(base: dict, grid: dict[str, list], methods: list[str] | None = None) -> None:
    """Refuse a grid any point of which is not a whole, valid protocol, before any replicate runs."""
    for point in grid_points(grid):
        try:
            proto = _check_point(base, point)
        except BadInput as e:
            raise BadInput(f"{e}", field="--grid") from None
        except (KeyError, IndexError, ValueError, TypeError) as e:
            raise BadInput(
                f"the point {point_key(point)} does not apply to the protocol ({e.__class__.__name__}: {e})",
                field="--grid",
                allowed="effect, " + ", ".join(GRID_ALIASES) + " or a dotted protocol field",
            ) from None
        if proto.dynamics.unbounded and methods is not None and methods != ["oracle"]:
            raise BadInput(
                "dynamics.floor/ceiling null (no bound) only works without photos, and the methods read photos",
                field="--method",
                allowed="oracle (no photos), or bounds within 0–3",
            )


def grid_points(grid: dict[str, list]) -> list[dict]:
    points: list[dict] = [{}]
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
    primary_test: str = DEFAULT_PRIMARY_TEST  # the per-patient test whose rate is per-patient power
    points: list[dict] = field(default_factory=list)
    model: str = "lmm"  # lmm, or bayes: the Bayesian model too (trialsim.power_bayes)
    reader: str | None = None  # reader folder (trialsim train-reader) for the sim-reader method

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
        bad = [m for m in self.methods if m not in POWER_METHODS]
        if bad or not self.methods:
            raise BadInput(f"unknown method(s) {bad}", field="--method", allowed=", ".join(POWER_METHODS))
        self._check_reader()

    def _check_reader(self) -> None:
        """The sim-reader needs a reader folder that loads (checked before any trial runs); kept as an absolute path."""
        if NEEDS_READER not in self.methods:
            self.reader = None  # a reader no method reads is not part of the study
            return
        if not self.reader:
            raise BadInput(
                "method 'sim-reader' needs --reader, a folder made by trialsim train-reader", field="--reader"
            )
        from analysis.reader import load_reader

        load_reader(self.reader)  # exit 2 naming the file and field when it is not a reader
        self.reader = str(Path(self.reader).resolve())

    @classmethod
    def from_cli(
        cls,
        protocol_path,
        replicates: int,
        grid: list[str],
        methods: str,
        seed: int = 0,
        keep_images: bool = False,
        primary_test: str = DEFAULT_PRIMARY_TEST,
        reader: str | None = None,
    ) -> PowerStudy:
        p = load_protocol(protocol_path)
        ms = [m.strip() for m in methods.split(",") if m.strip()]
        if ms == ["all"]:
            ms = [m for m in POWER_METHODS if m != NEEDS_READER or reader]
        grid_values = parse_grid(grid)
        base = study_base(p)
        check_grid(base, grid_values, ms)
        return cls(
            base=base,
            grid=grid_values,
            replicates=replicates,
            methods=ms,
            seed=seed,
            keep_images=keep_images,
            source=str(protocol_path),
            primary_test=check_primary_test(primary_test),
            reader=reader,
        )

    def tasks(self) -> list[dict]:
        return [
            {"point": p, "key": point_key(p), "replicate": r, "seed": replicate_seed(self.seed, p, r)}
            for p in self.points
            for r in range(self.replicates)
        ]


def _check_spec(out: Path, spec: dict) -> None:
    """Refuse when the folder's ``study.yaml`` is unreadable or holds a different study."""
    spec_path = out / "study.yaml"
    if not spec_path.exists():
        return
    try:
        prev = load_yaml(spec_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise BadInput(
            f"cannot read the study of this folder ({e.__class__.__name__}); use another --out",
            file=str(spec_path),
            field="--out",
        ) from None
    keys = ("base", "grid", "methods", "seed")
    same = isinstance(prev, dict) and {k: prev.get(k) for k in keys} == {k: spec[k] for k in keys}
    same = same and prev.get("reader") == spec.get("reader")
    if not same or prev.get("primary_test", DEFAULT_PRIMARY_TEST) != spec["primary_test"]:
        raise BadInput(
            "the folder holds a different study (protocol, grid, methods, seed, primary test or reader); "
            "use another --out",
            file=str(spec_path),
            field="--out",
        )


def _run_replicates(study: PowerStudy, out: Path, columns: list[str], client, workers: int, progress: bool) -> None:
    """Run the replicates ``replicates.csv`` lacks, appending each one's rows as it finishes."""
    rep_path = out / "replicates.csv"
    done = read_done(rep_path)
    check_done(done, {t["key"] for t in study.tasks()}, rep_path)
    # rewrite what survived (drops a half-written last block) before appending more; 10 digits so that a
    # rerun of a finished study gives the same summary
    write_csv(rep_path, done.reindex(columns=columns), float_format="%.10g")
    done_keys = set(zip(done["grid_point"].astype(str), done["replicate"].astype(int)))
    todo = [t for t in study.tasks() if (t["key"], t["replicate"]) not in done_keys]
    keep_dir = str(out / "images") if study.keep_images else None
    args = [
        (study.base, dict(t, model=study.model, reader=study.reader), study.methods, keep_dir, study.primary_test)
        for t in todo
    ]
    todo_points = {(t["key"], t["replicate"]): t["point"] for t in todo}
    it = run_on_cluster(run_replicate, args, client) if client else run_local(run_replicate, args, workers)
    n_all = len(study.tasks())
    from tqdm.auto import tqdm

    with tqdm(
        total=n_all, initial=n_all - len(todo), desc="replicates", unit="trial", disable=not (progress and args)
    ) as bar:
        for _, done_rows in it:
            rows = cast(list[dict], done_rows)
            append_rows(rep_path, [dict(r, **todo_points[(r["grid_point"], r["replicate"])]) for r in rows], columns)
            bar.update(1)


def _designs(study: PowerStudy) -> dict[str, dict]:
    """Design diagnostics (:mod:`trialsim.design`) of every grid point, by its key."""
    from .design import design_diagnostics

    return {point_key(p): design_diagnostics(_check_point(study.base, p)) for p in study.points}


def _raise_if_all_failed(rep: pd.DataFrame) -> None:
    """:class:`StudyFailed` when no replicate gave a result, naming how many failed and the first reason."""
    failed = rep["error"].notna() & (rep["error"].astype(str).str.len() > 0)
    per_replicate = failed.groupby([rep["grid_point"], rep["replicate"]]).all()
    if len(per_replicate) and per_replicate.all():
        first = rep.loc[failed, "error"].astype(str).iloc[0]
        raise StudyFailed(f"all {len(per_replicate)} replicates failed; the first: {first}")


def run_power(
    study: PowerStudy, out: str | Path, workers: int = 1, scheduler: str | None = None, progress: bool = True
) -> pd.DataFrame:
    """Run (or finish) ``study`` into ``out``; returns the summary table.

    Raises :class:`~trialsim.errors.StudyFailed` when every replicate failed (after
    writing ``replicates.csv``, ``summary.csv`` and ``power.html``, which show why).
    """
    from .scaleout import connect

    out = Path(out)
    # 1. reach the cluster before writing anything, so a wrong address leaves no folder behind
    client = connect(scheduler) if scheduler else None
    try:
        # 2. the study's folder (only one trialsim wrote, so no file of the user's is touched) and its spec
        claim_output(out, "power", None, replace=True)
        remove_dead_work()  # what killed studies left in the temporary folder
        spec = {k: getattr(study, k) for k in ("base", "grid", "replicates", "methods", "seed", "primary_test")}
        if study.model != "lmm":  # lmm studies keep the spec they always had (resumable)
            spec["model"] = study.model
        if study.reader:  # so do studies without the sim-reader
            spec["reader"] = study.reader
        _check_spec(out, spec)
        spec_text = yaml.safe_dump(spec, sort_keys=False)
        write_marker(out, "power", spec_text)
        atomic_write_text(out / "study.yaml", spec_text)
        # 3. replicates: grid_point and replicate lead (a cut line is recognised by them), then the grid keys
        columns = REPLICATE_COLUMNS[:2] + list(study.grid) + REPLICATE_COLUMNS[2:]
        _run_replicates(study, out, columns, client, workers, progress)
    finally:
        if client is not None:
            client.close()
    # 4. sorted replicates, summary and report
    rep = read_done(out / "replicates.csv")
    order = {t["key"]: i for i, t in enumerate(study.tasks())}
    rep = (
        rep.assign(_o=rep["grid_point"].map(order))
        .sort_values(["_o", "replicate", "method", "test", "contrast"], kind="stable")
        .drop(columns="_o")
    )
    write_csv(out / "replicates.csv", rep.reindex(columns=columns), float_format="%.10g")
    summary = add_bayes_decisions(add_design(summarise(rep, study.grid), _designs(study)), rep)
    write_csv(out / "summary.csv", summary)
    from .power_report import write_power_report

    write_power_report(out, summary, rep, spec)
    _raise_if_all_failed(rep)
    return summary
