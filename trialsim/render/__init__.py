"""Renderers turn one patient's truth into images; see :mod:`trialsim.render.base`."""
