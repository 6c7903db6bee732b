// Copyright (c) mmrsa contributors. All rights reserved.
//
// The three per-position products of an RSA layer (Eq. 12) for inference
// on the CPU, float32, in one pass over the positions:
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
// (q / sqrt(sum_c q^2 + eps), as the layer's l2_normalize). Plain C with no
// Python or torch API, loaded with ctypes by
// mmrsa/models/common/rsa_native.py; the PyTorch layer is the fallback.
#include <math.h>
#include <omp.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define BLOCK 16  // consecutive positions of a frame per block

typedef float v8 __attribute__((vector_size(32)));

typedef struct {
  const float *q;                 // (n, t, l * Cq + c, hw)
  ptrdiff_t q_sn, q_st, q_sc, q_shw;
  const float *key;               // (position, c, d)
  ptrdiff_t key_sp, key_sc, key_sd;
  const float *value;             // (position, c, o): o < D H2, then G
  ptrdiff_t value_sp, value_sc, value_so;
  const float *p1;                // [Cq, D] or NULL
  const float *eye;               // [Cq, Cq] or NULL
  float *out;                     // (n, t, c * L + l, hw)
  ptrdiff_t out_sn, out_st, out_sc;
  ptrdiff_t n, t, hw, nq, cq, dim;
  int normalize;
  float eps;
  ptrdiff_t first_block, last_block;  // [first, last) of N * T * blocks
} Job;

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
  float *mix;    // [Cq, Cq]: VG + I
  v8 *qt;        // [Cq]: the query, 8 queries per vector
  v8 *kern;      // [D]
  v8 *t;         // [Cq]
  v8 *y;         // [Cq]
  float *yb;     // [Cq * L, BLOCK]: y of a block of positions
} Scratch;

// out[r, c] = a[r * sr + c * sc] + b[r, c] for a [rows, cols] matrix
// (out and b contiguous).
static inline __attribute__((always_inline)) void add_strided(
    float *out, const float *a, ptrdiff_t sr, ptrdiff_t sc, const float *b,
    ptrdiff_t rows, ptrdiff_t cols) {
  for (ptrdiff_t r = 0; r < rows; ++r)
    for (ptrdiff_t c = 0; c < cols; ++c)
      out[r * cols + c] = a[r * sr + c * sc] + b[r * cols + c];
}

// One position p with its query at qp: y[c', l] into
// yb[(c' * L + l) * BLOCK].
static inline __attribute__((always_inline)) void one_position(
    const Job *job, ptrdiff_t p, const float *qp, float *yb,
    const Scratch *w) {
  const ptrdiff_t cq = job->cq, dim = job->dim, nq = job->nq;
  const ptrdiff_t q_sc = job->q_sc;
  const float *key = job->key + p * job->key_sp;
  const float *value = job->value + p * job->value_sp;
  const ptrdiff_t value_sc = job->value_sc, value_so = job->value_so;
  const float *gram = value + dim * value_so;
  ptrdiff_t key_sc = job->key_sc, key_sd = job->key_sd;
  ptrdiff_t mix_sc = value_sc, mix_so = value_so;
  if (job->p1 != NULL) {  // K + P1, [Cq, D]
    add_strided(w->key, key, key_sc, key_sd, job->p1, cq, dim);
    key = w->key;
    key_sc = dim;
    key_sd = 1;
  }
  if (job->eye != NULL) {  // VG + I, [Cq, Cq]
    add_strided(w->mix, gram, mix_sc, mix_so, job->eye, cq, cq);
    gram = w->mix;
    mix_sc = cq;
    mix_so = 1;
  }
  for (ptrdiff_t l0 = 0; l0 < nq; l0 += 8) {
    // qt[c] = q[l0 + (0..7), c], normalised over c if asked
    v8 sum = {0, 0, 0, 0, 0, 0, 0, 0};
    for (ptrdiff_t c = 0; c < cq; ++c) {
      float *qc = (float *)&w->qt[c];
      for (int l = 0; l < 8; ++l) qc[l] = qp[((l0 + l) * cq + c) * q_sc];
      sum += w->qt[c] * w->qt[c];
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
  const float *key = job->key + p * job->key_sp;
  const float *value = job->value + p * job->value_sp;
  const ptrdiff_t key_len = job->key_sd == 1 ? job->dim : 1;
  const ptrdiff_t value_len =
      job->value_so == 1 ? job->dim + job->cq : 1;
  for (ptrdiff_t c = 0; c < job->cq; ++c) {
    for (ptrdiff_t i = 0; i < key_len; i += 16)
      __builtin_prefetch(key + c * job->key_sc + i);
    for (ptrdiff_t i = 0; i < value_len; i += 16)
      __builtin_prefetch(value + c * job->value_sc + i);
  }
}

#define PREFETCH_AHEAD 4  // positions

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
    const float *qf =
        job->q + ni * job->q_sn + ti * job->q_st + s0 * job->q_shw;
    const ptrdiff_t last = job->n * job->t * hw;
    for (ptrdiff_t i = 0; i < count; ++i) {
      const ptrdiff_t p = frame * hw + s0 + i;
      if (p + PREFETCH_AHEAD < last) prefetch_position(job, p + PREFETCH_AHEAD);
      one_position(job, p, qf + i * job->q_shw, w->yb + i, w);
    }
    float *of = job->out + ni * job->out_sn + ti * job->out_st + s0;
    for (ptrdiff_t j = 0; j < channels; ++j)
      memcpy(of + j * job->out_sc, w->yb + j * BLOCK, sizeof(float) * count);
  }
}

