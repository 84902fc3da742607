"""``trialsim`` command line (docs/contracts.md, Contract 3). Thin: parse, call the library, print.

Exit codes: 0 success, 2 bad input (one paragraph naming file, field and allowed
values; no traceback), 1 internal error.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import click

from .cli_errors import handle_errors
from .errors import FiniteFloatRange, validated
from .scaleout import unwind_on_sigterm


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="trialsim")
def main():
    """Simulate N-of-1 trials with photo outcomes and check that an image analysis recovers the effect."""
    unwind_on_sigterm()


# click parameter → SDXLOptions field
_SDXL_FLAGS = {
    "base_model": "base_model",
    "lora": "lora",
    "sdxl_mode": "mode",
    "base_photos": "base_photos",
    "sdxl_refine": "refine_method",
    "vae": "vae",
    "sdxl_batch_size": "batch_size",
    "sdxl_severity_step": "severity_step",
    "sdxl_batching": "batching",
    "sdxl_dtype": "dtype",
    "sdxl_compile": "compile",
}


@main.command()
@click.argument("protocol", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="dataset folder to write")
@click.option("--seed", type=click.IntRange(min=0), help="replace the protocol's seed")
@click.option("--renderer", type=click.Choice(["procedural", "sdxl", "none"]), help="override rendering.renderer")
@click.option(
    "--from-csv",
    "from_csv",
    type=click.Path(dir_okay=False, path_type=Path),
    help="render the anchor's protocol CSV as given (its severities are the truth)",
)
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="parallel processes")
@click.option("--scheduler", help="Dask scheduler address (tcp://HOST:PORT) to render patients on")
@click.option("--image-size", type=click.IntRange(min=32, max=4096), help="override rendering.image_size")
@click.option("--nuisance", type=FiniteFloatRange(min=0, max=4), help="override rendering.nuisance")
@click.option("--view", type=click.Choice(["cheek", "face", "side", "mixed"]), help="override rendering.view")
@click.option("--overwrite", is_flag=True, help="replace an existing dataset folder")
@click.option("--resume", is_flag=True, help="finish an interrupted run in the same folder")
@click.option("--base-model", help="SDXL: base model folder or hub id")
@click.option("--lora", multiple=True, help="SDXL: GRADE=PATH per severity grade (0..3), or PATH for one LoRA")
@click.option("--sdxl-mode", type=click.Choice(["anchor", "refine"]), help="SDXL: anchor or refine  [default: refine]")
@click.option(
    "--base-photos",
    type=click.Path(file_okay=False, path_type=Path),
    help="SDXL anchor mode: folder of base portraits (one per patient)",
)
@click.option(
    "--sdxl-refine",
    type=click.Choice(["img2img", "inpaint"]),
    help="SDXL refine mode: the whole photo at low strength, or inpainting inside the lesion masks  [default: img2img]",
)
@click.option(
    "--vae",
    help="SDXL: an fp16-safe VAE (folder or hub id, e.g. madebyollin/sdxl-vae-fp16-fix); "
    "runs in half precision without the fp32 upcast",
)
@click.option(
    "--sdxl-batch-size",
    type=click.IntRange(min=1),
    help="SDXL: photos per pipeline call (default 8 on a GPU, 2 on the CPU)",
)
@click.option(
    "--sdxl-severity-step",
    type=FiniteFloatRange(min=0, max=1),
    help="SDXL: severities are rounded to this step (0: exact)  [default: 0 with mixed batches, 0.05 by-weight]",
)
@click.option(
    "--sdxl-batching",
    type=click.Choice(["auto", "mixed", "by-weight"]),
    help="SDXL: mixed fills every batch whatever the photos' severities (each photo its own LoRA weights); "
    "by-weight batches only photos of equal severity  [default: auto, mixed where that is exact]",
)
@click.option(
    "--sdxl-dtype",
    type=click.Choice(["auto", "fp16", "bf16", "fp32"]),
    help="SDXL precision (auto: fp16 on a GPU, fp32 on the CPU; bf16 needs no VAE upcast)  [default: auto]",
)
@click.option(
    "--sdxl-compile", is_flag=True, help="SDXL: torch.compile the UNet and VAE (GPU; a few minutes once, then faster)"
)
@click.option("--quiet", is_flag=True, help="no progress bar")
@handle_errors
def simulate(quiet, **given):
    """Simulate a trial from PROTOCOL (YAML) and write its dataset folder."""
    from .render.sdxl.options import SDXLOptions
    from .simulate import SimulateOptions, simulate_from_options

    sdxl_values = {field: given.pop(flag) for flag, field in _SDXL_FLAGS.items()}
    sdxl_values = {k: v for k, v in sdxl_values.items() if v not in (None, (), False)}
    sdxl = validated(SDXLOptions, sdxl_values) if sdxl_values else None
    options = validated(SimulateOptions, {**given, "progress": not quiet, "sdxl": sdxl})
    t0 = time.perf_counter()
    result = simulate_from_options(options)
    click.echo(
        f"simulated {result.manifest['patient_id'].nunique()} patients, {len(result.manifest)} images "
        f"in {time.perf_counter() - t0:.1f} s → {result.out}"
    )
    if result.design is not None:
        from .design import describe

        for line in describe(result.design):
            click.echo(line)


@main.command()
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="analysis folder")
@click.option("--method", default="ae", show_default=True, help="ae, pixel-pca, oracle, a comma list, or all")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--preset", type=click.Choice(["default", "schneider2023"]), default="default", show_default=True)
@click.option("--image-size", type=click.IntRange(min=16, max=1024), help="embedder input size (px)")
@click.option("--epochs", type=click.IntRange(min=1), help="autoencoder epochs")
@click.option(
    "--reduction",
    type=click.Choice(["within", "global", "per-patient"]),
    default=None,
    help="PC1 of within-patient variation (default), over all images, or per patient",
)
@click.option(
    "--normalize",
    type=click.Choice(["skin", "spots", "redness", "grey-world", "retinex", "none"]),
    default=None,
    help="what the autoencoder sees: skin (default: skin patches' haemoglobin contrast, patch autoencoder); "
    "whole photos as spots (a map of red spots), redness (local redness contrast), grey-world or retinex "
    "(photometric normalisation) or none",
)
@click.option(
    "--primary-test",
    type=click.Choice(["auto", "cycles", "gls", "ar1", "welch", "permutation", "randomization"]),
    default="auto",
    show_default=True,
    help="the per-patient test the verdicts come from (the others are sensitivity analyses); auto: cycles "
    "with two cycles or more, else gls where the daily errors' correlation is stated, else ar1 with 40 days "
    "or more, else welch",
)
@click.option(
    "--assume-rho",
    type=FiniteFloatRange(min=0, max=1, max_open=True),
    default=None,
    help="state the AR(1) correlation of the daily errors (0 to <1) for the gls test; default: the "
    "simulated folder's protocol.yaml dynamics, if any",
)
@click.option("--model", type=click.Choice(["lmm", "bayes"]), default="lmm", help="bayes: the Bayesian model too")
@click.option("--prior", multiple=True, help="bayes: KEY=VALUE or a YAML file of priors (units of the outcome's SD)")
@click.option(
    "--mid", type=float, default=0.5, help="bayes: δ, minimal important difference (units of s)  [default: 0.5]"
)
@click.option("--time-terms", is_flag=True, help="add a linear day term to the models")
@click.option("--skip-bad", is_flag=True, help="drop missing, unreadable or skinless images (and say how many)")
@click.option("--reader", help="reader folder for --method sim-reader (made by trialsim train-reader)")
@click.option("--overwrite", is_flag=True, help="replace the results of an earlier analysis in --out")
@click.option("--quiet", is_flag=True)
@handle_errors
def analyze(
    dataset, out, overwrite, method, seed, preset, image_size, epochs, reduction, normalize, time_terms, **rest
):
    """Embed DATASET's images, reduce to PC1, fit the models and write results.json and report.html."""
    from analysis.bayes import decision_lines
    from analysis.pipeline import AnalysisConfig
    from analysis.pipeline import analyze as run

    from .dataset import claim_output, write_marker

    skip_bad, quiet, primary_test = rest["skip_bad"], rest["quiet"], rest["primary_test"]
    # before the analysis runs: results of an earlier run are replaced only when asked
    claim_output(out, "analysis", "--overwrite", overwrite)

    cfg = AnalysisConfig(
        method=method,
        seed=seed,
        preset=preset,
        image_size=image_size,
        epochs=epochs,
        reduction=reduction,
        normalize=normalize,
        primary_test=primary_test,
        time_terms=time_terms,
        skip_bad=skip_bad,
        progress=not quiet,
        reader=rest["reader"],
        assume_rho=rest["assume_rho"],
        **{"model": rest["model"], "priors": tuple(rest["prior"]), "mid": rest["mid"]},
    )
    results = run(dataset, out, cfg)
    write_marker(out, "analysis", f"{Path(dataset).resolve()}\n{cfg!r}")
    for pop in results["population"]:
        click.echo(
            f"{pop['method']:>10}  {pop['contrast']}: estimate {pop['estimate']:+.3f} "
            f"(95% CI {pop['ci_low']:+.3f} to {pop['ci_high']:+.3f}), p = {pop['p_value']:.3g}"
        )
    for line in decision_lines(results.get("bayes")):
        click.echo(line)
    click.echo(f"results → {Path(out) / 'results.json'}; report → {Path(out) / 'report.html'}")


