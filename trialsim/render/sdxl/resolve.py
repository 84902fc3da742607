"""Where the base model and the LoRAs come from: local folders, the Hugging Face cache or the Hub.

Every check here runs before anything is loaded, so bad input fails in seconds with a message naming
the option and the paths looked at.
"""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from ...errors import BadInput

LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"
_GRADE_SPEC = re.compile(r"^\s*(?:acne)?([0-9]+)\s*=(.+)$")
_DTYPES = {
    "fp16": "float16",
    "float16": "float16",
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
    "fp32": "float32",
    "float32": "float32",
}


@dataclass
class LoraSource:
    grade: int | None  # None: one LoRA for every grade
    spec: str  # as the user gave it
    folder: str  # local folder holding LORA_WEIGHT_NAME (resolved)
    weight_name: str

    @property
    def adapter_name(self) -> str:
        return "acne" if self.grade is None else f"acne{self.grade}"


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether the Hub's host answers a TCP connection (a proxy in the environment counts as yes).

    Asked before any download so that a machine with no network fails in seconds instead of
    waiting through huggingface_hub's retries.
    """
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection(
            (url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=timeout_s
        ).close()
        return True
    except OSError:
        return False


def from_hub(load, spec: str, what: str, field: str, local_path: Path):
    """``load(local_files_only)`` from the Hugging Face cache, else from the Hub when it is reachable.

    Any failure becomes :class:`BadInput` naming the local path checked, the cache and the Hub.
    """
    failure: Exception
    try:
        return load(True)
    except Exception as from_cache:
        failure = from_cache
    online = not _offline() and _hub_reachable()
    if online:
        try:
            return load(False)
        except Exception as from_hub_error:
            failure = from_hub_error
    # the library's own text only adds information when the Hub itself answered
    detail = f": {str(failure).splitlines()[0][:200]}" if online and str(failure) else ""
    hub = (
        "and on the Hub"
        if online
        else "(HF_HUB_OFFLINE is set, so not on the Hub)"
        if _offline()
        else "and not on the Hub: no network (could not reach it)"
    )
    raise BadInput(
        f"{what} not found: looked for a local folder {local_path.resolve()} (none), then for "
        f"hub repo '{spec}' in the Hugging Face cache {_hf_cache()} {hub} "
        f"({failure.__class__.__name__}{detail})",
        field=field,
        allowed="a local folder, or a hub id already in the cache (or with network access)",
    ) from None


def _hf_cache() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _looks_like_path(spec: str) -> bool:
    """True when ``spec`` cannot be a hub id (``name`` or ``org/name``)."""
    return (
        spec.startswith(("/", "./", "../", "~", "\\"))
        or spec.count("/") > 1
        or "\\" in spec
        or bool(re.match(r"^[A-Za-z]:", spec))
        or spec.endswith("/")
    )


def parse_lora_specs(lora) -> list[tuple[int | None, str]]:
    """``["0=PATH", …]`` (grades 0–3) or ``["PATH"]`` (one LoRA) → ``[(grade or None, PATH)]``."""
    if lora is None:
        return []
    if isinstance(lora, dict):
        items = [f"{g}={p}" for g, p in lora.items()]
    elif isinstance(lora, (str, os.PathLike)):
        items = [str(lora)]
    else:
        items = [str(x) for x in lora]
    out: list[tuple[int | None, str]] = []
    for item in items:
        m = _GRADE_SPEC.match(item)
        if m:
            grade = int(m.group(1))
            if not 0 <= grade <= 3:
                raise BadInput(
                    f"LoRA grade {grade} in {item!r} is out of range",
                    field="--lora",
                    allowed="GRADE=PATH with GRADE 0, 1, 2 or 3, or a single PATH",
                )
            out.append((grade, m.group(2).strip()))
        else:
            out.append((None, item.strip()))
    if any(g is None for g, _ in out) and len(out) > 1:
        raise BadInput(
            f"got {len(out)} LoRAs but not all as GRADE=PATH: {items}",
            field="--lora",
            allowed="one PATH (a LoRA for all grades) or GRADE=PATH for each grade 0–3",
        )
    grades = [g for g, _ in out if g is not None]
    dup = sorted({g for g in grades if grades.count(g) > 1})
    if dup:
        raise BadInput(f"grade(s) {dup} given more than once", field="--lora", allowed="one GRADE=PATH per grade 0–3")
    return out


def resolve_lora(grade: int | None, spec: str) -> LoraSource:
    """Find a LoRA in the seed project's layout: a folder (or hub repo) holding
    ``pytorch_lora_weights.safetensors``, or that ``.safetensors`` file itself."""
    where = f"--lora {'' if grade is None else f'{grade}='}{spec}"
    p = Path(spec).expanduser()
    if p.is_file():
        if p.suffix != ".safetensors":
            raise BadInput(
                f"{p} is not a .safetensors LoRA file",
                field=where,
                allowed=f"a folder holding {LORA_WEIGHT_NAME}, that file, or a hub id",
            )
        return LoraSource(grade, spec, str(p.parent), p.name)
    if p.is_dir():
        if not (p / LORA_WEIGHT_NAME).is_file():
            found = sorted(x.name for x in p.iterdir())[:8]
            raise BadInput(
                f"wrong LoRA layout: looked for {LORA_WEIGHT_NAME} in the folder {p.resolve()} "
                f"and found {found or 'nothing'}",
                field=where,
                allowed=f"a folder with {LORA_WEIGHT_NAME} (the seed project's layout, as "
                "diffusers' save_lora_weights writes it)",
            )
        return LoraSource(grade, spec, str(p), LORA_WEIGHT_NAME)
    if _looks_like_path(spec):
        raise BadInput(
            f"LoRA not found: no file or folder at {p.resolve()}",
            field=where,
            allowed=f"a folder holding {LORA_WEIGHT_NAME}, that file, or a hub id",
        )
    from huggingface_hub import hf_hub_download

    file = from_hub(
        lambda local_only: hf_hub_download(repo_id=spec, filename=LORA_WEIGHT_NAME, local_files_only=local_only),
        spec,
        f"LoRA (file {LORA_WEIGHT_NAME})",
        where,
        p,
    )
    return LoraSource(grade, spec, str(Path(file).parent), LORA_WEIGHT_NAME)


def check_base_model(spec: str | None) -> tuple[str, bool]:
    """(what to pass to from_pretrained, is it a local folder)."""
    if not spec:
        raise BadInput(
            "the SDXL renderer needs a base model",
            field="--base-model",
            allowed="a local diffusers folder (with model_index.json) or a hub id such as "
            "stabilityai/stable-diffusion-xl-base-1.0",
        )
    p = Path(spec).expanduser()
    if p.exists():
        if not (p.is_dir() and (p / "model_index.json").is_file()):
            raise BadInput(
                f"not a diffusers pipeline folder: looked for model_index.json in {p.resolve()}",
                field="--base-model",
                allowed="a folder written by save_pretrained, or a hub id",
            )
        return str(p), True
    if _looks_like_path(spec):
        raise BadInput(
            f"base model not found: no folder at {p.resolve()}",
            field="--base-model",
            allowed="a local diffusers folder (with model_index.json) or a hub id",
        )
    return spec, False


def torch_dtype(dtype: str, cuda: bool):
    import torch

    if dtype == "auto":
        return torch.float16 if cuda else torch.float32
    if dtype not in _DTYPES:
        raise BadInput(f"unknown dtype {dtype!r}", field="dtype", allowed="auto, fp16, bf16, fp32")
    return getattr(torch, _DTYPES[dtype])


@contextlib.contextmanager
def quiet_libraries():
    """Silence diffusers/transformers info lines and loading bars (restored afterwards)."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    saved = (dlog.get_verbosity(), tlog.get_verbosity(), dlog.is_progress_bar_enabled(), tlog.is_progress_bar_enabled())
    dlog.set_verbosity_error()
    tlog.set_verbosity_error()
    dlog.disable_progress_bar()
    tlog.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            # one "multiple adapters" warning per LoRA loaded; deprecation notices of the libraries
            warnings.filterwarnings("ignore", message=".*peft_config.*")
            warnings.filterwarnings("ignore", category=FutureWarning)
            yield
    finally:
        dlog.set_verbosity(saved[0])
        tlog.set_verbosity(saved[1])
        if saved[2]:
            dlog.enable_progress_bar()
        if saved[3]:
            tlog.enable_progress_bar()
