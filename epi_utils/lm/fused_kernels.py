"""Fused CPU kernels for EPI's per-step work on the flat parameter layout (issue 34).

Plain C compiled at first use with the system C compiler (``$CC``, else ``cc``/``gcc``;
``-O3 -shared -fPIC -ffp-contract=off``, no ``-march=native``), loaded with ``ctypes`` and cached
as ``runs.cache_dir()/kernels/<hash of source, flags, compiler version>.so`` (written under a
private name and renamed into place: two test workers may build it at once). Frozen elements are
given by a packed bitmap over the parameters laid end to end (element ``i`` = bit ``i % 8`` of
byte ``i // 8``, as ``epi_utils.isolation.state.pack_bits``), so no int64 positions per step:

- :func:`fold_zero`: one pass per tensor (in cache-sized blocks) that folds the Taylor importance
  into an fp32 EMA, ``e <- beta e + (1 - beta) |p g|``, and zeroes the frozen gradients;
- :func:`count_frozen`: per-tensor frozen counts; :func:`adamw`: torch's AdamW arithmetic bit for
  bit in two passes that skip the frozen elements (no save and restore);
- :func:`frozen_bits`: a step's packed frozen set from the tasks' packed critical sets and the
  owners of their overlaps, in one pass; :func:`patch_bits`: set or clear bits at positions.

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

ENV = "EPI_FUSED_KERNELS"

SOURCE = r"""
#include <stdint.h>
#include <string.h>
#include <math.h>
#if EPI_FMA
#define FOLD(e, x, a, b) fmaf((x), (a), (e) * (b))
#else
#define FOLD(e, x, a, b) ((e) * (b) + (a) * (x))
#endif
#define BLOCK 4096

static inline uint64_t word_at(const uint8_t *bits, int64_t nbytes, int64_t byte) {
  uint64_t w = 0;
  if (byte + 8 <= nbytes) memcpy(&w, bits + byte, 8);
  else if (byte < nbytes) memcpy(&w, bits + byte, (size_t)(nbytes - byte));
  return w;
}

/* calls BODY with j = local index of every set bit in global positions [lo, hi), base = lo0 */
#define FOR_BITS(bits, nbytes, lo, hi, base, BODY)                                      \
  for (int64_t w0_ = (lo) & ~(int64_t)63; w0_ < (hi); w0_ += 64) {                      \
    uint64_t w_ = word_at((bits), (nbytes), w0_ >> 3);                                   \
    if (w0_ < (lo)) w_ &= ~(uint64_t)0 << ((lo) - w0_);                                 \
    if ((hi) - w0_ < 64) w_ &= ((uint64_t)1 << ((hi) - w0_)) - 1;                        \
    while (w_) { int64_t j = w0_ + __builtin_ctzll(w_) - (base); w_ &= w_ - 1; BODY; } \
  }

static void fold(float *restrict e, const float *restrict p, const float *restrict g, int64_t lo, int64_t hi,
                 float a, float b) {
  if (g) for (int64_t j = lo; j < hi; j++) e[j] = FOLD(e[j], fabsf(p[j] * g[j]), a, b);
  else for (int64_t j = lo; j < hi; j++) e[j] = FOLD(e[j], fabsf(p[j] * 0.0f), a, b);
}

void epi_fold_zero(int64_t nt, const int64_t *sizes, const int64_t *offs, float *const *p, float *const *g,
                   float *const *e, float a, float b, const uint8_t *bits, int64_t nbytes) {
  for (int64_t t = 0; t < nt; t++) {
    for (int64_t lo = 0; lo < sizes[t]; lo += BLOCK) {
      int64_t hi = lo + BLOCK < sizes[t] ? lo + BLOCK : sizes[t];
      if (e[t]) fold(e[t], p[t], g[t], lo, hi, a, b);
      if (bits && g[t]) { float *gt = g[t]; FOR_BITS(bits, nbytes, offs[t] + lo, offs[t] + hi, offs[t], gt[j] = 0.0f); }
    }
  }
}

