"""trialsim: simulate multimodal N-of-1 trials and check that an image pipeline recovers the effect."""

__version__ = "0.1.0"
