"""A severity reader trained on simulated photos, read by ``--method sim-reader``.

:mod:`.network` is the network (lesion density per group and a severity head),
:mod:`.files` reads and writes a reader folder, :mod:`.embedder` turns photos into the
reader's outputs for the analysis, :mod:`.detect` turns density maps into lesion
detections and scores them against the truth.
"""

from .embedder import SimReaderEmbedder
from .files import load_reader

__all__ = ["SimReaderEmbedder", "load_reader"]
