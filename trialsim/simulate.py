"""Simulate one trial: schedule → latent severity → images → dataset folder.

:func:`simulate_truth` is pure (no I/O) and gives every patient's day-level truth
and the list of photos to take; :func:`simulate` renders and writes a dataset
folder (Contract 1), in parallel over patients when asked, with identical bytes
whatever the worker count.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from analysis.atomic import atomic_write_bytes

from .dataset import IMAGES_DIR, LESION_COLUMNS, MANIFEST_COLUMNS, prepare_output, safe_name, write_tables
from .design import check_bounds, write_design
from .dynamics import draw_patient_parameters, patient_trajectory
from .errors import BadInput
from .photo_table import photo_table
from .protocol import Protocol
from .render.base import PatientJob, Renderer
from .render.sdxl.options import SDXLOptions
from .schedule import patient_schedule
from .seeding import patient_rng

# photos taken on one day spread from morning to evening (hours)
_FIRST_HOUR, _LAST_HOUR = 8.0, 21.0


def patient_truth(protocol: Protocol, patient_index: int, patient_id: str) -> PatientJob:
    """Day-level truth and the photos to take for one patient (no pixels)."""
    seed = protocol.seed
    sched = patient_schedule(protocol, patient_id, patient_rng(seed, patient_index, "schedule"))
    params = draw_patient_parameters(protocol, patient_id, patient_rng(seed, patient_index, "parameters"))
    days = patient_trajectory(protocol, sched, params, patient_rng(seed, patient_index, "dynamics"))
    days["baseline_severity"] = params["baseline"]

    obs = protocol.observation
    rng = patient_rng(seed, patient_index, "observation")
    n_days = len(days)
    # draw every number in a fixed shape so that one knob never shifts another's draws
    drops = rng.random() < obs.dropout_prob
    last_day = int(rng.integers(2, n_days + 1)) if n_days >= 2 else n_days
    missing = rng.random((n_days, obs.photos_per_day)) < obs.missing_photo_prob
    jitter_min = rng.uniform(0, 40, size=(n_days, obs.photos_per_day))
    if drops:
        days = days[days["day"] <= last_day].reset_index(drop=True)

    ppd = obs.photos_per_day
    hours = [13.0] if ppd == 1 else list(np.linspace(_FIRST_HOUR, _LAST_HOUR - 1, ppd))
    width = max(3, len(str(protocol.n_days)))
    pdir = safe_name(patient_id)
    images = photo_table(days, missing, jitter_min, hours, width, pdir, IMAGES_DIR, seed, patient_index)
    return PatientJob(
        protocol=protocol, patient_id=str(patient_id), patient_index=patient_index, days=days, images=images
    )


def simulate_truth(protocol: Protocol) -> list[PatientJob]:
    """One :class:`PatientJob` per patient, in protocol order."""
    return [patient_truth(protocol, i, pid) for i, pid in enumerate(protocol.patients.patient_ids)]


def make_renderer(protocol: Protocol, name: str | None = None, sdxl: SDXLOptions | None = None) -> Renderer:
    """The renderer named ``name`` (default: the protocol's ``rendering.renderer``).

    ``sdxl``: the SDXL renderer's options; options set there with another renderer are an
    error (they would be ignored), naming them.
    """
    name = name or protocol.rendering.renderer
    if name != "sdxl" and sdxl is not None and sdxl.model_fields_set:
        given = sorted(SDXLOptions.OPTION_NAMES.get(f, f) for f in sdxl.model_fields_set)
        raise BadInput(
            f"{', '.join(given)} only apply to --renderer sdxl, and the renderer is {name}",
            field=given[0],
            allowed="these options together with --renderer sdxl (or rendering.renderer: sdxl)",
        )
    if name == "none":
        from .render.none import NoImageRenderer

        return NoImageRenderer(protocol)
    if name == "procedural":
        from .render.procedural import ProceduralRenderer

        return ProceduralRenderer(protocol)
    if name == "sdxl":
        from .render.sdxl import SDXLRenderer

        return SDXLRenderer.from_options(protocol, sdxl or SDXLOptions())
    raise ValueError(f"unknown renderer {name!r}")


@contextlib.contextmanager
def _cv2_threads(n: int):
    """OpenCV's thread count set to ``n`` inside the block and restored after it.

    Rendering draws many small images: one thread each is faster and leaves the cores to
    parallel patients; the analysis that may follow in the same process wants them all.
    """
    import cv2

    before = cv2.getNumThreads()
    cv2.setNumThreads(n)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


def _whole_image(path: Path) -> bool:
    """True when ``path`` holds a whole JPEG or PNG (ends with its end marker), so a resume may keep it."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            f.seek(max(0, size - 12))
            tail = f.read()
    except OSError:
        return False
    if head.startswith(b"\xff\xd8"):
        return tail.endswith(b"\xff\xd9")
    return head.startswith(b"\x89PNG") and tail.endswith(b"IEND\xaeB`\x82")


@dataclass
class PatientResult:
    patient_id: str
    manifest: pd.DataFrame
    lesions: pd.DataFrame
    days: pd.DataFrame


def render_patient_to_folder(job: PatientJob, renderer: Renderer, out: Path) -> PatientResult:
    """Render one patient's photos into ``out`` (skipping finished files) and return its tables."""
    out = Path(out)
    ext = renderer.extension
    images = job.images.copy()
    images["image"] = images["image"] + ext
    job = PatientJob(job.protocol, job.patient_id, job.patient_index, job.days, images)
    counts: list[int] = []
    lesion_frames = []

    def wanted(image: str) -> bool:
        return not _whole_image(out / image)

    for name, rendered in zip(images["image"].tolist(), renderer.render_patient(job, wanted)):
        if rendered.image != name:
            raise RuntimeError(f"renderer returned {rendered.image} for {name}")
        if rendered.data is not None:
            atomic_write_bytes(out / rendered.image, rendered.data)
        counts.append(int(rendered.lesion_count))
        if len(rendered.lesions):
            les = rendered.lesions
            lesion_frames.append(les if list(les.columns) == LESION_COLUMNS else les[LESION_COLUMNS])
    if hasattr(renderer, "finish_patient"):
        renderer.finish_patient(job, out)
    manifest = _manifest(job, images, counts)
    lesions = pd.concat(lesion_frames, ignore_index=True) if lesion_frames else pd.DataFrame(columns=LESION_COLUMNS)
    return PatientResult(job.patient_id, manifest, lesions, job.days)


def _manifest(job: PatientJob, images: pd.DataFrame, counts: list[int]) -> pd.DataFrame:
    """The patient's manifest rows: each photo with its day's truth, built column-wise (one lookup of
    all photos' days, not one per photo: that lookup was most of a large latent-only study's time)."""
    d = job.days.set_index("day").loc[images["day"].to_numpy()]
    cols = {
        "image": images["image"].tolist(),
        "patient_id": [job.patient_id] * len(images),
        "day": [int(v) for v in images["day"].tolist()],
        "treatment": d["treatment"].tolist(),
        "timestamp": images["timestamp"].tolist(),
        "block": [int(v) for v in d["block"].tolist()],
        "period": [int(v) for v in d["period"].tolist()],
        "photo": [int(v) for v in images["photo"].tolist()],
        "severity_latent": [float(v) for v in d["severity_latent"].tolist()],
        "severity_noisefree": [float(v) for v in d["severity_noisefree"].tolist()],
        "severity_grade": [int(v) for v in d["severity_grade"].tolist()],
        "lesion_count": counts,
        "seed": [int(v) for v in images["seed"].tolist()],
    }
    return pd.DataFrame(cols, columns=MANIFEST_COLUMNS)


# one renderer per worker process, built on first use
_WORKER_RENDERER: dict = {}


def _worker_render(args) -> PatientResult:
    job, renderer_name, sdxl, out = args
    key = (renderer_name, sdxl.model_dump_json() if sdxl else "", job.protocol.model_dump_json())
    if key not in _WORKER_RENDERER:
        _WORKER_RENDERER.clear()
        _WORKER_RENDERER[key] = make_renderer(job.protocol, renderer_name, sdxl)
    return render_patient_to_folder(job, _WORKER_RENDERER[key], out)


@dataclass
class SimulationResult:
    out: Path
    manifest: pd.DataFrame
    lesions: pd.DataFrame
    days: pd.DataFrame
    design: dict | None = None  # design diagnostics (design.json), None for --from-csv


def _progress(iterable, total: int, desc: str, enabled: bool):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="patient")


