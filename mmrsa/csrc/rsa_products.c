// Copyright (c) mmrsa contributors. All rights reserved.
//
// The three per-position products of an RSA layer (Eq. 12) on the CPU,
// float32, in one pass over the positions, and their backward pass:
//
//   kernel[l, d]  = sum_c q[l, c] (K[c, d] + P1[c, d])            [L, D]
//   t[c, l]       = sum_d V2[c, d] kernel[l, d]                   [Cq, L]
//   y[c', l]      = sum_c (VG[c, c'] + I[c, c']) t[c, l]          [Cq, L]
//
// with K the key filtered by H1, V2 the value filtered by H2 and VG the
// value filtered by G, all positions first. y equals the layer's
// (I + XV^T G)^T (H2^T XV)^T kernel^T; the middle product is taken first,
// which needs L * D * Cq + L * Cq * Cq multiply-adds instead of
// D * Cq * Cq + L * D * Cq (the same for Cq = L, fewer above).
//
// The query is read, and y written, in the layouts the layer holds them in
// (clips [N, C, T, H, W] or frames [N*T, C, H, W]: any strides, except a
// unit stride within an output frame), so no transposes are
// needed around the products; the query may be L2-normalised on the way in
// (q / sqrt(sum_c q^2 + eps), as the layer's l2_normalize).
//
// The backward pass (mmrsa_rsa_products_backward_f32) takes the gradient of
// y in the layout of y and returns those of the query (before the
// normalisation, if asked), of the key and of the value, position by
// position; the kernel and t are computed again rather than kept. The
// gradients of P1 and I are the sums over the positions of those of the
// key and of VG, left to the caller. The key and the value, and their
// gradients, may be bfloat16 (MMRSA_HALF_KV), and so may the query, y and
// their gradients (MMRSA_HALF_QY): what the layer holds under bfloat16
// autocast. They are widened to float32 on the way in and rounded to
// nearest even on the way out; every sum is float32. Plain C with no
// Python or torch API, loaded with ctypes by
// mmrsa/models/common/rsa_native.py; the PyTorch layer is the fallback.
#include <math.h>
#include <omp.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define BLOCK 32  // consecutive positions of a frame per block

typedef float v8 __attribute__((vector_size(32)));
typedef float v8u __attribute__((vector_size(32), aligned(4)));  // unaligned

typedef struct {
  const void *q;                  // (n, t, l * Cq + c, hw)
  ptrdiff_t q_sn, q_st, q_sc, q_shw;
  const void *key;                // (position, c, d)
  ptrdiff_t key_sp, key_sc, key_sd;
  const void *value;              // (position, c, o): o < D H2, then G
  ptrdiff_t value_sp, value_sc, value_so;
  const float *p1;                // [Cq, D] or NULL
  const float *eye;               // [Cq, Cq] or NULL
  void *out;                      // (n, t, c * L + l, hw)
  ptrdiff_t out_sn, out_st, out_sc;
  ptrdiff_t n, t, hw, nq, cq, dim;
  int normalize;
  float eps;
  ptrdiff_t first_block, last_block;  // [first, last) of N * T * blocks
  // backward only (NULL otherwise): the gradient of out in out's layout
  // (any strides), and those of q (unit stride within a frame), key and
  // value, written
  const void *gy;                 // (n, t, c * L + l, hw)
  ptrdiff_t gy_sn, gy_st, gy_sc, gy_shw;
  void *gq;                       // (n, t, l * Cq + c, hw)
  ptrdiff_t gq_sn, gq_st, gq_sc;
  void *gkey;                     // (position, c, d)
  ptrdiff_t gkey_sp, gkey_sc, gkey_sd;
  void *gvalue;                   // (position, c, o)
  ptrdiff_t gvalue_sp, gvalue_sc, gvalue_so;
  int half_kv;  // key, value, gkey and gvalue are bfloat16, else float32
  int half_qy;  // q, out, gy and gq are bfloat16, else float32
} Job;

#define MMRSA_HALF_KV 1  // bits of the `dtypes` argument
#define MMRSA_HALF_QY 2

typedef unsigned short bf16;

static inline float widen(bf16 h) {
  const unsigned int u = (unsigned int)h << 16;
  float f;
  memcpy(&f, &u, sizeof(f));
  return f;
}

// Round to nearest even, NaN to the quiet NaN 0x7fc0 (as PyTorch does).
static inline bf16 narrow(float f) {
  unsigned int u;
  memcpy(&u, &f, sizeof(u));
  if (f != f) return 0x7fc0;
  return (bf16)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}

// Element i of x, bfloat16 (half) or float32.
static inline const void *offset(const void *x, ptrdiff_t i, int half) {
  return half ? (const void *)((const bf16 *)x + i)
              : (const void *)((const float *)x + i);
}

