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


# numpy's SeedSequence hash (numpy/random/bit_generator.pyx), on uint32 arrays: one hash per photo
_INIT_A, _MULT_A, _INIT_B, _MULT_B = 0x43B0D7E5, 0x931E8875, 0x8B51F9DD, 0x58F38DED
_MIX_L, _MIX_R, _POOL = 0xCA01F9DD, 0x4973F715, 4


def _words(value: int) -> list[int]:
    """``value`` as numpy's SeedSequence reads it: 32-bit words, least significant first (0 → one word)."""
    words = [value & 0xFFFFFFFF]
    value >>= 32
    while value:
        words.append(value & 0xFFFFFFFF)
        value >>= 32
    return words


def image_seeds(seed: int, patient_index: int, days: np.ndarray, photos: np.ndarray) -> np.ndarray:
    """:func:`image_seed` of many photos at once (int64, equal value by value), in one vectorised pass.

    ``days`` and ``photos``: equal-length integer arrays, each value in [0, 2**32).
    """
    days = np.asarray(days, dtype=np.int64)
    photos = np.asarray(photos, dtype=np.int64)
    if len(days) and (min(days.min(), photos.min()) < 0 or max(days.max(), photos.max()) >= 2**32):
        return np.array([image_seed(seed, patient_index, d, p) for d, p in zip(days, photos)], dtype=np.int64)
    n = len(days)
    run = _words(int(seed))
    run += [0] * (_POOL - len(run))  # numpy pads the run entropy to the pool size when a spawn key follows
    fixed = [np.full(n, w, np.uint32) for w in run + _words(int(patient_index)) + _words(STREAMS["image"])]
    entropy = [*fixed, days.astype(np.uint32), photos.astype(np.uint32)]
    with np.errstate(over="ignore"):
        pool = _mix_entropy(entropy)
        # generate_state(1): the first pool word, hashed once more
        value = pool[0] ^ np.uint32(_INIT_B)
        value = value * np.uint32((_INIT_B * _MULT_B) & 0xFFFFFFFF)
        value ^= value >> np.uint32(16)
    return (value & np.uint32(0x7FFFFFFF)).astype(np.int64)


def _mix_entropy(entropy: list[np.ndarray]) -> list[np.ndarray]:
    """SeedSequence.mix_entropy on columns: ``entropy[i]`` holds word ``i`` of every photo's key."""
    hash_const = [np.uint32(_INIT_A)]

    def hashmix(value: np.ndarray) -> np.ndarray:
        value = value ^ hash_const[0]
        hash_const[0] = hash_const[0] * np.uint32(_MULT_A)
        value = value * hash_const[0]
        return value ^ (value >> np.uint32(16))

    def mix(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        result: np.ndarray = np.multiply(x, np.uint32(_MIX_L)) - np.multiply(y, np.uint32(_MIX_R))
        return result ^ (result >> np.uint32(16))

    zero = np.zeros_like(entropy[0])
    pool = [hashmix(entropy[i] if i < len(entropy) else zero) for i in range(_POOL)]
    for src in range(_POOL):
        for dst in range(_POOL):
            if src != dst:
                pool[dst] = mix(pool[dst], hashmix(pool[src]))
    for src in range(_POOL, len(entropy)):
        for dst in range(_POOL):
            pool[dst] = mix(pool[dst], hashmix(entropy[src]))
    return pool