def _render_elsewhere(args: list, workers: int, client, progress: bool) -> list[PatientResult]:
    """:func:`_worker_render` of every item of ``args`` on the Dask ``client``, else on ``workers`` processes."""
    from .scaleout import map_ordered, run_local, run_on_cluster

    try:
        tasks = (
            run_on_cluster(_worker_render, args, client)
            if client is not None
            else run_local(_worker_render, args, workers)
        )
        return map_ordered(tasks, len(args), progress=progress, desc="render")
    finally:
        if client is not None:
            client.close()


def simulate(
    protocol: Protocol,
    out: str | Path,
    renderer: str | None = None,
    workers: int = 1,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = False,
    sdxl: SDXLOptions | None = None,
    jobs: list[PatientJob] | None = None,
    protocol_yaml: str | None = None,
    scheduler: str | None = None,
) -> SimulationResult:
    """Simulate ``protocol`` and write its dataset folder to ``out``.

    ``renderer`` overrides ``protocol.rendering.renderer``; ``workers`` > 1 renders
    patients in separate processes (same bytes as one worker); ``scheduler`` is the
    address of a Dask distributed scheduler to render patients on instead. ``sdxl``: the
    SDXL renderer's options. ``jobs`` replaces the simulated truth (used by ``--from-csv``).
    """
    out = Path(out)
    name = renderer or protocol.rendering.renderer
    if renderer and renderer != protocol.rendering.renderer:
        protocol = protocol.model_copy(
            update={"rendering": protocol.rendering.model_copy(update={"renderer": renderer})}
        )
    check_bounds(protocol, name)
    # build the renderer before touching the folder: bad renderer input (a missing model,
    # a wrong LoRA) must leave nothing behind
    local_renderer = make_renderer(protocol, name, sdxl)
    client = None
    if scheduler:  # likewise a cluster that cannot be reached
        from .scaleout import connect

        client = connect(scheduler)
    # the truth (schedules drawn, photos listed) before the folder: nothing is written for a trial
    # that cannot be simulated
    jobs_simulated = jobs is None  # design diagnostics describe a protocol's schedule, not a CSV's
    if jobs is None:
        jobs = simulate_truth(protocol)
    else:
        jobs = [PatientJob(protocol, j.patient_id, j.patient_index, j.days, j.images) for j in jobs]
    prepare_output(out, protocol_yaml or protocol.to_yaml(), overwrite=overwrite, resume=resume)
    args = [(job, name, sdxl, out) for job in jobs]
    if client is not None or (workers > 1 and len(jobs) > 1):
        results = _render_elsewhere(args, workers, client, progress)
    else:
        with _cv2_threads(1):
            results = [
                render_patient_to_folder(a[0], local_renderer, out)
                for a in _progress(args, len(args), "render", progress)
            ]
    manifest = pd.concat([r.manifest for r in results], ignore_index=True)
    nonempty = [r.lesions for r in results if len(r.lesions)]
    lesions = pd.concat(nonempty, ignore_index=True) if nonempty else pd.DataFrame(columns=LESION_COLUMNS)
    days = pd.concat([r.days for r in results], ignore_index=True)
    write_tables(out, manifest, lesions, days)
    design = write_design(protocol, out) if jobs_simulated else None
    return SimulationResult(out, manifest, lesions, days, design)