static inline float load(const void *x, ptrdiff_t i, int half) {
  return half ? widen(((const bf16 *)x)[i]) : ((const float *)x)[i];
}

// count floats from src to dst, bfloat16 (rounded) where half.
static inline void store_row(void *dst, const float *src, ptrdiff_t count,
                             int half) {
  if (!half) {
    memcpy(dst, src, sizeof(float) * count);
    return;
  }
  bf16 *d = (bf16 *)dst;
  for (ptrdiff_t k = 0; k < count; ++k) d[k] = narrow(src[k]);
}

// out[j] = sum_k w[j * sj + k * sk] x[k] for j < J (a compile-time 8 or 1),
// every x[k] and out[j] a vector over 8 queries; the J sums stay in
// registers.
static inline __attribute__((always_inline)) void tile(
    const float *w, ptrdiff_t sj, ptrdiff_t sk, const v8 *x, ptrdiff_t K,
    v8 *out, const int J) {
  v8 acc[8];
  for (int j = 0; j < J; ++j) acc[j] = (v8){0, 0, 0, 0, 0, 0, 0, 0};
  for (ptrdiff_t k = 0; k < K; ++k) {
    const v8 xk = x[k];
    const float *wk = w + k * sk;
    for (int j = 0; j < J; ++j) acc[j] += wk[j * sj] * xk;
  }
  for (int j = 0; j < J; ++j) out[j] = acc[j];
}

// out[j] = sum_k w[j * sj + k * sk] x[k] for j < J, in tiles of 8.
static inline __attribute__((always_inline)) void product(
    const float *w, ptrdiff_t sj, ptrdiff_t sk, const v8 *x, ptrdiff_t K,
    v8 *out, ptrdiff_t J) {
  ptrdiff_t j = 0;
  for (; j + 8 <= J; j += 8) tile(w + j * sj, sj, sk, x, K, out + j, 8);
  for (; j < J; ++j) tile(w + j * sj, sj, sk, x, K, out + j, 1);
}

typedef struct {
  float *key;    // [Cq, D]: K + P1
  float *v2;     // [Cq, D]: V2 (bfloat16 widened)
  float *mix;    // [Cq, Cq]: VG + I
  v8 *qt;        // [Cq]: the query, 8 queries per vector
  v8 *kern;      // [D]
  v8 *t;         // [Cq]
  v8 *y;         // [Cq]
  float *yb;     // [Cq * L, BLOCK]: y of a block of positions
} Scratch;

// out[r, c] = a[r * sr + c * sc] + b[r, c] for a [rows, cols] matrix
// (out and b contiguous; b NULL: a copy). Rows with a unit stride (the
// layer's, where a row is a channel's filter outputs) are summed in
// vectors (the forward pass took x0.95-0.98 the time of the sums element by
// element at the RSANet-R50 stages).
static inline __attribute__((always_inline)) void add_strided(
    float *restrict out, const float *restrict a, ptrdiff_t sr, ptrdiff_t sc,
    const float *restrict b, ptrdiff_t rows, ptrdiff_t cols) {
  for (ptrdiff_t r = 0; r < rows; ++r) {
    float *restrict outr = out + r * cols;
    const float *restrict ar = a + r * sr;
    const float *restrict br = b == NULL ? NULL : b + r * cols;
    if (sc == 1 && br != NULL) {
      for (ptrdiff_t c = 0; c < cols; ++c) outr[c] = ar[c] + br[c];
    } else if (sc == 1) {
      memcpy(outr, ar, sizeof(float) * cols);
    } else {
      for (ptrdiff_t c = 0; c < cols; ++c)
        outr[c] = ar[c * sc] + (br == NULL ? 0.0f : br[c]);
    }
  }
}

// add_strided from a bfloat16 (half) or float32 matrix a.
static inline __attribute__((always_inline)) void add_strided_any(
    float *out, const void *a, int half, ptrdiff_t sr, ptrdiff_t sc,
    const float *b, ptrdiff_t rows, ptrdiff_t cols) {
  if (!half) {
    add_strided(out, (const float *)a, sr, sc, b, rows, cols);
    return;
  }
  const bf16 *h = (const bf16 *)a;
  for (ptrdiff_t r = 0; r < rows; ++r)
    for (ptrdiff_t c = 0; c < cols; ++c)
      out[r * cols + c] =
          widen(h[r * sr + c * sc]) + (b == NULL ? 0.0f : b[r * cols + c]);
}