// Scratch for one thread (NULL when memory is short), freed with free().
static void *scratch_alloc(const Job *job, Scratch *w) {
  const ptrdiff_t cq = job->cq, dim = job->dim;
  void *memory = NULL;
  const size_t floats = cq * dim + cq * cq + 8 * (3 * cq + dim) +
                        cq * job->nq * BLOCK;
  if (posix_memalign(&memory, 64, sizeof(float) * floats) != 0) return NULL;
  w->qt = (v8 *)memory;
  w->kern = w->qt + cq;
  w->t = w->kern + dim;
  w->y = w->t + cq;
  w->key = (float *)(w->y + cq);
  w->mix = w->key + cq * dim;
  w->yb = w->mix + cq * cq;
  return memory;
}

// The calling convention of mmrsa_rsa_products_f32; rsa_native.py refuses a
// library built from another version of this file (a stale editable build).
#define MMRSA_RSA_PRODUCTS_ABI 1

int mmrsa_rsa_products_abi(void) { return MMRSA_RSA_PRODUCTS_ABI; }

// Returns 0 on success, 1 for sizes it does not handle (the number of
// queries must be a multiple of 8), 2 when memory is short (out is then
// incomplete). Positions are numbered (n * T + t) * HW + hw for key and
// value. The threads are those of the OpenMP runtime PyTorch loaded: this
// library needs libgomp.so.1, which resolves to PyTorch's copy when torch is
// imported first, so the products share PyTorch's thread pool instead of
// competing with its spinning workers.
int mmrsa_rsa_products_f32(
    const float *q, ptrdiff_t q_sn, ptrdiff_t q_st, ptrdiff_t q_sc,
    ptrdiff_t q_shw, const float *key, ptrdiff_t key_sp, ptrdiff_t key_sc, ptrdiff_t key_sd,
    const float *value, ptrdiff_t value_sp, ptrdiff_t value_sc,
    ptrdiff_t value_so, const float *p1, const float *eye, float *out,
    ptrdiff_t out_sn, ptrdiff_t out_st, ptrdiff_t out_sc, ptrdiff_t n,
    ptrdiff_t t, ptrdiff_t hw, ptrdiff_t nq, ptrdiff_t cq, ptrdiff_t dim,
    int normalize, float eps, int threads) {
  if (n < 1 || t < 1 || hw < 1 || nq < 8 || nq % 8 != 0 || cq < 1 ||
      dim < 1)
    return 1;
  const ptrdiff_t blocks = n * t * ((hw + BLOCK - 1) / BLOCK);
  if (threads < 1) threads = 1;
  if (threads > blocks) threads = (int)blocks;
  int status = 0;
#pragma omp parallel num_threads(threads) reduction(max : status)
  {
    const ptrdiff_t parts = omp_get_num_threads(), part = omp_get_thread_num();
    Job job = {q,      q_sn,     q_st,     q_sc,     q_shw,  key,    key_sp,
               key_sc, key_sd,   value,    value_sp, value_sc, value_so,
               p1,     eye,      out,      out_sn,   out_st, out_sc,
               n,      t,        hw,       nq,       cq,     dim,
               normalize, eps,   blocks * part / parts,
               blocks * (part + 1) / parts};
    Scratch w;
    void *memory = scratch_alloc(&job, &w);
    if (memory == NULL) {
      status = 2;
    } else {
      run_job(&job, &w);
      free(memory);
    }
  }
  return status;
}
