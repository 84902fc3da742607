"""Faults from outside the input: a full disk mid-write, a killed or interrupted ``simulate --workers``.

Each probe checks the exit code, the message, and that nothing is left behind: no temporary
file beside the outputs, no worker process outliving its parent.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from conftest import ROOT, small_protocol_dict

import analysis.atomic
from trialsim.cli import main


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def leftovers(folder: Path) -> list[str]:
    return [str(p) for p in Path(folder).rglob("*") if p.name.endswith(".tmp") or ".tmp." in p.name]


def target_of(tmp: str) -> str:
    """The file a temporary file of the atomic writer stands for (``.NAME.XXXXXX.tmp`` → ``NAME``)."""
    return Path(tmp).name[1:].rsplit(".", 2)[0]


def write_protocol(path: Path, **overrides) -> Path:
    path.write_text(yaml.safe_dump(small_protocol_dict(**overrides)))
    return path


class _FillsUp:
    """A file object that takes ``room`` bytes, then fails as a full disk does."""

    def __init__(self, f, room: int):
        self.f, self.room = f, room

    def write(self, data) -> int:
        self.f.write(data[: self.room])
        raise OSError(errno.ENOSPC, "No space left on device")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def full_disk_after(monkeypatch, writes: int, under: Path) -> list[str]:
    """Make the atomic writes under ``under`` fail half-way once ``writes`` of them went through."""
    real = os.fdopen
    done: list[str] = []

    def fdopen(fd, mode="r", *args, **kwargs):
        f = real(fd, mode, *args, **kwargs)
        name = os.readlink(f"/proc/self/fd/{fd}")
        if "w" not in mode or not name.startswith(str(under)) or not name.endswith(".tmp"):
            return f
        done.append(name)
        return f if len(done) <= writes else _FillsUp(f, 100)

    monkeypatch.setattr(analysis.atomic.os, "fdopen", fdopen)
    return done


# --- a full disk -----------------------------------------------------------------------------


def test_a_failed_atomic_write_keeps_the_old_file_and_names_the_new_one(tmp_path, monkeypatch):
    target = tmp_path / "out" / "table.csv"
    target.parent.mkdir()
    target.write_text("old\n")
    full_disk_after(monkeypatch, 0, tmp_path)
    with pytest.raises(OSError) as err:
        analysis.atomic.atomic_write_text(target, "new\n" * 1000)
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(target)
    assert tree(tmp_path / "out") == {"table.csv": b"old\n"}


@pytest.fixture(scope="module")
def analysis_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("an")
    proto = write_protocol(root / "p.yaml")
    assert run("simulate", proto, "--out", root / "ds", "--renderer", "none", "--quiet").exit_code == 0
    assert run("analyze", root / "ds", "--out", root / "an", "--method", "oracle", "--quiet").exit_code == 0
    return root


def _says_disk_full(r, name: str) -> None:
    assert r.exit_code == 2, r.output
    assert "No space left on device" in r.output and name in r.output, r.output
    assert "internal error" not in r.output and "Traceback" not in r.output


def test_report_on_a_full_disk_exits_2_and_leaves_the_folder_as_it_was(analysis_folder, tmp_path, monkeypatch):
    an = tmp_path / "an"
    shutil.copytree(analysis_folder / "an", an)
    before = tree(an)
    full_disk_after(monkeypatch, 0, an)
    _says_disk_full(run("report", an), "report.html")
    assert tree(an) == before and not leftovers(an)


@pytest.mark.parametrize("writes", [0, 2])
def test_analyze_on_a_full_disk_exits_2_with_no_temporary_file(analysis_folder, tmp_path, monkeypatch, writes):
    done = full_disk_after(monkeypatch, writes, tmp_path / "an")
    r = run("analyze", analysis_folder / "ds", "--out", tmp_path / "an", "--method", "oracle", "--quiet")
    _says_disk_full(r, target_of(done[-1]))
    assert not leftovers(tmp_path)


@pytest.mark.parametrize("writes", [0, 3, 8])
def test_simulate_on_a_full_disk_exits_2_with_no_temporary_file_and_resumes(tmp_path, monkeypatch, writes):
    sched = {"design": "fixed", "sequence": "AB", "blocks": 1, "period_days": 2, "run_in_days": 0}
    proto = write_protocol(tmp_path / "p.yaml", schedule=sched)
    args = ("simulate", proto, "--out", tmp_path / "ds", "--renderer", "procedural", "--image-size", 32, "--quiet")
    with monkeypatch.context() as m:
        done = full_disk_after(m, writes, tmp_path / "ds")
        r = run(*args)
    _says_disk_full(r, target_of(done[-1]))
    assert not leftovers(tmp_path)
    # with room again, --resume finishes what the full disk stopped, as a clean run would have
    assert run(*args, "--resume").exit_code == 0
    assert run(*args[:3], tmp_path / "clean", *args[4:]).exit_code == 0
    assert tree(tmp_path / "ds") == tree(tmp_path / "clean")


def test_power_on_a_full_disk_exits_2_with_no_temporary_file(tmp_path, monkeypatch):
    done = full_disk_after(monkeypatch, 2, tmp_path / "s")
    r = run("power", write_protocol(tmp_path / "p.yaml"), "--replicates", 1, "--out", tmp_path / "s", "--quiet")
    _says_disk_full(r, target_of(done[-1]))
    assert not leftovers(tmp_path)


@pytest.fixture
def tiny_disk(tmp_path):
    """A 1 MiB tmpfs (root only); skipped where mounting is not allowed."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_report_on_a_really_full_disk(analysis_folder, tiny_disk):
    an = tiny_disk / "an"
    an.mkdir()
    for name in ("results.json", "embeddings.csv", ".trialsim.json"):
        shutil.copy(analysis_folder / "an" / name, an / name)
    free = shutil.disk_usage(tiny_disk).free
    (tiny_disk / "filler").write_bytes(b"\0" * max(0, free - 8192))  # room for a few pages, not a report
    before = tree(an)
    r = subprocess.run(
        [sys.executable, "-m", "trialsim.cli", "report", str(an)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120,
    )
    assert r.returncode == 2, r.stderr
    assert "No space left on device" in r.stderr and "report.html" in r.stderr and "internal error" not in r.stderr
    assert tree(an) == before and not leftovers(tiny_disk)


# --- killed or interrupted parallel runs ---------------------------------------------------------


def descendants(pid: int) -> set[int]:
    """Live (not zombie) processes below ``pid``, read from /proc."""
    parent: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                parent[int(d.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {c for c, p in parent.items() if p in frontier} - found
        found |= frontier
    return found


def alive(pids: set[int]) -> set[int]:
    out = set()
    for p in pids:
        try:
            state = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            out.add(p)
    return out


def wait_for(condition, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


def start(args: list, tmp_path: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path / "tmp")}
    (tmp_path / "tmp").mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "trialsim.cli", *map(str, args)]
    return subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=_default_signals,
    )


def _default_signals() -> None:
    """In the child: Ctrl-C and SIGTERM as a terminal gives them, whatever the test run inherited
    (a shell's background job ignores SIGINT, and an ignored signal stays ignored across exec)."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_DFL)


def stop_and_check(proc: subprocess.Popen, signum: int, ready) -> tuple[int, str]:
    """Send ``signum`` once ``ready()`` and two workers run; assert every process below it ends within seconds."""
    below: set[int] = set()
    try:
        # a running pool: the resource tracker, the forkserver, two workers, and the work under way
        assert wait_for(lambda: len(descendants(proc.pid)) >= 4 and ready(), 60), "the workers never started"
        below = descendants(proc.pid)
        if signum == signal.SIGINT:
            os.killpg(proc.pid, signum)  # Ctrl-C reaches the whole foreground group
        else:
            os.kill(proc.pid, signum)
        _, err = proc.communicate(timeout=30)
        assert wait_for(lambda: not alive(below), 10), f"still alive after the parent ended: {alive(below)}"
        return proc.returncode, err.decode()
    finally:
        for p in alive(below | descendants(proc.pid) | {proc.pid}):  # a failed check leaves no orphan behind
            os.kill(p, signal.SIGKILL)


pytestmark_linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _slow_protocol(tmp_path: Path) -> Path:
    patients = {"n": 24, "baseline_severity": {"mean": 2.5, "sd": 0.2}}
    return write_protocol(
        tmp_path / "p.yaml", patients=patients, rendering={"renderer": "procedural", "image_size": 96}
    )


@pytestmark_linux
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_simulate_workers_end_with_their_parent(tmp_path, signum):
    out = tmp_path / "ds"
    proc = start(["simulate", _slow_protocol(tmp_path), "--out", out, "--workers", 2, "--quiet"], tmp_path)
    code, err = stop_and_check(proc, signum, lambda: (out / "protocol.yaml").exists())
    assert code == (-signal.SIGKILL if signum == signal.SIGKILL else 143 if signum == signal.SIGTERM else 1), err
    assert "Traceback" not in err, err
    if signum != signal.SIGKILL:
        assert not leftovers(out)


@pytestmark_linux
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_power_workers_remove_their_work_folders_when_the_parent_goes(tmp_path, signum):
    # photos and a method that reads them: each replicate works in a temporary folder (the oracle
    # without photos runs in memory and makes none)
    proto = write_protocol(tmp_path / "p.yaml", rendering={"renderer": "procedural", "image_size": 96})
    args = ["--replicates", 12, "--method", "pixel-pca", "--out", tmp_path / "s", "--workers", 2, "--quiet"]
    proc = start(["power", proto, *args], tmp_path)
    code, err = stop_and_check(proc, signum, lambda: any((tmp_path / "tmp").glob("trialsim-rep-*")))
    assert code in (-signal.SIGKILL, 143), err
    assert wait_for(lambda: not list((tmp_path / "tmp").glob("trialsim-rep-*")), 5)