// x[i + l * step], l < 8 (8 queries, or the gradients of 8 queries' y),
// into a vector in registers: eight scalar stores into memory read back as
// one vector stall on store forwarding (inference took x0.84-0.91 the time
// at the RSANet-R50 stages built this way).
static inline __attribute__((always_inline)) void gather8(
    v8 *out, const void *x, ptrdiff_t i, ptrdiff_t step, int half) {
  for (int l = 0; l < 8; ++l) (*out)[l] = load(x, i + l * step, half);
}

// One position p with its query at qp: y[c', l] into
// yb[(c' * L + l) * BLOCK].
static inline __attribute__((always_inline)) void one_position(
    const Job *job, ptrdiff_t p, const void *qp, float *yb,
    const Scratch *w) {
  const ptrdiff_t cq = job->cq, dim = job->dim, nq = job->nq;
  const ptrdiff_t q_sc = job->q_sc;
  ptrdiff_t key_sc = job->key_sc, key_sd = job->key_sd;
  ptrdiff_t value_sc = job->value_sc, value_so = job->value_so;
  ptrdiff_t mix_sc = value_sc, mix_so = value_so;
  const int half = job->half_kv;
  const void *key_at = offset(job->key, p * job->key_sp, half);
  const void *value_at = offset(job->value, p * job->value_sp, half);
  const void *gram_at = offset(value_at, dim * value_so, half);
  // float32 read in place; bfloat16, and sums with P1 or I, widened first
  const float *key = (const float *)key_at;
  const float *value = (const float *)value_at;
  const float *gram = (const float *)gram_at;
  if (job->p1 != NULL || half) {  // K + P1, [Cq, D]
    add_strided_any(w->key, key_at, half, key_sc, key_sd, job->p1, cq, dim);
    key = w->key;
    key_sc = dim;
    key_sd = 1;
  }
  if (half) {  // V2, [Cq, D]
    add_strided_any(w->v2, value_at, 1, value_sc, value_so, NULL, cq, dim);
    value = w->v2;
    value_sc = dim;
    value_so = 1;
  }
  if (job->eye != NULL || half) {  // VG + I, [Cq, Cq]
    add_strided_any(w->mix, gram_at, half, mix_sc, mix_so, job->eye, cq, cq);
    gram = w->mix;
    mix_sc = cq;
    mix_so = 1;
  }
  for (ptrdiff_t l0 = 0; l0 < nq; l0 += 8) {
    // qt[c] = q[l0 + (0..7), c], normalised over c if asked
    v8 sum = {0, 0, 0, 0, 0, 0, 0, 0};
    for (ptrdiff_t c = 0; c < cq; ++c) {
      v8 qc;
      gather8(&qc, qp, (l0 * cq + c) * q_sc, cq * q_sc, job->half_qy);
      w->qt[c] = qc;
      sum += qc * qc;
    }
    if (job->normalize) {
      v8 scale = {0, 0, 0, 0, 0, 0, 0, 0};
      for (int l = 0; l < 8; ++l) scale[l] = 1.0f / sqrtf(sum[l] + job->eps);
      for (ptrdiff_t c = 0; c < cq; ++c) w->qt[c] *= scale;
    }
    // kern[d] = sum_c (K + P1)[c, d] qt[c]
    product(key, key_sd, key_sc, w->qt, cq, w->kern, dim);
    // t[c] = sum_d V2[c, d] kern[d]
    product(value, value_sc, value_so, w->kern, dim, w->t, cq);
    // y[c'] = sum_c (VG + I)[c, c'] t[c]
    product(gram, mix_so, mix_sc, w->t, cq, w->y, cq);
    for (ptrdiff_t c = 0; c < cq; ++c) {
      const float *yc = (const float *)&w->y[c];
      for (int l = 0; l < 8; ++l) yb[(c * nq + l0 + l) * BLOCK] = yc[l];
    }
  }
}

// Ask for the rows of key and value of position p ahead of their use: they
// come straight from the convolutions (main memory), in up to 2 Cq rows per
// position that the hardware prefetcher does not follow on its own.
static inline __attribute__((always_inline)) void prefetch_position(
    const Job *job, ptrdiff_t p) {
  const ptrdiff_t key_len = job->key_sd == 1 ? job->dim : 1;
  const ptrdiff_t value_len =
      job->value_so == 1 ? job->dim + job->cq : 1;
  const int half = job->half_kv;
  const ptrdiff_t line = half ? 32 : 16;  // elements per cache line
  for (ptrdiff_t c = 0; c < job->cq; ++c) {
    for (ptrdiff_t i = 0; i < key_len; i += line)
      __builtin_prefetch(
          offset(job->key, p * job->key_sp + c * job->key_sc + i, half));
    for (ptrdiff_t i = 0; i < value_len; i += line)
      __builtin_prefetch(offset(
          job->value, p * job->value_sp + c * job->value_sc + i, half));
  }
}

