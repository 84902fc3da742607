"""The trial protocol: a typed, validated description of one simulated study.

A protocol is written in YAML (see ``protocols/``) and loaded with
:func:`load_protocol`. Every knob carries its unit in its name or docstring:
durations are in days, severities and effects on the 0–3 severity scale of the
anchor's protocol CSV, noise as standard deviations in severity units.
Unknown fields are errors, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import re
import string
from collections.abc import Hashable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import BadInput

# the longest study (days): a century of daily photos, as observation.days allows
MAX_STUDY_DAYS = 36500
SEVERITY_MIN = 0.0
SEVERITY_MAX = 3.0
BASELINE_LABEL = "Baseline"


# a patient id used as it is for its folder and file names: plain ASCII, not hidden, not "." or ".."
_PLAIN_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")


def patient_folder_name(patient_id: str) -> str:
    """The folder (and file-name stem) of ``patient_id``: readable, safe and unique per id.

    A plain id (``[A-Za-z0-9_-][A-Za-z0-9_.-]*``) is its own name; any other id (separators,
    spaces, unicode, dots in front) becomes its characters outside that set replaced by ``_``
    plus ``-`` and 8 hex digits of the id's SHA-256, so that ``a/b`` and ``a b`` never share a
    folder with each other or with ``a_b``.
    """
    if _PLAIN_ID.fullmatch(patient_id):
        return patient_id
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", patient_id).lstrip(".") or "_"
    return f"{readable}-{hashlib.sha256(patient_id.encode('utf-8')).hexdigest()[:8]}"


def folder_clashes(ids: list[str]) -> list[list[str]]:
    """Groups of ids whose folder names are equal, also ignoring case (macOS and Windows)."""
    groups: dict[str, list[str]] = {}
    for pid in ids:
        groups.setdefault(patient_folder_name(pid).casefold(), []).append(pid)
    return [g for g in groups.values() if len(g) > 1]


class _Strict(BaseModel):
    # NaN or infinity would pass as a number and fail later with a misleading range message
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans(cls, v):
        # YAML's true/false would pass as 1/0 for a number; no field of a protocol is a boolean
        if isinstance(v, bool):
            raise ValueError(f"must be a number or text, not the boolean {str(v).lower()}")
        return v


class SeverityDistribution(_Strict):
    """Between-patient distribution of the untreated (baseline) severity, 0–3 scale."""

    mean: float = Field(2.9, ge=SEVERITY_MIN, le=SEVERITY_MAX)
    sd: float = Field(0.1, ge=0.0, le=3.0)


class PatientOverride(_Strict):
    """Per-patient fixed values that replace the random draws."""

    patient_id: str
    baseline_severity: float | None = Field(None, ge=SEVERITY_MIN, le=SEVERITY_MAX)
    fitzpatrick: int | None = Field(None, ge=1, le=6)

    @field_validator("patient_id", mode="before")
    @classmethod
    def _as_str(cls, v):
        return str(v)


class Patients(_Strict):
    n: int = Field(10, ge=1, le=10000, description="number of patients (10,000: half a minute without photos)")
    baseline_severity: SeverityDistribution = SeverityDistribution()
    ids: list[str] | None = Field(None, description="explicit patient ids (default 1..n)")
    overrides: list[PatientOverride] = []

    @field_validator("ids", mode="before")
    @classmethod
    def _ids_as_str(cls, v):
        if v is None:
            return v
        if not isinstance(v, list):
            raise ValueError("must be a list of patient ids")
        return [str(x) for x in v]

    @model_validator(mode="before")
    @classmethod
    def _n_from_ids(cls, data):
        """``n`` follows ``ids`` when only ids are given; both given must agree."""
        if not isinstance(data, dict) or not isinstance(data.get("ids"), list):
            return data
        n_ids = len(data["ids"])
        if data.get("n") is not None and data["n"] != n_ids:
            raise ValueError(f"n = {data['n']!r} but ids lists {n_ids} patients; give one of them, or make them agree")
        return {**data, "n": n_ids}

    @model_validator(mode="after")
    def _check_ids(self):
        ids = self.patient_ids
        if len(set(ids)) != len(ids):
            raise ValueError("patient ids must be unique")
        blank = [i for i in ids if not i.strip() or i != i.strip()]
        if blank:
            raise ValueError(f"patient ids must be non-empty, without surrounding spaces (got {blank[0]!r})")
        clashes = folder_clashes(ids)
        if clashes:
            raise ValueError(
                f"patient ids {clashes[0]} would share the folder {patient_folder_name(clashes[0][0])!r} "
                "(ids that differ only in case clash on macOS and Windows); rename one of them"
            )
        unknown = [o.patient_id for o in self.overrides if o.patient_id not in ids]
        if unknown:
            raise ValueError(f"overrides name unknown patients {unknown}")
        return self

    @property
    def patient_ids(self) -> list[str]:
        if self.ids is not None:
            return list(self.ids)
        return [str(i + 1) for i in range(self.n)]


class Treatment(_Strict):
    """One arm. ``effect`` is the change in severity at full onset (negative = better)."""

    label: str = Field(min_length=1)
    code: str | None = Field(
        None, min_length=1, max_length=1, description="letter used in schedule sequences (default A, B, C… in order)"
    )
    effect: float = Field(0.0, ge=-3.0, le=3.0, description="severity change at full onset, 0–3 scale")
    effect_sd: float = Field(0.0, ge=0.0, le=3.0, description="between-patient SD of the effect")
    onset_days: float = Field(3.0, gt=0.0, le=3650, description="first-order onset time constant, days")
    washout_days: float = Field(3.0, gt=0.0, le=3650, description="first-order washout time constant, days")

    @field_validator("label")
    @classmethod
    def _label_not_baseline(cls, v):
        if v.strip() != v or not v:
            raise ValueError("must be a non-empty label without surrounding spaces")
        if v == BASELINE_LABEL:
            raise ValueError(f"'{BASELINE_LABEL}' is reserved for the run-in")
        return v


class Schedule(_Strict):
    """Order of treatment periods.

    ``fixed``: every patient follows ``sequence`` (one block, letters = treatment
    codes), repeated ``blocks`` times. ``randomized_blocks``: each block holds one
    period of every treatment in an order drawn per patient, redrawn until no
    treatment runs for more than ``max_consecutive_periods`` periods in a row.
    """

    design: Literal["fixed", "randomized_blocks"] = "fixed"
    sequence: str | None = Field(None, description="one block's periods as treatment codes, e.g. AB or ABBA")
    blocks: int = Field(2, ge=1, le=1000)
    period_days: int = Field(28, ge=1, le=3650, description="length of one treatment period, days")
    run_in_days: int = Field(0, ge=0, le=3650, description="untreated Baseline run-in before the first period, days")
    max_consecutive_periods: int | None = Field(None, ge=1, le=1000)

    @field_validator("sequence")
    @classmethod
    def _seq(cls, v):
        if v is None:
            return v
        v = v.strip()
        if not v or not all(c in string.ascii_letters for c in v):
            raise ValueError("must be a string of treatment codes such as AB, ABAB or ABBA")
        return v


class Observation(_Strict):
    days: int | None = Field(None, ge=1, le=36500, description="study length in days (default: run-in + all periods)")
    photos_per_day: int = Field(1, ge=1, le=24)
    missing_photo_prob: float = Field(0.0, ge=0.0, lt=1.0, description="probability a photo is missing")
    dropout_prob: float = Field(0.0, ge=0.0, le=1.0, description="probability a patient drops out (at a uniform day)")
    start_date: _dt.date = Field(_dt.date(2018, 1, 1), description="calendar date of study day 1")


class Dynamics(_Strict):
    drift_sd_per_day: float = Field(0.0, ge=0.0, le=1.0, description="SD of the daily random-walk step")
    trend_per_day: float = Field(0.0, ge=-1.0, le=1.0, description="deterministic drift, severity per day")
    ar1_rho: float = Field(0.0, ge=0.0, lt=1.0, description="AR(1) coefficient of the process noise, per day")
    ar1_sd: float = Field(0.0, ge=0.0, le=3.0, description="stationary SD of the AR(1) process noise")
    sd_obs: float = Field(0.0, ge=0.0, le=3.0, description="SD of day-level observation noise (white)")
    # null switches a bound off: a generic outcome (no photos) need not live on the 0–3 scale
    floor: float | None = Field(SEVERITY_MIN, ge=SEVERITY_MIN, le=SEVERITY_MAX, description="null: no lower bound")
    ceiling: float | None = Field(SEVERITY_MAX, ge=SEVERITY_MIN, le=SEVERITY_MAX, description="null: no upper bound")

    @property
    def unbounded(self) -> bool:
        """True when a bound is switched off (only a study without photos can have that)."""
        return self.floor is None or self.ceiling is None

    @model_validator(mode="after")
    def _bounds(self):
        if self.floor is not None and self.ceiling is not None and self.floor >= self.ceiling:
            raise ValueError("floor must be below ceiling")
        return self


class Rendering(_Strict):
    renderer: Literal["procedural", "sdxl", "none"] = "procedural"
    image_size: int = Field(256, ge=32, le=4096, description="image height in pixels")
    aspect: float = Field(1.0, gt=0.2, le=5.0, description="height / width; 4/3 gives a 3:4 portrait frame")
    view: Literal["cheek", "face", "side", "mixed"] = Field(
        "cheek", description="cheek close-up, frontal face, side of the face, or mixed (per patient cheek or side)"
    )
    nuisance: float = Field(1.0, ge=0.0, le=4.0, description="photo-condition strength: 0 none, 1 default, 2 double")
    style: Literal["realistic", "classic"] = Field(
        "realistic",
        description="procedural look: realistic (calibrated on real trial photos) or classic (bright, uniform lesions)",
    )


class Protocol(_Strict):
    name: str = "trial"
    seed: int = Field(0, ge=0, le=2**63 - 1)
    patients: Patients = Patients()
    treatments: list[Treatment] = Field(min_length=1)
    schedule: Schedule = Schedule()
    observation: Observation = Observation()
    dynamics: Dynamics = Dynamics()
    rendering: Rendering = Rendering()

    @model_validator(mode="after")
    def _check(self):
        labels = [t.label for t in self.treatments]
        if len(set(labels)) != len(labels):
            raise ValueError("treatments: labels must be unique")
        codes = self.treatment_codes
        if len(set(codes.values())) != len(codes):
            raise ValueError("treatments: codes must be unique")
        seq = self.block_sequence
        unknown = sorted({c for c in seq if c not in codes.values()})
        if unknown:
            raise ValueError(
                f"schedule.sequence names unknown treatment code(s) {unknown}; known codes: "
                f"{', '.join(f'{c}={l}' for l, c in codes.items())}"
            )
        self._check_schedule()
        if self.observation.days is not None and self.observation.days > self.planned_days:
            raise ValueError(
                f"observation.days ({self.observation.days}) is longer than the schedule "
                f"({self.planned_days} days = run-in + blocks × periods × period_days)"
            )
        return self

    def _check_schedule(self) -> None:
        """The schedule can be drawn and dated: raise ValueError naming the field otherwise."""
        s, k = self.schedule, len(self.treatments)
        if s.design == "randomized_blocks" and s.sequence:
            raise ValueError("schedule.sequence applies to design: fixed (randomized_blocks draws each block's order)")
        if self.planned_days > MAX_STUDY_DAYS:
            raise ValueError(
                f"the schedule lasts {self.planned_days} days (run-in + blocks × periods × period_days); "
                f"at most {MAX_STUDY_DAYS}"
            )
        if self.observation.start_date + _dt.timedelta(days=self.planned_days) > _dt.date(9999, 12, 31):
            raise ValueError("observation.start_date plus the schedule ends after the year 9999")
        cap = s.max_consecutive_periods
        if s.design != "randomized_blocks" or cap is None:
            return
        # one treatment runs all blocks in a row; with several, a cap of 1 needs every block to
        # start with another treatment than the last ended with: ((k-1)/k)**(blocks-1) of the draws
        if (k == 1 and cap < s.blocks) or (k > 1 and cap == 1 and ((k - 1) / k) ** (s.blocks - 1) < 0.01):
            raise ValueError(
                f"schedule.max_consecutive_periods = {cap} cannot be met (or only by chance) with {k} "
                f"treatment(s) in {s.blocks} randomized blocks; allow more consecutive periods or use fewer blocks"
            )

    @property
    def treatment_codes(self) -> dict[str, str]:
        """label -> one-letter code."""
        out = {}
        for i, t in enumerate(self.treatments):
            out[t.label] = t.code or string.ascii_uppercase[i]
        return out

    @property
    def block_sequence(self) -> str:
        """Codes of one block's periods (for randomized designs: one of each treatment)."""
        if self.schedule.design == "fixed" and self.schedule.sequence:
            return self.schedule.sequence
        return "".join(self.treatment_codes.values())

    @property
    def planned_days(self) -> int:
        s = self.schedule
        return s.run_in_days + s.blocks * len(self.block_sequence) * s.period_days

    @property
    def n_days(self) -> int:
        return self.observation.days or self.planned_days

    def resolved(self) -> dict:
        """The fully resolved protocol as plain data (every default written out)."""
        d = self.model_dump(mode="json")
        d["treatments"] = [dict(t, code=self.treatment_codes[t["label"]]) for t in d["treatments"]]
        d["observation"]["days"] = self.n_days
        d["patients"]["ids"] = self.patients.patient_ids
        return d

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.resolved(), sort_keys=False, allow_unicode=True)


