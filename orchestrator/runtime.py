"""The Ray runtime a study's driver runs in: a new local Ray, or a connection to a cluster.

Local Ray is started with ``ray.init(address="local")``, never a bare ``ray.init()``, which would
silently attach to whatever cluster ``RAY_ADDRESS`` or Ray's temp folder points at. Token auth is
on (``RAY_AUTH_MODE=token`` unless the user set the variable): Ray 2.60 turns it on for new local
clusters anyway, and saying so explicitly keeps its warning out of the output (Ray reads the
variable once, when it is imported, so it is set before the import or not at all). With
``--address``, ``RAY_AUTH_MODE`` and the token come from the environment, as ``prunetune submit``
and the cluster images set them (ray-optuna-notes A.14).

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
import sys
from collections.abc import Iterator

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


@contextlib.contextmanager
def ray_session(address: str | None) -> Iterator[None]:
    """Start local Ray (``address`` None) or connect to ``address``; shut it down on exit.

    If Ray is already initialised in this process (a test fixture, a notebook), it is used as is
    and left running. The environment variables set here are restored on exit.
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
            )
        else:
            ray.init(address=address, logging_config=logging_config)
        try:
            yield
        finally:
            ray.shutdown()


def trial_capacity(cpu: float, gpu: float) -> int:
    """How many trials of (cpu, gpu) fit in the connected cluster right now (at least 1)."""
    import ray

    total = ray.cluster_resources()
    fits = [int(total.get("CPU", 0) // cpu)] if cpu > 0 else []
    if gpu > 0:
        fits.append(int(total.get("GPU", 0) // gpu))
    return max(1, min(fits) if fits else 1)