#define PREFETCH_AHEAD 4  // positions

// Ask for the rows of the next block of positions of `channels` channels
// (stride sc) from `x` on, where a channel's positions are consecutive (a
// unit stride sp): one stream per channel, too many for the hardware
// prefetcher (measured 1.5x faster at Cq = 8 with L = 8, 64 + 64 channels).
static inline __attribute__((always_inline)) void prefetch_rows(
    const void *x, int half, ptrdiff_t sp, ptrdiff_t sc, ptrdiff_t channels,
    int write) {
  if (sp != 1) return;
  for (ptrdiff_t j = 0; j < channels; ++j)
    for (ptrdiff_t i = 0; i < BLOCK; i += half ? 32 : 16) {
      if (write)
        __builtin_prefetch(offset(x, i + j * sc, half), 1);
      else
        __builtin_prefetch(offset(x, i + j * sc, half), 0);
    }
}

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
// AVX2 + FMA where the CPU has them (chosen when the library loads)
#define MULTIVERSION __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define MULTIVERSION
#endif

MULTIVERSION static void run_job(const Job *job, const Scratch *w) {
  const ptrdiff_t channels = job->cq * job->nq, hw = job->hw;
  const ptrdiff_t per_frame = (hw + BLOCK - 1) / BLOCK;
  for (ptrdiff_t b = job->first_block; b < job->last_block; ++b) {
    const ptrdiff_t frame = b / per_frame;  // n * T + t
    const ptrdiff_t ni = frame / job->t, ti = frame % job->t;
    const ptrdiff_t s0 = (b % per_frame) * BLOCK;
    const ptrdiff_t count = hw - s0 < BLOCK ? hw - s0 : BLOCK;
    const int half = job->half_qy;
    const void *qf = offset(
        job->q, ni * job->q_sn + ti * job->q_st + s0 * job->q_shw, half);
    void *of = (void *)offset(
        job->out, ni * job->out_sn + ti * job->out_st + s0, half);
    const ptrdiff_t last = job->n * job->t * hw;
    if (s0 + BLOCK < hw) {  // the next block of this frame
      prefetch_rows(offset(qf, BLOCK * job->q_shw, half), half, job->q_shw,
                    job->q_sc, channels, 0);
      prefetch_rows(offset(of, BLOCK, half), half, 1, job->out_sc, channels,
                    1);
    }
    for (ptrdiff_t i = 0; i < count; ++i) {
      const ptrdiff_t p = frame * hw + s0 + i;
      if (p + PREFETCH_AHEAD < last) prefetch_position(job, p + PREFETCH_AHEAD);
      one_position(job, p, offset(qf, i * job->q_shw, half), w->yb + i, w);
    }
    for (ptrdiff_t j = 0; j < channels; ++j)
      store_row((void *)offset(of, j * job->out_sc, half), w->yb + j * BLOCK,
                count, half);
  }
}

// Scratch for one thread (NULL when memory is short), freed with free().
static void *scratch_alloc(const Job *job, Scratch *w) {
  const ptrdiff_t cq = job->cq, dim = job->dim;
  void *memory = NULL;
  const size_t floats = 2 * cq * dim + cq * cq + 8 * (3 * cq + dim) +
                        cq * job->nq * BLOCK;
  if (posix_memalign(&memory, 64, sizeof(float) * floats) != 0) return NULL;
  w->qt = (v8 *)memory;
  w->kern = w->qt + cq;
  w->t = w->kern + dim;
  w->y = w->t + cq;
  w->key = (float *)(w->y + cq);
  w->v2 = w->key + cq * dim;
  w->mix = w->v2 + cq * dim;
  w->yb = w->mix + cq * cq;
  return memory;
}

// The calling convention of the library (mmrsa_rsa_products_f32 and, in
// channel_conv.c, mmrsa_channel_conv_f32 and mmrsa_channel_conv_wgrad_f32);
// rsa_native.py refuses a library built from other versions of these files
// (a stale editable build).
#define MMRSA_RSA_PRODUCTS_ABI 8

int mmrsa_rsa_products_abi(void) { return MMRSA_RSA_PRODUCTS_ABI; }

// ---------------------------------------------------------------------- //
// backward
// ---------------------------------------------------------------------- //

