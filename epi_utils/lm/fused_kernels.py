"""Fused CPU kernels for EPI's per-step work on the flat parameter layout (issue 34).

Plain C (``fused_kernels.c`` beside this module) compiled at first use with the system C compiler (``$CC``, else ``cc``/``gcc``;
``-O3 -shared -fPIC -ffp-contract=off``, no ``-march=native``), loaded with ``ctypes`` and cached
as ``runs.cache_dir()/kernels/<hash of source, flags, compiler version>.so`` (written under a
private name and renamed into place: two test workers may build it at once). Frozen elements are
given by a packed bitmap over the parameters laid end to end (element ``i`` = bit ``i % 8`` of
byte ``i // 8``, as ``epi_utils.lm.bits.pack_bits``), so no int64 positions per step:

- :func:`fold_zero`: one pass per tensor (in cache-sized blocks) that folds the Taylor importance
  into an fp32 EMA, ``e <- beta e + (1 - beta) |p g|``, and zeroes the frozen gradients;
- :func:`count_frozen`: per-tensor frozen counts; :func:`adamw`: torch's AdamW arithmetic bit for
  bit in two passes that keep the frozen elements (blended back 8 lanes at a time);
- :func:`frozen_bits`: a step's packed frozen set from the tasks' packed critical sets and the
  owners of their overlaps, in one pass; :func:`patch_bits`: set or clear bits at positions;
- the mask refresh's (``epi_utils.isolation.refresh``): :func:`layer_means` (torch's per-tensor
  means, its summation order), :func:`top_k_bits` (exact top-k into a packed set; kept keys in a
  :class:`KeyBuffer`), :func:`scores_at`, :func:`overlaps`, :func:`overlap_owners`, :func:`and_count`.

Bitwise equal to the eager torch path: torch folds the EMA as ``e.mul_(beta)`` then
``add_(imp, alpha=1 - beta)``, whose CPU kernel is a fused multiply-add where torch's vector
kernels use one (AVX2/AVX512) and a multiply then an add elsewhere; the kernel is compiled in the
matching variant and checked against torch on odd sizes when loaded (a variant that differs is
not used). ``lib()`` is None when no compiler is found, the build fails, the self-test fails,
or ``EPI_FUSED_KERNELS=0``: callers then take the eager path (one warning naming the reason).
"""
from __future__ import annotations

import array
import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import torch

from epi_utils.lm.bits import pack_bits

ENV = "EPI_FUSED_KERNELS"

SOURCE_FILE = Path(__file__).with_name("fused_kernels.c")  # the kernels' C source (package data)
SOURCE = SOURCE_FILE.read_text(encoding="utf-8")

_STATE: dict = {}


def _compiler() -> str | None:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    return cc if cc and shutil.which(cc) else None


def _variants() -> list[list[str]]:
    """Compiler flags to try, the one matching torch's vector kernels first: a fused multiply-add
    where torch's CPU capability uses one (x86 AVX2 / AVX512: ``-mavx2 -mfma``, safe since torch
    detected it on this CPU; arm64 always has it), a multiply then an add otherwise."""
    base = ["-O3", "-shared", "-fPIC", "-ffp-contract=off", "-std=c99"]
    cap = torch.backends.cpu.get_cpu_capability()
    import platform

    machine = platform.machine().lower()
    fma = []
    if machine in ("x86_64", "amd64") and cap in ("AVX2", "AVX512"):
        fma = [base + ["-mavx2", "-mfma", "-DEPI_FMA=1"]]
    elif machine in ("aarch64", "arm64"):
        fma = [base + ["-DEPI_FMA=1"]]
    return fma + [base + ["-DEPI_FMA=0"]]


