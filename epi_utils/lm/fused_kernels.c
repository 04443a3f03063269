/* EPI's fused CPU kernels (issue 34): compiled and loaded by epi_utils/lm/fused_kernels.py, which
   documents every entry point; plain C99, no headers beyond the C library. */
#include <stdint.h>
#include <string.h>
#include <math.h>
#include <stdlib.h>
#ifdef __AVX2__
#include <immintrin.h>
#endif
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

static void fold(float *restrict e, const float *restrict p, const float *restrict g, int64_t lo, int64_t hi,
                 float a, float b) {
  if (g) for (int64_t j = lo; j < hi; j++) e[j] = FOLD(e[j], fabsf(p[j] * g[j]), a, b);
  else for (int64_t j = lo; j < hi; j++) e[j] = FOLD(e[j], fabsf(p[j] * 0.0f), a, b);
}

static void zero_frozen(float *restrict gt, const uint8_t *bits, int64_t nbytes, int64_t off, int64_t lo, int64_t hi);

void epi_fold_zero(int64_t nt, const int64_t *sizes, const int64_t *offs, float *const *p, float *const *g,
                   float *const *e, float a, float b, const uint8_t *bits, int64_t nbytes) {
  for (int64_t t = 0; t < nt; t++) {
    for (int64_t lo = 0; lo < sizes[t]; lo += BLOCK) {
      int64_t hi = lo + BLOCK < sizes[t] ? lo + BLOCK : sizes[t];
      if (e[t]) fold(e[t], p[t], g[t], lo, hi, a, b);
      if (bits && g[t]) zero_frozen(g[t], bits, nbytes, offs[t], lo, hi);
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

/* epi_frozen_bits with the overlap positions given (sorted int32 pos[0..k), owners owner[0..k)): the
   OR of the other sets word by word, then each overlap element's bit written; no bit scan per word */
void epi_frozen_bits_at(uint8_t *acc, const uint8_t *const *sets, int64_t nsets, int64_t self, int64_t nbytes,
                        const int32_t *pos, const int8_t *owner, int64_t k, int64_t tid) {
  int64_t b = 0;
  for (; b + 8 <= nbytes; b += 8) {
    uint64_t others = 0, w;
    for (int64_t c = 0; c < nsets; c++) {
      memcpy(&w, sets[c] + b, 8);
      others |= c != self ? w : 0;
    }
    memcpy(acc + b, &others, 8);
  }
  for (; b < nbytes; b++) {
    uint8_t others = 0;
    for (int64_t c = 0; c < nsets; c++) others |= c != self ? sets[c][b] : 0;
    acc[b] = others;
  }
  for (int64_t i = 0; i < k; i++) {  /* branch-free: owners vary from element to element */
    uint32_t p = (uint32_t)pos[i], sh = p & 7u, o = (uint32_t)(int32_t)owner[i];
    uint32_t f = (uint32_t)(o != 0xFFFFFFFFu) & (uint32_t)((int64_t)(int32_t)o != tid);
    uint8_t *a = acc + (p >> 3);
    *a = (uint8_t)((*a & ~(1u << sh)) | (f << sh));
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
#if defined(__AVX2__) && defined(__FMA__) && EPI_FMA
#define EPI_BLEND 1
/* all-ones lanes where bit q*8+lane of w is set (the frozen elements of 8 floats) */
static inline __m256 frozen_lanes(uint64_t w, int q) {
  const __m256i lb = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  __m256i b = _mm256_and_si256(_mm256_set1_epi32((int)((w >> (8 * q)) & 0xFFu)), lb);
  return _mm256_castsi256_ps(_mm256_cmpeq_epi32(b, lb));
}
#else
#define EPI_BLEND 0
#endif

/* gt[j] = 0 for every frozen element j in [lo, hi) (bit off + j of bits) */
static void zero_frozen(float *restrict gt, const uint8_t *bits, int64_t nbytes, int64_t off, int64_t lo, int64_t hi) {
  for (int64_t j0 = lo; j0 < hi; j0 += 64) {
    int64_t j1 = j0 + 64 < hi ? j0 + 64 : hi;
    uint64_t w = bits64(bits, nbytes, off + j0);
    if (j1 - j0 < 64) w &= ((uint64_t)1 << (j1 - j0)) - 1;
    if (!w) continue;
#if EPI_BLEND
    if (j1 - j0 == 64) {  /* 8 lanes at a time: frozen lanes to +0 */
      for (int q = 0; q < 8; q++)
        _mm256_storeu_ps(gt + j0 + 8 * q, _mm256_andnot_ps(frozen_lanes(w, q), _mm256_loadu_ps(gt + j0 + 8 * q)));
      continue;
    }
#endif
    for (; w; w &= w - 1) gt[j0 + __builtin_ctzll(w)] = 0.0f;
  }
}

void epi_adamw_moments(int64_t n, const float *restrict g, float *restrict m, float *restrict v, float b1,
                       float omb1, float b2, float omb2, const uint8_t *bits, int64_t nbytes, int64_t off) {
  float sm[64], sv[64];
  for (int64_t j0 = 0; j0 < n; j0 += 64) {
    int64_t j1 = j0 + 64 < n ? j0 + 64 : n;
    uint64_t w = bits ? bits64(bits, nbytes, off + j0) : 0;
    if (j1 - j0 < 64) w &= ((uint64_t)1 << (j1 - j0)) - 1;
#if EPI_BLEND
    if (w && j1 - j0 == 64) {  /* a whole block with frozen elements: the same ops on 8 lanes, frozen lanes kept */
      const __m256 vb1 = _mm256_set1_ps(b1), vo1 = _mm256_set1_ps(omb1), vb2 = _mm256_set1_ps(b2),
                   vo2 = _mm256_set1_ps(omb2);
      for (int q = 0; q < 8; q++) {
        int64_t j = j0 + 8 * q;
        __m256 f = frozen_lanes(w, q), gj = _mm256_loadu_ps(g + j), mj = _mm256_loadu_ps(m + j),
               vj = _mm256_loadu_ps(v + j);
        __m256 nm = _mm256_fmadd_ps(gj, vo1, _mm256_mul_ps(mj, vb1));
        __m256 nv = _mm256_fmadd_ps(_mm256_mul_ps(vo2, gj), gj, _mm256_mul_ps(vj, vb2));
        _mm256_storeu_ps(m + j, _mm256_blendv_ps(nm, mj, f));
        _mm256_storeu_ps(v + j, _mm256_blendv_ps(nv, vj, f));
      }
      continue;
    }
#endif
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
#if EPI_BLEND
    if (w && j1 - j0 == 64) {  /* as epi_adamw_moments: the same ops on 8 lanes, frozen lanes kept */
      const __m256 vd = _mm256_set1_ps(decay), vs = _mm256_set1_ps(step);
      for (int q = 0; q < 8; q++) {
        int64_t j = j0 + 8 * q;
        __m256 pj = _mm256_loadu_ps(p + j);
        __m256 np = _mm256_add_ps(_mm256_mul_ps(pj, vd),
                                  _mm256_div_ps(_mm256_mul_ps(vs, _mm256_loadu_ps(m + j)), _mm256_loadu_ps(d + j)));
        _mm256_storeu_ps(p + j, _mm256_blendv_ps(np, pj, frozen_lanes(w, q)));
      }
      continue;
    }
#endif
    int k = 0;
    for (uint64_t r = w; r; r &= r - 1) sp[k++] = p[j0 + __builtin_ctzll(r)];
    for (int64_t j = j0; j < j1; j++) p[j] = p[j] * decay + (step * m[j]) / d[j];
    k = 0;
    for (uint64_t r = w; r; r &= r - 1) p[j0 + __builtin_ctzll(r)] = sp[k++];
  }
}

/* ---- the mask refresh: exact top-k of (layer-normalised) scores straight into a packed set ---- */
#define SBLK 512

/* order-preserving uint32 key of a float as torch compares values (-0 == +0) */
static inline uint32_t okey(float x) {
  uint32_t u;
  memcpy(&u, &x, 4);
  u = u == 0x80000000u ? 0u : u;
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

/* tensor index of global position pos, from t on (positions visited in increasing order) */
static inline int64_t tensor_at(int64_t nt, const int64_t *sizes, const int64_t *offs, int64_t t, int64_t pos) {
  while (t + 1 < nt && pos >= offs[t] + sizes[t]) t++;
  return t;
}

/* score of one position (as ImportanceTracker.flat_scores: v / d, 0 where d is not > 0; v without divide) */
static inline float score_at(const float *v, int64_t pos, float d, int64_t divide) {
  return divide ? (d > 0 ? v[pos] / d : 0.0f) : v[pos];
}

/* keys of global positions [a, b) (b - a <= SBLK) into key[0..b-a); *t: tensor of a (advanced);
   returns the number of NaN scores */
static int64_t block_keys(const float *restrict v, int64_t nt, const int64_t *sizes, const int64_t *offs,
                          const float *div, int64_t divide, int64_t *t, int64_t a, int64_t b, uint32_t *restrict key) {
  int64_t nan = 0;
  while (a < b) {
    *t = tensor_at(nt, sizes, offs, *t, a);
    int64_t e = offs[*t] + sizes[*t] < b ? offs[*t] + sizes[*t] : b, n = e - a;
    float d = divide ? div[*t] : 1.0f;
    const float *x = v + a;
    uint32_t bad = 0;
    if (!divide) for (int64_t i = 0; i < n; i++) { float y = x[i]; bad |= y != y; key[i] = okey(y); }
    else if (d > 0) for (int64_t i = 0; i < n; i++) { float y = x[i] / d; bad |= y != y; key[i] = okey(y); }
    else for (int64_t i = 0; i < n; i++) key[i] = 0x80000000u;  /* okey(0) */
    nan += bad;
    key += n;
    a = e;
  }
  return nan;
}

static inline void or_word(uint8_t *out, int64_t nbytes, int64_t word, uint64_t w) {
  int64_t b = word * 8;
  uint8_t tmp[8];
  if (b + 8 <= nbytes) {
    uint64_t x;
    memcpy(&x, out + b, 8);
    x |= w;
    memcpy(out + b, &x, 8);
    return;
  }
  int64_t m = b + 8 <= nbytes ? 8 : nbytes - b;
  if (m <= 0 || !w) return;
  memcpy(tmp, out + b, (size_t)m);
  for (int64_t i = 0; i < m; i++) tmp[i] |= (uint8_t)(w >> (8 * i));
  memcpy(out + b, tmp, (size_t)m);
}

/* 64 flags (bytes 0/1) -> 64 bits, flag i = bit i */
static inline uint64_t pack64(const uint8_t *f) {
  uint64_t w = 0;
  for (int j = 0; j < 8; j++) {
    uint64_t x;
    memcpy(&x, f + 8 * j, 8);
    w |= ((x * 0x0102040810204080ull) >> 56) << (8 * j);
  }
  return w;
}

/* bits of global positions [lo, hi) within word wi */
static inline uint64_t range_mask(int64_t wi, int64_t lo, int64_t hi) {
  uint64_t m = ~(uint64_t)0;
  if (hi <= wi * 64 || lo >= wi * 64 + 64) return 0;
  if (wi * 64 < lo) m &= ~(uint64_t)0 << (lo - wi * 64);
  if (hi - wi * 64 < 64) m &= ((uint64_t)1 << (hi - wi * 64)) - 1;
  return m;
}

/* k-th smallest (0-based rank r) of x[0..n), reorders x */
static uint32_t select_u32(uint32_t *x, int64_t n, int64_t r) {
  int64_t lo = 0, hi = n - 1;
  while (hi > lo) {
    uint32_t a = x[lo], b = x[(lo + hi) >> 1], c = x[hi];
    uint32_t piv = a < b ? (b < c ? b : (a < c ? c : a)) : (a < c ? a : (b < c ? c : b));
    int64_t i = lo, j = hi;
    while (i <= j) {
      while (x[i] < piv) i++;
      while (x[j] > piv) j--;
      if (i <= j) { uint32_t t = x[i]; x[i] = x[j]; x[j] = t; i++; j--; }
    }
    if (r <= j) hi = j; else if (r >= i) lo = i; else return x[r];
  }
  return x[r];
}

/* r-th smallest (0-based) of x[0..n), all (x[i] - base) >> shift < 4096: a 4096-bin histogram,
   then a selection among the keys of the bin that holds rank r (tmp: room for n keys) */
static uint32_t rank_u32(const uint32_t *x, int64_t n, int64_t r, uint32_t base, int shift, uint32_t *tmp) {
  int64_t hist[4096];
  memset(hist, 0, sizeof(hist));
  for (int64_t i = 0; i < n; i++) hist[(x[i] - base) >> shift]++;
  int64_t cum = 0, b = 0;
  for (; b < 4095; b++) { if (cum + hist[b] > r) break; cum += hist[b]; }
  int64_t m = 0;
  for (int64_t i = 0; i < n; i++) { tmp[m] = x[i]; m += ((x[i] - base) >> shift) == (uint32_t)b; }
  return select_u32(tmp, m, r - cum);
}

static inline uint64_t splitmix(uint64_t *s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/* the kept keys of epi_top_k: a buffer that the kernel sizes from its bracket and grows (owned by C:
   epi_keys_new, then epi_keys_take copies them out and frees it); lost: none kept (k >= n) */
typedef struct { uint32_t *data; int64_t count, cap, lost; } epi_keys_t;

void *epi_keys_new(void) { return calloc(1, sizeof(epi_keys_t)); }

int64_t epi_keys_count(const void *h) {
  const epi_keys_t *ks = (const epi_keys_t *)h;
  return ks->lost ? -1 : ks->count;
}

/* copies the keys to dst (room for epi_keys_count; NULL: none) and frees the buffer */
void epi_keys_take(void *h, uint32_t *dst) {
  epi_keys_t *ks = (epi_keys_t *)h;
  if (dst && !ks->lost && ks->count) memcpy(dst, ks->data, (size_t)ks->count * 4);
  free(ks->data);
  free(ks);
}

/* room for `extra` more keys (at least doubling); 0 when memory ran out */
static int keys_room(epi_keys_t *ks, int64_t extra) {
  if (ks->count + extra <= ks->cap) return 1;
  int64_t cap = ks->count + extra > 2 * ks->cap ? ks->count + extra : 2 * ks->cap;
  uint32_t *d = (uint32_t *)realloc(ks->data, (size_t)cap * 4);
  if (!d) return 0;
  ks->data = d;
  ks->cap = cap;
  return 1;
}

/* Exact top-k of the scores at global positions [lo, hi) (tensor t covers [offs[t], offs[t] + sizes[t]),
   its scores v / div[t] when divide): their bits ORed into out (cleared by the caller), ties at the
   k-th largest value broken by lower position first (= a descending stable sort's first k; values
   compared as torch does, -0 == +0). Candidates for the threshold: keys in [klo, khi], bracketed
   from a stratified sample of `sample` scores (0: none) or, when the sample's bracket misses, from a
   4096-bin histogram of the keys' top 12 bits (exact bin). With wide: the elements whose key is at
   least the bracket's low end (a superset of the set) ORed into wide and their keys appended to
   the buffer ks in position order (room reserved from the bracket: the sample's share above its
   low end, or the exact count above the exact bin; grown if the sample was wrong), so that the
   scores of the set's elements are read again without touching v. Returns 0, 1 when a score is NaN (the
   caller takes the eager path: its NaN order is torch.kthvalue's), 2 when memory ran out. */
int64_t epi_top_k(const float *v, int64_t nt, const int64_t *sizes, const int64_t *offs, const float *div,
                  int64_t divide, int64_t lo, int64_t hi, int64_t k, uint8_t *out, int64_t nbytes, int64_t sample,
                  uint8_t *wide, void *keys) {
  epi_keys_t *ks = wide ? (epi_keys_t *)keys : NULL;
  int64_t n = hi - lo, m0 = ks ? ks->count : 0;
  if (k <= 0 || n <= 0) return 0;
  if (k >= n) {
    for (int64_t w = lo >> 6; w <= (hi - 1) >> 6; w++) or_word(out, nbytes, w, range_mask(w, lo, hi));
    if (ks) ks->lost = 1;  /* no keys kept: the caller reads the scores themselves */
    return 0;
  }
  uint32_t key[SBLK];
#ifndef __AVX2__
  uint8_t fin[SBLK], fc[SBLK];
#endif
  uint32_t klo = 0, khi = 0xFFFFFFFFu;
  int64_t cap = 0, exact = 0, kept = n;  /* kept: room for the keys at or above klo */
  if (sample >= 16 && n / (sample / 16) >= 32) {
    uint32_t *sk = (uint32_t *)malloc((size_t)sample * 4);
    if (!sk) return 2;
    uint64_t seed = 0x5EEDull;
    int64_t t = 0, nch = sample / 16, len = n / nch;  /* nch chunks of 16 consecutive scores, one per stratum */
    for (int64_t c = 0; c < nch; c++) {
      int64_t pos = lo + c * len + (int64_t)(splitmix(&seed) % (uint64_t)(len - 15));
      if (block_keys(v, nt, sizes, offs, div, divide, &t, pos, pos + 16, sk + 16 * c)) { free(sk); return 1; }
    }
    sample = 16 * nch;
    /* a bracket around the sample's quantile 1 - p: 3.5 standard errors counted on half the sample
       (neighbours are correlated) and 1% of p either side; a miss costs the exact bracket */
    double p = (double)k / (double)n, se = sqrt(p * (1.0 - p) / (0.5 * (double)sample));
    double qlo = 1.0 - 1.01 * p - 3.5 * se, qhi = 1.0 - 0.99 * p + 3.5 * se;
    int64_t rlo = (int64_t)(qlo * (double)sample), rhi = (int64_t)(qhi * (double)sample) + 1;
    uint32_t *tmp = (uint32_t *)malloc((size_t)sample * 4);
    if (!tmp) { free(sk); return 2; }
    if (rhi < sample) khi = rank_u32(sk, sample, rhi, 0, 20, tmp);
    if (rlo > 0) klo = rank_u32(sk, sample, rlo, 0, 20, tmp);
    free(tmp);
    free(sk);
    if (klo > khi) klo = khi;
    double share = (double)(rhi < sample ? rhi : sample) / (double)sample - (rlo > 0 ? (double)rlo / (double)sample : 0.0);
    cap = (int64_t)(2.0 * share * (double)n) + 4096;
    kept = (int64_t)((rlo > 0 ? 1.0 - (double)rlo / (double)sample : 1.0) * 1.05 * (double)n) + 64;
  }
  for (int attempt = 0; attempt < 2; attempt++) {
    if (cap == 0) {  /* exact bracket: the 12-bit bin of the k-th largest key */
      int64_t *hist = (int64_t *)calloc(4096, sizeof(int64_t));
      if (!hist) return 2;
      int64_t t = 0;
      for (int64_t a = lo; a < hi; a += SBLK) {
        int64_t b = a + SBLK < hi ? a + SBLK : hi;
        if (block_keys(v, nt, sizes, offs, div, divide, &t, a, b, key)) { free(hist); return 1; }
        for (int64_t i = 0; i < b - a; i++) hist[key[i] >> 20]++;
      }
      int64_t cum = 0, bin = 4095;
      for (; bin > 0; bin--) { if (cum + hist[bin] >= k) break; cum += hist[bin]; }
      klo = (uint32_t)bin << 20;
      khi = klo | 0xFFFFFu;
      cap = hist[bin];
      kept = cum + hist[bin];  /* exactly the keys at or above the bin */
      exact = 1;
      free(hist);
    }
    if (ks && !keys_room(ks, kept < n ? kept : n)) return 2;
    uint32_t *ck = (uint32_t *)malloc((size_t)cap * 4 + 4);
    int64_t *ci = (int64_t *)malloc((size_t)cap * 8 + 8);
    if (!ck || !ci) { free(ck); free(ci); return 2; }
    int64_t above = 0, nc = 0, nan = 0, t = 0, oom = 0;
    for (int64_t a0 = lo & ~(int64_t)(SBLK - 1); a0 < hi; a0 += SBLK) {  /* blocks aligned to SBLK positions */
      int64_t a = a0 > lo ? a0 : lo, b = a0 + SBLK < hi ? a0 + SBLK : hi;
      nan += block_keys(v, nt, sizes, offs, div, divide, &t, a, b, key + (a - a0));
      int64_t m = b - a0;
#ifndef __AVX2__
      for (int64_t i = 0; i < m; i++) { fin[i] = key[i] > khi; fc[i] = key[i] >= klo; }
      for (int64_t i = m; i < SBLK; i++) { fin[i] = 0; fc[i] = 0; }
#endif
      for (int64_t wj = 0; wj * 64 < m; wj++) {
        int64_t wi = (a0 >> 6) + wj;
        uint64_t valid = range_mask(wi, lo, hi);
#ifdef __AVX2__
        uint64_t win = 0, wge = 0;  /* unsigned compares as signed ones on keys with the top bit flipped */
        const __m256i flip = _mm256_set1_epi32((int)0x80000000u), vhi = _mm256_set1_epi32((int)(khi ^ 0x80000000u)),
                      vlo = _mm256_set1_epi32((int)((klo - 1u) ^ 0x80000000u));
        for (int q = 0; q < 8; q++) {
          __m256i x = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(key + 64 * wj + 8 * q)), flip);
          win |= (uint64_t)(uint32_t)_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(x, vhi))) << (8 * q);
          wge |= (uint64_t)(uint32_t)_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(x, vlo))) << (8 * q);
        }
        if (klo == 0) wge = ~(uint64_t)0;
        uint64_t mv = m - 64 * wj >= 64 ? ~(uint64_t)0 : ((uint64_t)1 << (m - 64 * wj)) - 1;
        win &= valid & mv;
        uint64_t wc = wge & valid & mv & ~win;
#else
        uint64_t win = pack64(fin + 64 * wj) & valid, wc = pack64(fc + 64 * wj) & valid & ~win;
#endif
        above += __builtin_popcountll(win);
        or_word(out, nbytes, wi, win);
        if (ks) {  /* every key >= klo (a superset of the final set), kept in position order */
          uint64_t ww = win | wc;
          or_word(wide, nbytes, wi, ww);
          if (ks->count + 64 > ks->cap && !keys_room(ks, 64)) oom = 1, ww = 0;
          for (; ww; ww &= ww - 1) ks->data[ks->count++] = key[64 * wj + __builtin_ctzll(ww)];
        }
        for (; wc; wc &= wc - 1) {
          int64_t j = 64 * wj + __builtin_ctzll(wc);
          if (nc < cap) { ck[nc] = key[j]; ci[nc] = a0 + j; }
          nc++;
        }
      }
    }
    if (nan) { free(ck); free(ci); return 1; }
    if (oom) { free(ck); free(ci); return 2; }
    if (above < k && above + nc >= k && nc <= cap) {
      int64_t need = k - above;
      uint32_t *tmp = (uint32_t *)malloc((size_t)nc * 4 + 4);
      if (!tmp) { free(ck); free(ci); return 2; }
      int shift = 0;
      while (((khi - klo) >> shift) >= 4096) shift++;
      uint32_t kth = rank_u32(ck, nc, nc - need, klo, shift, tmp);
      free(tmp);
      int64_t gt = 0;
      for (int64_t i = 0; i < nc; i++) gt += ck[i] > kth;
      int64_t ties = need - gt;  /* the first `ties` candidates equal to kth (in position order) are in */
      for (int64_t i = 0; i < nc; i++) {
        uint32_t c = ck[i];
        int64_t eq = c == kth, sel = (c > kth) | (eq & (ties > 0));
        ties -= eq & sel;
        out[ci[i] >> 3] |= (uint8_t)(sel << (ci[i] & 7));
      }
      free(ck); free(ci);
      return 0;
    }
    free(ck); free(ci);
    if (exact) return 2;  /* cannot happen: the exact bin holds the k-th largest */
    for (int64_t w = lo >> 6; w <= (hi - 1) >> 6; w++) {  /* clear what the missed bracket set */
      uint64_t m = range_mask(w, lo, hi);
      int64_t bb = w * 8, mm = bb + 8 <= nbytes ? 8 : nbytes - bb;
      for (int64_t i = 0; i < mm; i++) out[bb + i] &= (uint8_t)~(m >> (8 * i));
      if (wide) for (int64_t i = 0; i < mm; i++) wide[bb + i] &= (uint8_t)~(m >> (8 * i));
    }
    if (ks) ks->count = m0;
    cap = 0;
  }
  return 2;
}

/* the scores at sorted positions pos[0..k) (as epi_top_k reads them) */
void epi_scores_at(const float *v, int64_t nt, const int64_t *sizes, const int64_t *offs, const float *div,
                   int64_t divide, const int64_t *pos, int64_t k, float *out) {
  int64_t t = 0;
  for (int64_t i = 0; i < k; i++) {
    t = tensor_at(nt, sizes, offs, t, pos[i]);
    out[i] = score_at(v, pos[i], divide ? div[t] : 1.0f, divide);
  }
}

/* owners of the overlap elements (sorted positions pos[0..k)) as IsolationPolicy._owners_at
   resolves them: the sets in their stored order; kind[c] 0 = pinned (a member takes the element,
   best = +inf), 1 = with scores (a member whose score beats the best so far takes it; NaN never
   does), read from v, 3 = the same with the scores epi_top_k kept (wide[c], mk[c]; -0 read as +0,
   which compares alike), 2 = without scores (a member takes it when nobody has yet, best = 0);
   -1 where nobody */
static inline float key_float(uint32_t key) {
  uint32_t u = (key & 0x80000000u) ? (key & 0x7FFFFFFFu) : ~key;
  float x;
  memcpy(&x, &u, 4);
  return x;
}

void epi_overlap_owners(int64_t nsets, const uint8_t *const *sets, const int64_t *kind, const int64_t *tid,
                        const float *const *v, const int64_t *nt, const int64_t *const *sizes,
                        const int64_t *const *offs, const float *const *div, const uint8_t *const *wide,
                        const uint32_t *const *mk, int64_t nbytes, const int64_t *pos, int64_t k, int8_t *own) {
  int64_t cur[128] = {0}, cw[128] = {0}, cr[128] = {0};
  for (int64_t i = 0; i < k; i++) {
    int64_t q = pos[i], o = -1;
    float best = -INFINITY;
    for (int64_t c = 0; c < nsets; c++) {
      if (!((sets[c][q >> 3] >> (q & 7)) & 1)) continue;
      if (kind[c] == 0) { o = tid[c]; best = INFINITY; }
      else if (kind[c] == 1) {
        cur[c] = tensor_at(nt[c], sizes[c], offs[c], cur[c], q);
        float sc = score_at(v[c], q, div[c] ? div[c][cur[c]] : 1.0f, div[c] != 0);
        if (sc > best) { best = sc; o = tid[c]; }
      } else if (kind[c] == 3) {  /* the score kept by epi_top_k: rank of q among the wide set's elements */
        int64_t w = q >> 6;
        for (; cw[c] < w; cw[c]++) cr[c] += __builtin_popcountll(word_at(wide[c], nbytes, cw[c] * 8));
        uint64_t x = word_at(wide[c], nbytes, w * 8) & (((uint64_t)1 << (q & 63)) - 1);
        float sc = key_float(mk[c][cr[c] + __builtin_popcountll(x)]);
        if (sc > best) { best = sc; o = tid[c]; }
      } else if (o < 0) { best = 0.0f; o = tid[c]; }
    }
    own[i] = (int8_t)o;
  }
}

/* over nsets packed sets of nbytes each: counts[0] = elements in any set, counts[1] = elements in
   two or more (the overlaps); their sorted positions written to pos when pos is not NULL */
void epi_overlaps(const uint8_t *const *sets, int64_t nsets, int64_t nbytes, int64_t *pos, int64_t *counts) {
  int64_t any = 0, k = 0;
  for (int64_t b = 0; b < nbytes; b += 8) {
    uint64_t seen = 0, multi = 0;
    for (int64_t c = 0; c < nsets; c++) {
      uint64_t w = word_at(sets[c], nbytes, b);
      multi |= seen & w;
      seen |= w;
    }
    any += __builtin_popcountll(seen);
    if (pos) for (uint64_t r = multi; r; r &= r - 1) pos[k++] = b * 8 + __builtin_ctzll(r);
    else k += __builtin_popcountll(multi);
  }
  counts[0] = any;
  counts[1] = k;
}

/* number of elements in both packed sets */
int64_t epi_and_count(const uint8_t *a, const uint8_t *b, int64_t nbytes) {
  int64_t c = 0;
  for (int64_t i = 0; i < nbytes; i += 8) c += __builtin_popcountll(word_at(a, nbytes, i) & word_at(b, nbytes, i));
  return c;
}

/* ---- torch's per-tensor mean of fp32 (ImportanceTracker's layer_mean normalisers), bit for bit ----
   at::native's CPU sum of a contiguous fp32 vector in one thread (cascade_sum, vectorized_inner_sum):
   row_sum over L-lane vectors (L = 8 or 16, whichever passes the loader check) as 4 interleaved
   rows, each accumulated by multi_row_sum's 4-level cascade (level step 2^max(4, ceil(log2 rows)/4)),
   the leftover vectors into row 0, rows 1-3 into row 0; then the scalar tail in order, then the lanes
   in order; fewer than L elements: the same row_sum over single floats. The mean is the sum over
   (float) n, as torch's mean (sum, then div_ by the count). One thread only: torch splits the
   reduction between threads from 32768 elements. The loader checks each L against torch at first use
   (torch 2.13 on an AVX512 AMD EPYC sums fp32 in 8 lanes, not Vectorized<float>::size() = 16). */
#define EPI_MAXL 16
static inline int64_t ceil_log2_i64(int64_t x) {
  return x <= 2 ? 1 : 64 - (int64_t)__builtin_clzll((uint64_t)(x - 1));
}

/* multi_row_sum<acc, 4> over `size` rows of 4 items (item = w consecutive floats), res[4][w] */
static inline __attribute__((always_inline)) void multi_row_sum4(const float *restrict x, int64_t size, int w,
                                                                 float *restrict res) {
  float acc[4][4 * EPI_MAXL];
  memset(acc, 0, sizeof(acc));
  int64_t lp = ceil_log2_i64(size) / 4;
  if (lp < 4) lp = 4;
  const int64_t step = (int64_t)1 << lp, mask = step - 1, rw = 4 * w;
  int64_t i = 0;
  while (i + step <= size) {
    for (int64_t j = 0; j < step; j++, i++) {
      const float *b = x + i * rw;
      for (int64_t l = 0; l < rw; l++) acc[0][l] += b[l];
    }
    for (int j = 1; j < 4; j++) {
      for (int64_t l = 0; l < rw; l++) { acc[j][l] += acc[j - 1][l]; acc[j - 1][l] = 0.0f; }
      if ((i & (mask << (j * lp))) != 0) break;
    }
  }
  for (; i < size; i++) {
    const float *b = x + i * rw;
    for (int64_t l = 0; l < rw; l++) acc[0][l] += b[l];
  }
  for (int j = 1; j < 4; j++)
    for (int64_t l = 0; l < rw; l++) acc[0][l] += acc[j][l];
  memcpy(res, acc[0], (size_t)rw * sizeof(float));
}

/* row_sum<acc, 4 rows> over `size` items of w floats: res[w] */
static inline __attribute__((always_inline)) void row_sum_items(const float *restrict x, int64_t size, int w,
                                                                float *restrict res) {
  float part[4 * EPI_MAXL];
  int64_t rows = size / 4;
  multi_row_sum4(x, rows, w, part);
  for (int64_t i = rows * 4; i < size; i++)
    for (int l = 0; l < w; l++) part[l] += x[i * w + l];
  for (int k = 1; k < 4; k++)
    for (int l = 0; l < w; l++) part[l] += part[k * w + l];
  memcpy(res, part, (size_t)w * sizeof(float));
}

/* torch's vectorised sum of w (8 or 16) lanes: the lanes' cascade, then the scalar tail, then the lanes in order */
static float torch_sum_lanes(const float *x, int64_t n, int w) {
  float lanes[16], fin = 0.0f;
  int64_t nv = n / w;
  row_sum_items(x, nv, w, lanes);
  for (int64_t k = nv * w; k < n; k++) fin += x[k];
  for (int l = 0; l < w; l++) fin += lanes[l];
  return 0.0f + fin;
}

static float torch_sum_scalar(const float *x, int64_t n) {
  float s;
  row_sum_items(x, n, 1, &s);
  return 0.0f + s;
}

/* out[t] = torch.mean of the nt tensors of sizes[] laid end to end from v (lanes: 8 or 16) */
void epi_means(const float *v, int64_t nt, const int64_t *sizes, int64_t lanes, float *out) {
  int64_t off = 0;
  for (int64_t t = 0; t < nt; t++) {
    int64_t n = sizes[t];
    const float *x = v + off;
    float s = n < lanes ? torch_sum_scalar(x, n) : torch_sum_lanes(x, n, lanes == 16 ? 16 : 8);
    out[t] = s / (float)n;
    off += n;
  }
}