typedef struct {
  v8 *qt;        // [Cq]: the (normalised) query, 8 queries per vector
  v8 *kern;      // [D]
  v8 *t;         // [Cq]
  v8 *gy;        // [Cq]: the gradient of y
  v8 *gt;        // [Cq]
  v8 *gkern;     // [D]
  v8 *gqt;       // [Cq]
  float *key;    // [Cq, D]: K + P1
  float *v2;     // [Cq, D]: V2
  float *mix;    // [Cq, Cq]: VG + I
  float *kernT;  // [8, D]: kern, query major
  float *gyT;    // [8, Cq]
  float *gkernT; // [8, D]
  // the gradients of a block of positions, written out after the block:
  float *gkb;    // [Cq, BLOCK, D]: of K (and of K + P1)
  float *gvb;    // [Cq, BLOCK, D + Cq]: of V2 and VG (and of VG + I)
  float *gqb;    // [L * Cq, BLOCK]: of q
} GradScratch;

// acc[r * sr + j] += sum_l a[r][l] bt[l, j] for r < rows, j < cols,
// l < 8, with a[r] a vector over 8 queries and bt [8, cols] (the sum over
// the queries of outer products: the gradient of a product's right factor).
// Vectors of 8 j, each accumulated in a register.
static inline __attribute__((always_inline)) void add_outer(
    float *restrict acc, ptrdiff_t sr, const v8 *a, const float *restrict bt,
    ptrdiff_t rows, ptrdiff_t cols) {
  for (ptrdiff_t r = 0; r < rows; ++r) {
    const float *ar = (const float *)&a[r];
    float *restrict accr = acc + r * sr;
    ptrdiff_t j = 0;
    for (; j + 8 <= cols; j += 8) {
      v8u sum = *(const v8u *)(accr + j);
      for (int l = 0; l < 8; ++l)
        sum += ar[l] * *(const v8u *)(bt + l * cols + j);
      *(v8u *)(accr + j) = sum;
    }
    for (; j < cols; ++j)
      for (int l = 0; l < 8; ++l) accr[j] += ar[l] * bt[l * cols + j];
  }
}

// dst[l, j] = src[j][l]: vectors over 8 queries -> rows per query.
static inline __attribute__((always_inline)) void transpose8(
    float *restrict dst, const v8 *src, ptrdiff_t cols) {
  for (ptrdiff_t j = 0; j < cols; ++j) {
    const float *sj = (const float *)&src[j];
    for (int l = 0; l < 8; ++l) dst[l * cols + j] = sj[l];
  }
}

// The gradient rows of a block of positions, b[r, i, j] for r < rows,
// i < count, j < cols (rows of `stride` floats), into out[(p0 + i) * sp +
// r * sr + j * sj] (bfloat16 where half, rounded): one copy per row where
// out's positions are contiguous rows, as in the layer (a channel's filter
// outputs, filters innermost).
static inline __attribute__((always_inline)) void store_block(
    void *out, int half, ptrdiff_t sp, ptrdiff_t sr, ptrdiff_t sj,
    const float *b, ptrdiff_t stride, ptrdiff_t rows, ptrdiff_t count,
    ptrdiff_t cols) {
  const int dense = sj == 1 && sp == cols && stride == cols;
  for (ptrdiff_t r = 0; r < rows; ++r) {
    const float *br = b + r * BLOCK * stride;
    if (half) {
      bf16 *outr = (bf16 *)out + r * sr;
      if (dense) {
        for (ptrdiff_t k = 0; k < count * cols; ++k) outr[k] = narrow(br[k]);
        continue;
      }
      for (ptrdiff_t i = 0; i < count; ++i)
        for (ptrdiff_t j = 0; j < cols; ++j)
          outr[i * sp + j * sj] = narrow(br[i * stride + j]);
      continue;
    }
    float *outr = (float *)out + r * sr;
    if (dense) {
      memcpy(outr, br, sizeof(float) * count * cols);
      continue;
    }
    for (ptrdiff_t i = 0; i < count; ++i)
      for (ptrdiff_t j = 0; j < cols; ++j)
        outr[i * sp + j * sj] = br[i * stride + j];
  }
}

