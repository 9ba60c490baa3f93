/* One new token's attention over a KV cache, for x86-64 CPUs with AVX-512: the CPU sampler's hot loop.

   Built and loaded at run time by models/decode_attention.py (through models/cbuild.py: `cc -O3 -march=native
   -fopenmp -shared`, cached per machine); tested by `pytest tests/test_decode_attention.py`.

   For every (row b, head h) of q (B, H, 1, D) fp32 and cached keys/values k, v (B, H, T, D) in fp16, bf16 or fp32:

       out[b, h] = softmax(q[b, h] · k[b, h]ᵀ / √D) · v[b, h]        (B, H, 1, D) fp32, contiguous

   Why a hand-written kernel: decoding a batch on a CPU is bound by reading the cache (2 · n_layer · B · T · D · H
   elements per token). torch's SDPA and inductor's generated loop read an fp16 cache at ~35 GB/s on the 2-core
   bench machine, because they reduce each position's D products across the vector lanes one position at a time;
   a plain read of the same bytes runs at ~100 GB/s. Here the scores of 16 positions are reduced together (one
   transpose-and-add tree per 16 positions) and the weighted sum of values keeps two independent accumulators, so
   the kernel reads the bench model's fp16 cache (4 layers, batch 64, 250 positions: 33 MB) at ~100 GB/s there,
   3x inductor's loop (scripts/bench.py measures the sampler end to end).

   Numerics: every product, sum, the softmax and the weighted sum are fp32; the keys and values are the cache's
   own values converted exactly to fp32. exp is a Cephes-style polynomial (relative error ~1e-7, like expf) on
   arguments clamped to [-87, 0] (exp(-87) ≈ 1.6e-38: a weight that small counts as zero next to the maximum's 1).
   Requirements, checked by the caller: 1 <= D <= 256 (a head size that is not a multiple of 16 is read with masked
   loads: no byte past a row's D elements is touched), T >= 1, the last dimension of q, k and v contiguous (any
   strides elsewhere: the cache is read in place as a slice of a larger buffer). */
#if !defined(__AVX512F__) || !defined(__AVX512BW__) || !defined(__AVX512VL__) || !defined(__F16C__)
#error "decode_attention.c needs AVX-512 F, BW and VL and F16C (compiled with -march=native on such a CPU)"
#endif

#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

/* Load 16 cache elements at p as 16 fp32 lanes, exactly; the _m forms only the lanes set in m (the others are 0 and
   their memory is not read): the last, partial chunk of a head whose size is not a multiple of 16. Unmasked loads
   for the full chunks: masking every load made the kernel 1.2-2x slower here. */
static inline __m512 load_f32(const void *p) { return _mm512_loadu_ps((const float *)p); }
static inline __m512 load_f32_m(const void *p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
static inline __m512 load_f16(const void *p) { return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p)); }
static inline __m512 load_f16_m(const void *p, __mmask16 m) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
}
/* bf16 is the top half of an fp32: widen to 32 bits and shift into place */
static inline __m512 bf16_to_f32(__m256i x) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(x), 16));
}
static inline __m512 load_bf16(const void *p) { return bf16_to_f32(_mm256_loadu_si256((const __m256i *)p)); }
static inline __m512 load_bf16_m(const void *p, __mmask16 m) { return bf16_to_f32(_mm256_maskz_loadu_epi16(m, p)); }

/* exp(x) for 16 lanes of x <= 0 (a NaN lane stays NaN, so a NaN or +inf score makes the output NaN, as in torch;
   a -inf score gets weight exp(-87), i.e. 0): x = n·ln2 + r with |r| <= ln2/2 (ln2 split in two for an exact
   n·ln2), exp(r) by Cephes expf's degree-7 polynomial, 2^n built in the exponent bits (n in [-126, 0]: normal). */
