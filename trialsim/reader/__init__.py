"""``trialsim train-reader``: a severity reader trained on simulated photos only.

:mod:`.photos` renders the training photos with their per-lesion truth in photo
coordinates, :mod:`.train` trains the network of :mod:`analysis.reader.network` (resumable,
same seed same weights on the CPU), :mod:`.card` writes the model card.
"""