// The gradients at position p, with its query at qp and the gradient of its
// y at gyp, into slot i of the block buffers (gqb[(l * Cq + c) * BLOCK + i],
// gkb[c, i, d], gvb[c, i, o]).
//
//   gt[c, l]     = sum_c' (VG + I)[c, c'] gy[c', l]
//   gVG[c, c']   = sum_l t[c, l] gy[c', l]
//   gkern[l, d]  = sum_c V2[c, d] gt[c, l]
//   gV2[c, d]    = sum_l gt[c, l] kernel[l, d]
//   gq[l, c]     = sum_d (K + P1)[c, d] gkern[l, d]
//   gK[c, d]     = sum_l q[l, c] gkern[l, d]
//
// and through the normalisation gq <- (gq - q (q . gq)) / |q|, q normalised.
static inline __attribute__((always_inline)) void one_position_backward(
    const Job *job, ptrdiff_t p, const void *qp, const void *gyp,
    ptrdiff_t i, const GradScratch *w) {
  const ptrdiff_t cq = job->cq, dim = job->dim, nq = job->nq;
  const ptrdiff_t q_sc = job->q_sc, gy_sc = job->gy_sc;
  const int half = job->half_kv;
  const void *key = offset(job->key, p * job->key_sp, half);
  const void *value = offset(job->value, p * job->value_sp, half);
  const ptrdiff_t value_sc = job->value_sc, value_so = job->value_so;
  add_strided_any(w->key, key, half, job->key_sc, job->key_sd, job->p1, cq,
                  dim);
  add_strided_any(w->v2, value, half, value_sc, value_so, NULL, cq, dim);
  add_strided_any(w->mix, offset(value, dim * value_so, half), half,
                  value_sc, value_so, job->eye, cq, cq);
  const ptrdiff_t cols = dim + cq;  // of a value row
  float *gk = w->gkb + i * dim, *gv = w->gvb + i * cols, *gqb = w->gqb + i;
  for (ptrdiff_t c = 0; c < cq; ++c) {
    memset(gk + c * BLOCK * dim, 0, sizeof(float) * dim);
    memset(gv + c * BLOCK * cols, 0, sizeof(float) * cols);
  }
  for (ptrdiff_t l0 = 0; l0 < nq; l0 += 8) {
    v8 sum = {0, 0, 0, 0, 0, 0, 0, 0};
    v8 scale = {1, 1, 1, 1, 1, 1, 1, 1};
    for (ptrdiff_t c = 0; c < cq; ++c) {
      v8 qc;
      gather8(&qc, qp, (l0 * cq + c) * q_sc, cq * q_sc, job->half_qy);
      w->qt[c] = qc;
      sum += qc * qc;
    }
    if (job->normalize) {
      for (int l = 0; l < 8; ++l) scale[l] = 1.0f / sqrtf(sum[l] + job->eps);
      for (ptrdiff_t c = 0; c < cq; ++c) w->qt[c] *= scale;
    }
    for (ptrdiff_t c = 0; c < cq; ++c) {
      v8 gc;
      gather8(&gc, gyp, (c * nq + l0) * gy_sc, gy_sc, job->half_qy);
      w->gy[c] = gc;
      for (int l = 0; l < 8; ++l) w->gyT[l * cq + c] = gc[l];
    }
    // the forward's kernel and t again
    product(w->key, 1, dim, w->qt, cq, w->kern, dim);
    product(w->v2, dim, 1, w->kern, dim, w->t, cq);
    // y = (VG + I)^T t
    product(w->mix, cq, 1, w->gy, cq, w->gt, cq);
    add_outer(gv + dim, BLOCK * cols, w->t, w->gyT, cq, cq);
    // t = V2 kernel
    product(w->v2, 1, dim, w->gt, cq, w->gkern, dim);
    transpose8(w->kernT, w->kern, dim);
    add_outer(gv, BLOCK * cols, w->gt, w->kernT, cq, dim);
    // kernel = (K + P1)^T q
    product(w->key, dim, 1, w->gkern, dim, w->gqt, cq);
    transpose8(w->gkernT, w->gkern, dim);
    add_outer(gk, BLOCK * dim, w->qt, w->gkernT, cq, dim);
    if (job->normalize) {
      v8 dot = {0, 0, 0, 0, 0, 0, 0, 0};
      for (ptrdiff_t c = 0; c < cq; ++c) dot += w->qt[c] * w->gqt[c];
      for (ptrdiff_t c = 0; c < cq; ++c)
        w->gqt[c] = (w->gqt[c] - w->qt[c] * dot) * scale;
    }
    for (ptrdiff_t c = 0; c < cq; ++c) {
      const float *gc = (const float *)&w->gqt[c];
      for (int l = 0; l < 8; ++l) gqb[((l0 + l) * cq + c) * BLOCK] = gc[l];
    }
  }
}

