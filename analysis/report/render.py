"""The one Jinja environment of the project's HTML (autoescaped) and the writers of ``report.html``.

Templates live in ``analysis/templates``: ``report.html.j2`` (one analysis) and
``power.html.j2`` (a power study). Every value is escaped unless a template marks
it safe, so names taken from a protocol or a folder cannot inject markup.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from ..atomic import atomic_write_text
from ..contract import ALPHA
from .context import build_context
from .format import fmt, fmt_p, pct
from .inputs import load_inputs

TEMPLATE = "report.html.j2"


@lru_cache(maxsize=1)
def environment():
    """The autoescaped Jinja environment with the filters ``num``, ``p`` and ``pct``."""
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    env = Environment(
        loader=PackageLoader("analysis", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = fmt
    env.filters["p"] = fmt_p
    env.filters["pct"] = pct
    return env


def render(template: str, **context) -> str:
    """``template`` (a file in ``analysis/templates``) rendered with ``context``."""
    return environment().get_template(template).render(**context)


def build_report(results_dir: str | Path, alpha: float = ALPHA) -> str:
    """The report of the analysis folder ``results_dir`` as one HTML string."""
    return render(TEMPLATE, **build_context(load_inputs(results_dir), alpha))


def write_report(results_dir: str | Path, out: str | Path | None = None, alpha: float = ALPHA) -> Path:
    """Write ``report.html`` (default: into ``results_dir``) and return its path."""
    results_dir = Path(results_dir)
    out = Path(out) if out is not None else results_dir / "report.html"
    atomic_write_text(out, build_report(results_dir, alpha))
    return out