static inline __m512 exp_nonpositive(__m512 x) {
    x = _mm512_max_ps(_mm512_set1_ps(-87.0f), x); /* vmaxps returns its second operand for a NaN: NaN stays NaN */
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fmadd_ps(n, _mm512_set1_ps(2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    return _mm512_mul_ps(p, _mm512_castsi512_ps(e));
}

/* Prefetch the cache lines of [p, p + bytes): the hardware prefetcher stops at every 4 KiB page and restarts at
   every (row, head), so without this each of those starts waits for memory. */
#ifndef PREFETCH_AHEAD
#define PREFETCH_AHEAD 32 /* positions */
#endif
static inline void prefetch_t0(const void *p, int64_t bytes) {
    const char *end = (const char *)p + bytes; /* every line the bytes touch, from p's line on */
    for (const char *c = (const char *)((uintptr_t)p & ~(uintptr_t)63); c < end; c += 64) _mm_prefetch(c, _MM_HINT_T0);
}
static inline void prefetch_t1(const void *p, int64_t bytes) {
    const char *end = (const char *)p + bytes;
    for (const char *c = (const char *)((uintptr_t)p & ~(uintptr_t)63); c < end; c += 64) _mm_prefetch(c, _MM_HINT_T1);
}

/* Lane i of the result = the sum of the 16 lanes of a[i]: pairs are added within 128-bit lanes (unpack lo/hi of
   32-bit, then of 64-bit elements), then across the four 128-bit lanes (two rounds of shuffle_f32x4): 30 shuffles
   and 15 adds for 16 sums, where a horizontal sum per vector costs ~8 dependent operations each. */
static inline __m512 sum_lanes_16(const __m512 *a) {
    __m512 b[8], c[4];
    for (int i = 0; i < 8; i++)
        b[i] = _mm512_add_ps(_mm512_unpacklo_ps(a[2 * i], a[2 * i + 1]), _mm512_unpackhi_ps(a[2 * i], a[2 * i + 1]));
    for (int i = 0; i < 4; i++) {
        const __m512d x = _mm512_castps_pd(b[2 * i]), y = _mm512_castps_pd(b[2 * i + 1]);
        c[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(x, y)), _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)));
    }
    const __m512 c01 = _mm512_add_ps(_mm512_shuffle_f32x4(c[0], c[1], 0x44), _mm512_shuffle_f32x4(c[0], c[1], 0xEE));
    const __m512 c23 = _mm512_add_ps(_mm512_shuffle_f32x4(c[2], c[3], 0x44), _mm512_shuffle_f32x4(c[2], c[3], 0xEE));
    return _mm512_add_ps(_mm512_shuffle_f32x4(c01, c23, 0x88), _mm512_shuffle_f32x4(c01, c23, 0xDD));
}

/* The kernel for one cache element type and head layout: NF full chunks of 16 channels, then TAIL (a lane mask,
   0 for none) for the last D % 16. Compiled once with literal NF and TAIL for the common head sizes, so that the
   chunk loops unroll and the tail test folds away (runtime values cost ~15% here), and once with D / 16 and the mask
   of D % 16 for any other size. Strides are in elements; nthreads is torch's intra-op thread count (where torch
   itself runs on libgomp, as the pip CPU wheels do, this library binds to the same libgomp.so.1 and the two share
   one thread pool). Returns 0, 1 if scratch memory could not be allocated, or 2 for sizes it does not take
   (D outside 1..256, T < 1: checked again here although the caller checks them, as the stack arrays depend on it). */
