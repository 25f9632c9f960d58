"""Ray itself: reaching a cluster or starting a local runtime, and checking, before anything
is written, that the work can run there.

Every command that uses Ray (``tacfn search``, ``tacfn ablate``, ``tacfn train --workers N``)
calls :func:`check_ray_address` and, when it will start a local runtime
(:func:`starts_local_ray`), :func:`check_local_capacity`, then :func:`init_ray`.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import grpc
import ray
import torch
from ray import tune

from ..errors import ConfigError

RAY_CLIENT_PORT = 10001  # a ray:// address without a port


def check_ray_address(address: str | None, timeout: float = 3.0) -> None:
    """Fail fast when no Ray cluster answers at ``address``: Ray itself would retry for minutes.

    ``HOST:PORT`` must accept a TCP connection and answer a GCS call (a cluster with token
    authentication refuses it, which still proves a GCS); ``ray://HOST[:PORT]`` (Ray Client)
    must accept a TCP connection; ``auto`` and ``local`` are left to Ray.
    """
    if not address or address in ("auto", "local"):
        return
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if address.startswith("ray://") and not sep:
        host, port = target, str(RAY_CLIENT_PORT)
    if not host or not port.isdigit():
        raise ConfigError(
            f"Ray address {address!r}: expected HOST:PORT of a head node (e.g. 10.0.0.5:6379), ray://HOST:PORT or auto"
        )
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as err:
        raise ConfigError(
            f"cannot reach the Ray cluster at {address!r} within {timeout:g} s ({err.strerror or err}); "
            "is `ray start --head` running there?"
        ) from None
    if not address.startswith("ray://"):
        answer = _gcs_answer(f"{host}:{port}", timeout)
        if answer not in (grpc.StatusCode.OK, grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            raise ConfigError(
                f"{address!r} accepts connections but does not answer as a Ray cluster's head ({answer.name}); "
                "give the GCS port of `ray start --head` (6379 by default)"
            )


def _gcs_answer(target: str, timeout: float) -> grpc.StatusCode:
    """How a GCS ``GetClusterId`` call to ``target`` ends."""
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        try:
            stub.GetClusterId(gcs_service_pb2.GetClusterIdRequest(), timeout=timeout)  # type: ignore[attr-defined]  # protobuf: built at import
        except grpc.RpcError as err:
            return err.code()
    return grpc.StatusCode.OK


def starts_local_ray(address: str | None) -> bool:
    """Whether :func:`init_ray` starts a Ray runtime on this machine rather than joining one."""
    return not address and not os.environ.get("RAY_ADDRESS") and not ray.is_initialized()


def check_local_capacity(cpu: float, gpu: float, what: str, *, workers: int = 1, needs: str = "a trial") -> None:
    """Refuse work that needs more CPUs or GPUs than this machine has: on a local Ray runtime
    it would wait for them forever, so say so before anything is written. ``cpu`` and ``gpu``
    are what each of ``workers`` reserves; ``what`` names the setting that asked for them
    and ``needs`` the work (the error reads "WHAT: NEEDS needs ..."). A cluster may add
    nodes: not checked."""
    cpus, gpus = os.cpu_count() or 1, torch.cuda.device_count()
    total_cpu, total_gpu = workers * cpu, workers * gpu
    if total_cpu > cpus or total_gpu > gpus:
        per = f" ({workers} workers)" if workers > 1 else ""
        raise ConfigError(
            f"{what}: {needs} needs {total_cpu:g} CPUs and {total_gpu:g} GPUs{per}, but this machine has {cpus} CPUs "
            f"and {gpus} GPUs; ask for less, or give --address of a larger Ray cluster"
        )


def init_ray(address: str | None, *, dashboard: bool = False, num_cpus: int | None = None) -> None:
    """Connect to a cluster (``address``, checked first: see :func:`check_ray_address`) or
    start a local Ray runtime, its dashboard bound to 127.0.0.1."""
    check_ray_address(address)
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    # Trials may checkpoint every epoch and the store is the record of progress: Tune's
    # warning about frequent experiment snapshots is noise here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    kwargs: dict[str, Any] = {"include_dashboard": dashboard, "dashboard_host": "127.0.0.1", "log_to_driver": False}
    if address:
        kwargs = {"address": address, "log_to_driver": False}
    elif not os.environ.get("RAY_ADDRESS"):  # set for a driver `ray job submit` started on a cluster
        # A new local runtime. Tune starts every trial process with its own runtime
        # environment (environment variables), so the idle workers Ray prestarts for the
        # driver never run a trial: they only cost CPU to start and again to stop (2 s each
        # on 2 cores) just as the first trials start.
        kwargs["_system_config"] = {"prestart_worker_first_driver": False}
        if num_cpus:
            kwargs["num_cpus"] = num_cpus
    try:
        ray.init(**kwargs)
    except ConnectionError as err:
        raise ConfigError(f"cannot reach the Ray cluster at {address!r}: {str(err).splitlines()[0]}") from None


def unfinished(grid: tune.ResultGrid) -> bool:
    """Whether Tune's run ended with trials still to finish: Tune catches Ctrl-C (SIGINT)
    itself, saves the experiment and returns from ``fit`` as if it were done."""
    return grid.num_terminated + grid.num_errors < len(grid)
