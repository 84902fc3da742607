"""Hostile input and faults, one probe each: exit code, message, and what is left on disk.

Each probe runs the command line as a user would (``click.testing.CliRunner``, or a
subprocess where a pipe or the interpreter's exit matters) and then checks that no file of
the user's was lost, nothing was read or written outside the folders given, and no two
patients share a file.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from conftest import ROOT, small_protocol_dict

from trialsim.cli import main


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def write_protocol(path: Path, **overrides) -> Path:
    path.write_text(yaml.safe_dump(small_protocol_dict(**overrides)))
    return path


def user_folder(path: Path, name: str = "images/holiday/p.jpg", data: bytes = b"my photo") -> Path:
    """A folder holding one file of the user's (not written by trialsim)."""
    (path / name).parent.mkdir(parents=True, exist_ok=True)
    (path / name).write_bytes(data)
    return path


def small_dataset(tmp_path: Path, renderer: str = "none", **overrides) -> Path:
    proto = write_protocol(tmp_path / "p.yaml", **overrides)
    out = tmp_path / "ds"
    r = run("simulate", proto, "--out", out, "--renderer", renderer, "--image-size", 32, "--quiet")
    assert r.exit_code == 0, r.output
    return out


# --- lost data -------------------------------------------------------------------------------


def test_ids_that_sanitise_alike_get_their_own_folders_and_photos(tmp_path):
    patients = {"n": 3, "ids": ["a/b", "a_b", "a b"]}
    sched = {"design": "fixed", "sequence": "AB", "blocks": 1, "period_days": 1, "run_in_days": 0}
    ds = small_dataset(tmp_path, renderer="procedural", patients=patients, schedule=sched)
    man = pd.read_csv(ds / "manifest.csv", dtype={"patient_id": str})
    assert len(man) == 6 and man["image"].is_unique
    jpgs = sorted(p.relative_to(ds).as_posix() for p in (ds / "images").rglob("*.jpg"))
    assert jpgs == sorted(man["image"])
    folders = man.groupby("patient_id")["image"].apply(lambda s: {Path(i).parent for i in s})
    assert all(len(f) == 1 for f in folders) and len(set.union(*folders)) == 3
    les = pd.read_csv(ds / "lesions.csv")
    # each image's lesion rows are its own, not three patients' merged (lesion ids would repeat)
    assert set(les["image"]) <= set(man["image"]) and not les.duplicated(["image", "lesion_id"]).any()
    assert len(list((ds / "contact_sheets").glob("*.png"))) == 3


def test_ids_differing_in_case_only_are_refused_naming_them(tmp_path):
    proto = write_protocol(tmp_path / "p.yaml", patients={"n": 2, "ids": ["ab", "AB"]})
    r = run("simulate", proto, "--out", tmp_path / "ds", "--renderer", "none")
    assert r.exit_code == 2 and "'ab', 'AB'" in r.output and "patients" in r.output
    assert not (tmp_path / "ds").exists()


def test_overwrite_refuses_a_folder_trialsim_never_made(tmp_path):
    out = user_folder(tmp_path / "mine")
    r = run("simulate", write_protocol(tmp_path / "p.yaml"), "--out", out, "--renderer", "none", "--overwrite")
    assert r.exit_code == 2 and str(out) in r.output and "--overwrite" in r.output
    assert files(out) == {"images/holiday/p.jpg": b"my photo"}
    r = run("simulate", write_protocol(tmp_path / "p.yaml"), "--out", out, "--renderer", "none", "--resume")
    assert r.exit_code == 2 and files(out) == {"images/holiday/p.jpg": b"my photo"}


def test_overwrite_replaces_its_own_dataset_also_one_without_the_marker(tmp_path):
    ds = small_dataset(tmp_path)
    (ds / ".trialsim.json").unlink()  # a folder written before the marker existed
    r = run("simulate", tmp_path / "p.yaml", "--out", ds, "--renderer", "none", "--overwrite", "--seed", 9)
    assert r.exit_code == 0, r.output
    assert yaml.safe_load((ds / "protocol.yaml").read_text())["seed"] == 9
    assert (ds / ".trialsim.json").exists()


def test_demo_leaves_a_users_files_alone(tmp_path):
    out = user_folder(tmp_path / "demo", "dataset/notes.txt", b"keep")
    r = run("demo", "--out", out, "--quiet")
    assert r.exit_code == 2 and str(out) in r.output
    assert files(out) == {"dataset/notes.txt": b"keep"}


