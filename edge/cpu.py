"""What this CPU's integer instructions mean for an int8 file (torch-free).

ONNX Runtime's x86 int8 kernels multiply uint8 activations by int8 weights. With VNNI
(``avx512_vnni``, ``avx_vnni``) or AMX (``amx_int8``) the products are summed in 32 bits, exactly.
Without them (AVX2-only and AVX-512 CPUs before VNNI) the kernels use ``vpmaddubsw``, which adds
two neighbouring products into a *16-bit* sum that saturates: 255 x 127 x 2 = 64,770 does not fit
in 32,767. A file quantized with 8-bit weights then computes something else on those CPUs
(docs/benchmarks.md §11: a trained M0's logits 2.2x as far from the Q/DQ graph's exact result
as the quantization itself is from fp32).
With 7-bit weights (|w| <= 64, ONNX Runtime's ``reduce_range``) the pair sum is at most
255 x 64 x 2 = 32,640 and nothing saturates, on any CPU: this project's default for ONNX
Runtime files (``edge.quantize``). Non-x86 CPUs (Arm's dot-product instructions) sum in 32 bits.

Example:
    >>> flags = frozenset({"avx2", "fma"})
    >>> int8_isa(flags), u8s8_saturates(flags)
    ('x86-no-vnni', True)
"""

from __future__ import annotations

import platform
from functools import lru_cache
from pathlib import Path

VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")  # 32-bit int8 dot products
# the weights' range that no 16-bit pair sum can overflow: 255 * 64 * 2 = 32,640 <= 32,767
SAFE_WEIGHT_BITS = 7


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags (``/proc/cpuinfo``; empty where it cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def is_x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


def int8_isa(flags: frozenset[str] | None = None, x86: bool | None = None) -> str:
    """``vnni`` (exact 32-bit int8 sums), ``x86-no-vnni`` (16-bit pair sums that saturate) or
    ``non-x86``. ``flags``/``x86`` default to this machine's (tests pass others)."""
    x86 = is_x86() if x86 is None else x86
    if not x86:
        return "non-x86"
    flags = cpu_flags() if flags is None else flags
    return "vnni" if any(f in flags for f in VNNI_FLAGS) else "x86-no-vnni"


def u8s8_saturates(flags: frozenset[str] | None = None, x86: bool | None = None) -> bool:
    """Do ONNX Runtime's int8 kernels saturate on this CPU (for 8-bit weights)?"""
    return int8_isa(flags, x86) == "x86-no-vnni"


def describe_isa(flags: frozenset[str] | None = None) -> str:
    """The int8-relevant flags, in words (for reports: every figure names its CPU kind)."""
    flags = cpu_flags() if flags is None else flags
    shown = sorted(f for f in flags if f.startswith(("avx", "amx")) or "vnni" in f)
    return f"{int8_isa(flags)} ({' '.join(shown) or 'no AVX flags'})"


def int8_weight_warning(
    weight_bits: int | None, flags: frozenset[str] | None = None, x86: bool | None = None
) -> str | None:
    """One line when an int8 file with ``weight_bits``-bit weights would saturate here.

    ``None`` bits (a Q/DQ file that does not say, e.g. one made before the metadata existed or
    by another tool) is read as 8-bit, the quantizer's default.
    """
    bits = 8 if weight_bits is None else weight_bits
    if bits <= SAFE_WEIGHT_BITS or not u8s8_saturates(flags, x86):
        return None
    said = "" if weight_bits is not None else " (the file does not say; assumed)"
    return (
        f"this int8 file has {bits}-bit weights{said}: on this CPU (x86 without VNNI) ONNX "
        "Runtime's int8 kernels saturate and its outputs are wrong; re-export it here with "
        "'python -m edge export ... --precision int8' (7-bit weights, exact on every CPU)"
    )
