"""Every failure at the edge with the operating system, the storage and Ray, through the real CLI:
one line on stderr, exit code 2, no traceback, nothing written (the README's "Bad input")."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from orch_helpers import REPO, cli_env, created_study, tiny_spec

from orchestrator.cli.app import main
from orchestrator.study.lock import acquire


def refused(capsys, code: int) -> str:
    """The one error line of a refused command (asserting exit 2, one line, no traceback)."""
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("prunetune: error: ") and "Traceback" not in err
    return lines[0].removeprefix("prunetune: error: ")


# --- the spec file --------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["latin-1", "utf-16"])
def test_a_spec_that_is_not_utf8_is_one_line(encoding, tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_bytes("name: caf\u00e9\n".encode(encoding))
    line = refused(capsys, main(["run", str(spec), "--storage", str(tmp_path / "st")]))
    assert str(spec) in line and "UTF-8" in line
    assert not (tmp_path / "st").exists()


def test_a_spec_path_that_is_a_directory_is_one_line(tmp_path, capsys):
    (tmp_path / "spec.yaml").mkdir()
    line = refused(capsys, main(["run", str(tmp_path / "spec.yaml")]))
    assert "is not a file" in line


def test_a_local_file_named_like_a_preset_is_used_and_said(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("quickstart").write_text("name: mine\n")
    assert main(["run", "quickstart", "--dry-run"]) == 0
    out, err = capsys.readouterr()
    assert "using the file" in err and "not the preset quickstart" in err
    assert "/mine (spec" in out.splitlines()[0]


@pytest.mark.timeout(120)  # the old code started Ray and ran the whole study here
def test_a_model_without_what_the_score_needs_is_refused_before_ray(tmp_path, capsys):
    """The quickstart's MLP has no BatchNorm: E[BN] is refused in one line, before Ray starts and
    before anything is written (it used to start Ray and fail 9 of 10 trials)."""
    storage = tmp_path / "st"
    args = ["pruning.score=ebn", "pruning.granularity=filter", "seeds=1", "--storage", str(storage)]
    line = refused(capsys, main(["run", "quickstart", *args]))
    assert line.startswith("pruning.score: ebn needs a model with a BatchNorm after each prunable")
    assert "got mlp" in line
    assert not storage.exists()
    ray = sys.modules.get("ray")
    assert ray is None or not ray.is_initialized()


def test_a_name_with_a_trailing_newline_is_refused(tmp_path, capsys):
    line = refused(capsys, main(["run", "quickstart", "--name", "abc\n", "--dry-run"]))
    assert line.startswith("name: ")


def test_storage_under_home_is_expanded(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert main(["run", "quickstart", "--storage", "~/studies", "--dry-run"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith(f"study {tmp_path}/studies/quickstart (spec ")
    assert not (tmp_path / "~").exists()


# --- storage --------------------------------------------------------------------------------------


def test_storage_that_is_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    line = refused(capsys, main(["run", "quickstart", "--storage", str(tmp_path / "file")]))
    assert "is a file" in line and str(tmp_path / "file") in line


def test_storage_under_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    line = refused(capsys, main(["run", "quickstart", "--storage", str(tmp_path / "file/sub")]))
    assert "is a file, not a directory" in line


def _read_only_dir(tmp_path: Path) -> Path:
    """A directory this process cannot write into (root ignores mode bits: use a read-only
    filesystem then)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    if not os.access(ro, os.W_OK):
        return ro
    if not os.access("/proc/sys", os.W_OK):
        return Path("/proc/sys")
    pytest.skip("no read-only directory available to this user")


def test_read_only_storage_is_one_line(tmp_path, capsys):
    ro = _read_only_dir(tmp_path)
    line = refused(capsys, main(["run", "quickstart", "--storage", str(ro / "studies")]))
    assert "not writable" in line
    assert not (ro / "studies").exists()


def test_a_bare_bucket_uri_is_one_line(capsys):
    for command in (["status", "s3://"], ["resume", "s3://"], ["aggregate", "s3://"],
                    ["report", "s3://"]):  # fmt: skip
        line = refused(capsys, main(command))
        assert "names no bucket or path" in line


