"""Where a result was computed: the machine's CPU model and the instruction set torch uses, threads, device (and GPU),
and the library versions, recorded with every stored run and final attack.

A run repeats bit for bit only on the same instruction set and thread count (paper-mnist, re-run on an AVX-512 CPU,
differed from stage 0 on), so a reader of a store must know which machines made it: :func:`machine_label` names one
machine in a line, :func:`machine_lines` counts a store's runs per machine and says plainly when there are several.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable
from functools import lru_cache

import torch

#: The keys that identify a machine's numeric environment in a provenance dict (versions are listed apart).
MACHINE_KEYS = ("cpu", "isa", "threads", "device", "gpu")


@lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``'s ``model name``; elsewhere :func:`platform.processor`), or ``""``."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    return " ".join(value.split())
    except OSError:
        pass
    return platform.processor() or platform.machine() or ""


def cpu_capability() -> str:
    """The instruction-set level torch's CPU kernels use (``AVX2``, ``AVX512``, ``DEFAULT``...), or ``""``."""
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):  # torch < 2.1
        return ""


def provenance(device: str | torch.device | None = None) -> dict[str, object]:
    """Versions and the numeric environment a result depends on: robustal, torch, numpy and python versions, torch
    threads, CPU model and instruction set, and (when given) the device, with the GPU's name on CUDA."""
    import numpy

    import robustal

    out: dict[str, object] = {"robustal": robustal.__version__, "torch": torch.__version__,
                              "numpy": numpy.__version__, "python": platform.python_version(),
                              "threads": torch.get_num_threads(), "cpu": cpu_model(), "isa": cpu_capability()}
    if device is not None:
        out["device"] = str(device)
        if str(device).startswith("cuda") and torch.cuda.is_available():
            out["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return out


def machine_label(versions: dict) -> str:
    """One machine in words: ``Intel(R) Xeon(R) ... (AVX512), 2 threads, cpu``; keys a store predating them lacks are
    said to be unrecorded."""
    cpu = versions.get("cpu") or "CPU not recorded"
    isa = versions.get("isa")
    threads = versions.get("threads")
    plural = "" if threads == 1 else "s"
    parts = [f"{cpu} ({isa})" if isa else cpu,
             f"{threads} thread{plural}" if threads is not None else "threads not recorded"]
    device = versions.get("device")
    if device is not None:
        parts.append(f"{device} ({versions['gpu']})" if versions.get("gpu") else str(device))
    return ", ".join(parts)


def version_label(versions: dict) -> str:
    """The library versions in words: ``robustal 0.3.0, torch 2.5.1, numpy 2.1.3, python 3.11.9``."""
    return ", ".join(f"{k} {versions[k]}" for k in ("robustal", "torch", "numpy", "python") if versions.get(k))


def machine_lines(runs: Iterable[tuple[str, dict]]) -> list[str]:
    """Markdown lines naming the machines that made ``runs`` (``(name, versions)`` pairs): one line per distinct
    machine (CPU, instruction set, threads, device) with how many runs it made, and, when there are several, a
    sentence that says so plainly (such runs do not repeat bit for bit)."""
    counts: dict[str, list[str]] = {}
    for name, versions in runs:
        counts.setdefault(machine_label(versions or {}), []).append(name)
    if not counts:
        return []
    if len(counts) == 1:
        (label, names), = counts.items()
        return [f"Machine: {label} (all {len(names)} runs)."]
    total = sum(map(len, counts.values()))
    lines = [f"**These {total} runs were computed on {len(counts)} different machines** (CPU, instruction set, "
             "threads or device differ), so they do not repeat bit for bit across machines:", ""]
    lines += [f"- {label}: {len(names)} runs" + (f" ({', '.join(names)})" if len(names) <= 3 else "")
              for label, names in sorted(counts.items(), key=lambda kv: -len(kv[1]))]
    return lines


__all__ = ["MACHINE_KEYS", "cpu_capability", "cpu_model", "machine_label", "machine_lines", "provenance",
           "version_label"]
