"""The Ray runtime a study's driver runs in: a new local Ray, or a connection to a cluster.

Local Ray is started with ``ray.init(address="local")``, never a bare ``ray.init()``, which would
silently attach to whatever cluster ``RAY_ADDRESS`` or Ray's temp folder points at. Token auth is
on (``RAY_AUTH_MODE=token`` unless the user set the variable): Ray 2.60 turns it on for new local
clusters anyway, and saying so explicitly keeps its warning out of the output (Ray reads the
variable once, when it is imported, so it is set before the import or not at all). With
``--address``, ``RAY_AUTH_MODE`` and the token come from the environment, as ``prunetune submit``
and the cluster images set them (Ray 2.60's
``ray/_private/authentication/authentication_token_setup.py``).

Tune settings (environment, read by Tune at ``fit``; the user's own values win):

- ``TUNE_GLOBAL_CHECKPOINT_S=10``: an experiment snapshot at most every 10 s, so a SIGKILL of the
  driver loses at most ~10 s of trial progress (trials re-run from their checkpoints; the numbers
  are the same on CPU).
- ``TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=1``: no CSV and TensorBoard loggers (they halve Tune's
  result throughput); the Tuner adds the JSON logger itself, since ``result.json`` is what
  ``results`` exports.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import sys
from collections.abc import Iterator

from trainables.errors import UserError

TUNE_ENV_DEFAULTS = {
    "TUNE_GLOBAL_CHECKPOINT_S": "10",
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    # Tune warns that the experiment-state sync is "slow" past 5 s; harmless, and noisy on busy
    # machines. The slow-sync warning (30 s) stays.
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
}
# Thread counts the workers would inherit; Ray sets OMP_NUM_THREADS per worker to the CPUs the
# trial was given when the driver's environment leaves it unset (and the trainable sets torch's).
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def tune_environment() -> None:
    """Apply :data:`TUNE_ENV_DEFAULTS` to ``os.environ`` where the user has not set them."""
    for key, value in TUNE_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)


@contextlib.contextmanager
def _restored_environment(keys: tuple[str, ...]) -> Iterator[None]:
    """Put `keys` of ``os.environ`` back as they were on exit (a caller's process, say a test
    session or a notebook, must not inherit the driver's Tune settings)."""
    saved = {key: os.environ.get(key) for key in keys}
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


ADDRESS_TIMEOUT_S = 5.0
_HOST_PORT = re.compile(r"(?:ray://)?\[?([A-Za-z0-9_.:-]+?)\]?:(\d{1,5})")


def check_address(address: str | None, timeout_s: float = ADDRESS_TIMEOUT_S) -> None:
    """Refuse a malformed or unreachable Ray address now, before anything is written.

    ``None`` (a new local Ray) and ``auto`` (found when Ray starts) pass; ``ray://HOST:PORT`` (Ray
    Client) and ``HOST:PORT`` (a cluster's GCS) must parse and accept a TCP connection within
    ``timeout_s`` seconds.
    """
    if address is None or address == "auto":
        return
    if address.startswith(("http://", "https://")):
        raise UserError(
            f"--address: {address!r} is a dashboard URL, which `prunetune submit` takes; `run` "
            "takes auto, ray://HOST:10001 (Ray Client) or HOST:PORT (the cluster's GCS)"
        )
    match = _HOST_PORT.fullmatch(address)
    if not match or not 0 < int(match.group(2)) < 65536:
        raise UserError(f"--address: must be auto, ray://HOST:PORT or HOST:PORT, got {address!r}")
    host, port = match.group(1), int(match.group(2))
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise UserError(
            f"--address: cannot reach {address} ({reason}); is the cluster up?"
        ) from None


@contextlib.contextmanager
def ray_session(address: str | None, verbose: bool = False) -> Iterator[None]:
    """Start local Ray (``address`` None) or connect to ``address``; shut it down on exit.

    If Ray is already initialised in this process (a test fixture, a notebook), it is used as is
    and left running. The environment variables set here are restored on exit. Workers' output
    reaches this terminal only when `verbose`. A cluster that cannot be joined is a UserError.
    """
    with _restored_environment((*TUNE_ENV_DEFAULTS, *THREAD_ENV)):
        if address is None and "ray" not in sys.modules:
            # Ray reads the mode once, at import: set it before, or leave it to Ray's own default
            # (which also turns token auth on for a new local cluster, with a warning). It stays
            # set: the imported Ray already holds it.
            os.environ.setdefault("RAY_AUTH_MODE", "token")
        import ray

        tune_environment()
        if ray.is_initialized():
            yield
            return
        logging_config = ray.LoggingConfig(log_level="WARNING")
        if address is None:
            for key in THREAD_ENV:
                os.environ.pop(key, None)
            ray.init(
                address="local",
                num_cpus=os.cpu_count(),
                include_dashboard=False,
                logging_config=logging_config,
                log_to_driver=verbose,
            )
        else:
            try:
                ray.init(address=address, logging_config=logging_config, log_to_driver=verbose)
            except (ConnectionError, TimeoutError, RuntimeError) as exc:
                detail = " ".join(str(exc).split())[:300]
                message = f"--address: cannot join the Ray cluster at {address}: {detail}"
                raise UserError(message) from None
        from orchestrator.cli.terminate import install

        install()  # after ray.init, which installs Ray's own SIGTERM handler
        try:
            yield
        finally:
            ray.shutdown()


def alive_nodes() -> list[dict[str, float]]:
    """The resources (``CPU``, ``GPU``, ...) of each alive node of the connected cluster."""
    import ray

    return [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]


def local_nodes() -> list[dict[str, float]]:
    """What a local Ray started by `ray_session` would have: every CPU and every visible GPU."""
    import torch

    return [{"CPU": float(os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())}]


def capacity_refusal(nodes: list[dict[str, float]], cpu: float, gpu: float) -> str | None:
    """Why trials of (cpu, gpu) can never start on these nodes (one line naming the field, what
    the nodes have and the override that fixes it), or None when some node holds one."""
    if any(n.get("CPU", 0) >= cpu and n.get("GPU", 0) >= gpu for n in nodes):
        return None
    has = "; ".join(f"{n.get('CPU', 0):g} CPU, {n.get('GPU', 0):g} GPU" for n in nodes)
    largest_gpu = max((n.get("GPU", 0) for n in nodes), default=0)
    if gpu > largest_gpu:
        fix = "resources.gpu=0 (CPU only)" if largest_gpu == 0 else f"resources.gpu={largest_gpu:g}"
        field, wants = "resources.gpu", f"{gpu:g} GPU"
    else:
        largest_cpu = max((n.get("CPU", 0) for n in nodes if n.get("GPU", 0) >= gpu), default=0)
        fix, field, wants = f"resources.cpu={largest_cpu:g}", "resources.cpu", f"{cpu:g} CPUs"
    return (
        f"{field}: each trial asks for {wants}, which no node of this cluster has (nodes: {has}); "
        f"run it with the override {fix}"
    )


def slots(nodes: list[dict[str, float]], cpu: float, gpu: float) -> int:
    """How many trials of (cpu, gpu) run at once on these nodes (a trial never spans nodes)."""

    def per_node(n: dict[str, float]) -> int:
        fits = [int(n.get("CPU", 0) // cpu)] if cpu > 0 else []
        if gpu > 0:
            fits.append(int(n.get("GPU", 0) // gpu))
        return min(fits) if fits else 1

    return sum(per_node(n) for n in nodes)


def check_capacity(cpu: float, gpu: float) -> None:
    """Refuse, before any trial is submitted, trials that no alive node of the connected cluster
    can hold (they would wait forever): :func:`capacity_refusal` as a UserError."""
    why = capacity_refusal(alive_nodes(), cpu, gpu)
    if why:
        raise UserError(why)


def trial_capacity(cpu: float, gpu: float) -> int:
    """How many trials of (cpu, gpu) fit in the connected cluster right now (at least 1)."""
    return max(1, slots(alive_nodes(), cpu, gpu))