def test_an_unreachable_object_store_answers_within_the_timeout(capsys, monkeypatch):
    """gs:// with no network retries for minutes inside pyarrow: the probe gives up in time."""
    monkeypatch.setattr("results.tables.storage.REACH_TIMEOUT_S", 3.0)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:9")  # nothing listens there
    for command in (["status", "gs://prunetune-none/x"], ["aggregate", "gs://prunetune-none/x"]):
        start = time.monotonic()
        line = refused(capsys, main(command))
        assert time.monotonic() - start < 20
        assert line.startswith("gs://prunetune-none/x: ")


def test_a_damaged_spec_yaml_is_one_line(tmp_path, capsys):
    study = created_study(tmp_path)
    (Path(study.path) / "spec.yaml").write_bytes(b"name: [unclosed\n\xff\xfe")
    for command in ("status", "resume"):
        line = refused(capsys, main([command, study.uri]))
        assert "spec.yaml" in line


# --- the Ray address ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "says"),
    [
        ("ray://127.0.0.1:notaport", "--address"),
        ("http://127.0.0.1:8265", "--address"),
        ("127.0.0.1", "--address"),
    ],
)
def test_a_malformed_address_writes_nothing(address, says, tmp_path, capsys):
    code = main(["run", "quickstart", "--storage", str(tmp_path / "st"), "--address", address])
    assert refused(capsys, code).startswith(says)
    assert not (tmp_path / "st").exists()


def test_an_unreachable_address_is_refused_quickly_and_writes_nothing(tmp_path, capsys):
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    start = time.monotonic()
    code = main(["run", "quickstart", "--storage", str(tmp_path / "st"),
                 "--address", f"ray://127.0.0.1:{port}"])  # fmt: skip
    line = refused(capsys, code)
    assert time.monotonic() - start < 15
    assert line.startswith("--address") and str(port) in line
    assert not (tmp_path / "st").exists()


# --- reports and pipes ----------------------------------------------------------------------------


def test_report_into_a_missing_directory_or_onto_a_directory(tmp_path, capsys):
    study = created_study(tmp_path)
    line = refused(capsys, main(["report", study.uri, "-o", str(tmp_path / "no/such/r.html")]))
    assert "does not exist" in line
    line = refused(capsys, main(["report", study.uri, "-o", str(tmp_path)]))
    assert "is a directory" in line


def test_status_into_a_closed_pipe_ends_quietly(tmp_path):
    study = created_study(tmp_path)
    script = f"{sys.executable} -m orchestrator.cli.app status {study.uri} | head -1"
    out = subprocess.run(
        ["bash", "-o", "pipefail", "-c", script],
        cwd=REPO, env=cli_env(), capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"study {study.uri}") and out.stderr == ""


# --- one driver per study -------------------------------------------------------------------------


def test_a_second_driver_is_refused_at_once_naming_the_holder(tmp_path, capsys):
    study = created_study(tmp_path)
    with acquire(study.fs, study.path, study.uri, command="prunetune run elsewhere"):
        start = time.monotonic()
        line = refused(capsys, main(["resume", study.uri]))
        assert time.monotonic() - start < 10  # before Ray starts
        assert "driven by another prunetune process" in line and "prunetune run elsewhere" in line
        line = refused(capsys, main(["run", str(tmp_path / "s.yaml")]))
        assert "driven by another prunetune process" in line
        assert main(["status", study.uri]) == 0
        assert "): running" in capsys.readouterr().out.splitlines()[0]
    assert main(["status", study.uri]) == 0  # the holder left: not running any more
    assert "): not started" in capsys.readouterr().out.splitlines()[0]


# --- capacity (needs Ray: a trial asking for a GPU this machine does not have) --------------------


@pytest.mark.ray
def test_a_trial_that_fits_no_node_is_refused_before_anything_is_written(tmp_path):
    spec = tiny_spec(tmp_path / "g.yaml", "g", tmp_path / "d", tmp_path / "st",
                     resources={"cpu": 1, "gpu": 1})  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli.app", "run", str(spec)],
        cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 2, out.stderr
    assert lines[-1].startswith("prunetune: error: resources.gpu: each trial asks for 1 GPU")
    assert "resources.gpu=0" in lines[-1]
    assert not (tmp_path / "st").exists()
