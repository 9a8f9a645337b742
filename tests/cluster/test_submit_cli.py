"""`prunetune submit` without a cluster: bad input is refused before anything is contacted.

A "witness" socket listens where --address points and counts connections, so "nothing was
submitted" is observed, not assumed. The real cluster path is in test_cluster.py.
"""

from __future__ import annotations

import json
import shlex
import socket
import threading
from pathlib import Path

import pytest

from orchestrator.cli.app import main
from orchestrator.cluster import jobs, submit
from orchestrator.cluster.connect import read_auth_token, resolve_address
from trainables.errors import UserError


class Witness:
    """A loopback TCP listener that counts the connections it receives."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def witness():
    w = Witness()
    yield w
    w.close()


@pytest.fixture
def no_ray_env(monkeypatch, tmp_path):
    """No token, no address from the environment, an empty HOME."""
    for key in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def error_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def write_spec(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_bad_spec_exits_2_and_contacts_nobody(no_ray_env, witness, capsys) -> None:
    spec = write_spec(
        no_ray_env / "bad.yaml", "name: bad\ntrain: {epochs: 0}\nmodel: {name: vgg12}\n"
    )
    code = main(["submit", spec, "--address", witness.url, "--storage", "/mnt/studies"])
    lines = error_lines(capsys)
    assert code == 2
    assert lines[0].startswith("prunetune: error:")
    assert any("model.name" in line for line in lines) and any("epochs" in line for line in lines)
    assert witness.connections == 0


def test_relative_storage_is_refused_before_contact(no_ray_env, witness, capsys) -> None:
    spec = write_spec(no_ray_env / "ok.yaml", "name: ok\n")
    code = main(["submit", spec, "--address", witness.url, "--storage", "studies"])
    (line,) = error_lines(capsys)
    assert code == 2 and "storage" in line and "'studies'" in line
    assert witness.connections == 0


def test_overrides_are_validated_before_contact(no_ray_env, witness, capsys) -> None:
    code = main(["submit", "quickstart", "train.epoch=3", "--address", witness.url,
                 "--storage", "/mnt/studies"])  # fmt: skip
    (line,) = error_lines(capsys)
    assert code == 2 and "unknown key train.epoch; did you mean train.epochs?" in line
    assert witness.connections == 0


def test_job_driver_leaves_the_working_dir_once_the_spec_is_read(tmp_path) -> None:
    """`run --job` (what a submitted job runs) reads spec.yaml from the job's working directory,
    then moves away, so that Ray deleting that directory cannot break Tune's os.getcwd()."""
    import subprocess
    import sys
    import tempfile

    job_dir = tmp_path / "job"
    job_dir.mkdir()
    (job_dir / "spec.yaml").write_text(f"name: j\nstorage: {tmp_path / 'studies'}\n")
    script = (
        "import os\nfrom orchestrator.cli.app import main\n"
        "code = main(['run', 'spec.yaml', '--job', '--dry-run'])\n"
        "print(code, os.getcwd())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=job_dir, capture_output=True, text=True, check=True
    )
    assert out.stdout.splitlines()[-1] == f"0 {tempfile.gettempdir()}"


def test_unreachable_address_is_one_line_exit_2(no_ray_env, capsys) -> None:
    spec = write_spec(no_ray_env / "ok.yaml", "name: ok\n")
    url = f"http://127.0.0.1:{closed_port()}"
    code = main(["submit", spec, "--address", url, "--storage", "/mnt/studies"])
    (line,) = error_lines(capsys)
    assert code == 2
    assert line.startswith("prunetune: error: cannot reach the Ray dashboard at " + url)
    assert "connection refused" in line


def test_address_must_be_a_dashboard_url(no_ray_env, monkeypatch) -> None:
    with pytest.raises(UserError, match="--address: required"):
        resolve_address(None)
    with pytest.raises(UserError, match="http"):
        resolve_address("10.0.0.1:6379")
    monkeypatch.setenv("RAY_ADDRESS", "http://head:8265/")
    assert resolve_address(None) == "http://head:8265"
    assert resolve_address("https://other:443") == "https://other:443"


def test_token_lookup_follows_rays_order(no_ray_env, monkeypatch) -> None:
    home_token = no_ray_env / "home" / ".ray" / "auth_token"
    assert read_auth_token() == (None, "")
    home_token.parent.mkdir(parents=True)
    home_token.write_text("from-home\n")
    assert read_auth_token() == ("from-home", str(home_token))
    path_token = no_ray_env / "token"
    path_token.write_text("  from-path  ")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(path_token))
    assert read_auth_token()[0] == "from-path"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert read_auth_token() == ("from-env", "RAY_AUTH_TOKEN")


def test_unreadable_token_path_is_a_user_error(no_ray_env, monkeypatch) -> None:
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(no_ray_env / "missing"))
    with pytest.raises(UserError, match="RAY_AUTH_TOKEN_PATH: cannot read"):
        read_auth_token()


def test_submission_id_is_the_study_id() -> None:
    a = jobs.submission_id("quickstart", "0123456789abcdef")
    assert a == "prunetune-quickstart-0123456789ab"
    assert jobs.submission_id("quickstart", "0123456789abcdef") == a
    assert jobs.submission_id("quickstart", "fedcba9876543210") != a
    assert jobs.submission_id("my study/v2", "0" * 16) == "prunetune-my-study-v2-000000000000"


def test_resubmission_ids_follow_the_highest_taken() -> None:
    base = "prunetune-q-0123456789ab"
    assert jobs.next_submission_id(base, []) == base
    assert jobs.next_submission_id(base, [base]) == f"{base}-r2"
    assert jobs.next_submission_id(base, [f"{base}-r3", base]) == f"{base}-r4"


def test_entrypoint_runs_the_cli_on_the_cluster() -> None:
    shipped = shlex.split(submit.entrypoint("spec.yaml", "s3://b/studies", "a b", shipped=True))
    assert shipped[:4] == ["python", "-m", "orchestrator.cli.app", "run"]
    assert shipped[4:] == [
        "spec.yaml",
        "--storage",
        "s3://b/studies",
        "--name",
        "a b",
        "--address",
        "auto",
        "--job",  # the driver leaves the job's working directory once the spec is read
    ]
    image = shlex.split(submit.entrypoint("spec.yaml", "/mnt/studies", "q", shipped=False))
    assert image[:2] == ["prunetune", "run"]


def test_submission_record_and_status_line(no_ray_env) -> None:
    storage = no_ray_env / "studies"
    assert not jobs.record_submission(str(storage), "q", "sid", "http://x:1", "h")  # no root
    storage.mkdir()
    url = f"http://127.0.0.1:{closed_port()}"
    assert jobs.record_submission(str(storage), "q", "prunetune-q-1", url, "abc")
    record = json.loads((storage / "q" / "submission.json").read_text())
    assert record["submission_id"] == "prunetune-q-1" and record["address"] == url
    line = jobs.job_status_line(storage / "q")
    assert line.startswith(f"job prunetune-q-1 at {url}: state unknown (cannot reach")
    assert jobs.job_status_line(storage) is None  # no submission.json there
