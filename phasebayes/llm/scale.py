"""The generate stage on a Ray cluster: actors that each own one model take checkpoints from a queue.

With a ``[scale]`` section (or ``generate(..., scale=ScaleConfig(...))``) the sampling and scoring shards
of :func:`~phasebayes.llm.generate` are written by ``workers`` Ray actors instead of this process. Each
actor loads the base model once (a :class:`~phasebayes.llm.sampling.ShardWorker`) and then takes work
from one queue: first a sample shard per checkpoint, then — once every sample shard exists — a logp
shard per reference checkpoint (the samples of its ±K neighbours scored under it). Actors write the same
atomic shards as the serial run, straight into the output folder (on a multi-node cluster that folder
and the checkpoints must be on a shared file system), so:

- a shard depends only on the settings and its step: 1, 2 or 200 workers give the same samples and
  log-probabilities as the serial run (with the same torch thread count per process);
- a killed worker loses only its shard in flight: Ray restarts the actor and the shard is retried;
- a killed driver loses only shards in flight: a rerun of ``generate`` skips every finished shard.

Needs the ``scale`` extra (``pip install phasebayes[scale]``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

__all__ = ["ScaleConfig", "run_on_ray"]


@dataclass
class ScaleConfig:
    """Where and how wide the generate stage runs on Ray.

    Attributes
    ----------
    ray_address
        ``None`` (default): start a local Ray instance on this machine (``ray.init()``); ``"auto"``: join
        the cluster this machine belongs to (``ray start --head`` / ``ray start --address=...``); or a
        ``ray://host:10001`` client address. An already initialised Ray (e.g. in a notebook) is reused.
    workers
        Ray actors, each holding one copy of the base model.
    cpus_per_worker
        CPUs Ray reserves per actor; also the torch thread count of an actor unless
        :attr:`GenerateConfig.num_threads` is set (the serial run must use the same count to give
        bit-identical numbers).
    gpus_per_worker
        GPUs per actor (e.g. 1, or 0.5 to pack two small models per GPU); 0 = CPU only.
    max_restarts
        How often Ray restarts a crashed actor (-1 = without limit); its shard in flight is retried.
    """

    ray_address: str | None = None
    workers: int = 2
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    max_restarts: int = 3

    def validate(self) -> None:
        """Raise :class:`ConfigError` for invalid values."""
        if int(self.workers) < 1:
            raise ConfigError(f"[scale].workers must be >= 1, got {self.workers}.")
        if not self.cpus_per_worker > 0 or self.gpus_per_worker < 0:
            raise ConfigError("[scale].cpus_per_worker must be > 0 and gpus_per_worker >= 0.")
        if int(self.max_restarts) < -1:
            raise ConfigError(f"[scale].max_restarts must be >= -1 (-1 = no limit), got {self.max_restarts}.")


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ConfigError("the [scale] section needs Ray: pip install 'phasebayes[scale]' (or remove [scale]).") from e
    return ray


class _Actor:
    """Ray actor body: one :class:`ShardWorker` (created on first use, in the actor's process)."""

    def __init__(self, worker_args: dict[str, Any], threads: int) -> None:
        import torch

        torch.set_num_threads(max(1, int(threads)))
        from .sampling import ShardWorker

        self.worker = ShardWorker(**worker_args)

    def pid(self) -> int:
        return os.getpid()

    def run(self, kind: str, step: int) -> int:
        return self.worker.sample(step) if kind == "sample" else self.worker.score(step)


def run_on_ray(
    worker_args: dict[str, Any],
    todo_sample: Sequence[int],
    todo_logp: Sequence[int],
    scale: ScaleConfig,
    *,
    on_shard: Callable[[str, int, list[Any]], None] | None = None,
) -> None:
    """Write the missing sample shards, then the missing logp shards, with ``scale.workers`` Ray actors.

    Parameters
    ----------
    worker_args
        Keyword arguments of :class:`~phasebayes.llm.sampling.ShardWorker` (base model path,
        checkpoints, prompts, generate config, output folder).
    todo_sample, todo_logp
        Checkpoint steps whose sample / logp shards are missing.
    scale
        The :class:`ScaleConfig`.
    on_shard
        Called in the driver as ``on_shard(kind, step, actors)`` after each finished shard (progress, tests).

    A shard whose actor dies is put back on the queue (Ray restarts the actor up to
    ``scale.max_restarts`` times); :class:`ConfigError` when no actor is left.
    """
    from tqdm.auto import tqdm

    scale.validate()
    ray = _import_ray()
    cfg = worker_args["config"]
    started = False
    if not ray.is_initialized():
        if scale.ray_address is None:
            ray.init(num_cpus=max(1, round(scale.workers * scale.cpus_per_worker)), include_dashboard=False,
                     log_to_driver=False)
        else:
            ray.init(address=scale.ray_address, log_to_driver=False)
        started = True
    try:
        threads = int(cfg.num_threads or max(1, int(scale.cpus_per_worker)))
        remote = ray.remote(num_cpus=scale.cpus_per_worker, num_gpus=scale.gpus_per_worker,
                            max_restarts=int(scale.max_restarts))(_Actor)
        n_workers = min(int(scale.workers), max(len(todo_sample), len(todo_logp)))
        actors = [remote.remote(worker_args, threads) for _ in range(n_workers)]
        try:
            for kind, todo in (("sample", list(todo_sample)), ("logp", list(todo_logp))):
                if todo:
                    _drain(ray, actors, kind, todo, cfg.show_progress, on_shard, tqdm)
        finally:
            for a in actors:
                ray.kill(a, no_restart=True)
    finally:
        if started:
            ray.shutdown()


def _drain(ray: Any, actors: list[Any], kind: str, todo: list[int], show: bool, on_shard: Any, tqdm: Any) -> None:
    """Run ``kind`` shards for the steps in ``todo`` on the actors (a queue: a free actor takes the next)."""
    queue = list(todo)
    idle = list(actors)
    running: dict[Any, tuple[Any, int]] = {}
    bar = tqdm(total=len(queue), desc=f"{kind} (ray)", unit="ckpt", disable=not show)
    try:
        while queue or running:
            while queue and idle:
                actor, step = idle.pop(0), queue.pop(0)
                running[actor.run.remote(kind, step)] = (actor, step)
            done, _ = ray.wait(list(running), num_returns=1)
            ref = done[0]
            actor, step = running.pop(ref)
            try:
                ray.get(ref)
            except ray.exceptions.RayActorError:
                queue.append(step)  # the shard in flight is redone (by the restarted actor or another one)
                if _alive(ray, actor):
                    idle.append(actor)
                elif not idle and not running:
                    raise ConfigError(f"every Ray worker died; the finished shards are kept, rerun to resume ({kind} {step}).")
                continue
            idle.append(actor)
            bar.update(1)
            if on_shard is not None:
                on_shard(kind, step, actors)
    finally:
        bar.close()


def _alive(ray: Any, actor: Any) -> bool:
    """Whether the actor answers (after a restart) within a minute."""
    try:
        ray.get(actor.pid.remote(), timeout=60)
        return True
    except Exception:
        return False
