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

from orchestrator.cli.app import EXIT_CODES, main
from orchestrator.cluster import jobs, submission, submit
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
    assert not submission.record_submission(
        str(storage), "q", "sid", "http://x:1", "h", "cmd"
    )  # no root
    storage.mkdir()
    url = f"http://127.0.0.1:{closed_port()}"
    assert submission.record_submission(
        str(storage), "q", "prunetune-q-1", url, "abc", "prunetune x"
    )
    record = json.loads((storage / "q" / "submission.json").read_text())
    assert record["submission_id"] == "prunetune-q-1" and record["address"] == url
    assert record["resume"] == "prunetune x"
    report = submission.job_report(storage / "q")
    assert (
        report.line()
        == f"job prunetune-q-1 at {url}: the cluster does not answer (connection refused)"
    )
    assert report.state == "unreachable" and not report.active and report.resume == "prunetune x"
    assert submission.job_report(storage) is None  # no submission.json there


def test_unreachable_hint_names_the_addresss_own_port(no_ray_env) -> None:
    port = closed_port()
    with pytest.raises(UserError) as refused:
        resolve_and_connect(f"http://127.0.0.1:{port}")
    assert f"port {port} " in str(refused.value) and "8265" not in str(refused.value)


def resolve_and_connect(url: str):
    from orchestrator.cluster.connect import connect

    return connect(resolve_address(url))


# --- a lost cluster: the following client and `status` ---------------------------------------------


class LostClient:
    """A Jobs client whose cluster went away: the log socket drops, then nothing answers."""

    def __init__(self, answers: list) -> None:
        self.answers = answers  # what get_job_info gives in turn: an exception or a status
        self.asked = 0

    async def tail_job_logs(self, sid: str):
        yield "epoch 1\n"
        raise RuntimeError("WebSocket connection closed unexpectedly with close code 1006")

    def get_job_info(self, sid: str):
        from types import SimpleNamespace

        answer = self.answers[min(self.asked, len(self.answers) - 1)]
        self.asked += 1
        if isinstance(answer, Exception):
            raise answer
        return SimpleNamespace(status=answer, message="")


def refused_connection():
    import requests

    return requests.ConnectionError(
        "HTTPConnectionPool(host='127.0.0.1', port=4242): Max retries exceeded with url: "
        "/api/jobs/j ([Errno 111] Connection refused)"
    )


def test_follow_says_in_one_line_that_the_cluster_went_away(capsys) -> None:
    client = LostClient([refused_connection()])
    lost = lambda why: jobs.lost_line("http://h:4242", "j", why, "/s/q", "prunetune submit x")  # noqa: E731
    code = jobs.follow(client, "j", lost, poll_s=0.01, lost_after_s=0.05)
    assert code == jobs.CLUSTER_LOST_EXIT == 69
    assert "\n  69   `submit --follow`: the cluster went away" in EXIT_CODES  # --help says so
    (line,) = error_lines(capsys)
    assert line == (
        "prunetune: error: the cluster at http://h:4242 went away while job j ran (connection "
        "refused); the study's state is saved in /s/q: once a head is up there again, resume it "
        "with: prunetune submit x"
    )
    assert client.asked > 1  # it waited for the cluster to come back before giving up


def test_follow_rides_out_a_blip_and_a_dropped_log_stream(capsys) -> None:
    client = LostClient([refused_connection(), "RUNNING", "SUCCEEDED"])
    code = jobs.follow(client, "j", lambda why: why, poll_s=0.01, lost_after_s=30)
    assert code == 0
    lines = error_lines(capsys)
    assert lines[0].startswith("note: log stream interrupted") and lines[-1] == "job j SUCCEEDED"


def test_follow_counts_a_new_head_that_forgot_the_job_as_lost(capsys) -> None:
    forgot = RuntimeError("Request failed with status code 404: Job j does not exist.")
    code = jobs.follow(LostClient([forgot]), "j", lambda why: why, poll_s=0.01, lost_after_s=0.02)
    assert code == 69
    assert error_lines(capsys) == [
        "prunetune: error: the cluster no longer knows the job: a new head?"
    ]


