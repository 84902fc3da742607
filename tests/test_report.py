"""report.html: six sections in order, one offline file, truth shown only where it exists, small.

The analysis folders are made by the real pipeline: the demo protocol rendered by
the procedural renderer (truth known) and a folder of photo-like pictures with a
hand-written manifest (real data, no truth). The browser tests open the reports
in headless Chromium; with ``TRIALSIM_UPDATE_DOCS=1`` the demo's first screen is
saved as ``docs/report_first_screen.png`` for the README.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import PROTOCOLS, ROOT

from analysis.errors import AnalysisInputError
from analysis.pipeline import AnalysisConfig, analyze
from analysis.report import build_report, verdict, write_report

SECTIONS = ["headline", "design", "images", "embedding", "effects", "provenance"]
HEADINGS = ["Headline", "Design", "Images", "Embedding", "Effects", "Model and provenance"]
TEN_MB = 10 * 1024 * 1024
VERDICTS_WITH_TRUTH = {"recovered", "missed", "false positive", "correctly null", "wrong sign", "not estimable"}
VERDICTS_WITHOUT_TRUTH = {"detected", "not detected", "not estimable"}


# ---------------------------------------------------------------- analysis folders, made by the real pipeline


@pytest.fixture(scope="session")
def demo_analysis(tmp_path_factory) -> Path:
    """protocols/demo.yaml, procedural renderer, the demo's own analysis settings (as `trialsim demo`)."""
    from trialsim.protocol import load_protocol
    from trialsim.simulate import simulate

    root = tmp_path_factory.mktemp("demo")
    simulate(load_protocol(PROTOCOLS / "demo.yaml"), root / "dataset", renderer="procedural", workers=2)
    analyze(root / "dataset", root / "analysis", AnalysisConfig(method="ae,pixel-pca,oracle", n_perm=200))
    return root / "analysis"


def _photo(rng: np.random.Generator, h: int, w: int, spots: int) -> np.ndarray:
    """A photo-like skin patch: warm tone, lighting gradient, texture and ``spots`` red papules."""
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    tone = np.array([200, 150, 125], float) * rng.uniform(0.8, 1.05)
    img = tone * (0.85 + 0.3 * (xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1)))[..., None]
    img += rng.normal(0, 6, (h, w, 1))
    for _ in range(spots):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(2, 5)
        d = np.exp(-((np.mgrid[0:h, 0:w][0] - cy) ** 2 + (np.mgrid[0:h, 0:w][1] - cx) ** 2) / (2 * r * r))
        img += d[..., None] * np.array([10, -70, -60])
    return np.clip(img, 0, 255).astype(np.uint8)


MISSED_PHOTOS = {("P02", 6), ("P03", 11)}  # days without a photo, as in any real trial


@pytest.fixture(scope="session")
def real_analysis(tmp_path_factory) -> Path:
    """Real-data layout: photos of odd sizes and formats, a manifest with image, patient_id, day, treatment only."""
    from PIL import Image

    root = tmp_path_factory.mktemp("real")
    ds = root / "photos"
    rng = np.random.default_rng(7)
    rows = []
    for pid in ("P01", "P02", "P03"):
        (ds / pid).mkdir(parents=True)
        for day in range(1, 17):
            if (pid, day) in MISSED_PHOTOS:
                continue
            treatment = "on" if (day - 1) // 2 % 2 else "off"  # 2 days off, 2 days on, as in Fu et al. 2023
            name = f"{pid}/{pid}_day{day:02d}." + ("png" if day % 5 == 0 else "jpg")
            arr = _photo(rng, 120, 90 if day % 3 else 160, 4 if treatment == "on" else 12)
            Image.fromarray(arr).save(ds / name)
            rows.append({"image": name, "patient_id": pid, "day": day, "treatment": treatment})
    pd.DataFrame(rows).to_csv(ds / "manifest.csv", index=False)
    analyze(ds, root / "analysis", AnalysisConfig(method="pixel-pca", image_size=32, n_perm=200))
    return root / "analysis"


def _report(folder: Path) -> str:
    path = folder / "report.html"
    if not path.exists():
        write_report(folder)
    return path.read_text(encoding="utf-8")


def _text(html: str) -> str:
    """The report without its data URIs (base64 could spell anything)."""
    return re.sub(r"data:[a-z/+]+;base64,[A-Za-z0-9+/=]+", "data:", html)


def _section_ids(html: str) -> list[str]:
    return re.findall(r'<section id="([a-z]+)"', html)


def _external_refs(html: str) -> list[str]:
    """Every src/href/url() that is not a data: URI or an in-page anchor."""
    refs = re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', html) + re.findall(r"url\(([^)]*)\)", html)
    return [r for r in refs if not r.strip("'\" ").startswith(("data:", "#"))]


# ---------------------------------------------------------------- the verdict rule


