"""Where and how the CNN runs: CUDA when present, the CPU otherwise (issue 3, "Device").

* CUDA: bfloat16 autocast (Ampere and later run it on tensor cores; bf16 keeps float32's
  exponent range so activations cannot overflow as in fp16), channels_last tensors, large
  batches, pinned host memory and several decoding workers.
* CPU: float32, channels_last (about 2.3x faster than contiguous for EfficientNet-Lite0 with
  oneDNN, measured in ENVIRONMENT.md), torch threads = cores, one decoding worker process (the
  model keeps the cores busy; one worker decodes faster than it computes).

``resolve_runtime`` turns the ``DeviceConfig`` (where ``None`` means "pick for me") into a
concrete ``Runtime`` that the extraction loop and the benchmark both use.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass
from typing import ContextManager

import torch

_AMP = {"bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class DeviceConfig:
    """``device``: ``auto`` (CUDA if available), ``cpu``, ``cuda`` or ``cuda:N``. ``None``
    fields are chosen by ``resolve_runtime`` for the device."""

    device: str = "auto"
    batch_size: int | None = None
    """None: 256 on CUDA, 32 on CPU."""
    num_workers: int | None = None
    """Decoding worker processes. None: cores - 1 (at most 16) on CUDA, 1 on CPU; 0 decodes in
    the main process (no overlap; for debugging)."""
    amp_dtype: str | None = "bfloat16"
    """Autocast dtype on CUDA (``bfloat16``, ``float16`` or None for float32); the CPU always
    runs float32."""
    channels_last: bool = True
    threads: int | None = None
    """torch intra-op threads on CPU. None: all cores."""
    prefetch_factor: int = 4
    """Batches each worker keeps ready ahead of the model."""

    def __post_init__(self) -> None:
        if self.device != "auto" and self.device != "cpu" and not self.device.startswith("cuda"):
            raise ValueError(f"DeviceConfig.device must be 'auto', 'cpu' or 'cuda[:N]', got {self.device!r}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"DeviceConfig.batch_size must be positive, got {self.batch_size}")
        if self.num_workers is not None and self.num_workers < 0:
            raise ValueError(f"DeviceConfig.num_workers must be >= 0, got {self.num_workers}")
        if self.amp_dtype is not None and self.amp_dtype not in _AMP:
            raise ValueError(f"DeviceConfig.amp_dtype must be one of {sorted(_AMP)} or None, got {self.amp_dtype!r}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"DeviceConfig.threads must be positive, got {self.threads}")
        if self.prefetch_factor < 1:
            raise ValueError(f"DeviceConfig.prefetch_factor must be positive, got {self.prefetch_factor}")


def available_cores() -> int:
    """Cores this process may run on (the affinity mask, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class Runtime:
    """The concrete plan: device, batch size, workers, precision and memory format."""

    device: torch.device
    batch_size: int
    num_workers: int
    amp_dtype: torch.dtype | None
    channels_last: bool
    threads: int
    prefetch_factor: int

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def precision(self) -> str:
        return str(self.amp_dtype).removeprefix("torch.") if self.amp_dtype is not None else "float32"

    def autocast(self) -> ContextManager:
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def prepare(self, module: torch.nn.Module) -> torch.nn.Module:
        """Move a module to the device in the chosen memory format."""
        module = module.to(self.device)
        if self.channels_last:
            module = module.to(memory_format=torch.channels_last)
        return module

    def to_device(self, batch: torch.Tensor) -> torch.Tensor:
        batch = batch.to(self.device, non_blocking=self.is_cuda)
        if self.channels_last and batch.ndim == 4:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch

    def describe(self) -> str:
        name = torch.cuda.get_device_name(self.device) if self.is_cuda else f"CPU ({self.threads} threads)"
        return (
            f"{name}, {self.precision}, batch {self.batch_size}, {self.num_workers} decoding worker(s), "
            f"channels_last={self.channels_last}"
        )


def resolve_runtime(config: DeviceConfig = DeviceConfig()) -> Runtime:
    """Pick the device and fill every ``None`` of ``config``; sets torch's CPU thread count.

    Asking for ``cuda`` on a machine without CUDA is an error, not a silent CPU run.
    """
    if config.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(config.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"DeviceConfig.device={config.device!r} but CUDA is not available here")
    cores = available_cores()
    cuda = device.type == "cuda"
    threads = config.threads or cores
    if not cuda:
        torch.set_num_threads(threads)
    workers = config.num_workers
    if workers is None:
        workers = min(16, max(1, cores - 1)) if cuda else 1
    return Runtime(
        device=device,
        batch_size=config.batch_size or (256 if cuda else 32),
        num_workers=workers,
        amp_dtype=_AMP[config.amp_dtype] if (cuda and config.amp_dtype) else None,
        channels_last=config.channels_last,
        threads=threads,
        prefetch_factor=config.prefetch_factor,
    )
