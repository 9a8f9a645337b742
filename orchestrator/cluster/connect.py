"""Talking to a Ray cluster safely: the auth token, the Jobs API connection, shared-storage checks.

The thin adapter between prunetune and a remote Ray cluster (Ray is imported inside the functions).

- :func:`read_auth_token` finds the token in Ray's order: ``RAY_AUTH_TOKEN``, then the file named by
  ``RAY_AUTH_TOKEN_PATH``, then ``~/.ray/auth_token``.
- :func:`connect` opens a ``JobSubmissionClient`` on a dashboard URL and sends the token as
  ``Authorization: Bearer <token>`` itself: Ray 2.60's client adds it only when the client
  process has ``RAY_AUTH_MODE=token`` set, which a laptop submitting to a cluster rarely has. An
  unreachable address, a missing token and a refused token each raise a one-line `UserError`.
- :func:`check_storage_shared` runs on the driver (``prunetune run --address ...``): on a cluster of
  more than one alive node it proves that every node sees the study storage, by writing a marker
  file and reading it back from one tiny task pinned to each node.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from results.tables.storage import is_uri, resolve
from trainables.errors import UserError

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

# Checked with a short timeout before the Jobs client is built (its own requests have none).
CONNECT_TIMEOUT_S = 10.0
TOKEN_HELP = "`ray get-auth-token` on the head node prints it"


class Unreachable(UserError):
    """The dashboard did not answer; ``reason`` is why, in a few words (``connection refused``)."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(_unreachable(url, reason))
        self.reason = reason


# --- the token -----------------------------------------------------------------------------------


def read_auth_token() -> tuple[str | None, str]:
    """(token, where it came from), in Ray's lookup order; (None, "") when there is none.

    Raises UserError when ``RAY_AUTH_TOKEN_PATH`` names a file that cannot be read or is empty.
    """
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if token:
        return token, "RAY_AUTH_TOKEN"
    path_text = os.environ.get("RAY_AUTH_TOKEN_PATH", "").strip()
    if path_text:
        path = Path(path_text).expanduser()
        try:
            token = path.read_text().strip()
        except OSError as exc:
            raise UserError(f"RAY_AUTH_TOKEN_PATH: cannot read {path}: {exc.strerror}") from None
        if not token:
            raise UserError(f"RAY_AUTH_TOKEN_PATH: {path} is empty")
        return token, f"RAY_AUTH_TOKEN_PATH ({path})"
    default = Path.home() / ".ray" / "auth_token"
    if default.is_file():
        token = default.read_text().strip()
        if token:
            return token, str(default)
    return None, ""


# --- the Jobs API connection ---------------------------------------------------------------------


def resolve_address(address: str | None) -> str:
    """The dashboard URL: `address`, else ``$RAY_API_SERVER_ADDRESS``, else ``$RAY_ADDRESS``.

    It must be an http(s) URL of the head's dashboard (port 8265 by default); a trailing slash is
    dropped. Raises UserError otherwise.
    """
    value = address or os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS")
    if not value:
        raise UserError(
            "--address: required: the cluster's dashboard URL, e.g. http://127.0.0.1:8265 "
            "(or set RAY_API_SERVER_ADDRESS)"
        )
    value = value.strip().rstrip("/")
    if not value.startswith(("http://", "https://")):
        raise UserError(
            f"--address: must be the dashboard URL http(s)://HOST:PORT (Jobs API, port 8265 by "
            f"default), got {value!r}"
        )
    return value


def connect(address: str) -> JobSubmissionClient:
    """A Jobs API client for the dashboard at `address` (see :func:`resolve_address`).

    Raises UserError, one line each, when the dashboard cannot be reached, when the cluster
    requires a token and none is configured, and when the cluster refuses the token.
    """
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    url = resolve_address(address)
    token, source = read_auth_token()
    mode = auth_mode(url)
    if mode == "token" and token is None:
        raise UserError(_missing_token(url))
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        with _address_env_removed():
            return JobSubmissionClient(url, headers=headers)
    except AuthenticationError as exc:
        if token is None or str(exc).startswith("Authentication required"):
            raise UserError(_missing_token(url)) from None
        raise UserError(_refused_token(url, source)) from None
    except ConnectionError as exc:
        raise Unreachable(url, reason_of(exc)) from None


def auth_mode(url: str) -> str | None:
    """The cluster's auth mode, "token" or "disabled", from the dashboard's public
    ``/api/authentication_mode`` (None if unknown). Raises UserError when it cannot be reached."""
    import requests

    try:
        response = requests.get(f"{url}/api/authentication_mode", timeout=CONNECT_TIMEOUT_S)
    except requests.Timeout:
        raise Unreachable(url, f"no answer within {CONNECT_TIMEOUT_S:.0f} s") from None
    except requests.ConnectionError as exc:
        raise Unreachable(url, reason_of(exc)) from None
    if response.status_code != 200:
        return None  # an older Ray, or a proxy in front of it: the Jobs client will tell
    try:
        return str(response.json().get("authentication_mode"))
    except ValueError:
        return None