#define DEFINE_KERNEL(NAME, ELEM, LOAD, LOAD_M, NF, TAIL)                                                      \
    static int NAME(const float *q, const ELEM *k, const ELEM *v, float *out, int64_t B, int64_t H, int64_t T, \
                    int64_t D, int64_t q_sb, int64_t q_sh, int64_t k_sb, int64_t k_sh, int64_t k_st,           \
                    int64_t v_sb, int64_t v_sh, int64_t v_st, int nthreads) {                                  \
        const int64_t T16 = (T + 15) / 16 * 16, row = D * (int64_t)sizeof(ELEM); /* bytes of one position */  \
        const float scale = 1.0f / sqrtf((float)D);                                                            \
        int failed = 0;                                                                                        \
        _Pragma("omp parallel num_threads(nthreads) reduction(| : failed)") {                                  \
            float *s = (float *)aligned_alloc(64, sizeof(float) * (size_t)T16); /* (T16,) scores, then weights */ \
            if (!s) failed = 1;                                                                                \
            _Pragma("omp for schedule(static)") for (int64_t bh = 0; bh < B * H; bh++) {                       \
                if (!s) continue;                                                                              \
                const int64_t b = bh / H, h = bh % H;                                                          \
                const float *qr = q + b * q_sb + h * q_sh;                                                     \
                const ELEM *kr = k + b * k_sb + h * k_sh, *vr = v + b * v_sb + h * v_sh;                      \
                for (int64_t t = 0; t < PREFETCH_AHEAD && t < T; t++) prefetch_t0(kr + t * k_st, row);        \
                __m512 qv[17]; /* q / √D by chunks, zero past D */                                             \
                for (int64_t j = 0; j < (NF); j++)                                                             \
                    qv[j] = _mm512_mul_ps(_mm512_loadu_ps(qr + 16 * j), _mm512_set1_ps(scale));                \
                if (TAIL) qv[NF] = _mm512_mul_ps(_mm512_maskz_loadu_ps(TAIL, qr + 16 * (NF)), _mm512_set1_ps(scale)); \
                /* scores s[t] = q·k[t] / √D, 16 positions at a time; the running max per lane */               \
                __m512 mx = _mm512_set1_ps(-INFINITY);                                                         \
                for (int64_t t = 0; t < T16; t += 16) {                                                        \
                    __m512 a[16];                                                                              \
                    for (int i = 0; i < 16; i++) {                                                             \
                        /* ahead: this key row PREFETCH_AHEAD positions on (to L1), this value row (to L2) */   \
                        if (t + i + PREFETCH_AHEAD < T) prefetch_t0(kr + (t + i + PREFETCH_AHEAD) * k_st, row); \
                        if (t + i < T) prefetch_t1(vr + (t + i) * v_st, row);                                  \
                        const ELEM *kt = kr + (t + i < T ? t + i : T - 1) * k_st; /* past T: repeat the last */ \
                        __m512 acc = _mm512_setzero_ps();                                                      \
                        for (int64_t j = 0; j < (NF); j++) acc = _mm512_fmadd_ps(qv[j], LOAD(kt + 16 * j), acc); \
                        if (TAIL) acc = _mm512_fmadd_ps(qv[NF], LOAD_M(kt + 16 * (NF), TAIL), acc);            \
                        a[i] = acc;                                                                            \
                    }                                                                                          \
                    const __m512 st = sum_lanes_16(a);                                                         \
                    _mm512_store_ps(s + t, st);                                                                \
                    mx = _mm512_max_ps(mx, st); /* the repeated last position does not change the max */      \
                }                                                                                              \
                /* weights e[t] = exp(s[t] - max), zero past T; their sum */                                    \
                const __m512 m = _mm512_set1_ps(_mm512_reduce_max_ps(mx));                                     \
                __m512 total = _mm512_setzero_ps();                                                            \
                for (int64_t t = 0; t < T16; t += 16) {                                                        \
                    __m512 e = exp_nonpositive(_mm512_sub_ps(_mm512_load_ps(s + t), m));                       \
                    if (t + 16 > T) e = _mm512_maskz_mov_ps((__mmask16)((1u << (T - t)) - 1u), e);             \
                    _mm512_store_ps(s + t, e);                                                                 \
                    total = _mm512_add_ps(total, e);                                                           \
                }                                                                                              \
                /* out = Σ_t e[t] v[t] / Σ_t e[t]: two accumulators (even, odd t) halve the add chain */        \
                __m512 even[17], odd[17];                                                                      \
                for (int64_t j = 0; j <= (NF); j++) even[j] = odd[j] = _mm512_setzero_ps();                    \
                int64_t t = 0;                                                                                 \
                for (; t + 2 <= T; t += 2) {                                                                   \
                    const ELEM *v0 = vr + t * v_st, *v1 = v0 + v_st;                                           \
                    const __m512 p0 = _mm512_set1_ps(s[t]), p1 = _mm512_set1_ps(s[t + 1]);                     \
                    for (int64_t j = 0; j < (NF); j++) {                                                       \
                        even[j] = _mm512_fmadd_ps(p0, LOAD(v0 + 16 * j), even[j]);                             \
                        odd[j] = _mm512_fmadd_ps(p1, LOAD(v1 + 16 * j), odd[j]);                               \
                    }                                                                                          \
                    if (TAIL) {                                                                                \
                        even[NF] = _mm512_fmadd_ps(p0, LOAD_M(v0 + 16 * (NF), TAIL), even[NF]);                \
                        odd[NF] = _mm512_fmadd_ps(p1, LOAD_M(v1 + 16 * (NF), TAIL), odd[NF]);                  \
                    }                                                                                          \
                }                                                                                              \
                if (t < T) {                                                                                   \
                    const ELEM *v0 = vr + t * v_st;                                                            \
                    const __m512 p0 = _mm512_set1_ps(s[t]);                                                    \
                    for (int64_t j = 0; j < (NF); j++) even[j] = _mm512_fmadd_ps(p0, LOAD(v0 + 16 * j), even[j]); \
                    if (TAIL) even[NF] = _mm512_fmadd_ps(p0, LOAD_M(v0 + 16 * (NF), TAIL), even[NF]);          \
                }                                                                                              \
                const __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(total));                        \
                float *o = out + bh * D;                                                                       \
                for (int64_t j = 0; j < (NF); j++)                                                             \
                    _mm512_storeu_ps(o + 16 * j, _mm512_mul_ps(_mm512_add_ps(even[j], odd[j]), inv));          \
                if (TAIL)                                                                                      \
                    _mm512_mask_storeu_ps(o + 16 * (NF), TAIL, _mm512_mul_ps(_mm512_add_ps(even[NF], odd[NF]), inv)); \
            }                                                                                                  \
            free(s);                                                                                           \
        }                                                                                                      \
        return failed;                                                                                         \
    }

