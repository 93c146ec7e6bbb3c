"""Where a result was computed: the machine's CPU model and the instruction set torch uses, threads, device (and GPU),
and the library versions, recorded with every stored run and final attack.

A run repeats bit for bit only on the same instruction set and thread count (paper-mnist, re-run on an AVX-512 CPU,
differed from stage 0 on), so a reader of a store must know which machines made it: :func:`machine_label` names one
machine in a line, :func:`machine_lines` counts a store's runs per machine and says plainly when there are several.
"""

from __future__ import annotations

import platform
import subprocess
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

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


@lru_cache(maxsize=8)
def source_commit(where: str | Path | None = None) -> str:
    """The git commit of the checkout robustal runs from (``where``: default, this package's folder), with ``+``
    when its files differ from that commit; ``""`` without git, outside a checkout, or where the repository around
    the folder does not track it (a copy installed into a project's venv). A version string is bumped by hand and
    can be stale; the commit names the code that computed a result."""
    folder = Path(where) if where is not None else Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(folder), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        # an installed copy inside some other repository (a venv in a project) is not that repository's code
        tracked = subprocess.run(["git", "-C", str(folder), "ls-files", "--", "."], capture_output=True, text=True,
                                 timeout=10)
        if head.returncode != 0 or tracked.returncode != 0 or not tracked.stdout.strip():
            return ""
        dirty = subprocess.run(["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no", "--",
                                "."], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    return head.stdout.strip() + ("+" if dirty.returncode == 0 and dirty.stdout.strip() else "")


def provenance(device: str | torch.device | None = None) -> dict[str, object]:
    """Versions and the numeric environment a result depends on: robustal's version (and its git commit when it runs
    from a checkout), torch, numpy and python versions, torch threads, CPU model and instruction set, and (when given)
    the device, with the GPU's name on CUDA."""
    import numpy

    import robustal

    out: dict[str, object] = {"robustal": robustal.__version__, "torch": torch.__version__,
                              "numpy": numpy.__version__, "python": platform.python_version(),
                              "threads": torch.get_num_threads(), "cpu": cpu_model(), "isa": cpu_capability()}
    commit = source_commit()
    if commit:
        out["commit"] = commit
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
    """The library versions in words: ``robustal 0.4.0 (commit 0e08949a1b2c), torch 2.5.1, numpy 2.1.3, python
    3.11.9``; the commit only where the run recorded one (from a git checkout)."""
    words = [f"{k} {versions[k]}" for k in ("robustal", "torch", "numpy", "python") if versions.get(k)]
    if versions.get("commit") and words and words[0].startswith("robustal "):
        words[0] += f" (commit {versions['commit']})"
    return ", ".join(words)


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
           "source_commit", "version_label"]