def _build(cc: str, flags: list[str]) -> Path:
    """Compile (or reuse) the shared object for ``flags``; atomic write into the cache."""
    from epi_utils.workbench.runs import cache_dir

    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=60).stdout.splitlines()[:1]
    key = hashlib.sha256("\0".join([SOURCE, " ".join(flags), *version, sys.platform]).encode()).hexdigest()[:20]
    folder = cache_dir() / "kernels"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"epi_{key}.so"
    if target.exists():
        return target
    with tempfile.TemporaryDirectory(dir=folder, prefix=".build-") as tmp:
        src, out = Path(tmp) / "epi.c", Path(tmp) / "epi.so"
        src.write_text(SOURCE)
        res = subprocess.run([cc, *flags, str(src), "-o", str(out), "-lm"], capture_output=True, text=True,
                             timeout=300)
        if res.returncode != 0:
            raise RuntimeError(f"{cc} failed: {res.stderr.strip()[-500:]}")
        os.replace(out, target)
    return target


def _load(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    i64, ptr, f32 = ctypes.c_int64, ctypes.c_void_p, ctypes.c_float
    lib.epi_fold_zero.argtypes = [i64, ptr, ptr, ptr, ptr, ptr, f32, f32, ptr, i64]
    lib.epi_fold_zero.restype = None
    lib.epi_count.argtypes = [i64, ptr, ptr, ptr, i64, ptr]
    lib.epi_count.restype = None
    lib.epi_patch_bits.argtypes = [ptr, ptr, ptr, i64]
    lib.epi_patch_bits.restype = None
    lib.epi_frozen_bits.argtypes = [ptr, ptr, i64, i64, i64, ptr, i64, i64]
    lib.epi_frozen_bits.restype = None
    lib.epi_frozen_bits_at.argtypes = [ptr, ptr, i64, i64, i64, ptr, ptr, i64, i64]
    lib.epi_frozen_bits_at.restype = None
    lib.epi_adamw_moments.argtypes = [i64, ptr, ptr, ptr, f32, f32, f32, f32, ptr, i64, i64]
    lib.epi_adamw_moments.restype = None
    lib.epi_adamw_params.argtypes = [i64, ptr, ptr, ptr, f32, f32, ptr, i64, i64]
    lib.epi_adamw_params.restype = None
    lib.epi_top_k.argtypes = [ptr, i64, ptr, ptr, ptr, i64, i64, i64, i64, ptr, i64, i64, ptr, ptr]
    lib.epi_top_k.restype = i64
    lib.epi_scores_at.argtypes = [ptr, i64, ptr, ptr, ptr, i64, ptr, i64, ptr]
    lib.epi_scores_at.restype = None
    lib.epi_overlap_owners.argtypes = [i64] + [ptr] * 10 + [i64, ptr, i64, ptr]
    lib.epi_overlap_owners.restype = None
    lib.epi_overlaps.argtypes = [ptr, i64, i64, ptr, ptr]
    lib.epi_overlaps.restype = None
    lib.epi_and_count.argtypes = [ptr, ptr, i64]
    lib.epi_and_count.restype = i64
    lib.epi_keys_new.argtypes = []
    lib.epi_keys_new.restype = ptr
    lib.epi_keys_count.argtypes = [ptr]
    lib.epi_keys_count.restype = i64
    lib.epi_keys_take.argtypes = [ptr, ptr]
    lib.epi_keys_take.restype = None
    lib.epi_means.argtypes = [ptr, i64, ptr, i64, ptr]
    lib.epi_means.restype = None
    return lib


def _self_test(lib) -> bool:
    """The kernel's EMA fold equals torch's eager fold bit for bit on odd sizes (vector bodies and
    scalar tails), including a pass with the work spread over the whole tensor."""
    g = torch.Generator().manual_seed(0)
    beta = 0.9
    for n in (1, 7, 13, 31, 64, 1001, 4099, 70001):
        p, gr = torch.randn(n, generator=g), torch.randn(n, generator=g)
        e = torch.rand(n, generator=g)
        want = e.clone().mul_(beta).add_(p.mul(gr).abs_(), alpha=1.0 - beta)
        got = e.clone()
        fold_zero(lib, [p], [gr], [got], beta, None, [n])
        if not torch.equal(got, want):
            return False
    return _adamw_self_test(lib, g) and _top_k_self_test(lib, g)


def _top_k_self_test(lib, g: torch.Generator) -> bool:
    """:func:`top_k_bits` marks what a stable descending sort's first ``k`` are (ties by lower
    position), on scores divided per tensor as ``flat_scores`` does, with many ties, through both
    the sampled and the exact bracket."""
    sizes = [3, 700, 1, 4100]
    n = sum(sizes)
    for sample in (0, 500):
        v = torch.randint(0, 40, (n,), generator=g).float() * 0.25
        div = torch.tensor([0.5, 3.0, 0.0, 1.7])
        s = torch.cat([x / d if d > 0 else torch.zeros_like(x) for x, d in zip(torch.split(v, sizes), div.tolist())])
        for k in (1, 37, n // 20, n - 1):
            want = torch.zeros(n, dtype=torch.bool)
            want[torch.sort(s, descending=True, stable=True).indices[:k]] = True
            out = torch.zeros((n + 7) // 8, dtype=torch.uint8)
            if top_k_bits(lib, v, sizes, div, k, out, sample=sample) != 0 or not torch.equal(out, pack_bits(want)):
                return False
    return True


def _eager_adamw(p, grad, m, v, *, lr, b1, b2, eps, wd, t) -> None:
    """torch's eager AdamW arithmetic (as ``MaskedAdamW``'s eager path), in place."""
    m.mul_(b1).add_(grad, alpha=1 - b1)
    v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
    denom = (v / (1 - b2 ** t)).sqrt_().add_(eps)
    p.mul_(1 - lr * wd).addcdiv_(m, denom, value=-lr / (1 - b1 ** t))


def _adamw_self_test(lib, g: torch.Generator) -> bool:
    """:func:`adamw` equals torch's eager AdamW bit for bit (two steps, odd sizes, with and
    without frozen elements, which must keep their values)."""
    hp = dict(lr=1e-3, b1=0.9, b2=0.999, eps=1e-8, wd=0.01)
    for n in (1, 63, 65, 1001, 70001):
        frozen = torch.rand(n + 9, generator=g) < 0.1
        bits = pack_bits(frozen)
        for use_bits in (False, True):
            x = [torch.randn(n, generator=g) * s for s in (1.0, 0.01, 0.01)] + [torch.rand(n, generator=g) * 1e-3]
            before, want = [t.clone() for t in x], [t.clone() for t in x]
            for t in (1, 2):
                _eager_adamw(want[0], want[1], want[2], want[3], t=t, **hp)
                adamw(lib, x[0], x[1], x[2], x[3], t=t, bits=bits if use_bits else None, offset=9, **hp)
            if use_bits:  # frozen elements keep their values bit for bit
                want = [torch.where(frozen[9:], b, w) for b, w in zip(before, want)]
            if not all(torch.equal(a, b) for a, b in zip(x, want)):
                return False
    return True


def adamw(kern, p: torch.Tensor, grad: torch.Tensor, m: torch.Tensor, v: torch.Tensor, *, lr: float, b1: float,
          b2: float, eps: float, wd: float, t: float, bits: torch.Tensor | None = None, offset: int = 0) -> None:
    """One AdamW step of fp32 contiguous CPU ``p`` with moments ``m``, ``v`` (step count ``t``)
    in torch's eager arithmetic, bit for bit, in two kernel passes and torch's own denominator
    ``sqrt(v / bc2) + eps`` (torch's vector ``sqrt`` differs from IEEE's in the last bit on some
    CPUs); the elements set in ``bits`` from ``offset`` on (the tensor's place in the flat layout)
    keep their parameter and moments bit for bit (no update, no weight decay)."""
    n = p.numel()
    nbytes = 0 if bits is None else bits.numel()
    bp = 0 if bits is None else bits.data_ptr()
    kern.epi_adamw_moments(n, grad.data_ptr(), m.data_ptr(), v.data_ptr(), b1, 1 - b1, b2, 1 - b2, bp, nbytes, offset)
    denom = (v / (1 - b2 ** t)).sqrt_().add_(eps)
    kern.epi_adamw_params(n, p.data_ptr(), m.data_ptr(), denom.data_ptr(), 1 - lr * wd, -lr / (1 - b1 ** t),
                          bp, nbytes, offset)


def lib():
    """The loaded kernels, or None (eager path): ``EPI_FUSED_KERNELS=0``, no C compiler, a failed
    build or self-test (one warning naming the reason, once per process)."""
    if os.environ.get(ENV, "1") == "0":
        return None
    if "lib" in _STATE:
        return _STATE["lib"]
    reason, found = None, None
    cc = _compiler()
    if sys.byteorder != "little":
        reason = "big-endian machine"
    elif cc is None:
        reason = "no C compiler found (set CC, or install cc/gcc)"
    else:
        for flags in _variants():
            try:
                cand = _load(_build(cc, flags))
            except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
                reason = f"build failed: {exc}"
                continue
            if _self_test(cand):
                found = cand
                break
            reason = "the compiled kernel does not match torch's eager arithmetic bit for bit"
    if found is None:
        warnings.warn(f"EPI fused kernels unavailable ({reason}); using the eager torch path", RuntimeWarning,
                      stacklevel=2)
    _STATE["lib"] = found
    return found


def _ptrs(tensors) -> array.array:
    """int64 array of the tensors' data pointers (0 for None); its address: ``_addr``."""
    return array.array("q", [0 if t is None else t.data_ptr() for t in tensors])


def _addr(a: array.array) -> int:
    return a.buffer_info()[0]


_LAYOUTS: dict = {}


def _layout(sizes) -> tuple[torch.Tensor, torch.Tensor]:
    """int64 sizes and offsets of tensors laid end to end (cached: an optimizer's sizes are fixed)."""
    key = tuple(sizes)
    if key not in _LAYOUTS:
        if len(_LAYOUTS) > 64:
            _LAYOUTS.clear()
        sz = torch.tensor(key, dtype=torch.int64)
        _LAYOUTS[key] = (sz, torch.cumsum(sz, 0) - sz)
    return _LAYOUTS[key]


def fold_zero(kern, params, grads, emas, beta: float, bits: torch.Tensor | None, sizes) -> None:
    """Per tensor ``t`` (fp32, contiguous, ``sizes[t]`` elements, laid end to end over ``bits``):
    ``emas[t] <- beta emas[t] + (1 - beta) |params[t] grads[t]|`` (skipped where ``emas[t]`` is
    None; a None gradient counts as zeros), then every frozen element of ``grads[t]`` set to 0."""
    sz, off = _layout(sizes)
    p, g, e = _ptrs(params), _ptrs(grads), _ptrs(emas)
    kern.epi_fold_zero(len(sz), sz.data_ptr(), off.data_ptr(), _addr(p), _addr(g), _addr(e),
                       1.0 - beta, beta, 0 if bits is None else bits.data_ptr(),
                       0 if bits is None else bits.numel())


def count_frozen(kern, bits: torch.Tensor, sizes) -> list[int]:
    """Number of frozen (set) bits of each tensor's range."""
    sz, off = _layout(sizes)
    out = torch.empty(len(sz), dtype=torch.int64)
    kern.epi_count(len(sz), sz.data_ptr(), off.data_ptr(), bits.data_ptr(), bits.numel(), out.data_ptr())
    return out.tolist()


def frozen_bits(sets: list, self_index: int, owner: torch.Tensor, tid: int,
                pos: torch.Tensor | None = None) -> torch.Tensor | None:
    """With the kernels, one pass: the packed frozen set of a step of task ``tid`` from the packed
    critical ``sets`` (uint8, equal sizes; ``sets[self_index]`` is the task's own, -1: none): the
    OR of the others, the elements claimed by two or more sets frozen when their owner (``owner``,
    int8, in position order) is neither -1 nor ``tid``. ``pos``: the overlap elements' sorted int32
    positions where the caller keeps them (then written bit by bit after the OR instead of found
    by a bit scan of every word; the same bits). None without the kernels."""
    kern = lib() if all(b.is_cpu and b.is_contiguous() for b in sets) else None
    if kern is None or not sets:
        return None
    owner = owner.to(torch.int8).contiguous()  # alive during the call
    ptrs = array.array("q", [b.data_ptr() for b in sets])
    acc = torch.empty(sets[0].numel(), dtype=torch.uint8)
    if pos is not None and pos.dtype == torch.int32 and pos.is_contiguous() and pos.numel() == owner.numel():
        kern.epi_frozen_bits_at(acc.data_ptr(), _addr(ptrs), len(sets), self_index, acc.numel(), pos.data_ptr(),
                                owner.data_ptr(), owner.numel(), tid)
    else:
        kern.epi_frozen_bits(acc.data_ptr(), _addr(ptrs), len(sets), self_index, acc.numel(), owner.data_ptr(),
                             owner.numel(), tid)
    return acc


def patch_bits(bits: torch.Tensor, pos: torch.Tensor, val: torch.Tensor) -> torch.Tensor:
    """Set (``val`` True) or clear the bits at sorted distinct positions ``pos`` of a packed uint8
    set, in place (the kernel when loaded, else torch ops on the touched bytes); returns ``bits``."""
    if pos.numel() == 0:
        return bits
    pos = pos.to(torch.int64).contiguous()
    kern = lib() if bits.device.type == "cpu" and bits.is_contiguous() else None
    if kern is not None:
        v = val.to(torch.uint8).contiguous()
        kern.epi_patch_bits(bits.data_ptr(), pos.data_ptr(), v.data_ptr(), pos.numel())
        return bits
    byte = pos >> 3
    bit = torch.ones_like(pos).bitwise_left_shift_(pos & 7)
    ub, inv = torch.unique_consecutive(byte, return_inverse=True)
    touched = torch.zeros(ub.numel(), dtype=torch.int64, device=bits.device).index_add_(0, inv, bit)
    wanted = torch.zeros_like(touched).index_add_(0, inv, bit * val.to(torch.int64))
    cur = bits.index_select(0, ub).to(torch.int64)
    bits.index_copy_(0, ub, ((cur & ~touched) | wanted).to(torch.uint8))
    return bits


def top_k_bits(kern, v: torch.Tensor, sizes, divisors: torch.Tensor | None, k: int, out: torch.Tensor, *,
               lo: int = 0, hi: int | None = None, sample: int = 0, wide: torch.Tensor | None = None,
               keys: "KeyBuffer | None" = None) -> int:
    """Exact top-``k`` of the scores at positions ``[lo, hi)`` of the fp32 contiguous CPU vector
    ``v`` (tensors of ``sizes`` laid end to end; with ``divisors``, fp32 ``(len(sizes),)``, each
    tensor's scores are ``v / divisors[t]``, 0 where the divisor is not > 0, as
    ``ImportanceTracker.flat_scores``), ORed into the packed uint8 set ``out`` (element ``i`` = bit
    ``i % 8`` of byte ``i // 8``): ties at the ``k``-th largest value broken by lower position, as
    a stable descending sort (``-0 == +0``). ``sample``: scores drawn (stratified, fixed seed) to
    bracket the threshold so that one pass over ``v`` usually suffices (0: a 12-bit histogram
    pass first). ``wide`` (packed, ``out``'s size) and ``keys`` (a :class:`KeyBuffer`): the
    elements at or above the threshold's bracket (a superset of the set) and their scores' order
    keys, appended in position order (room sized from the bracket), for :func:`overlap_owners`.
    Returns 0; 1 when a score is NaN (``out`` is
    then undefined: take the eager path); 2 when memory ran out."""
    hi = v.numel() if hi is None else hi
    sz, off = _layout(sizes)
    d = None if divisors is None else divisors.to(torch.float32).contiguous()
    w = (0, 0) if wide is None or keys is None else (wide.data_ptr(), keys.handle)
    return int(kern.epi_top_k(v.data_ptr(), len(sz), sz.data_ptr(), off.data_ptr(), 0 if d is None else d.data_ptr(),
                              0 if d is None else 1, lo, hi, int(k), out.data_ptr(), out.numel(), int(sample), *w))


class KeyBuffer:
    """The order keys that :func:`top_k_bits` keeps (with ``wide``), in a buffer the kernel sizes
    from its bracket and grows; :meth:`take` gives them as int32 ``(count,)`` (None: none kept,
    the whole range was the set) and frees the buffer."""

    def __init__(self, kern):
        self.kern, self.handle = kern, kern.epi_keys_new()
        if not self.handle:
            raise MemoryError("epi_keys_new")

    def take(self) -> torch.Tensor | None:
        count = int(self.kern.epi_keys_count(self.handle))
        out = torch.empty(max(count, 0), dtype=torch.int32)
        self.kern.epi_keys_take(self.handle, out.data_ptr() if count > 0 else None)
        self.handle = None
        return out if count >= 0 else None

    def __del__(self):
        if getattr(self, "handle", None):
            self.kern.epi_keys_take(self.handle, None)
            self.handle = None


def scores_at(kern, v: torch.Tensor, sizes, divisors: torch.Tensor | None, pos: torch.Tensor) -> torch.Tensor:
    """fp32 scores (as :func:`top_k_bits` reads them) at sorted int64 positions ``pos``."""
    sz, off = _layout(sizes)
    d = None if divisors is None else divisors.to(torch.float32).contiguous()
    pos = pos.to(torch.int64).contiguous()
    out = torch.empty(pos.numel(), dtype=torch.float32)
    kern.epi_scores_at(v.data_ptr(), len(sz), sz.data_ptr(), off.data_ptr(), 0 if d is None else d.data_ptr(),
                       0 if d is None else 1, pos.data_ptr(), pos.numel(), out.data_ptr())
    return out


def overlap_owners(kern, claims: list, pos: torch.Tensor) -> torch.Tensor:
    """int8 owners of the elements at sorted int64 positions ``pos`` (claimed by two or more sets):
    ``claims`` = ``[(packed set, task id, source)]`` in the sets' stored order, ``source`` = ``None``
    for a pinned set, ``"none"`` for a set without new scores, ``(wide, keys)`` as kept by
    :func:`top_k_bits`, else ``(buffer, sizes, divisors)`` as :func:`top_k_bits` reads the scores
    (see ``IsolationPolicy._owners_at`` for the rule)."""
    if len(claims) > 128:
        raise ValueError("at most 128 sets")
    keep, cols = [], {k: [] for k in ("kind", "tid", "v", "nt", "sz", "off", "div", "wide", "keys")}
    for bits, tid, src in claims:
        row = dict(kind=0 if src is None else 2 if isinstance(src, str) else 3 if len(src) == 2 else 1, tid=tid,
                   v=0, nt=0, sz=0, off=0, div=0, wide=0, keys=0)
        if row["kind"] == 1:
            v, sizes, d = src
            sz, off = _layout(sizes)
            d = None if d is None else d.to(torch.float32).contiguous()
            keep += [sz, off, d]
            row.update(v=v.data_ptr(), nt=len(sz), sz=sz.data_ptr(), off=off.data_ptr(),
                       div=0 if d is None else d.data_ptr())
        elif row["kind"] == 3:
            row.update(wide=src[0].data_ptr(), keys=src[1].data_ptr())
        for k, x in row.items():
            cols[k].append(x)
    arrs = [array.array("q", x) for x in ([b.data_ptr() for b, _, _ in claims], *cols.values())]
    pos = pos.to(torch.int64).contiguous()
    own = torch.empty(pos.numel(), dtype=torch.int8)
    kern.epi_overlap_owners(len(claims), *[_addr(a) for a in arrs], claims[0][0].numel(), pos.data_ptr(), pos.numel(),
                            own.data_ptr())
    return own


def _mean_lanes(kern) -> int | None:
    """fp32 lanes of torch's CPU sum that :func:`layer_means` reproduces on this machine (8 or 16),
    found once per process by checking each against ``torch.mean`` (:func:`_means_self_test`), else None.
    Checked, not read off the CPU capability: on an AVX512 AMD EPYC torch 2.13's fp32 sum runs 8 lanes."""
    if torch.get_num_threads() != 1:
        return None  # torch splits a sum between its threads from 32768 elements
    if "lanes" not in _STATE:
        import platform

        x86 = platform.machine().lower() in ("x86_64", "amd64")
        found = [w for w in (8, 16) if x86 and _means_self_test(kern, w)]
        _STATE["lanes"] = found[0] if found else None
    return _STATE["lanes"]


def _means_self_test(kern, lanes: int) -> bool:
    """:func:`layer_means` equals ``torch.stack([v.mean() for v in views])`` bit for bit on sizes
    around every branch of torch's cascade sum (scalar rows, vector rows, each level's step)."""
    g = torch.Generator().manual_seed(1)
    sizes = [1, 3, 7, 8, 9, 15, 16, 17, 31, 33, 63, 64, 65, 127, 129, 255, 257, 1000, 1023, 1024, 1025, 4097,
             16383, 16384, 16385, 65536, 65537, 131071, 262147, 1 << 20, (1 << 20) + 13]
    v = torch.rand(sum(sizes), generator=g).mul_(torch.randn(sum(sizes), generator=g).exp_())
    want = torch.stack([x.mean() for x in torch.split(v, sizes)])
    sz, _ = _layout(sizes)
    got = torch.empty(len(sizes), dtype=torch.float32)
    kern.epi_means(v.data_ptr(), len(sizes), sz.data_ptr(), lanes, got.data_ptr())
    return torch.equal(got, want)


def layer_means(kern, v: torch.Tensor, sizes) -> torch.Tensor | None:
    """fp32 ``(len(sizes),)``: each tensor's ``torch.mean`` of the contiguous fp32 CPU vector ``v``
    (tensors of ``sizes`` laid end to end), the same floats as torch computes them (its summation
    order, see ``epi_means`` in the C source), in one call instead of one torch op per tensor. None
    where that order is not reproduced (torch with several threads splits its sums between them; a CPU
    where neither 8 nor 16 lanes pass the check against torch, :func:`_mean_lanes`): take torch's means."""
    if torch.get_num_threads() != 1 or v.dtype != torch.float32 or not v.is_contiguous():
        return None
    lanes = _mean_lanes(kern)
    if lanes is None:
        return None
    sz, _ = _layout(sizes)
    out = torch.empty(len(sz), dtype=torch.float32)
    kern.epi_means(v.data_ptr(), len(sz), sz.data_ptr(), lanes, out.data_ptr())
    return out


def overlaps(kern, sets: list) -> tuple[torch.Tensor, int]:
    """Over packed uint8 sets of equal size: the sorted int64 positions of the elements in two or
    more of them, and the number of elements in any."""
    ptrs = array.array("q", [b.data_ptr() for b in sets])
    counts = torch.zeros(2, dtype=torch.int64)
    nbytes = sets[0].numel()
    kern.epi_overlaps(_addr(ptrs), len(sets), nbytes, None, counts.data_ptr())
    pos = torch.empty(int(counts[1]), dtype=torch.int64)
    if pos.numel():
        kern.epi_overlaps(_addr(ptrs), len(sets), nbytes, pos.data_ptr(), counts.data_ptr())
    return pos, int(counts[0])


def and_count(kern, a: torch.Tensor, b: torch.Tensor) -> int:
    """Number of elements in both packed uint8 sets ``a`` and ``b`` (same size)."""
    return int(kern.epi_and_count(a.data_ptr(), b.data_ptr(), a.numel()))