@main.command()
@click.argument("results_dir", type=click.Path(path_type=Path))
@handle_errors
def report(results_dir):
    """Rebuild report.html from an analysis folder."""
    from analysis.report import write_report

    path = write_report(results_dir)
    click.echo(f"report → {path}")


@main.command()
@click.argument("protocol", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--replicates", type=click.IntRange(min=1), required=True)
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--grid", multiple=True, help="KEY=V1,V2,… (effect, patients, blocks, period_days, nuisance, …)")
@click.option(
    "--method",
    default="oracle",
    show_default=True,
    help="comma list of ae, pixel-pca, oracle, sim-reader (with --reader)",
)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--scheduler", help="Dask scheduler address (tcp://HOST:PORT)")
@click.option("--keep-images", is_flag=True, help="keep each replicate's images")
@click.option(
    "--primary-test",
    default="auto",
    show_default=True,
    help="per-patient test whose rate is per-patient power: auto, cycles, gls, ar1, welch, permutation, randomization",
)
@click.option("--model", type=click.Choice(["lmm", "bayes"]), default="lmm", help="bayes: confident decisions too")
@click.option("--reader", help="reader folder for --method sim-reader (made by trialsim train-reader)")
@click.option("--quiet", is_flag=True)
@handle_errors
def power(
    protocol, replicates, out, grid, method, seed, workers, scheduler, keep_images, primary_test, model, reader, quiet
):
    """Monte Carlo power, type-I error, bias and coverage over a design grid."""
    from .power import PowerStudy, run_power

    study = PowerStudy.from_cli(
        protocol,
        replicates=replicates,
        grid=list(grid),
        methods=method,
        seed=seed,
        keep_images=keep_images,
        primary_test=primary_test,
        reader=reader,
    )
    study.model = model
    summary = run_power(study, out, workers=workers, scheduler=scheduler, progress=not quiet)
    click.echo(summary.to_string(index=False))
    click.echo(f"power study → {Path(out) / 'summary.csv'}, {Path(out) / 'power.html'}")


@main.command()
@click.option("--out", default="demo_output", show_default=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--workers", type=click.IntRange(min=1), default=min(2, os.cpu_count() or 1), show_default=True)
@click.option("--quiet", is_flag=True)
@handle_errors
def demo(out, workers, quiet):
    """The main job on protocols/demo.yaml: simulate, analyze, report."""
    from .demo import run_demo

    paths = run_demo(out, workers=workers, progress=not quiet, echo=click.echo)
    for k, v in paths.items():
        click.echo(f"{k:>9}: {v}")


@main.command()
@click.option("--out", default="docs/skin_grid.png", show_default=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--fitzpatrick", default="2,4,6", show_default=True, help="comma list of skin types 1..6, one row each")
@click.option("--image-size", type=click.IntRange(min=32, max=2048), default=256, show_default=True)
@click.option(
    "--aspect",
    type=FiniteFloatRange(min=0.2, max=5.0),
    default=1.0,
    show_default=True,
    help="height / width (4/3 ≈ 1.333 for a 3:4 portrait frame)",
)
@click.option("--view", type=click.Choice(["cheek", "face"]), default="cheek", show_default=True)
@click.option("--nuisance", type=FiniteFloatRange(min=0, max=4), default=1.0, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@handle_errors
def gallery(out, **given):
    """A PNG grid of patients of different skin types (rows) at ACNE04 grades 0-3 (columns)."""
    from .gallery import GalleryOptions, write_skin_grid

    options = validated(GalleryOptions, given)
    click.echo(f"skin grid → {write_skin_grid(out, **options.model_dump())}")


@main.command()
@click.argument("real_dir", type=click.Path(path_type=Path))
@click.argument("sim_dir", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="folder to write")
@click.option("--real-severity", help="severity column of the real manifest (e.g. expert_score_mean)")
@click.option("--no-cnn", is_flag=True, help="skip the CNN classifier (faster)")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--quiet", is_flag=True)
@handle_errors
def realism(real_dir, sim_dir, out, real_severity, no_cnn, seed, quiet):
    """Can a classifier tell SIM_DIR's photos from REAL_DIR's, and is the analysis as hard on both?"""
    from analysis.realism import compare

    res = compare(real_dir, sim_dir, out, real_severity=real_severity, cnn=not no_cnn, seed=seed, progress=not quiet)
    for t in res["classifiers"]:
        click.echo(f"{t['classifier']}: AUC {t['auc']:.3f} (95% CI {t['ci_low']:.3f}-{t['ci_high']:.3f})")
    d = res["difficulty"]
    if d:
        click.echo(
            f"analysis difficulty, median within-patient Spearman: real {d['real']['spearman_median']:.3f}, "
            f"simulated {d['sim']['spearman_median']:.3f}"
        )
    click.echo(f"realism → {Path(out) / 'realism.html'}")


# the training commands live in their own module
from .cli_training import finetune, train_reader  # noqa: E402

main.add_command(finetune)
main.add_command(train_reader)

if __name__ == "__main__":  # pragma: no cover
    main()