def reason_of(exc: Exception) -> str:
    """Why a connection failed, in a few words: a known socket error, else the exception's class."""
    text = str(exc)
    for known in ("Connection refused", "Name or service not known", "No route to host"):
        if known in text:
            return known.lower()
    return type(exc).__name__


def _unreachable(url: str, reason: str) -> str:
    port = urlsplit(url).port or (443 if url.startswith("https:") else 80)
    return (
        f"cannot reach the Ray dashboard at {url} ({reason}): check --address and that the "
        f"head's dashboard port {port} is reachable from here (e.g. through an SSH tunnel)"
    )


def _missing_token(url: str) -> str:
    return (
        f"the cluster at {url} requires an auth token (RAY_AUTH_MODE=token) and none was found: "
        f"set RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH, or write ~/.ray/auth_token ({TOKEN_HELP})"
    )


def _refused_token(url: str, source: str) -> str:
    return f"the cluster at {url} refused the auth token from {source} (HTTP 403): use the cluster's token ({TOKEN_HELP})"


@contextlib.contextmanager
def _address_env_removed() -> Iterator[None]:
    """Ray's Jobs client lets RAY_API_SERVER_ADDRESS / RAY_ADDRESS override its address argument;
    an explicit --address must win, so both are hidden while the client is built."""
    saved = {
        k: os.environ.pop(k) for k in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS") if k in os.environ
    }
    try:
        yield
    finally:
        os.environ.update(saved)


# --- storage -------------------------------------------------------------------------------------


def _marker_visible(storage: str, marker_name: str, expected: str) -> str | None:
    """Runs on one node: None if the marker holds `expected` there, else why not (one phrase)."""
    import socket

    try:
        fs, root = resolve(storage)
        with fs.open_input_stream(f"{root}/{marker_name}") as stream:
            seen = stream.read().decode()
    except FileNotFoundError:
        return f"host {socket.gethostname()} does not see the marker file"
    except Exception as exc:  # any filesystem failure on that node is the answer
        return f"host {socket.gethostname()} cannot read the storage ({type(exc).__name__}: {exc})"
    return None if seen == expected else f"host {socket.gethostname()} sees a different marker"


def check_storage_shared(storage: str, timeout_s: float = 120.0) -> None:
    """Refuse storage that some alive node of the connected Ray cluster cannot see.

    Call after ``ray.init(address=...)`` on the driver, before the study starts. With one alive
    node it returns at once. Otherwise it writes ``<storage>/.prunetune-storage-check-<uuid>``
    (creating `storage` if needed), reads it back from a zero-CPU task pinned to each alive node
    (``NodeAffinitySchedulingStrategy(soft=False)``), and removes the marker. Raises UserError
    naming the first node that cannot see it (or does not answer within `timeout_s`).
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) <= 1:
        return
    fs, root = resolve(storage)
    absolute = storage if is_uri(storage) else root
    marker_name = f".prunetune-storage-check-{uuid.uuid4().hex}"
    expected = uuid.uuid4().hex
    try:
        fs.create_dir(root, recursive=True)
        with fs.open_output_stream(f"{root}/{marker_name}") as stream:
            stream.write(expected.encode())
    except OSError as exc:
        raise UserError(f"storage: cannot write to {storage!r} from the driver: {exc}") from None
    probe = ray.remote(num_cpus=0, max_retries=0)(_marker_visible)
    try:
        refs = {
            probe.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
            ).remote(absolute, marker_name, expected): n
            for n in nodes
        }
        ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=timeout_s)
        problems = []
        for ref, node in refs.items():
            if ref not in ready:
                problems.append(f"{_node_label(node)} did not answer within {timeout_s:.0f} s")
                continue
            try:
                reason = ray.get(ref)
            except ray.exceptions.RayError as exc:
                reason = f"the check task failed ({type(exc).__name__})"
            if reason is not None:
                problems.append(f"{_node_label(node)}: {reason}")
    finally:
        with contextlib.suppress(OSError):
            fs.delete_file(f"{root}/{marker_name}")
    if problems:
        raise UserError(
            f"storage: {storage!r} is not shared by all {len(nodes)} nodes of the cluster "
            f"({problems[0]}); a multi-node cluster needs a URI (s3://, gs://, ...) or a path "
            "that every node mounts at the same place"
        )


def _node_label(node: dict) -> str:
    return f"node {node.get('NodeManagerAddress', '?')} ({str(node['NodeID'])[:12]})"