@pytest.mark.parametrize(
    "p, est, realised, nominal, expected",
    [
        (0.01, +1.2, +0.45, +0.9, "recovered"),
        (0.01, -1.2, +0.45, +0.9, "wrong sign"),
        (0.30, +0.1, +0.45, +0.9, "missed"),
        (0.01, +0.4, 0.0, 0.0, "false positive"),
        (0.01, +0.4, 0.03, None, "false positive"),  # |realised| under the tolerance counts as null
        (0.01, +0.4, None, 0.0, "false positive"),  # no realised effect: the nominal one decides
        (0.01, -1.6, -0.39, 0.0, "recovered"),  # carry-over made equal nominal effects differ: real
        (0.60, +0.1, 0.0, 0.0, "correctly null"),
        (None, None, +0.45, +0.9, "not estimable"),
    ],
)
def test_verdict_follows_the_stated_rule(p, est, realised, nominal, expected):
    entry = {"p_value": p, "estimate_std": est, "estimate": est}
    assert verdict(entry, {"realised": realised, "nominal": nominal}) == expected


def test_verdict_without_truth_is_detected_or_not():
    assert verdict({"p_value": 0.049, "estimate_std": -3.0}, None) == "detected"
    assert verdict({"p_value": 0.05, "estimate_std": 3.0}, None) == "not detected"


def test_verdict_ignores_the_sign_when_pc1_is_not_aligned():
    assert verdict({"p_value": 0.01, "estimate_std": -1.0}, {"realised": 0.5}, sign_aligned=False) == "recovered"


# ---------------------------------------------------------------- the report, read as text


def test_demo_report_has_six_sections_in_order_and_shows_truth(demo_analysis):
    html = _report(demo_analysis)
    assert _section_ids(html) == SECTIONS
    assert "could not be drawn" not in html
    assert "data-truth" in html
    verdicts = set(re.findall(r'<span class="verdict [a-z]+" data-truth>([a-z ]+)</span>', html))
    assert verdicts and verdicts <= VERDICTS_WITH_TRUTH
    assert "PC1's sign is aligned with the truth" in html
    assert "Autoencoder reconstructions" in html  # the AE ran
    assert html.count("data:image/jpeg;base64,") >= 6 * 10  # filmstrip thumbnails (+ reconstructions)
    assert "y ~ C(treatment" in html and "Resolved protocol" in html
    assert _external_refs(html) == []


def test_real_data_report_leaves_the_truth_out_cleanly(real_analysis):
    html = _report(real_analysis)
    assert _section_ids(html) == SECTIONS
    assert "could not be drawn" not in html
    assert "data-truth" not in html
    verdicts = set(re.findall(r'<span class="verdict [a-z]+">([a-z ]+)</span>', html))
    assert verdicts and verdicts <= VERDICTS_WITHOUT_TRUTH
    assert "PC1's sign is arbitrary" in html
    assert "latent" not in _text(html).lower()  # nothing about a truth that is not there
    assert html.count("data:image/jpeg;base64,") >= 3 * 10  # filmstrip of the real photos
    assert _external_refs(html) == []


def test_report_is_rebuilt_byte_for_byte_from_the_folder(demo_analysis):
    first = _report(demo_analysis)
    again = write_report(demo_analysis, demo_analysis / "again.html").read_text(encoding="utf-8")
    assert again == first


def test_moved_dataset_leaves_the_filmstrip_out_with_a_note(demo_analysis, tmp_path):
    moved = tmp_path / "elsewhere" / "analysis"
    shutil.copytree(demo_analysis, moved)
    res = json.loads((moved / "results.json").read_text())
    res["dataset"] = str(tmp_path / "gone")
    (moved / "results.json").write_text(json.dumps(res))
    html = build_report(moved)
    assert _section_ids(html) == SECTIONS
    assert "was not found from here" in html
    assert 'class="strip"' not in html
    assert "Headline" in html and "data-truth" in html  # the numbers' truth is in results.json, still shown


def test_missing_results_json_names_the_folder(tmp_path):
    with pytest.raises(AnalysisInputError, match=str(tmp_path)):
        write_report(tmp_path)


