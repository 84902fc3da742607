"""``trialsim demo``: simulate, analyse and report the default protocol end to end."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from .dataset import claim_output, write_marker
from .protocol import load_protocol

PROTOCOLS_DIR = Path(__file__).resolve().parent.parent / "protocols"
DEMO_PROTOCOL = PROTOCOLS_DIR / "demo.yaml"


def run_demo(
    out: str | Path = "demo_output", workers: int = 2, progress: bool = True, echo: Callable[[str], None] = print
) -> dict[str, Path]:
    """Simulate ``protocols/demo.yaml`` into ``OUT/dataset`` and analyse it into ``OUT/analysis``.

    Re-running replaces the previous demo output; a folder holding anything else is refused
    (:class:`~trialsim.errors.BadInput`) before anything is written. Returns the paths written.
    """
    from analysis.pipeline import AnalysisConfig, analyze

    from .simulate import simulate

    out = Path(out)
    protocol = load_protocol(DEMO_PROTOCOL)
    # every folder checked before any is written: the demo replaces only its own earlier output
    claim_output(out, "demo", None, replace=True)
    claim_output(out / "dataset", "dataset", None, replace=True)
    claim_output(out / "analysis", "analysis", None, replace=True)
    write_marker(out, "demo", protocol.to_yaml())
    t0 = time.perf_counter()
    sim = simulate(protocol, out / "dataset", workers=workers, overwrite=True, progress=progress)
    echo(
        f"simulated {len(sim.manifest)} images of {sim.manifest['patient_id'].nunique()} patients "
        f"in {time.perf_counter() - t0:.1f} s"
    )
    t1 = time.perf_counter()
    results = analyze(out / "dataset", out / "analysis", AnalysisConfig(progress=progress))
    write_marker(out / "analysis", "analysis", protocol.to_yaml())
    echo(f"analysed in {time.perf_counter() - t1:.1f} s (total {time.perf_counter() - t0:.1f} s)")
    for pop in results["population"]:
        echo(f"  {pop['method']}: {pop['contrast']} estimate {pop['estimate']:+.3f}, p = {pop['p_value']:.3g}")
    return {
        "dataset": out / "dataset",
        "results": out / "analysis" / "results.json",
        "report": out / "analysis" / "report.html",
    }
