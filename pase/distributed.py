"""torchrun ranks, their devices and what they exchange: one place for ``pase train`` and ``pase extract``.

Outside ``torchrun`` every helper here sees one process and does nothing collective, so the
same code runs alone and as one of N ranks (the nanoGPT recipe: ``RANK`` unset means one process).
"""

from __future__ import annotations

import dataclasses
import os
import typing as tp

import torch
import torch.distributed as dist

T = tp.TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Ranks:
    """Where this process stands in a ``torchrun`` job (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
    ``LOCAL_WORLD_SIZE``) and the device it computes on; one process outside torchrun."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))

    @classmethod
    def from_env(cls) -> Ranks:
        """This process's place in the job, on the CPU (:meth:`on` picks another device)."""
        env = os.environ
        world = int(env.get("WORLD_SIZE", "1"))
        return cls(
            rank=int(env.get("RANK", "0")),
            world_size=world,
            local_rank=int(env.get("LOCAL_RANK", "0")),
            local_world_size=int(env.get("LOCAL_WORLD_SIZE", str(world))),
        )

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that logs, shows progress and writes shared files."""
        return self.rank == 0

    def on(self, spec: str) -> Ranks:
        """These ranks on device ``spec``: ``auto`` is CUDA when available, else the CPU; under
        torchrun a CUDA device becomes ``cuda:LOCAL_RANK``, one GPU per process on each machine.
        Raises torch's ``RuntimeError`` for a string that names no device."""
        if spec == "auto":
            spec = "cuda" if torch.cuda.is_available() else "cpu"
        device = torch.device(spec)
        if device.type == "cuda" and self.world_size > 1:
            device = torch.device("cuda", self.local_rank % max(1, torch.cuda.device_count()))
        return dataclasses.replace(self, device=device)


def init_group(ranks: Ranks, backend: str | None = None) -> bool:
    """Join the torchrun job of ``ranks`` (once); whether there is a group, i.e. more than one
    process. ``backend`` None: NCCL on CUDA, gloo on the CPU."""
    if ranks.world_size == 1:
        return False
    if ranks.device.type == "cuda":
        torch.cuda.set_device(ranks.device)
    if not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if ranks.device.type == "cuda" else "gloo"))
    return True


def close_group() -> None:
    """Leave the job's process group, if this process joined one."""
    if dist.is_initialized():
        dist.destroy_process_group()


def gather(obj: T, ranks: Ranks) -> list[T]:
    """``obj`` of every rank, in rank order (any picklable object; ``[obj]`` alone)."""
    if ranks.world_size == 1:
        return [obj]
    gathered: list[tp.Any] = [None] * ranks.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def any_rank(flag: bool, ranks: Ranks) -> bool:
    """Whether ``flag`` is set on any rank, e.g. a stop request: all ranks must leave a loop at the
    same step. A tensor reduction, cheap enough for every step."""
    if ranks.world_size == 1:
        return flag
    t = torch.tensor([float(flag)], device=ranks.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def main_rank_first(ranks: Ranks, build: tp.Callable[[], T]) -> T:
    """``build()`` on rank 0 first, then on the other ranks: what rank 0 writes to a disk cache
    (resampled audio, simulated rooms) the others read instead of recomputing it all at once."""
    result: T | None = None
    for main_turn in (True, False):
        if ranks.is_main == main_turn:
            result = build()
        if ranks.world_size > 1:
            dist.barrier()
    assert result is not None
    return result


def barrier(ranks: Ranks) -> None:
    """Wait for every rank (nothing to wait for alone)."""
    if ranks.world_size > 1:
        dist.barrier()