def test_cli_report_rebuilds_report_html(demo_analysis, tmp_path):
    from click.testing import CliRunner

    from trialsim.cli import main

    folder = tmp_path / "analysis"
    shutil.copytree(demo_analysis, folder)
    (folder / "report.html").unlink()
    r = CliRunner().invoke(main, ["report", str(folder)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert (folder / "report.html").stat().st_size > 50_000


@pytest.mark.slow
def test_anchor_trial_report_is_at_most_10_mb(tmp_path):
    """The seed project's 10 patients × 140 days = 1400 photos, procedural renderer at the protocol's size."""
    from trialsim.protocol import load_protocol
    from trialsim.simulate import simulate

    sim = simulate(load_protocol(PROTOCOLS / "anchor_sim_acne.yaml"), tmp_path / "dataset", workers=2)
    assert len(sim.manifest) == 1400
    analyze(tmp_path / "dataset", tmp_path / "analysis", AnalysisConfig(method="pixel-pca,oracle", n_perm=200))
    size = (tmp_path / "analysis" / "report.html").stat().st_size
    assert size <= TEN_MB, f"report.html is {size / 1e6:.1f} MB"


# ---------------------------------------------------------------- the report, opened in headless Chromium

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _no_browser(reason: str):
    if os.environ.get("TRIALSIM_REQUIRE_BROWSER") == "1" or os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"headless Chromium is required (TRIALSIM_REQUIRE_BROWSER=1 or CI): {reason}")
    pytest.skip(
        f"headless Chromium not available ({reason}); install Debian's chromium "
        "(apt-get install chromium chromium-driver) to run the report's browser tests"
    )


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        _no_browser("the playwright package is not installed")
    candidates = [
        os.environ.get("TRIALSIM_CHROMIUM"),
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
        "/usr/bin/chromium",
    ]
    with sync_playwright() as p:
        errors = []
        for exe in [c for c in dict.fromkeys(candidates) if c and Path(c).exists()] + [None]:
            try:
                b = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)  # None: playwright's own build
                break
            except Error as e:
                errors.append(f"{exe or 'playwright chromium'}: {str(e).splitlines()[0]}")
        else:
            _no_browser("; ".join(errors))
        yield b
        b.close()


def _open(browser, html_path: Path, screenshot: Path) -> dict:
    """Load the report from file://, record console errors and every request; screenshot the first screen."""
    page = browser.new_page(viewport={"width": 1366, "height": 768})
    errors, requests = [], []
    page.on("console", lambda m: m.type == "error" and errors.append(m.text))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))

    def only_local(route):
        if route.request.url.startswith(("file://", "data:")):
            route.continue_()
        else:
            route.abort()

    page.route("**/*", only_local)
    page.goto(html_path.resolve().as_uri(), wait_until="load")
    page.wait_for_function("Array.from(document.images).every(i => i.complete)", timeout=15_000)
    info = {
        "errors": errors,
        "requests": requests,
        "n_images": page.evaluate("document.images.length"),
        "images_ok": page.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"),
        "sections": page.evaluate("Array.from(document.querySelectorAll('main > section')).map(s => s.id)"),
        "headings": page.evaluate("Array.from(document.querySelectorAll('main > section > h2')).map(h => h.innerText)"),
        "truth": page.evaluate("document.querySelectorAll('[data-truth]').length"),
        "width": page.evaluate("document.documentElement.scrollWidth"),
        "notes": page.evaluate(
            "Array.from(document.querySelectorAll('.callout')).map(n => n.innerText)"
            ".filter(t => t.includes('could not be drawn'))"
        ),
    }
    page.screenshot(path=str(screenshot))
    page.screenshot(path=str(screenshot.with_name(screenshot.stem + "_full.png")), full_page=True)
    page.close()
    return info


def _assert_clean(info: dict):
    assert info["errors"] == []
    assert info["notes"] == [], "a figure failed to draw"
    leaving = [u for u in info["requests"] if not u.startswith(("file://", "data:"))]
    assert leaving == []
    assert info["n_images"] > 5 and info["images_ok"]
    assert info["sections"] == SECTIONS
    assert [h.split(":")[0].lstrip("0123456789 \n") for h in info["headings"]] == HEADINGS
    assert info["width"] <= 1366, "no horizontal scrolling on a laptop screen"


@pytest.mark.browser
def test_demo_report_opens_offline_in_chromium(browser, demo_analysis, tmp_path):
    from PIL import Image

    shot = tmp_path / "report_first_screen.png"
    info = _open(
        browser,
        demo_analysis / "report.html" if (demo_analysis / "report.html").exists() else write_report(demo_analysis),
        shot,
    )
    _assert_clean(info)
    assert info["truth"] > 0
    with Image.open(shot) as im:
        assert im.size == (1366, 768)
        assert np.asarray(im.convert("L")).std() > 20  # a page, not a blank screen
    if os.environ.get("TRIALSIM_UPDATE_DOCS") == "1":
        (ROOT / "docs").mkdir(exist_ok=True)
        shutil.copyfile(shot, ROOT / "docs" / "report_first_screen.png")


@pytest.mark.browser
def test_real_data_report_opens_offline_without_truth(browser, real_analysis, tmp_path):
    info = _open(
        browser,
        real_analysis / "report.html" if (real_analysis / "report.html").exists() else write_report(real_analysis),
        tmp_path / "real_first_screen.png",
    )
    _assert_clean(info)
    assert info["truth"] == 0