def _format_validation_error(err: ValidationError) -> tuple[str, str]:
    first = err.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown field (check spelling; unknown fields are not allowed)"
    elif first["type"] == "missing":
        msg = "required field is missing"
    more = len(err.errors()) - 1
    if more > 0:
        msg += f" (and {more} more problem{'s' if more > 1 else ''})"
    return field, msg


def protocol_from_dict(data, source: str = "<protocol>") -> Protocol:
    """Validate plain data into a :class:`Protocol`; raise :class:`BadInput` naming the field."""
    if not isinstance(data, dict):
        raise BadInput(
            "the protocol must be a YAML mapping of fields (name, seed, patients, treatments, …)", file=source
        )
    try:
        return Protocol.model_validate(data)
    except ValidationError as err:
        field, msg = _format_validation_error(err)
        raise BadInput(
            msg, file=source, field=field, allowed="see protocols/*.yaml for every field, its unit and its range"
        ) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader that refuses a key given twice in one mapping (instead of keeping the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: dict[Hashable, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                dup = key in seen
            except TypeError:  # an unhashable key: the base class reports it
                break
            if dup:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {seen[key] + 1})", key_node.start_mark
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str):
    """``yaml.safe_load`` of ``text``, refusing duplicate keys (raises ``yaml.YAMLError``)."""
    return yaml.load(text, Loader=_UniqueKeyLoader)


def load_protocol(path: str | Path, seed: int | None = None) -> Protocol:
    """Read and validate a protocol YAML file; ``seed`` (if given) replaces the file's seed."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInput("file not found", file=str(path)) from None
    except (OSError, UnicodeDecodeError) as e:
        raise BadInput(f"cannot read the file ({e.__class__.__name__})", file=str(path)) from None
    try:
        data = load_yaml(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise BadInput(f"malformed YAML{where}: {getattr(e, 'problem', e)}", file=str(path)) from None
    except (ValueError, OverflowError) as e:  # a date YAML parses but the calendar has not (2018-13-45)
        raise BadInput(f"malformed value: {e}", file=str(path), allowed="dates as YYYY-MM-DD") from None
    if seed is not None and isinstance(data, dict):
        data = dict(data, seed=seed)
    return protocol_from_dict(data, source=str(path))
