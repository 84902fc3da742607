"""Seed derivation: one study seed, independent named streams per patient and image.

Every random draw in a simulation comes from a ``numpy.random.Generator`` made
here, keyed by (study seed, patient index, stream[, extra keys]). Results therefore
depend neither on worker count nor on the order in which patients are processed.
"""

from __future__ import annotations

import numpy as np

STREAMS = {
    "schedule": 1,
    "parameters": 2,
    "dynamics": 3,
    "observation": 4,
    "lesions": 5,
    "identity": 6,
    "nuisance": 7,
    "image": 8,
    "sdxl": 9,
}


def seed_sequence(seed: int, patient_index: int, stream: str, *extra: int) -> np.random.SeedSequence:
    return np.random.SeedSequence(int(seed), spawn_key=(int(patient_index), STREAMS[stream], *map(int, extra)))


def patient_rng(seed: int, patient_index: int, stream: str, *extra: int) -> np.random.Generator:
    """A generator for one patient's named stream (``extra`` keys e.g. day, photo)."""
    return np.random.default_rng(seed_sequence(seed, patient_index, stream, *extra))


def image_seed(seed: int, patient_index: int, day: int, photo: int) -> int:
    """A 31-bit integer seed for one photo (recorded as the manifest's ``seed``)."""
    return int(seed_sequence(seed, patient_index, "image", day, photo).generate_state(1)[0] & 0x7FFFFFFF)