def test_power_refuses_a_folder_with_a_users_replicates_csv(tmp_path):
    out = user_folder(tmp_path / "study", "replicates.csv", b"mine,1\n")
    r = run("power", write_protocol(tmp_path / "p.yaml"), "--replicates", 1, "--out", out, "--quiet")
    assert r.exit_code == 2 and str(out) in r.output
    assert files(out) == {"replicates.csv": b"mine,1\n"}


def test_analyze_keeps_earlier_results_unless_overwrite(tmp_path):
    ds = small_dataset(tmp_path)
    out = tmp_path / "an"
    assert run("analyze", ds, "--out", out, "--method", "oracle", "--quiet").exit_code == 0
    before = files(out)
    r = run("analyze", ds, "--out", out, "--method", "oracle", "--seed", 1, "--quiet")
    assert r.exit_code == 2 and "--overwrite" in r.output and files(out) == before
    r = run("analyze", ds, "--out", out, "--method", "oracle", "--seed", 1, "--overwrite", "--quiet")
    assert r.exit_code == 0, r.output
    # a folder without results.json or the marker is the user's: refused even with --overwrite
    (out / ".trialsim.json").unlink()
    (out / "results.json").unlink()
    r = run("analyze", ds, "--out", out, "--method", "oracle", "--overwrite", "--quiet")
    assert r.exit_code == 2 and "not a folder trialsim wrote" in r.output


# --- reading or writing outside the folder ----------------------------------------------------


def _manifest_with(ds: Path, image: str) -> None:
    man = pd.read_csv(ds / "manifest.csv")
    man.loc[0, "image"] = image
    man.to_csv(ds / "manifest.csv", index=False)


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_manifest_paths_outside_the_dataset_are_refused(tmp_path, kind):
    ds = small_dataset(tmp_path)
    outside = tmp_path / "OUTSIDE.jpg"
    outside.write_bytes(b"not yours")
    if kind == "symlink":
        (ds / "images" / "link.jpg").parent.mkdir(parents=True, exist_ok=True)
        (ds / "images" / "link.jpg").symlink_to(outside)
    image = {"dotdot": "../OUTSIDE.jpg", "absolute": str(outside), "symlink": "images/link.jpg"}[kind]
    _manifest_with(ds, image)
    r = run("analyze", ds, "--out", tmp_path / "an", "--method", "oracle", "--quiet")
    assert r.exit_code == 2 and "outside the dataset folder" in r.output and "manifest.csv" in r.output
    assert not (tmp_path / "an").exists()


@pytest.mark.parametrize("pid", ["..", ".", ".hidden"])
def test_dot_ids_stay_in_their_own_visible_folder(tmp_path, pid):
    sched = {"design": "fixed", "sequence": "AB", "blocks": 1, "period_days": 1, "run_in_days": 0}
    ds = small_dataset(tmp_path, renderer="procedural", patients={"n": 2, "ids": [pid, "x"]}, schedule=sched)
    jpgs = [p.relative_to(ds) for p in ds.rglob("*.jpg")]
    assert len(jpgs) == 4
    assert all(len(p.parts) == 3 and p.parts[0] == "images" for p in jpgs)
    assert not any(part.startswith(".") for p in jpgs for part in p.parts)


# --- strict YAML and types ---------------------------------------------------------------------


def test_duplicate_yaml_keys_are_refused(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump(small_protocol_dict()) + "seed: 4\n")
    r = run("simulate", f, "--out", tmp_path / "ds", "--renderer", "none")
    assert r.exit_code == 2 and "duplicate key 'seed'" in r.output and str(f) in r.output
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"patients": {"n": True}}, "patients.n"),
        ({"patients": {"n": 10001}}, "patients.n"),  # beyond what runs in reasonable time
        ({"patients": {"n": 5, "ids": ["a", "b"]}}, "patients"),
        ({"patients": {"n": 2, "ids": ["a", ""]}}, "patients"),
        ({"schedule": {"design": "randomized_blocks", "sequence": "ZZZ"}}, "schedule.sequence"),
        ({"schedule": {"design": "randomized_blocks", "blocks": 3, "max_consecutive_periods": 1}}, "consecutive"),
        ({"schedule": {"period_days": 3650, "blocks": 1000}}, "36500"),
        ({"dynamics": {"sd_obs": float("nan")}}, "finite number"),
    ],
)
def test_garbage_protocols_exit_2_before_any_output(tmp_path, overrides, field):
    if "max_consecutive_periods" in str(overrides):
        overrides["treatments"] = [{"label": "A"}]
    r = run(
        "simulate", write_protocol(tmp_path / "p.yaml", **overrides), "--out", tmp_path / "ds", "--renderer", "none"
    )
    assert r.exit_code == 2, r.output
    assert field in r.output and "Traceback" not in r.output
    assert not (tmp_path / "ds").exists()


