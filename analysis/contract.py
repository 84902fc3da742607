"""The names of the dataset folder and of the analysis output, as the analysis reads and writes them.

See ``docs/contracts.md`` (Contract 1: the dataset folder; Contract 2: the analysis output). ``analysis``
never imports ``trialsim``, so it keeps its own copy of the few dataset names it needs;
``tests/test_contract_names.py`` checks that these copies agree with the simulator's.
"""

from __future__ import annotations

# Contract 1: the dataset folder
MANIFEST = "manifest.csv"
LESIONS = "lesions.csv"
SCHEDULE = "schedule.csv"
PROTOCOL = "protocol.yaml"

BASELINE_LABEL = "Baseline"  # the run-in's treatment label; never a contrast arm
MANIFEST_REQUIRED = ("image", "patient_id", "day", "treatment")
TRUTH_COLUMNS = ("severity_latent", "severity_noisefree")  # simulated data only
LESION_COLUMNS = ("image", "lesion_id", "type", "x", "y", "radius", "stage", "intensity")
SCHEDULE_COLUMNS = ("patient_id", "date", "block", "day", "treatment", "AcneSeverity")

# Contract 2 / 3: analysis methods and the significance level
METHODS = ("ae", "pixel-pca", "oracle", "sim-reader")
IMAGE_METHODS = ("ae", "pixel-pca", "sim-reader")  # the methods that read the photos
NEEDS_READER = "sim-reader"  # the method that needs a reader folder (trialsim train-reader); not in "all" without one
ALPHA = 0.05  # default two-sided significance level; functions take ``alpha`` as a parameter
