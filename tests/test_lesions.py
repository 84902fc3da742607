"""The lesion population process: counts follow the target, lesions persist, life cycles, view geometry."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from trialsim.dynamics import target_lesion_count
from trialsim.lesions import ACTIVE_TYPES, MARK, allowed_region, feature_mask, lesion_population


def days_frame(severity) -> pd.DataFrame:
    sev = np.asarray(severity, float)
    return pd.DataFrame(
        {"day": np.arange(1, len(sev) + 1), "severity_latent": sev, "lesion_target": target_lesion_count(sev)}
    )


def trial_severity(n=120, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.concatenate([np.full(30, 2.9), np.full(30, 0.4), np.full(30, 1.6), np.full(n - 90, 0.9)])
    return np.clip(base + rng.normal(0, 0.05, n), 0, 3)


def test_active_count_equals_target_every_day():
    d = days_frame(trial_severity())
    pop = lesion_population(d, np.random.default_rng(1))
    active = pop[pop["stage"] != MARK].groupby("day").size().reindex(d["day"], fill_value=0)
    assert (active.to_numpy() == d["lesion_target"].to_numpy()).all()


def test_same_generator_seed_same_population_other_seed_other_positions():
    d = days_frame(trial_severity())
    a = lesion_population(d, np.random.default_rng(5))
    b = lesion_population(d, np.random.default_rng(5))
    c = lesion_population(d, np.random.default_rng(6))
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a["x"].to_numpy()[:20], c["x"].to_numpy()[:20])


def test_a_lesion_never_moves_and_keeps_its_type_until_it_becomes_a_mark():
    pop = lesion_population(days_frame(trial_severity()), np.random.default_rng(2))
    g = pop.groupby("lesion_n")
    assert (g["x"].nunique() == 1).all() and (g["y"].nunique() == 1).all()
    act = pop[pop["stage"] != MARK].groupby("lesion_n")["type"].nunique()
    assert (act == 1).all()
    # days of a lesion are contiguous: born, active, maybe a mark, then gone for good
    span = g["day"].agg(lambda s: s.max() - s.min() + 1)
    assert (span == g.size()).all()


def test_persistence_at_steady_target_at_least_90_percent_within_2px():
    sev = np.full(100, 2.0)  # steady severity: steady target
    pop = lesion_population(days_frame(sev), np.random.default_rng(3))
    act = pop[pop["stage"] != MARK]
    h = w = 512
    kept, total = 0, 0
    for day in range(1, 100):
        a = act[act["day"] == day]
        b = act[act["day"] == day + 1]
        d = np.hypot(
            (a["x"].to_numpy()[:, None] - b["x"].to_numpy()[None]) * w,
            (a["y"].to_numpy()[:, None] - b["y"].to_numpy()[None]) * h,
        )
        kept += int((d.min(axis=1) <= 2.0).sum())
        total += len(a)
    assert kept / total >= 0.90, kept / total


def test_life_cycle_grow_peak_resolve_then_fading_mark():
    pop = lesion_population(days_frame(np.full(120, 1.8)), np.random.default_rng(4))
    order = {"grow": 0, "peak": 1, "resolve": 2, MARK: 3}
    seen_mark = False
    for _, les in pop.groupby("lesion_n"):
        st = les["stage"].map(order).to_numpy()
        assert (np.diff(st) >= 0).all()  # stages only move forward
        marks = les[les["stage"] == MARK]["intensity"].to_numpy()
        if len(marks) > 3:
            seen_mark = True
            assert (np.diff(marks) <= 1e-9).all()  # marks fade
    assert seen_mark
    assert set(pop["stage"]) == {"grow", "peak", "resolve", MARK}
    assert set(pop.loc[pop["stage"] != MARK, "type"]) == set(ACTIVE_TYPES)


def test_severe_acne_has_more_inflammatory_lesions_than_mild():
    def share(sev):
        pop = lesion_population(days_frame(np.full(60, sev)), np.random.default_rng(7))
        act = pop[pop["stage"] != MARK]
        return act["type"].isin(["papule", "pustule", "nodule"]).mean()

    assert share(2.9) > share(0.8) + 0.05


@pytest.mark.parametrize("aspect", [1.0, 4 / 3])
def test_face_view_never_puts_lesions_on_eyes_brows_or_lips(aspect):
    pop = lesion_population(days_frame(np.full(40, 3.0)), np.random.default_rng(8), view="face", aspect=aspect)
    assert len(pop) > 500
    x, y, r = pop["x"].to_numpy(), pop["y"].to_numpy(), pop["radius"].to_numpy()
    # the centre and four points on the rim of each lesion
    for dx, dy in [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)]:
        assert not feature_mask(x + dx * r * aspect, y + dy * r, aspect).any()
    assert allowed_region(x, y, "face", aspect).all()


def test_vectorised_rows_equal_the_per_lesion_reference_state(monkeypatch):
    import trialsim.lesions as lesions

    seen = {}
    real = lesions._population_rows

    def spy(les, day_list, born_by):
        seen.update(lesions=les, day_list=day_list, born_by=born_by)
        return real(les, day_list, born_by)

    monkeypatch.setattr(lesions, "_population_rows", spy)
    # a gap in the observed days: lesions end and marks fade between photos
    d = days_frame(trial_severity(90, seed=3)).drop(index=range(40, 47)).reset_index(drop=True)
    pop = lesion_population(d, np.random.default_rng(2))
    expected = []
    for day, n_born in zip(seen["day_list"], seen["born_by"]):
        for le in seen["lesions"][:n_born]:
            state = lesions._state(le, int(day))
            if state is not None:
                stage, intensity, radius = state
                kind = MARK if stage == MARK else le.type
                expected.append((int(day), le.n, kind, le.x, le.y, radius, stage, round(intensity, 4)))
    got = list(pop[["day", "lesion_n", "type", "x", "y", "radius", "stage", "intensity"]].itertuples(index=False))
    assert len(got) == len(expected) > 500
    assert {r[6] for r in expected} == {"grow", "peak", "resolve", MARK}
    assert [tuple(r) for r in got] == expected  # bit-identical floats, same order