MULTIVERSION static void run_job_backward(const Job *job,
                                          const GradScratch *w) {
  const ptrdiff_t channels = job->cq * job->nq, hw = job->hw;
  const ptrdiff_t per_frame = (hw + BLOCK - 1) / BLOCK;
  const ptrdiff_t last = job->n * job->t * hw;
  for (ptrdiff_t b = job->first_block; b < job->last_block; ++b) {
    const ptrdiff_t frame = b / per_frame;  // n * T + t
    const ptrdiff_t ni = frame / job->t, ti = frame % job->t;
    const ptrdiff_t s0 = (b % per_frame) * BLOCK;
    const ptrdiff_t count = hw - s0 < BLOCK ? hw - s0 : BLOCK;
    const int half = job->half_qy;
    const void *qf = offset(
        job->q, ni * job->q_sn + ti * job->q_st + s0 * job->q_shw, half);
    const void *gyf = offset(
        job->gy, ni * job->gy_sn + ti * job->gy_st + s0 * job->gy_shw, half);
    void *gf = (void *)offset(
        job->gq, ni * job->gq_sn + ti * job->gq_st + s0, half);
    if (s0 + BLOCK < hw) {  // the next block of this frame
      prefetch_rows(offset(qf, BLOCK * job->q_shw, half), half, job->q_shw,
                    job->q_sc, channels, 0);
      prefetch_rows(offset(gyf, BLOCK * job->gy_shw, half), half,
                    job->gy_shw, job->gy_sc, channels, 0);
      prefetch_rows(offset(gf, BLOCK, half), half, 1, job->gq_sc, channels,
                    1);
    }
    for (ptrdiff_t i = 0; i < count; ++i) {
      const ptrdiff_t p = frame * hw + s0 + i;
      if (p + PREFETCH_AHEAD < last) prefetch_position(job, p + PREFETCH_AHEAD);
      one_position_backward(job, p, offset(qf, i * job->q_shw, half),
                            offset(gyf, i * job->gy_shw, half), i, w);
    }
    const ptrdiff_t p0 = frame * hw + s0, cols = job->dim + job->cq;
    const int half_kv = job->half_kv;
    store_block((void *)offset(job->gkey, p0 * job->gkey_sp, half_kv),
                half_kv, job->gkey_sp, job->gkey_sc, job->gkey_sd, w->gkb,
                job->dim, job->cq, count, job->dim);
    store_block((void *)offset(job->gvalue, p0 * job->gvalue_sp, half_kv),
                half_kv, job->gvalue_sp, job->gvalue_sc, job->gvalue_so,
                w->gvb, cols, job->cq, count, cols);
    for (ptrdiff_t j = 0; j < channels; ++j)
      store_row((void *)offset(gf, j * job->gq_sc, half), w->gqb + j * BLOCK,
                count, half);
  }
}

static void *grad_scratch_alloc(const Job *job, GradScratch *w) {
  const ptrdiff_t cq = job->cq, dim = job->dim;
  void *memory = NULL;
  const size_t vectors = 5 * cq + 2 * dim;
  const size_t floats = 8 * vectors + 2 * cq * dim + cq * cq +
                        8 * (2 * dim + cq) +
                        BLOCK * (cq * dim + cq * (dim + cq) + cq * job->nq);
  if (posix_memalign(&memory, 64, sizeof(float) * floats) != 0) return NULL;
  w->qt = (v8 *)memory;
  w->kern = w->qt + cq;
  w->t = w->kern + dim;
  w->gy = w->t + cq;
  w->gt = w->gy + cq;
  w->gkern = w->gt + cq;
  w->gqt = w->gkern + dim;
  w->key = (float *)(w->gqt + cq);
  w->v2 = w->key + cq * dim;
  w->mix = w->v2 + cq * dim;
  w->kernT = w->mix + cq * cq;
  w->gyT = w->kernT + 8 * dim;
  w->gkernT = w->gyT + 8 * cq;
  w->gkb = w->gkernT + 8 * dim;
  w->gvb = w->gkb + BLOCK * cq * dim;
  w->gqb = w->gvb + BLOCK * cq * (dim + cq);
  return memory;
}

// Runs `job` (the forward pass, or the backward pass where job->gy is set)
// on up to `threads` OpenMP threads, each on a contiguous range of blocks
// with scratch of its own. Returns 0, 1 for sizes the library does not
// handle (L must be a multiple of 8), 2 when memory is short.
static int run_parallel(const Job *job, int threads) {
  if (job->n < 1 || job->t < 1 || job->hw < 1 || job->nq < 8 ||
      job->nq % 8 != 0 || job->cq < 1 || job->dim < 1)
    return 1;
  const ptrdiff_t blocks =
      job->n * job->t * ((job->hw + BLOCK - 1) / BLOCK);
  if (threads < 1) threads = 1;
  if (threads > blocks) threads = (int)blocks;
  int status = 0;
#pragma omp parallel num_threads(threads) reduction(max : status)
  {
    const ptrdiff_t parts = omp_get_num_threads(), part = omp_get_thread_num();
    Job own = *job;
    own.first_block = blocks * part / parts;
    own.last_block = blocks * (part + 1) / parts;
    void *memory;
    if (own.gy == NULL) {
      Scratch w;
      memory = scratch_alloc(&own, &w);
      if (memory != NULL) run_job(&own, &w);
    } else {
      GradScratch w;
      memory = grad_scratch_alloc(&own, &w);
      if (memory != NULL) run_job_backward(&own, &w);
    }
    if (memory == NULL)
      status = 2;
    else
      free(memory);
  }
  return status;
}