def test_impossible_calendar_date_is_bad_input(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump(small_protocol_dict()) + "observation: {start_date: 2018-13-45}\n")
    r = run("simulate", f, "--out", tmp_path / "ds", "--renderer", "none")
    assert r.exit_code == 2 and "month" in r.output and not (tmp_path / "ds").exists()


def test_huge_csv_day_names_the_csv_column(tmp_path, anchor_csv):
    df = pd.read_csv(anchor_csv)
    df.loc[0, "day"] = 100000000
    df.to_csv(tmp_path / "a.csv", index=False)
    r = run("simulate", "--from-csv", tmp_path / "a.csv", "--out", tmp_path / "ds", "--renderer", "none")
    assert r.exit_code == 2 and "a.csv" in r.output and "field day" in r.output.replace("'", "")
    assert not (tmp_path / "ds").exists()


# --- power ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("grid", ["name=x;y", "name=../../../../x", "effect=0,0", "schedule.nonsense=3", "patients=0"])
def test_bad_grids_are_refused_before_any_replicate(tmp_path, grid):
    out = tmp_path / "study"
    r = run("power", write_protocol(tmp_path / "p.yaml"), "--replicates", 1, "--out", out, "--grid", grid)
    assert r.exit_code == 2 and "--grid" in r.output, r.output
    assert not out.exists()


@pytest.mark.parametrize("name", ["replicates.csv", "study.yaml"])
def test_corrupt_study_files_are_bad_input(tmp_path, name):
    proto = write_protocol(tmp_path / "p.yaml")
    out = tmp_path / "study"
    assert run("power", proto, "--replicates", 1, "--out", out, "--quiet").exit_code == 0
    (out / name).write_text("\x00garbage: [\n" if name == "study.yaml" else "x,y\n1,2\n")
    r = run("power", proto, "--replicates", 1, "--out", out, "--quiet")
    assert r.exit_code == 2 and name in r.output, r.output


@pytest.mark.parametrize("damage", ["bytes", "grid_point", "estimate"])
def test_damaged_replicate_cells_are_bad_input_naming_the_field(tmp_path, damage):
    proto = write_protocol(tmp_path / "p.yaml")
    out = tmp_path / "study"
    assert run("power", proto, "--replicates", 1, "--out", out, "--quiet").exit_code == 0
    path = out / "replicates.csv"
    if damage == "bytes":
        path.write_bytes(path.read_bytes() + b"\xff\xfe\n")
    else:
        rep = pd.read_csv(path, dtype=str, keep_default_na=False)
        rep.loc[0, damage] = "nope"
        rep.to_csv(path, index=False)
    r = run("power", proto, "--replicates", 2, "--out", out, "--quiet")
    assert r.exit_code == 2 and "replicates.csv" in r.output, r.output
    if damage != "bytes":
        assert damage in r.output and "nope" in r.output


def test_a_finished_study_rerun_gives_the_same_summary(tmp_path):
    proto = write_protocol(tmp_path / "p.yaml")
    out = tmp_path / "study"
    assert run("power", proto, "--replicates", 2, "--out", out, "--quiet").exit_code == 0
    first = (out / "summary.csv").read_bytes()
    assert run("power", proto, "--replicates", 2, "--out", out, "--quiet").exit_code == 0
    assert (out / "summary.csv").read_bytes() == first


def test_power_into_a_closed_pipe_exits_quietly(tmp_path):
    proto = write_protocol(tmp_path / "p.yaml")
    cmd = f"{sys.executable} -m trialsim.cli power {proto} --replicates 1 --out {tmp_path / 's'} --quiet | true"
    r = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr
    assert r.returncode in (0, 141)


# --- images ------------------------------------------------------------------------------------


def test_huge_image_is_refused_before_decoding(tmp_path):
    from PIL import Image

    sched = {"design": "fixed", "sequence": "AB", "blocks": 2, "period_days": 2, "run_in_days": 2}
    ds = small_dataset(tmp_path, renderer="procedural", schedule=sched)
    first = pd.read_csv(ds / "manifest.csv")["image"].iloc[0]
    Image.new("1", (15000, 15000)).save(ds / first, format="PNG")  # small file, 225 megapixels
    r = run("analyze", ds, "--out", tmp_path / "an", "--method", "pixel-pca", "--quiet")
    assert r.exit_code == 2 and first in r.output and "pixel limit" in r.output, r.output