class ForgetfulDashboard(Witness):
    """A dashboard of a new head: it answers, auth disabled, and knows no job."""

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(5)
                path = conn.recv(65536).decode("latin-1").split(" ")[1]
                if path == "/api/authentication_mode":
                    status, body = "200 OK", '{"authentication_mode": "disabled"}'
                elif path == "/api/version":
                    status, body = "200 OK", '{"version": "4", "ray_version": "2.60.0"}'
                else:
                    status, body = "404 Not Found", f"Job {path.rsplit('/', 1)[-1]} does not exist"
                conn.sendall(
                    f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n"
                    f"Connection: close\r\n\r\n{body}".encode()
                )


LOST_SPEC = """\
name: q
storage: {storage}
dataset: {{name: mnist1d}}
model: {{name: mlp}}
train: {{epochs: 3}}
pruning:
  method: schedule
  layers: [{{name: fc1, final_fraction: 0.5, start_epoch: 0, end_epoch: 1}}]
seeds: 1
"""  # a pruned trial and its matched baseline


def lost_study(tmp_path: Path, address: str, with_resume: bool = True) -> Path:
    """A created study submitted to `address`, one trial done and one running at its last snapshot
    (its driver gone): what a lost head leaves on the shared storage."""
    from orchestrator.study.directory import locate, open_for_run
    from search_spaces.expand import expand
    from search_spaces.spec import load_spec

    spec_file = write_spec(tmp_path / "q.yaml", LOST_SPEC.format(storage=tmp_path / "st"))
    spec = load_spec(spec_file)
    study = open_for_run(locate(spec), spec, expand(spec))
    trials = expand(spec).trials
    done = ("TERMINATED", {"training_iteration": 3, "status": "done"})
    running = ("RUNNING", {"training_iteration": 1, "status": "running"})
    rows = [
        [
            json.dumps({"trial_id": f"t{i}", "status": status, "relative_logdir": f"t{i}",
                        "config": {"trial": trials[i].to_dict()}}),
            json.dumps({"last_result": last, "num_failures": 0}),
        ]
        for i, (status, last) in enumerate([done, running])
    ]  # fmt: skip
    exp = Path(study.tune_path("trials"))
    exp.mkdir(parents=True)
    (exp / "experiment_state-2026-01-01_00-00-00.json").write_text(json.dumps({"trial_data": rows}))
    record = {"submission_id": "prunetune-q-abc", "address": address, "spec_hash": spec.hash}
    if with_resume:
        record["resume"] = f"prunetune submit {spec_file} --address {address} --follow"
    (Path(study.uri) / "submission.json").write_text(json.dumps(record))
    return Path(study.uri)


def status_of(study: Path, *options: str) -> tuple[int, str, str]:
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("RAY_")}
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli.app", "status", str(study), *options],
        cwd=repo, env={**env, "PYTHONPATH": str(repo)}, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    return done.returncode, done.stdout, done.stderr


def test_status_shows_a_study_whose_cluster_went_away_as_interrupted(no_ray_env) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    study = lost_study(no_ray_env, url)
    code, out, err = status_of(study)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].endswith(": interrupted"), out
    assert (
        f"job prunetune-q-abc at {url}: the cluster does not answer (connection refused)" in lines
    )
    assert lines[-1] == (
        f"resume it once a head is up at {url} again: prunetune submit "
        f"{no_ray_env / 'q.yaml'} --address {url} --follow"
    )
    assert "8265" not in out and "state unknown" not in out
    assert any("1 interrupted" in line for line in lines), out
    code, out, err = status_of(study, "--json")
    shown = json.loads(out)
    assert (shown["state"], shown["resume"]) == ("interrupted", lines[-1].split(" again: ")[1])
    assert shown["job"].endswith("the cluster does not answer (connection refused)")


def test_status_of_a_study_a_new_head_does_not_know(no_ray_env) -> None:
    """Also: a record from before submission.json named its resume command gets one built from
    the study's stored spec."""
    dashboard = ForgetfulDashboard()
    try:
        study = lost_study(no_ray_env, dashboard.url, with_resume=False)
        code, out, err = status_of(study)
    finally:
        dashboard.close()
    assert code == 0, err
    assert out.splitlines()[0].endswith(": interrupted"), out
    assert "the cluster does not know this job (a new head?)" in out
    assert out.splitlines()[-1] == (
        f"resume it once a head is up at {dashboard.url} again: prunetune submit "
        f"{study / 'spec.yaml'} --address {dashboard.url} --follow"
    )
