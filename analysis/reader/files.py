"""A reader folder: ``weights.safetensors``, ``config.json``, ``training_log.json``, ``MODEL_CARD.md``.

``config.json`` holds what rebuilds and uses the network: ``width``, ``groups``,
``image_size`` (px the photos are read at), ``embedding_mean`` and ``embedding_scale``
(the outputs' mean and SD over the training photos: the analysis reads standardised
outputs), ``seed``, ``input`` (``haemoglobin`` or ``rgb``; a folder without it was trained
on ``rgb``) and ``format`` (1).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .network import GROUPS, INPUTS, build_network

FORMAT = 1
WEIGHTS = "weights.safetensors"
CONFIG = "config.json"


@dataclass
class Reader:
    """A loaded reader: the network (eval mode) and its config."""

    network: object
    config: dict
    folder: Path

    @property
    def outputs(self) -> list[str]:
        """The names of the embedding's columns: severity, then a count per lesion group."""
        return ["severity"] + [f"count_{g}" for g in self.config["groups"]]


def _bad(folder: Path, msg: str, name: str, field: str | None = None):
    from ..errors import AnalysisInputError

    return AnalysisInputError(
        msg, file=str(folder / name), field=field, allowed="a folder made by trialsim train-reader"
    )


def load_reader(folder: str | Path) -> Reader:
    """Read a reader folder; :class:`AnalysisInputError` (exit 2) naming the file and field when it is not one."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if not folder.is_dir():
        raise _bad(folder, f"reader folder {folder} does not exist", "")
    try:
        config = json.loads((folder / CONFIG).read_text())
    except (OSError, ValueError) as err:
        raise _bad(folder, f"cannot read the reader's {CONFIG}: {err}", CONFIG) from None
    for key in ("width", "groups", "image_size", "embedding_mean", "embedding_scale"):
        if key not in config:
            raise _bad(folder, f"{CONFIG} has no {key!r}", CONFIG, key)
    if config.get("format") != FORMAT:
        raise _bad(folder, f"reader format {config.get('format')!r}, this version reads {FORMAT}", CONFIG, "format")
    if tuple(config["groups"]) != GROUPS:
        raise _bad(folder, f"reader groups {config['groups']}, expected {list(GROUPS)}", CONFIG, "groups")
    kind = config.setdefault("input", "rgb")  # readers written before the input was chosen read RGB
    if kind not in INPUTS:
        raise _bad(folder, f"reader input {kind!r}, this version reads {sorted(INPUTS)}", CONFIG, "input")
    net = build_network(int(config["width"]), len(GROUPS), kind=kind)
    try:
        net.load_state_dict(load_file(str(folder / WEIGHTS)))
    except Exception as err:  # safetensors and torch raise several kinds for a damaged or foreign file
        raise _bad(folder, f"cannot load the reader's weights: {err}", WEIGHTS) from None
    net.eval()
    return Reader(net, config, folder)


def save_reader(folder: Path, network, config: dict) -> None:
    """Write the weights and config atomically (``config.json`` last: a folder with it is complete)."""
    from safetensors.torch import save as save_bytes

    from ..atomic import atomic_write_bytes, atomic_write_text

    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in network.state_dict().items()}
    atomic_write_bytes(folder / WEIGHTS, save_bytes(state))
    atomic_write_text(folder / CONFIG, json.dumps({**config, "format": FORMAT}, indent=2, sort_keys=True))
