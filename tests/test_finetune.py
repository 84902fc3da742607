"""``trialsim finetune`` on a tiny random SDXL (CPU): learning, the renderer reading the LoRAs, resume, bad input."""

from __future__ import annotations

import json
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sdxl_common import protocol_dict, simulate_cli, tiny

from trialsim.cli import main
from trialsim.finetune import FinetuneOptions, finetune
from trialsim.finetune.cache import Examples
from trialsim.finetune.models import load_networks
from trialsim.finetune.photos import find_photos, load_photo
from trialsim.finetune.train import diffusion_loss, new_trainer, optimizer_step

__all__ = ["tiny"]  # the module-scoped fixture, used by name

WEIGHTS = "pytorch_lora_weights.safetensors"
SIZE = 32  # training resolution of the tests (px)


def write_photos(folder: Path, grades=(0, 1, 2, 3), per_grade: int = 2, seed: int = 0) -> Path:
    """``folder/{grade}/p{i}.png``: small smooth photos, redder with the grade."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:40, 0:48] / 48.0
    for g in grades:
        (folder / str(g)).mkdir(parents=True, exist_ok=True)
        for i in range(per_grade):
            base = np.stack([0.5 + 0.15 * g + 0.2 * xx, 0.6 - 0.1 * g + 0.2 * yy, 0.5 + 0.0 * xx], axis=-1)
            img = np.clip(base + rng.normal(0, 0.02, base.shape), 0, 1)
            Image.fromarray((img * 255).astype(np.uint8)).save(folder / str(g) / f"p{i}.png")
    return folder


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return write_photos(tmp_path_factory.mktemp("photos"))


def options(tiny, photos, out, **kw) -> FinetuneOptions:
    values = dict(
        photos=photos, out=out, base_model=tiny["base"], resolution=SIZE, steps=6, checkpoint_every=3, progress=False
    )
    return FinetuneOptions(**{**values, **kw})


def quiet_finetune(opts, on_step=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "no CUDA GPU, float32"
        return finetune(opts, on_step=on_step)


def finetune_cli(args: list[str]):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return CliRunner().invoke(main, ["finetune", *args, "--quiet"])


def test_loss_on_fixed_noise_falls_over_30_steps(tiny, photos):
    torch.set_num_threads(1)
    opts = options(tiny, photos, "unused", grades="2", learning_rate=1e-2, gradient_accumulation=1, snr_gamma=None)
    nets = load_networks(str(tiny["base"]), None, torch.float32, torch.device("cpu"))
    nets.unet.train()
    examples = Examples(nets, [load_photo(p, SIZE) for p in find_photos(photos, [2])[2]], "photo of acne2", SIZE)

    def fixed_loss() -> float:  # the same noise and timesteps before and after training
        gen = torch.Generator().manual_seed(123)
        with torch.no_grad():
            return float(
                np.mean(
                    [float(diffusion_loss(nets, nets.unet, examples.batch([i % 2], gen), gen, None)) for i in range(24)]
                )
            )

    trainer = new_trainer(nets, opts, grade=2)
    before = fixed_loss()
    for _ in range(30):
        trainer.losses.append(optimizer_step(nets, nets.unet, trainer, examples, opts))
    after = fixed_loss()
    assert after < 0.95 * before, (before, after)
    assert len(trainer.losses) == 30 and all(np.isfinite(trainer.losses))


def test_cli_writes_the_renderer_layout_and_the_loras_change_the_simulated_photos(tiny, photos, tmp_path):
    out = tmp_path / "loras"
    args = [str(photos), "--out", str(out), "--base-model", str(tiny["base"]), "--resolution", str(SIZE)]
    res = finetune_cli([*args, "--steps", "3", "--learning-rate", "0.01", "--gradient-accumulation", "1"])
    assert res.exit_code == 0, res.output
    for g in range(4):
        state = load_file(out / f"acne{g}" / WEIGHTS)
        assert all(k.startswith("unet.") for k in state) and any(
            "lora.up" in k and v.abs().max() > 0 for k, v in state.items()
        )
        log = json.loads((out / f"acne{g}" / "train_log.json").read_text())
        assert log["grade"] == g and log["steps_done"] == 3 and len(log["loss"]) == 3
        assert not (out / f"acne{g}" / "checkpoints").exists()
    proto = tmp_path / "p.yaml"
    proto.write_text(yaml.safe_dump(protocol_dict()))
    common = [str(proto), "--renderer", "sdxl", "--base-model", str(tiny["base"]), "--sdxl-mode", "refine"]
    trained = simulate_cli(
        [*common, "--out", str(tmp_path / "with"), *[f"--lora={g}={out / f'acne{g}'}" for g in range(4)]]
    )
    assert trained.exit_code == 0, trained.output
    plain = simulate_cli([*common, "--out", str(tmp_path / "without")])
    assert plain.exit_code == 0, plain.output
    image = pd.read_csv(tmp_path / "with" / "manifest.csv")["image"].iloc[0]
    a = np.asarray(Image.open(tmp_path / "with" / image), dtype=float)
    b = np.asarray(Image.open(tmp_path / "without" / image), dtype=float)
    assert np.abs(a - b).mean() > 0.5


def test_kill_and_resume_ends_with_the_weights_of_an_uninterrupted_run(tiny, photos, tmp_path):
    whole = quiet_finetune(options(tiny, photos, tmp_path / "whole", grades="1,3", steps=7))

    def kill_at_step_5(grade, step, loss):
        if grade == 3 and step == 5:  # after the checkpoint at step 3, before the one at 6
            raise KeyboardInterrupt

    opts = options(tiny, photos, tmp_path / "cut", grades="1,3", steps=7)
    with pytest.raises(KeyboardInterrupt):
        quiet_finetune(opts, on_step=kill_at_step_5)
    assert (tmp_path / "cut" / "acne1" / WEIGHTS).is_file() and not (tmp_path / "cut" / "acne3" / WEIGHTS).exists()
    assert [p.name for p in (tmp_path / "cut" / "acne3" / "checkpoints").iterdir()] == ["step-000003.pt"]
    steps_seen = []
    resumed = quiet_finetune(opts, on_step=lambda g, s, loss: steps_seen.append((g, s)))
    assert steps_seen == [(3, 4), (3, 5), (3, 6), (3, 7)]  # grade 1 kept, grade 3 from its checkpoint
    for g in (1, 3):
        a, b = load_file(whole[g]), load_file(resumed[g])
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        logs = [json.loads((p.parent / "train_log.json").read_text()) for p in (whole[g], resumed[g])]
        assert logs[0]["loss"] == logs[1]["loss"]


def test_cached_and_uncached_latents_train_the_same_weights(tiny, photos, tmp_path):
    cached = quiet_finetune(options(tiny, photos, tmp_path / "c", grades="0", steps=3))
    uncached = quiet_finetune(options(tiny, photos, tmp_path / "u", grades="0", steps=3, cache=False))
    a, b = load_file(cached[0]), load_file(uncached[0])
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    other_seed = load_file(quiet_finetune(options(tiny, photos, tmp_path / "s", grades="0", steps=3, seed=1))[0])
    assert not all(torch.allclose(a[k], other_seed[k], atol=1e-5) for k in a)


def test_a_manifest_with_its_own_grade_column_selects_the_photos(tiny, photos, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(photos, folder / "img")
    rows = ["image,acne_grade"] + [f"img/{g}/p{i}.png,{g}" for g in (0, 2) for i in range(2)]
    (folder / "manifest.csv").write_text("\n".join(rows) + "\n")
    found = find_photos(folder, [0, 2], grade_column="acne_grade")
    assert {g: [p.name for p in ps] for g, ps in found.items()} == {0: ["p0.png", "p1.png"], 2: ["p0.png", "p1.png"]}
    res = finetune_cli(
        [
            str(folder),
            "--out",
            str(tmp_path / "o"),
            "--base-model",
            str(tiny["base"]),
            "--grades",
            "1",
            "--grade-column",
            "acne_grade",
        ]
    )
    assert res.exit_code == 2 and "grade 1 has no photos" in res.output and "manifest.csv" in res.output


# ---------------------------------------------------------------- bad input: exit 2, nothing written


def _bad(tiny, photos, tmp_path, *extra):
    out = tmp_path / "out"
    res = finetune_cli(
        [
            str(photos),
            "--out",
            str(out),
            "--base-model",
            str(tiny["base"]),
            "--resolution",
            str(SIZE),
            "--steps",
            "2",
            *extra,
        ]
    )
    assert res.exit_code == 2, res.output
    assert not list(out.rglob("*.safetensors")) and not list(out.rglob("*.pt")) and not list(out.rglob("*.tmp"))
    return res.output


def test_a_grade_without_photos_exits_2_naming_the_grade(tiny, tmp_path):
    folder = write_photos(tmp_path / "p", grades=(0, 1, 3))
    assert "grade 2 has no photos" in _bad(tiny, folder, tmp_path)


def test_an_unreadable_photo_exits_2_naming_the_file(tiny, tmp_path):
    folder = write_photos(tmp_path / "p")
    (folder / "2" / "broken.jpg").write_bytes(b"not a jpeg")
    assert "broken.jpg" in _bad(tiny, folder, tmp_path)


def test_a_missing_base_model_exits_2_naming_the_option(photos, tmp_path):
    res = finetune_cli([str(photos), "--out", str(tmp_path / "o"), "--base-model", str(tmp_path / "no" / "sdxl")])
    assert res.exit_code == 2 and "--base-model" in res.output and "base model not found" in res.output


def test_no_disk_room_for_checkpoints_exits_2_naming_out(tiny, photos, tmp_path, monkeypatch):
    import trialsim.finetune.checkpoint as ckpt

    monkeypatch.setattr(ckpt.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    assert "no disk room for checkpoints" in _bad(tiny, photos, tmp_path, "--grades", "0")


def test_bad_options_exit_2_naming_the_option(tiny, photos, tmp_path):
    assert "--grades" in _bad(tiny, photos, tmp_path, "--grades", "0,5")
    assert "--resolution" in _bad(tiny, photos, tmp_path, "--resolution", "30")
    assert "--prompt" in _bad(tiny, photos, tmp_path, "--prompt", "a photo")


def test_resuming_with_other_options_exits_2(tiny, photos, tmp_path):
    opts = options(tiny, photos, tmp_path / "out", grades="0", steps=4, checkpoint_every=2)
    with pytest.raises(KeyboardInterrupt):
        quiet_finetune(opts, on_step=lambda g, s, loss: (_ for _ in ()).throw(KeyboardInterrupt) if s == 3 else None)
    res = finetune_cli(
        [
            str(photos),
            "--out",
            str(tmp_path / "out"),
            "--base-model",
            str(tiny["base"]),
            "--resolution",
            str(SIZE),
            "--steps",
            "4",
            "--checkpoint-every",
            "2",
            "--grades",
            "0",
            "--learning-rate",
            "0.001",
        ]
    )
    assert res.exit_code == 2 and "learning_rate" in res.output and "step-000002.pt" in res.output


def test_bench_runs_end_to_end_on_the_tiny_model(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "bench_finetune", Path(__file__).resolve().parent.parent / "bench" / "bench_finetune.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.main(["--tiny", "--workdir", str(tmp_path), "--out", str(tmp_path / "bench.json")])
    for key in ("training_cached", "training_uncached"):
        assert result[key]["steps_timed"] == 2 and result[key]["steps_per_s"] > 0 and result[key]["loss_finite"]
    assert result["training_cached"]["cache"] and not result["training_uncached"]["cache"]
    trial = result["whole_trial"]
    assert trial["photos"] == 12 and trial["goal_met"] == (trial["wall_s (load + compile + render + write)"] <= 240)
    assert json.loads((tmp_path / "bench.json").read_text())["cached_speedup"] == result["cached_speedup"]
    assert '"whole_trial"' in capsys.readouterr().out


@pytest.mark.slow
def test_a_killed_process_resumes_to_the_weights_of_an_uninterrupted_run(tiny, photos, tmp_path):
    import os
    import subprocess
    import time

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}  # same threads, same sums

    def command(out: Path) -> list[str]:
        return [sys.executable, "-m", "trialsim", "finetune", str(photos), "--out", str(out), "--base-model",
                str(tiny["base"]), "--resolution", str(SIZE), "--grades", "1", "--steps", "40",
                "--checkpoint-every", "5", "--quiet"]  # fmt: skip

    cut = tmp_path / "cut"
    proc = subprocess.Popen(command(cut), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not list((cut / "acne1" / "checkpoints").glob("step-00001[05].pt")) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    assert not (cut / "acne1" / WEIGHTS).exists(), "finished before it was killed"
    done = subprocess.run(command(cut), env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    whole = subprocess.run(command(tmp_path / "whole"), env=env, capture_output=True, text=True)
    assert whole.returncode == 0, whole.stderr
    a, b = load_file(cut / "acne1" / WEIGHTS), load_file(tmp_path / "whole" / "acne1" / WEIGHTS)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((cut / "acne1" / "train_log.json").read_text())["steps_done"] == 40


def test_text_encoder_loras_are_saved_beside_the_unet_s_and_load_in_the_renderer(tiny, photos, tmp_path):
    out = tmp_path / "loras"
    res = finetune_cli(
        [
            str(photos),
            "--out",
            str(out),
            "--base-model",
            str(tiny["base"]),
            "--resolution",
            str(SIZE),
            "--grades",
            "1",
            "--steps",
            "2",
            "--gradient-accumulation",
            "1",
            "--train-text-encoder",
            "--text-encoder-learning-rate",
            "0.01",
        ]
    )
    assert res.exit_code == 0, res.output
    state = load_file(out / "acne1" / WEIGHTS)
    for prefix in ("unet.", "text_encoder.", "text_encoder_2."):
        ups = [v for k, v in state.items() if k.startswith(prefix) and "lora" in k and ("up" in k or "lora_B" in k)]
        assert ups and any(v.abs().max() > 0 for v in ups), prefix
    from diffusers import StableDiffusionXLImg2ImgPipeline

    from trialsim.render.sdxl.loading import load_lora
    from trialsim.render.sdxl.resolve import resolve_lora

    pipe = StableDiffusionXLImg2ImgPipeline.from_pretrained(str(tiny["base"]))
    load_lora(pipe, resolve_lora(1, str(out / "acne1")))  # the renderer's loading
    assert {k: set(v) for k, v in pipe.get_list_adapters().items()} == {
        "unet": {"acne1"},
        "text_encoder": {"acne1"},
        "text_encoder_2": {"acne1"},
    }