void epi_count(int64_t nt, const int64_t *sizes, const int64_t *offs, const uint8_t *bits, int64_t nbytes,
               int64_t *counts) {
  for (int64_t t = 0; t < nt; t++) {
    int64_t c = 0, lo = offs[t], hi = offs[t] + sizes[t];
    for (int64_t w0 = lo & ~(int64_t)63; w0 < hi; w0 += 64) {
      uint64_t w = word_at(bits, nbytes, w0 >> 3);
      if (w0 < lo) w &= ~(uint64_t)0 << (lo - w0);
      if (hi - w0 < 64) w &= ((uint64_t)1 << (hi - w0)) - 1;
      c += __builtin_popcountll(w);
    }
    counts[t] = c;
  }
}

/* the packed frozen set of a step of task tid: the OR of the packed sets other than sets[self]
   (self < 0: none is the task's), where elements claimed by two or more sets (the overlaps, in
   position order, owners owner[0..k)) are frozen when their owner is neither -1 nor tid; one pass */
void epi_frozen_bits(uint8_t *acc, const uint8_t *const *sets, int64_t nsets, int64_t self, int64_t nbytes,
                     const int8_t *owner, int64_t k, int64_t tid) {
  int64_t i = 0;
  for (int64_t b = 0; b < nbytes; b += 8) {
    uint64_t seen = 0, multi = 0, others = 0, f = 0, done = 0;
    for (int64_t c = 0; c < nsets; c++) {
      uint64_t w = word_at(sets[c], nbytes, b);
      multi |= seen & w;
      seen |= w;
      if (c != self) others |= w;
    }
    for (uint64_t r = multi; r && i < k; r &= r - 1) {
      int64_t o = owner[i++];
      done |= r & (~r + 1);
      f |= (uint64_t)((o != -1) & (o != tid)) << __builtin_ctzll(r);
    }
    uint64_t a = (others & ~done) | f;
    memcpy(acc + b, &a, (size_t)(b + 8 <= nbytes ? 8 : nbytes - b));
  }
}

void epi_patch_bits(uint8_t *bits, const int64_t *pos, const uint8_t *val, int64_t k) {
  for (int64_t i = 0; i < k; i++) {
    uint8_t m = (uint8_t)(1u << (pos[i] & 7));
    if (val[i]) bits[pos[i] >> 3] |= m; else bits[pos[i] >> 3] &= (uint8_t)~m;
  }
}

/* 64 bits of the bitmap from global bit position pos (bit k = element pos + k) */
static inline uint64_t bits64(const uint8_t *bits, int64_t nbytes, int64_t pos) {
  int64_t byte = pos >> 3;
  int sh = (int)(pos & 7);
  uint64_t w = word_at(bits, nbytes, byte) >> sh;
  if (sh && byte + 8 < nbytes) w |= (uint64_t)bits[byte + 8] << (64 - sh);
  return w;
}

#if EPI_FMA
#define MADD(x, y, z) fmaf((x), (y), (z))
#else
#define MADD(x, y, z) ((x) * (y) + (z))
#endif

/* AdamW of one tensor in torch's eager arithmetic, frozen elements (bits from global position off;
   bits NULL: none) left bit for bit as they were. Moments: m <- m b1 + (1 - b1) g (torch's
   mul_ then add_(alpha)), v <- v b2 + (1 - b2) g g (mul_ then addcmul_). Per block of 64
   elements the frozen values are kept in registers / L1, the vector loop runs over the block,
   and they are written back. */