// Returns 0 on success, 1 for sizes it does not handle (the number of
// queries must be a multiple of 8), 2 when memory is short (out is then
// incomplete). dtypes: MMRSA_HALF_KV for bfloat16 key and value,
// MMRSA_HALF_QY for a bfloat16 query and output; float32 otherwise.
// Positions are numbered (n * T + t) * HW + hw for key and value. The
// threads are those of the OpenMP runtime PyTorch loaded: this
// library needs libgomp.so.1, which resolves to PyTorch's copy when torch is
// imported first, so the products share PyTorch's thread pool instead of
// competing with its spinning workers.
int mmrsa_rsa_products_f32(
    const void *q, ptrdiff_t q_sn, ptrdiff_t q_st, ptrdiff_t q_sc,
    ptrdiff_t q_shw, const void *key, ptrdiff_t key_sp, ptrdiff_t key_sc,
    ptrdiff_t key_sd, const void *value, ptrdiff_t value_sp,
    ptrdiff_t value_sc, ptrdiff_t value_so, const float *p1, const float *eye,
    void *out,
    ptrdiff_t out_sn, ptrdiff_t out_st, ptrdiff_t out_sc, ptrdiff_t n,
    ptrdiff_t t, ptrdiff_t hw, ptrdiff_t nq, ptrdiff_t cq, ptrdiff_t dim,
    int normalize, float eps, int dtypes, int threads) {
  const Job job = {q,      q_sn,     q_st,     q_sc,     q_shw,  key,
                   key_sp, key_sc,   key_sd,   value,    value_sp,
                   value_sc, value_so, p1,     eye,      out,    out_sn,
                   out_st, out_sc,   n,        t,        hw,     nq,
                   cq,     dim,      normalize, eps,     0,      0,
                   NULL, 0, 0, 0, 0, NULL, 0, 0, 0,
                   NULL, 0, 0, 0, NULL, 0, 0, 0,
                   (dtypes & MMRSA_HALF_KV) != 0,
                   (dtypes & MMRSA_HALF_QY) != 0};
  return run_parallel(&job, threads);
}

// The gradients of mmrsa_rsa_products_f32 with the same operands: gy the
// gradient of out (its layout, any strides), written into gq (q's layout,
// a unit stride within a frame), gkey and gvalue (the layouts of key and
// value, any strides). Returns as mmrsa_rsa_products_f32.
int mmrsa_rsa_products_backward_f32(
    const void *q, ptrdiff_t q_sn, ptrdiff_t q_st, ptrdiff_t q_sc,
    ptrdiff_t q_shw, const void *key, ptrdiff_t key_sp, ptrdiff_t key_sc,
    ptrdiff_t key_sd, const void *value, ptrdiff_t value_sp,
    ptrdiff_t value_sc, ptrdiff_t value_so, const float *p1, const float *eye,
    const void *gy, ptrdiff_t gy_sn, ptrdiff_t gy_st, ptrdiff_t gy_sc,
    ptrdiff_t gy_shw, void *gq, ptrdiff_t gq_sn, ptrdiff_t gq_st,
    ptrdiff_t gq_sc, void *gkey, ptrdiff_t gkey_sp, ptrdiff_t gkey_sc,
    ptrdiff_t gkey_sd, void *gvalue, ptrdiff_t gvalue_sp,
    ptrdiff_t gvalue_sc, ptrdiff_t gvalue_so, ptrdiff_t n, ptrdiff_t t,
    ptrdiff_t hw, ptrdiff_t nq, ptrdiff_t cq, ptrdiff_t dim, int normalize,
    float eps, int dtypes, int threads) {
  const Job job = {q,      q_sn,     q_st,     q_sc,     q_shw,  key,
                   key_sp, key_sc,   key_sd,   value,    value_sp,
                   value_sc, value_so, p1,     eye,      NULL,   0,
                   0,      0,        n,        t,        hw,     nq,
                   cq,     dim,      normalize, eps,     0,      0,
                   gy,     gy_sn,    gy_st,    gy_sc,    gy_shw,
                   gq,     gq_sn,    gq_st,    gq_sc,
                   gkey,   gkey_sp,  gkey_sc,  gkey_sd,
                   gvalue, gvalue_sp, gvalue_sc, gvalue_so,
                   (dtypes & MMRSA_HALF_KV) != 0,
                   (dtypes & MMRSA_HALF_QY) != 0};
  return run_parallel(&job, threads);
}