def test_huge_image_is_skipped_with_skip_bad(tmp_path):
    from PIL import Image

    sched = {"design": "fixed", "sequence": "AB", "blocks": 2, "period_days": 2, "run_in_days": 2}
    ds = small_dataset(tmp_path, renderer="procedural", schedule=sched)
    first = pd.read_csv(ds / "manifest.csv")["image"].iloc[0]
    Image.new("1", (15000, 15000)).save(ds / first, format="PNG")
    r = run("analyze", ds, "--out", tmp_path / "an", "--method", "pixel-pca", "--skip-bad", "--quiet")
    assert r.exit_code == 0, r.output
    assert first in (tmp_path / "an" / "results.json").read_text()


def test_unwritable_out_is_bad_input_before_work(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = run("simulate", write_protocol(tmp_path / "p.yaml"), "--out", blocker / "ds", "--renderer", "none")
    assert r.exit_code == 2 and "is a file" in r.output
    r = run("power", tmp_path / "p.yaml", "--replicates", 1, "--out", blocker / "s")
    assert r.exit_code == 2 and "is a file" in r.output


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_out_is_bad_input(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        r = run("simulate", write_protocol(tmp_path / "p.yaml"), "--out", ro / "ds", "--renderer", "none")
        assert r.exit_code == 2 and "permission" in r.output
    finally:
        ro.chmod(0o700)


def test_marker_is_deterministic(tmp_path):
    a = small_dataset(tmp_path)
    text = (a / ".trialsim.json").read_text()
    assert '"kind": "dataset"' in text
    assert np.array_equal(
        np.frombuffer(text.encode(), np.uint8), np.frombuffer((a / ".trialsim.json").read_bytes(), np.uint8)
    )


def test_resume_redraws_a_truncated_photo(tmp_path):
    sched = {"design": "fixed", "sequence": "AB", "blocks": 1, "period_days": 2, "run_in_days": 0}
    ds = small_dataset(tmp_path, renderer="procedural", schedule=sched)
    whole = files(ds)
    first = pd.read_csv(ds / "manifest.csv")["image"].iloc[0]
    (ds / first).write_bytes(whole[first][:200])  # a photo cut short by a crash or a full disk
    (ds / "manifest.csv").unlink()
    args = ("simulate", tmp_path / "p.yaml", "--out", ds, "--renderer", "procedural", "--image-size", 32, "--quiet")
    r = run(*args, "--resume")
    assert r.exit_code == 0, r.output
    assert files(ds) == whole


def test_messages_show_plain_numbers(tmp_path, anchor_csv):
    df = pd.read_csv(anchor_csv)
    df["day"] = df["day"].astype(float)
    df.loc[0, "day"] = 1.5
    df.to_csv(tmp_path / "a.csv", index=False)
    r = run("simulate", "--from-csv", tmp_path / "a.csv", "--out", tmp_path / "ds", "--renderer", "none")
    assert r.exit_code == 2 and "1.5" in r.output and "np." not in r.output, r.output


def test_full_disk_is_a_clear_message_not_an_internal_error(tmp_path, monkeypatch):
    import errno

    import trialsim.simulate

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "ds" / "manifest.csv"))

    monkeypatch.setattr(trialsim.simulate, "simulate_from_options", full)
    r = run("simulate", write_protocol(tmp_path / "p.yaml"), "--out", tmp_path / "ds", "--renderer", "none")
    assert r.exit_code == 2 and "No space left" in r.output and "manifest.csv" in r.output
    assert "internal error" not in r.output


def test_gallery_and_analyze_into_an_impossible_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = run("gallery", "--out", blocker / "grid.png", "--image-size", 32, "--fitzpatrick", "2")
    assert r.exit_code == 2 and "internal error" not in r.output, r.output
    ds = small_dataset(tmp_path)
    r = run("analyze", ds, "--out", blocker / "an", "--method", "oracle", "--quiet")
    assert r.exit_code == 2 and "is a file" in r.output


def test_power_removes_work_folders_of_killed_runs(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = tmp_path / "tmp" / f"trialsim-rep-{gone.pid}-abc"
    alive = tmp_path / "tmp" / f"trialsim-rep-{os.getpid()}-abc"
    for d in (dead, alive):
        (d / "dataset").mkdir(parents=True)
    r = run("power", write_protocol(tmp_path / "p.yaml"), "--replicates", 1, "--out", tmp_path / "s", "--quiet")
    assert r.exit_code == 0, r.output
    assert not dead.exists() and alive.exists()
    assert sorted(p.name for p in (tmp_path / "tmp").iterdir()) == [alive.name]  # its own are gone too