class SimulateOptions(BaseModel):
    """What ``trialsim simulate`` takes: the trial to simulate, where to write it and how to render.

    ``protocol``: a protocol YAML, or ``from_csv``: the anchor's protocol CSV rendered as given
    (its severities are the truth); exactly one. ``seed`` replaces the protocol's; ``renderer``,
    ``image_size`` (px), ``nuisance`` and ``view`` override its ``rendering`` section;
    ``workers``: parallel processes; ``scheduler``: a Dask scheduler address instead;
    ``sdxl``: the SDXL renderer's options.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    OPTION_NAMES: ClassVar[dict[str, str]] = {
        "protocol": "PROTOCOL",
        "from_csv": "--from-csv",
        "out": "--out",
        "seed": "--seed",
        "renderer": "--renderer",
        "workers": "--workers",
        "scheduler": "--scheduler",
        "image_size": "--image-size",
        "nuisance": "--nuisance",
        "view": "--view",
    }

    out: Path
    protocol: Path | None = None
    from_csv: Path | None = None
    seed: int | None = Field(None, ge=0)
    renderer: Literal["procedural", "sdxl", "none"] | None = None
    workers: int = Field(1, ge=1)
    scheduler: str | None = None
    image_size: int | None = Field(None, ge=32, le=4096)
    nuisance: float | None = Field(None, ge=0, le=4)
    view: Literal["cheek", "face"] | None = None
    overwrite: bool = False
    resume: bool = False
    progress: bool = False
    sdxl: SDXLOptions | None = None

    def rendering_overrides(self) -> dict:
        """The ``rendering`` fields given here (image_size, nuisance, view)."""
        given = {"image_size": self.image_size, "nuisance": self.nuisance, "view": self.view}
        return {k: v for k, v in given.items() if v is not None}


def _from_csv(options: SimulateOptions) -> tuple[Protocol, list[PatientJob], str]:
    """The protocol, the patients' truth and the protocol.yaml text for ``--from-csv``."""
    from .anchor_csv import jobs_from_csv, protocol_for_csv, read_anchor_csv

    assert options.from_csv is not None
    df = read_anchor_csv(options.from_csv)
    proto = protocol_for_csv(df, options.seed if options.seed is not None else 0, options.rendering_overrides())
    header = (
        f"# Rendered from {Path(options.from_csv).name}: the CSV's severities are the latent truth;\n"
        "# treatment effects below are the arms' mean change from Baseline in that CSV.\n"
    )
    return proto, jobs_from_csv(df, proto), header + proto.to_yaml()


def simulate_from_options(options: SimulateOptions) -> SimulationResult:
    """Simulate what ``options`` describe and write the dataset folder (``trialsim simulate``)."""
    from .protocol import load_protocol

    # 1. the protocol (and, from a CSV, the patients' truth)
    jobs, protocol_yaml = None, None
    if options.from_csv is not None:
        if options.protocol is not None:
            raise BadInput("give either PROTOCOL or --from-csv, not both", field="--from-csv")
        proto, jobs, protocol_yaml = _from_csv(options)
    else:
        if options.protocol is None:
            raise BadInput("missing PROTOCOL (a YAML file; see protocols/) or --from-csv", field="PROTOCOL")
        proto = load_protocol(options.protocol, seed=options.seed)
        rendering = options.rendering_overrides()
        if rendering:
            proto = proto.model_copy(update={"rendering": proto.rendering.model_copy(update=rendering)})
    # 2. render and write
    return simulate(
        proto,
        options.out,
        renderer=options.renderer,
        workers=options.workers,
        overwrite=options.overwrite,
        resume=options.resume,
        progress=options.progress,
        sdxl=options.sdxl,
        jobs=jobs,
        protocol_yaml=protocol_yaml,
        scheduler=options.scheduler,
    )