void epi_adamw_moments(int64_t n, const float *restrict g, float *restrict m, float *restrict v, float b1,
                       float omb1, float b2, float omb2, const uint8_t *bits, int64_t nbytes, int64_t off) {
  float sm[64], sv[64];
  for (int64_t j0 = 0; j0 < n; j0 += 64) {
    int64_t j1 = j0 + 64 < n ? j0 + 64 : n;
    uint64_t w = bits ? bits64(bits, nbytes, off + j0) : 0;
    if (j1 - j0 < 64) w &= ((uint64_t)1 << (j1 - j0)) - 1;
    int k = 0;
    for (uint64_t r = w; r; r &= r - 1) { int64_t j = j0 + __builtin_ctzll(r); sm[k] = m[j]; sv[k++] = v[j]; }
    for (int64_t j = j0; j < j1; j++) {
      float gj = g[j];
      m[j] = MADD(gj, omb1, m[j] * b1);
      v[j] = MADD(omb2 * gj, gj, v[j] * b2);
    }
    k = 0;
    for (uint64_t r = w; r; r &= r - 1) { int64_t j = j0 + __builtin_ctzll(r); m[j] = sm[k]; v[j] = sv[k++]; }
  }
}

/* p <- p (1 - lr wd) + (-lr / bc1) m / d (torch's mul_ then addcdiv_: self + value * t1 / t2),
   d = sqrt(v / bc2) + eps computed by torch (its sqrt is not IEEE's on every CPU); frozen kept */
void epi_adamw_params(int64_t n, float *restrict p, const float *restrict m, const float *restrict d, float decay,
                      float step, const uint8_t *bits, int64_t nbytes, int64_t off) {
  float sp[64];
  for (int64_t j0 = 0; j0 < n; j0 += 64) {
    int64_t j1 = j0 + 64 < n ? j0 + 64 : n;
    uint64_t w = bits ? bits64(bits, nbytes, off + j0) : 0;
    if (j1 - j0 < 64) w &= ((uint64_t)1 << (j1 - j0)) - 1;
    int k = 0;
    for (uint64_t r = w; r; r &= r - 1) sp[k++] = p[j0 + __builtin_ctzll(r)];
    for (int64_t j = j0; j < j1; j++) p[j] = p[j] * decay + (step * m[j]) / d[j];
    k = 0;
    for (uint64_t r = w; r; r &= r - 1) p[j0 + __builtin_ctzll(r)] = sp[k++];
  }
}
"""

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
    lib.epi_adamw_moments.argtypes = [i64, ptr, ptr, ptr, f32, f32, f32, f32, ptr, i64, i64]
    lib.epi_adamw_moments.restype = None
    lib.epi_adamw_params.argtypes = [i64, ptr, ptr, ptr, f32, f32, ptr, i64, i64]
    lib.epi_adamw_params.restype = None
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
    return _adamw_self_test(lib, g)


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
        bits = _pack(frozen)
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


def _pack(flags: torch.Tensor) -> torch.Tensor:
    """Bool (n,) -> packed uint8 bitmap (element i = bit i % 8 of byte i // 8)."""
    n = flags.numel()
    padded = torch.zeros((n + 7) // 8 * 8, dtype=torch.uint8)
    padded[:n] = flags.to(torch.uint8)
    weights = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8)
    return (padded.view(-1, 8) * weights).sum(1).to(torch.uint8)


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


def frozen_bits(sets: list, self_index: int, owner: torch.Tensor, tid: int) -> torch.Tensor | None:
    """With the kernels, one pass: the packed frozen set of a step of task ``tid`` from the packed
    critical ``sets`` (uint8, equal sizes; ``sets[self_index]`` is the task's own, -1: none): the
    OR of the others, the elements claimed by two or more sets frozen when their owner (``owner``,
    int8, in position order) is neither -1 nor ``tid``. None without the kernels."""
    kern = lib() if all(b.is_cpu and b.is_contiguous() for b in sets) else None
    if kern is None or not sets:
        return None
    owner = owner.to(torch.int8).contiguous()  # alive during the call
    ptrs = array.array("q", [b.data_ptr() for b in sets])
    acc = torch.empty(sets[0].numel(), dtype=torch.uint8)
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