/* The exported kernels, one per cache element type: the specialised body for heads of 16, 32, 64 or 128 channels,
   the general one otherwise. */
#define DEFINE_EXPORT(NAME, ELEM, LOAD, LOAD_M)                                                                \
    DEFINE_KERNEL(NAME##_16, ELEM, LOAD, LOAD_M, 1, 0)                                                         \
    DEFINE_KERNEL(NAME##_32, ELEM, LOAD, LOAD_M, 2, 0)                                                         \
    DEFINE_KERNEL(NAME##_64, ELEM, LOAD, LOAD_M, 4, 0)                                                         \
    DEFINE_KERNEL(NAME##_128, ELEM, LOAD, LOAD_M, 8, 0)                                                        \
    DEFINE_KERNEL(NAME##_any, ELEM, LOAD, LOAD_M, D / 16, (__mmask16)((1u << (D % 16)) - 1u))                  \
    int NAME(const float *q, const ELEM *k, const ELEM *v, float *out, int64_t B, int64_t H, int64_t T,        \
             int64_t D, int64_t q_sb, int64_t q_sh, int64_t k_sb, int64_t k_sh, int64_t k_st, int64_t v_sb,    \
             int64_t v_sh, int64_t v_st, int nthreads) {                                                       \
        if (D < 1 || D > 256 || T < 1) return 2;                                                               \
        int (*body)(const float *, const ELEM *, const ELEM *, float *, int64_t, int64_t, int64_t, int64_t,    \
                    int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int) =             \
            D == 16 ? NAME##_16 : D == 32 ? NAME##_32 : D == 64 ? NAME##_64 : D == 128 ? NAME##_128 : NAME##_any; \
        return body(q, k, v, out, B, H, T, D, q_sb, q_sh, k_sb, k_sh, k_st, v_sb, v_sh, v_st, nthreads);       \
    }

DEFINE_EXPORT(decode_attention_f32, float, load_f32, load_f32_m)
DEFINE_EXPORT(decode_attention_f16, uint16_t, load_f16, load_f16_m)
DEFINE_EXPORT(decode_attention_bf16, uint16_t, load_bf16, load_bf16_m)
