// Copyright (c) mmrsa contributors. All rights reserved.
//
// Single-channel convolutions of an RSA layer on the CPU, float32 (the
// forward pass, in inference and training, and the filters' and the
// input's gradients):
// every channel c of x [N, C, T, H, W] is filtered by the O filters
// [kt, kh, kw] of its bank c / (C / banks), stride 1, zero padding of half
// the (odd) kernel, into an output with the O filters of a position and
// channel consecutive, e.g. positions first [N, T, H, W, C, O] (what the
// native products read) or channels first [C, N, T, H, W, O]:
//
//   out[n, t, h, w, c, o] =
//       sum_{i, j, k} x[n, c, t + i - pt, h + j - ph, w + k - pw]
//                     * weight[bank(c), i, j, k, o]
//
// For H1 (one bank per channel, D filters each) oneDNN has no fast kernel:
// as one grouped convolution it is slow, and the layer's alternatives (one
// 1 -> D convolution per bank, or a grouped 2D convolution over temporal
// taps) run at 45-75 % of the efficiency of a dense convolution. Here each
// row of W outputs is computed in tiles of up to 8 positions times up to
// 64 filters held in vector registers (with AVX-512 and 8 filters a bank,
// tiles of 16 or 32 positions along W times the 8 filters); the frames and
// rows of the neighbourhood that fall outside the clip are skipped, and
// every input row is copied once with zeros on both sides so that the taps
// along W need no test. The filters are read transposed, [banks, kt, kh,
// kw, O], so that the O filters of a tap are one vector load.
//
// mmrsa_channel_conv_wgrad_f32 computes the gradient of the filters from
// x and the gradient of out (the backward pass of training):
//
//   dweight[b, i, j, k, o] = sum over the channels c of bank b and over
//       n, t, h, w of x[n, c, t + i - pt, h + j - ph, w + k - pw]
//                     * dout[n, t, h, w, c, o]
//
// in tiles of up to 7 taps along W times up to 32 filters held in vector
// registers, one row (i, j) of taps of one bank per task.
//
// mmrsa_channel_conv_dgrad_f32 computes the gradient of x:
//
//   dx[n, c, t, h, w] = sum over i, j, k, o of
//       dout[n, t - i + pt, h - j + ph, w - k + pw, c, o]
//       * weight[bank(c), i, j, k, o]
//
// in tiles of up to 8 positions, each gradient vector of a row loaded once
// for the kw taps that read it, one channel of a sample per task.
//
// The work is compiled for three instruction sets (AVX-512, AVX2 + FMA and
// the baseline) where the compiler and the C library support function
// multi-versioning (GCC 11 or newer, x86-64, glibc); the loader picks the
// best one the CPU has. Loaded with ctypes by
// mmrsa/models/common/rsa_native.py; the PyTorch layer is the fallback.
#include <omp.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GLIBC__) && !defined(__clang__) && \
    defined(__GNUC__) && __GNUC__ >= 11
#define MMRSA_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", \
                               "default")))
#else
#define MMRSA_CLONES
#endif

typedef float f16v __attribute__((vector_size(64)));  // 16 filters
typedef float f8v __attribute__((vector_size(32)));   // 8 filters

#define MAX_POSITIONS 8  // positions of a tile
#define MAX_VECTORS 4    // vectors of filters of a tile

// TILE(..., n) with n a compile-time constant: `count` if it is 1 to 7,
// `last` otherwise (the tiles' positions or taps).
#define BY_COUNT(count, last, TILE, ...)    \
  switch (count) {                          \
    case 1: TILE(__VA_ARGS__, 1); break;    \
    case 2: TILE(__VA_ARGS__, 2); break;    \
    case 3: TILE(__VA_ARGS__, 3); break;    \
    case 4: TILE(__VA_ARGS__, 4); break;    \
    case 5: TILE(__VA_ARGS__, 5); break;    \
    case 6: TILE(__VA_ARGS__, 6); break;    \
    case 7: TILE(__VA_ARGS__, 7); break;    \
    default: TILE(__VA_ARGS__, last);       \
  }

typedef struct {
  const float *x;  // (n, c, t, h, w), unit strides within a clip channel
  ptrdiff_t x_sn, x_sc;
  const float *weight;  // [banks, kt, kh, kw, O]
  float *out;           // (n, t, h, w, c, o), a unit stride in o
  ptrdiff_t out_sn, out_st, out_sh, out_sw, out_sc;
  ptrdiff_t n, c, t, h, w, banks, o, kt, kh, kw;
  int along_w;  // tile_along_w for O = 8, 24, ... (along_w())
} ConvJob;

// A tile: out[p, v * LANES + j] for p < P, v < VB, j < LANES is the sum
// over the `rows` (offsets of the input rows in `x`, of their filters in
// `wt`) and the kw taps along W of x[row + p + k] wt[row + k * O + ...].
#define DEFINE_TILE(NAME, VEC)                                               \
  static inline __attribute__((always_inline)) void NAME(                   \
      const float *x, const ptrdiff_t *x_rows, const float *wt,              \
      const ptrdiff_t *w_rows, int rows, ptrdiff_t kw, ptrdiff_t o,          \
      float *out, ptrdiff_t out_sp, const int VB, const int P) {             \
    const int lanes = (int)(sizeof(VEC) / sizeof(float));                    \
    VEC acc[MAX_POSITIONS][MAX_VECTORS];                                     \
    _Pragma("GCC unroll 8") for (int p = 0; p < P; ++p)                      \
      _Pragma("GCC unroll 4") for (int v = 0; v < VB; ++v)                   \
        acc[p][v] = (VEC){0};                                                \
    for (int r = 0; r < rows; ++r) {                                         \
      const float *xr = x + x_rows[r];                                       \
      const float *wr = wt + w_rows[r];                                      \
      for (ptrdiff_t k = 0; k < kw; ++k) {                                   \
        VEC wv[MAX_VECTORS];                                                 \
        _Pragma("GCC unroll 4") for (int v = 0; v < VB; ++v)                 \
          memcpy(&wv[v], wr + k * o + v * lanes, sizeof(VEC));               \
        _Pragma("GCC unroll 8") for (int p = 0; p < P; ++p) {                \
          const float xp = xr[p + k];                                        \
          _Pragma("GCC unroll 4") for (int v = 0; v < VB; ++v)               \
            acc[p][v] += xp * wv[v];                                         \
        }                                                                    \
      }                                                                      \
    }                                                                        \
    _Pragma("GCC unroll 8") for (int p = 0; p < P; ++p)                      \
      _Pragma("GCC unroll 4") for (int v = 0; v < VB; ++v)                   \
        memcpy(out + p * out_sp + v * lanes, &acc[p][v], sizeof(VEC));       \
  }

DEFINE_TILE(tile16, f16v)
DEFINE_TILE(tile8, f8v)

// One tile of `positions` outputs and `vectors` vectors of `lanes` filters.
static inline __attribute__((always_inline)) void tile(
    const float *x, const ptrdiff_t *x_rows, const float *wt,
    const ptrdiff_t *w_rows, int rows, ptrdiff_t kw, ptrdiff_t o, float *out,
    ptrdiff_t sp, int positions, int vectors, int lanes) {
  if (lanes == 8) {
    BY_COUNT(positions, 8, tile8, x, x_rows, wt, w_rows, rows, kw, o, out, sp,
             1)
  } else if (vectors == 4) {
    BY_COUNT(positions, 8, tile16, x, x_rows, wt, w_rows, rows, kw, o, out, sp,
             4)
  } else if (vectors == 2) {
    BY_COUNT(positions, 8, tile16, x, x_rows, wt, w_rows, rows, kw, o, out, sp,
             2)
  } else {
    BY_COUNT(positions, 8, tile16, x, x_rows, wt, w_rows, rows, kw, o, out, sp,
             1)
  }
}

// A tile along W for filters in groups of 8 (O = 8, 24, ...): out[p, f]
// for p < count <= 16 * PV and f < 8, with the positions in the lanes of
// PV vectors. Each tap loads PV input vectors and broadcasts the 8 filters
// for 8 PV vector multiply-adds of 16 lanes, where tile() with one vector
// of 8 filters loads an input for every 8 products. Reads up to
// 16 PV + kw - 1 floats from each row offset (past the row end into the
// next row, or the slack after `pad`: lanes that are not stored). Every
// output sums the same products in the same order as tile(): the same bits.
static inline __attribute__((always_inline)) void tile_along_w(
    const float *x, const ptrdiff_t *x_rows, const float *wt,
    const ptrdiff_t *w_rows, int rows, ptrdiff_t kw, ptrdiff_t o, float *out,
    ptrdiff_t out_sp, ptrdiff_t count, const int PV) {
  f16v acc[8][2];
  _Pragma("GCC unroll 8") for (int f = 0; f < 8; ++f)
    _Pragma("GCC unroll 2") for (int v = 0; v < PV; ++v)
      acc[f][v] = (f16v){0};
  for (int r = 0; r < rows; ++r) {
    const float *xr = x + x_rows[r];
    const float *wr = wt + w_rows[r];
    for (ptrdiff_t k = 0; k < kw; ++k) {
      f16v xv[2];
      _Pragma("GCC unroll 2") for (int v = 0; v < PV; ++v)
        memcpy(&xv[v], xr + k + v * 16, sizeof(f16v));
      const float *wk = wr + k * o;
      _Pragma("GCC unroll 8") for (int f = 0; f < 8; ++f) {
        const float wf = wk[f];
        _Pragma("GCC unroll 2") for (int v = 0; v < PV; ++v)
          acc[f][v] += wf * xv[v];
      }
    }
  }
  float lanes[8][32];
  _Pragma("GCC unroll 8") for (int f = 0; f < 8; ++f)
    _Pragma("GCC unroll 2") for (int v = 0; v < PV; ++v)
      memcpy(&lanes[f][v * 16], &acc[f][v], sizeof(f16v));
  for (ptrdiff_t p = 0; p < count; ++p)
    _Pragma("GCC unroll 8") for (int f = 0; f < 8; ++f)
      out[p * out_sp + f] = lanes[f][p];
}

// Floats read past the end of `pad` by tile_along_w (zeros).
#define PAD_SLACK 32

// Whether tile_along_w runs: the CPU has AVX-512, which the loader then
// picks (16 float lanes, 32 vector registers; in the other versions the
// tile would not fit the registers).
static int along_w(void) {
#if defined(__x86_64__) && defined(__GNUC__)
  return __builtin_cpu_supports("avx512f") &&
         __builtin_cpu_supports("avx512vl");
#else
  return 0;
#endif
}

// Frame t of channel c of sample n: copies the kt frames around it into
// `pad` (kt planes of H rows of W + kw - 1, zero columns on both sides:
// set once by the caller) and writes out[n, t, :, :, c, :].
MMRSA_CLONES
static void one_frame(const ConvJob *job, ptrdiff_t n, ptrdiff_t c,
                      ptrdiff_t t, float *pad, ptrdiff_t *x_rows) {
  const ptrdiff_t h = job->h, w = job->w, o = job->o;
  const ptrdiff_t kt = job->kt, kh = job->kh, kw = job->kw;
  const ptrdiff_t pt = kt / 2, ph = kh / 2, pw = kw / 2;
  const ptrdiff_t width = w + 2 * pw, plane = h * width;
  ptrdiff_t *w_rows = x_rows + kt * kh;
  const float *src = job->x + n * job->x_sn + c * job->x_sc;
  for (ptrdiff_t i = 0; i < kt; ++i) {
    const ptrdiff_t frame = t + i - pt;
    if (frame < 0 || frame >= job->t) continue;
    for (ptrdiff_t y = 0; y < h; ++y)
      memcpy(pad + i * plane + y * width + pw, src + (frame * h + y) * w,
             sizeof(float) * w);
  }
  const float *wt =
      job->weight + c / (job->c / job->banks) * kt * kh * kw * o;
  const int lanes = o % 16 == 0 ? 16 : 8;
  // vectors per tile: 4, 2 or 1, whichever divides O / 16
  const int vectors = lanes == 8 ? 1 : (o / 16) % 4 == 0 ? 4
                                     : (o / 16) % 2 == 0 ? 2 : 1;
  // 8 positions (6 with 4 vectors: 24 of the 32 AVX-512 registers)
  const ptrdiff_t most = vectors == MAX_VECTORS ? 6 : MAX_POSITIONS;
  const ptrdiff_t chunks = (w + most - 1) / most;
  const ptrdiff_t sp = job->out_sw;  // between positions of the output
  for (ptrdiff_t y = 0; y < h; ++y) {
    int rows = 0;  // the rows of the neighbourhood inside the clip
    for (ptrdiff_t i = 0; i < kt; ++i) {
      const ptrdiff_t frame = t + i - pt;
      if (frame < 0 || frame >= job->t) continue;
      for (ptrdiff_t j = 0; j < kh; ++j) {
        const ptrdiff_t row = y + j - ph;
        if (row < 0 || row >= h) continue;
        x_rows[rows] = i * plane + row * width;
        w_rows[rows] = (i * kh + j) * kw * o;
        ++rows;
      }
    }
    float *out_row = job->out + n * job->out_sn + t * job->out_st +
                     y * job->out_sh + c * job->out_sc;
    if (lanes == 8 && job->along_w) {
      for (ptrdiff_t first = 0; first < o; first += 8)
        for (ptrdiff_t start = 0; start < w; start += 32) {
          const ptrdiff_t count = w - start < 32 ? w - start : 32;
          float *out = out_row + start * sp + first;
          if (count > 16)
            tile_along_w(pad + start, x_rows, wt + first, w_rows, rows, kw,
                         o, out, sp, count, 2);
          else
            tile_along_w(pad + start, x_rows, wt + first, w_rows, rows, kw,
                         o, out, sp, count, 1);
        }
      continue;
    }
    for (ptrdiff_t first = 0; first < o; first += vectors * lanes) {
      ptrdiff_t start = 0;
      for (ptrdiff_t k = 0; k < chunks; ++k) {  // balanced chunks of W
        const ptrdiff_t end = w * (k + 1) / chunks;
        tile(pad + start, x_rows, wt + first, w_rows, rows, kw, o,
             out_row + start * sp + first, sp, (int)(end - start), vectors,
             lanes);
        start = end;
      }
    }
  }
}

// Whether the functions below handle these sizes: at least one of each,
// banks dividing C, O a multiple of 8, odd kernels.
static int handled(ptrdiff_t n, ptrdiff_t c, ptrdiff_t t, ptrdiff_t h,
                   ptrdiff_t w, ptrdiff_t banks, ptrdiff_t o, ptrdiff_t kt,
                   ptrdiff_t kh, ptrdiff_t kw) {
  return n >= 1 && c >= 1 && t >= 1 && h >= 1 && w >= 1 && banks >= 1 &&
         c % banks == 0 && o >= 8 && o % 8 == 0 && kt % 2 == 1 &&
         kh % 2 == 1 && kw % 2 == 1;
}

// One task of a parallel loop: item `item` of `job`, with the thread's
// scratch, `pad` (zeroed once) and `slots` (offsets or pointers).
typedef void (*Task)(const void *job, ptrdiff_t item, float *pad,
                     void *slots);

// Runs task(job, item) for every item < items on up to `threads` OpenMP
// threads (PyTorch's, see rsa_products.c), static shares of consecutive
// items, each thread with pad_floats zeroed floats and `slots` slots of
// scratch. Returns 0, or 2 when memory is short (the output is then
// incomplete).
static int run_tasks(Task task, const void *job, ptrdiff_t items,
                     size_t pad_floats, size_t slots, int threads) {
  const size_t slot = sizeof(ptrdiff_t) > sizeof(void *) ? sizeof(ptrdiff_t)
                                                         : sizeof(void *);
  if (threads < 1) threads = 1;
  if (threads > items) threads = (int)items;
  int status = 0;
#pragma omp parallel num_threads(threads) reduction(max : status)
  {
    float *pad = calloc(pad_floats, sizeof(float));
    void *scratch = malloc(slot * slots);
    const int ready = pad != NULL && scratch != NULL;
    status = ready ? 0 : 2;
#pragma omp for schedule(static)
    for (ptrdiff_t item = 0; item < items; ++item)
      if (ready) task(job, item, pad, scratch);
    free(pad);
    free(scratch);
  }
  return status;
}

// Item (n, c, t) of the forward pass.
static void frame_task(const void *job, ptrdiff_t item, float *pad,
                       void *slots) {
  const ConvJob *conv = job;
  const ptrdiff_t c = conv->c, t = conv->t;
  one_frame(conv, item / (c * t), item / t % c, item % t, pad, slots);
}

// Returns 0 on success, 1 for what it does not handle (see handled()), 2
// when memory is short (out is then incomplete). x has unit strides within
// each channel of a clip ([T, H, W] contiguous), x_sn and x_sc between
// samples and channels;
// weight is [banks, kt, kh, kw, O], contiguous; out has the strides out_s*
// (elements) along (n, t, h, w, c) and a unit stride along o. The threads
// are PyTorch's (see rsa_products.c).
int mmrsa_channel_conv_f32(const float *x, ptrdiff_t x_sn, ptrdiff_t x_sc,
                           const float *weight, float *out, ptrdiff_t out_sn,
                           ptrdiff_t out_st, ptrdiff_t out_sh,
                           ptrdiff_t out_sw, ptrdiff_t out_sc, ptrdiff_t n,
                           ptrdiff_t c, ptrdiff_t t, ptrdiff_t h, ptrdiff_t w,
                           ptrdiff_t banks, ptrdiff_t o, ptrdiff_t kt,
                           ptrdiff_t kh, ptrdiff_t kw, int threads) {
  if (!handled(n, c, t, h, w, banks, o, kt, kh, kw)) return 1;
  const ConvJob job = {x,      x_sn,   x_sc,   weight, out, out_sn,
                       out_st, out_sh, out_sw, out_sc, n,   c,
                       t,      h,      w,      banks,  o,   kt,
                       kh,     kw,     along_w()};
  return run_tasks(frame_task, &job, n * c * t,
                   (size_t)(kt * h * (w + kw - 1)) + PAD_SLACK,
                   (size_t)(2 * kt * kh),
                   threads);
}


// ---------------------------------------------------------------------- //
// the gradient of the filters
// ---------------------------------------------------------------------- //
#define MAX_TAPS 7  // taps along W of a tile of the filters' gradient

typedef struct {
  const float *x;  // (n, c, t, h, w), unit strides within a clip channel
  ptrdiff_t x_sn, x_sc;
  const float *dout;  // (n, t, h, w, c, o), a unit stride in o
  ptrdiff_t d_sn, d_st, d_sh, d_sw, d_sc;
  float *dweight;  // [banks, kt, kh, kw, O]
  ptrdiff_t n, c, t, h, w, banks, o, kt, kh, kw;
} GradJob;

// acc[k][v] += sum over the rows (t, y) and the W positions of
// x[row + p + k] * dout[p, v * LANES ...] for K taps and VB vectors; the
// tile is then added to dw[k * O + v * LANES ...].
#define DEFINE_WGRAD_TILE(NAME, VEC)                                         \
  static inline __attribute__((always_inline)) void NAME(                   \
      const float *const *x_rows, const float *const *d_rows, int rows,      \
      ptrdiff_t w, ptrdiff_t d_sw, float *dw, ptrdiff_t o, const int VB,     \
      const int K) {                                                        \
    const int lanes = (int)(sizeof(VEC) / sizeof(float));                    \
    VEC acc[MAX_TAPS][2];                                                    \
    _Pragma("GCC unroll 7") for (int k = 0; k < K; ++k)                      \
      _Pragma("GCC unroll 2") for (int v = 0; v < VB; ++v)                   \
        acc[k][v] = (VEC){0};                                                \
    for (int r = 0; r < rows; ++r) {                                         \
      const float *xr = x_rows[r], *dr = d_rows[r];                          \
      for (ptrdiff_t p = 0; p < w; ++p) {                                    \
        VEC dv[2];                                                           \
        _Pragma("GCC unroll 2") for (int v = 0; v < VB; ++v)                 \
          memcpy(&dv[v], dr + p * d_sw + v * lanes, sizeof(VEC));            \
        _Pragma("GCC unroll 7") for (int k = 0; k < K; ++k) {                \
          const float xk = xr[p + k];                                        \
          _Pragma("GCC unroll 2") for (int v = 0; v < VB; ++v)               \
            acc[k][v] += xk * dv[v];                                         \
        }                                                                    \
      }                                                                      \
    }                                                                        \
    _Pragma("GCC unroll 7") for (int k = 0; k < K; ++k)                      \
      _Pragma("GCC unroll 2") for (int v = 0; v < VB; ++v) {                 \
        VEC sum;                                                             \
        memcpy(&sum, dw + k * o + v * lanes, sizeof(VEC));                   \
        sum += acc[k][v];                                                    \
        memcpy(dw + k * o + v * lanes, &sum, sizeof(VEC));                   \
      }                                                                      \
  }

DEFINE_WGRAD_TILE(wgrad16, f16v)
DEFINE_WGRAD_TILE(wgrad8, f8v)

static inline __attribute__((always_inline)) void wgrad_tile(
    const float *const *x_rows, const float *const *d_rows, int rows,
    ptrdiff_t w, ptrdiff_t d_sw, float *dw, ptrdiff_t o, int taps,
    int vectors, int lanes) {
  if (lanes == 8) {
    BY_COUNT(taps, 7, wgrad8, x_rows, d_rows, rows, w, d_sw, dw, o, 1)
  } else if (vectors == 2) {
    BY_COUNT(taps, 7, wgrad16, x_rows, d_rows, rows, w, d_sw, dw, o, 2)
  } else {
    BY_COUNT(taps, 7, wgrad16, x_rows, d_rows, rows, w, d_sw, dw, o, 1)
  }
}

// Row (i, j) of the taps of bank b: dweight[b, i, j, :, :], summed over
// the bank's channels and the samples. `pad` has room for a channel's T * H
// rows of W + kw - 1 (zero columns on both sides: set once by the caller),
// into which the input rows this tap row reads are copied; `x_rows` and
// `d_rows` T * H pointers each.
MMRSA_CLONES
static void one_tap_row(const GradJob *job, ptrdiff_t b, ptrdiff_t i,
                        ptrdiff_t j, float *pad, const float **x_rows,
                        const float **d_rows) {
  const ptrdiff_t h = job->h, w = job->w, o = job->o;
  const ptrdiff_t kt = job->kt, kh = job->kh, kw = job->kw;
  const ptrdiff_t pt = kt / 2, ph = kh / 2, pw = kw / 2;
  const ptrdiff_t width = w + 2 * pw;
  const ptrdiff_t per_bank = job->c / job->banks;
  // the output frames and rows whose neighbour (i, j) is inside the clip
  const ptrdiff_t t0 = pt - i > 0 ? pt - i : 0;
  const ptrdiff_t t1 = job->t + pt - i < job->t ? job->t + pt - i : job->t;
  const ptrdiff_t y0 = ph - j > 0 ? ph - j : 0;
  const ptrdiff_t y1 = h + ph - j < h ? h + ph - j : h;
  float *dw = job->dweight + ((b * kt + i) * kh + j) * kw * o;
  const int lanes = o % 16 == 0 ? 16 : 8;
  const int vectors = lanes == 16 && (o / 16) % 2 == 0 ? 2 : 1;
  memset(dw, 0, sizeof(float) * kw * o);
  for (ptrdiff_t c = b * per_bank; c < (b + 1) * per_bank; ++c)
    for (ptrdiff_t n = 0; n < job->n; ++n) {
      const float *src = job->x + n * job->x_sn + c * job->x_sc;
      int rows = 0;
      for (ptrdiff_t t = t0; t < t1; ++t)
        for (ptrdiff_t y = y0; y < y1; ++y) {
          const ptrdiff_t at = (t + i - pt) * h + y + j - ph;
          memcpy(pad + rows * width + pw, src + at * w, sizeof(float) * w);
          x_rows[rows] = pad + rows * width;
          d_rows[rows] = job->dout + n * job->d_sn + t * job->d_st +
                         y * job->d_sh + c * job->d_sc;
          ++rows;
        }
      for (ptrdiff_t k0 = 0; k0 < kw; k0 += MAX_TAPS) {
        const int taps = (int)(kw - k0 < MAX_TAPS ? kw - k0 : MAX_TAPS);
        for (ptrdiff_t first = 0; first < o; first += vectors * lanes) {
          // the rows from tap k0 and filter `first` on
          for (int r = 0; r < rows; ++r) x_rows[r] += k0, d_rows[r] += first;
          wgrad_tile(x_rows, d_rows, rows, w, job->d_sw,
                     dw + k0 * o + first, o, taps, vectors, lanes);
          for (int r = 0; r < rows; ++r) x_rows[r] -= k0, d_rows[r] -= first;
        }
      }
    }
}

// Item (b, i, j) of the filters' gradient.
static void tap_row_task(const void *job, ptrdiff_t item, float *pad,
                         void *slots) {
  const GradJob *grad = job;
  const ptrdiff_t kt = grad->kt, kh = grad->kh;
  const float **rows = slots;
  one_tap_row(grad, item / (kt * kh), item / kh % kt, item % kh, pad, rows,
              rows + grad->t * grad->h);
}

// Returns 0 on success, 1 for what it does not handle (as
// mmrsa_channel_conv_f32), 2 when memory is short. x as for
// mmrsa_channel_conv_f32; dout has the strides d_s* along (n, t, h, w, c)
// and a unit stride along o; dweight [banks, kt, kh, kw, O], contiguous,
// written. Each thread takes whole rows (i, j) of one bank's taps, so the
// sums do not depend on the number of threads.
int mmrsa_channel_conv_wgrad_f32(
    const float *x, ptrdiff_t x_sn, ptrdiff_t x_sc, const float *dout,
    ptrdiff_t d_sn, ptrdiff_t d_st, ptrdiff_t d_sh, ptrdiff_t d_sw,
    ptrdiff_t d_sc, float *dweight, ptrdiff_t n, ptrdiff_t c, ptrdiff_t t,
    ptrdiff_t h, ptrdiff_t w, ptrdiff_t banks, ptrdiff_t o, ptrdiff_t kt,
    ptrdiff_t kh, ptrdiff_t kw, int threads) {
  if (!handled(n, c, t, h, w, banks, o, kt, kh, kw)) return 1;
  const GradJob job = {x,    x_sn, x_sc, dout, d_sn,  d_st, d_sh, d_sw,
                       d_sc, dweight, n, c,  t,    h,     w,    banks,
                       o,    kt,   kh,   kw};
  return run_tasks(tap_row_task, &job, banks * kt * kh,
                   (size_t)(t * h * (w + kw - 1)), (size_t)(2 * t * h),
                   threads);
}

// ---------------------------------------------------------------------- //
// the gradient of the input
// ---------------------------------------------------------------------- //
typedef struct {
  const float *dout;  // (n, t, h, w, c, o), a unit stride in o
  ptrdiff_t d_sn, d_st, d_sh, d_sw, d_sc;
  const float *weight;  // [banks, kt, kh, kw, O]
  float *dx;            // (n, c, t, h, w), unit strides within a channel
  ptrdiff_t dx_sn, dx_sc;
  ptrdiff_t n, c, t, h, w, banks, o, kt, kh, kw;
} InputGradJob;

// dx[p] for the P positions of a tile: the sum over the `rows` (offsets of
// the zero-padded gradient rows in `d`, of their filters in `wt`), the KW
// taps along W and the O filters of the gradient at position p + KW - 1 - k
// times filter tap k. Rows and filters are stored by vectors of LANES
// filters ([row][O / LANES][position][LANES], [taps][O / LANES][kw][LANES]),
// so that a tile addresses everything from one pointer with constant
// offsets. Each gradient vector is loaded once for every tap that reads it,
// with the KW filter vectors in registers (KW is a compile-time 7 for
// RSANet's kernels; other widths up to MAX_DGRAD_TAPS take the same code
// with loops). The lanes are added last, in halves (a fixed order).
#define MAX_DGRAD_TAPS 7
#define DEFINE_DGRAD_TILE(NAME, VEC)                                         \
  static inline __attribute__((always_inline)) void NAME(                   \
      const float *d, const ptrdiff_t *d_rows, ptrdiff_t d_chunk,            \
      const float *wt, const ptrdiff_t *w_rows, int rows, ptrdiff_t chunks,  \
      float *dx, const int KW, const int P) {                                \
    const int lanes = (int)(sizeof(VEC) / sizeof(float));                    \
    VEC acc[MAX_POSITIONS];                                                  \
    _Pragma("GCC unroll 8") for (int p = 0; p < P; ++p) acc[p] = (VEC){0};   \
    for (int r = 0; r < rows; ++r)                                           \
      for (ptrdiff_t v = 0; v < chunks; ++v) {                               \
        const float *dr = d + d_rows[r] + v * d_chunk;                       \
        const float *wr = wt + w_rows[r] + v * KW * lanes;                   \
        VEC wv[MAX_DGRAD_TAPS];                                              \
        _Pragma("GCC unroll 7") for (int k = 0; k < KW; ++k)                 \
          memcpy(&wv[k], wr + k * lanes, sizeof(VEC));                       \
        _Pragma("GCC unroll 14") for (int s = 0; s < P + KW - 1; ++s) {      \
          VEC dv;                                                            \
          memcpy(&dv, dr + s * lanes, sizeof(VEC));                          \
          _Pragma("GCC unroll 7") for (int k = 0; k < KW; ++k) {             \
            const int p = s - (KW - 1) + k;                                  \
            if (p >= 0 && p < P) acc[p] += dv * wv[k];                       \
          }                                                                  \
        }                                                                    \
      }                                                                      \
    _Pragma("GCC unroll 8") for (int p = 0; p < P; ++p) {                    \
      float sum[16];                                                         \
      memcpy(sum, &acc[p], sizeof(VEC));                                     \
      _Pragma("GCC unroll 4") for (int half = lanes / 2; half; half /= 2)    \
        _Pragma("GCC unroll 8") for (int j = 0; j < half; ++j)               \
          sum[j] += sum[j + half];                                           \
      dx[p] = sum[0];                                                        \
    }                                                                        \
  }

DEFINE_DGRAD_TILE(dgrad16, f16v)
DEFINE_DGRAD_TILE(dgrad8, f8v)

// The tile of `positions` (1 to 8) and KW taps (a compile-time 7, or any
// other odd number up to MAX_DGRAD_TAPS).
static inline __attribute__((always_inline)) void dgrad_tile(
    const float *d, const ptrdiff_t *d_rows, ptrdiff_t d_chunk,
    const float *wt, const ptrdiff_t *w_rows, int rows, ptrdiff_t chunks,
    float *dx, int positions, int kw, int lanes) {
  if (lanes == 16 && kw == 7) {
    BY_COUNT(positions, 8, dgrad16, d, d_rows, d_chunk, wt, w_rows, rows,
             chunks, dx, 7)
  } else if (kw == 7) {
    BY_COUNT(positions, 8, dgrad8, d, d_rows, d_chunk, wt, w_rows, rows,
             chunks, dx, 7)
  } else if (lanes == 16) {
    BY_COUNT(positions, 8, dgrad16, d, d_rows, d_chunk, wt, w_rows, rows,
             chunks, dx, kw)
  } else {
    BY_COUNT(positions, 8, dgrad8, d, d_rows, d_chunk, wt, w_rows, rows,
             chunks, dx, kw)
  }
}

// Channel c of sample n: copies the gradient of its T * H rows into `pad`
// (rows of W + kw - 1 positions, zero positions on both sides: set once by
// the caller, stored by vectors of `lanes` filters as the tile reads them)
// and writes dx[n, c, :, :, :].
MMRSA_CLONES
static void one_input_channel(const InputGradJob *job, ptrdiff_t n,
                              ptrdiff_t c, float *pad, ptrdiff_t *d_rows) {
  const ptrdiff_t t = job->t, h = job->h, w = job->w, o = job->o;
  const ptrdiff_t kt = job->kt, kh = job->kh, kw = job->kw;
  const ptrdiff_t pt = kt / 2, ph = kh / 2, pw = kw / 2;
  const int lanes = o % 16 == 0 ? 16 : 8;
  const ptrdiff_t chunks = o / lanes, d_chunk = (w + kw - 1) * lanes;
  const ptrdiff_t row_floats = chunks * d_chunk;
  ptrdiff_t *w_rows = d_rows + kt * kh;
  const float *src = job->dout + n * job->d_sn + c * job->d_sc;
  for (ptrdiff_t f = 0; f < t; ++f)
    for (ptrdiff_t y = 0; y < h; ++y) {
      float *row = pad + (f * h + y) * row_floats + pw * lanes;
      const float *from = src + f * job->d_st + y * job->d_sh;
      for (ptrdiff_t v = 0; v < chunks; ++v)
        for (ptrdiff_t x = 0; x < w; ++x) {
          float *to = row + v * d_chunk + x * lanes;
          const float *at = from + x * job->d_sw + v * lanes;
          if (lanes == 16)
            memcpy(to, at, sizeof(f16v));
          else
            memcpy(to, at, sizeof(f8v));
        }
    }
  const float *wt =
      job->weight + c / (job->c / job->banks) * kt * kh * kw * o;
  const ptrdiff_t tiles = (w + MAX_POSITIONS - 1) / MAX_POSITIONS;
  float *dx = job->dx + n * job->dx_sn + c * job->dx_sc;
  for (ptrdiff_t f = 0; f < t; ++f)
    for (ptrdiff_t y = 0; y < h; ++y) {
      int rows = 0;  // the gradient rows inside the clip: frame f - i + pt
      for (ptrdiff_t i = 0; i < kt; ++i) {
        const ptrdiff_t frame = f - i + pt;
        if (frame < 0 || frame >= t) continue;
        for (ptrdiff_t j = 0; j < kh; ++j) {
          const ptrdiff_t row = y - j + ph;
          if (row < 0 || row >= h) continue;
          d_rows[rows] = (frame * h + row) * row_floats;
          w_rows[rows] = (i * kh + j) * kw * o;
          ++rows;
        }
      }
      float *dx_row = dx + (f * h + y) * w;
      ptrdiff_t start = 0;
      for (ptrdiff_t k = 0; k < tiles; ++k) {  // balanced tiles of W
        const ptrdiff_t end = w * (k + 1) / tiles;
        dgrad_tile(pad + start * lanes, d_rows, d_chunk, wt, w_rows, rows,
                   chunks, dx_row + start, (int)(end - start), (int)kw,
                   lanes);
        start = end;
      }
    }
}

// Item (n, c) of the input's gradient.
static void input_channel_task(const void *job, ptrdiff_t item, float *pad,
                               void *slots) {
  const InputGradJob *grad = job;
  one_input_channel(grad, item / grad->c, item % grad->c, pad, slots);
}

// Returns 0 on success, 1 for what it does not handle (as
// mmrsa_channel_conv_f32, and kw above MAX_DGRAD_TAPS), 2 when memory is
// short. dout as for mmrsa_channel_conv_wgrad_f32; weight as for
// mmrsa_channel_conv_f32; dx [N, C, T, H, W] with the strides dx_sn, dx_sc
// and unit strides within a channel, written:
//
//   dx[n, c, t, h, w] = sum_{i, j, k, o}
//       dout[n, t - i + pt, h - j + ph, w - k + pw, c, o]
//       * weight[bank(c), i, j, k, o]
//
// (positions outside the clip left out). Each thread takes whole channels
// of a sample, so the sums do not depend on the number of threads.
int mmrsa_channel_conv_dgrad_f32(
    const float *dout, ptrdiff_t d_sn, ptrdiff_t d_st, ptrdiff_t d_sh,
    ptrdiff_t d_sw, ptrdiff_t d_sc, const float *weight, float *dx,
    ptrdiff_t dx_sn, ptrdiff_t dx_sc, ptrdiff_t n, ptrdiff_t c, ptrdiff_t t,
    ptrdiff_t h, ptrdiff_t w, ptrdiff_t banks, ptrdiff_t o, ptrdiff_t kt,
    ptrdiff_t kh, ptrdiff_t kw, int threads) {
  if (!handled(n, c, t, h, w, banks, o, kt, kh, kw) || kw > MAX_DGRAD_TAPS)
    return 1;
  // the filters by vectors of `lanes`: [banks, kt, kh, O / lanes, kw, lanes]
  const int lanes = o % 16 == 0 ? 16 : 8;
  const ptrdiff_t taps = banks * kt * kh;
  float *filters = malloc(sizeof(float) * taps * kw * o);
  if (filters == NULL) return 2;
  for (ptrdiff_t r = 0; r < taps; ++r)
    for (ptrdiff_t k = 0; k < kw; ++k)
      for (ptrdiff_t f = 0; f < o; ++f)
        filters[(r * o + f / lanes * lanes) * kw + k * lanes + f % lanes] =
            weight[(r * kw + k) * o + f];
  const InputGradJob job = {dout, d_sn,  d_st,  d_sh, d_sw, d_sc, filters,
                            dx,   dx_sn, dx_sc, n,    c,    t,    h,
                            w,    banks, o,     kt,   kh,   kw};
  const int status = run_tasks(input_channel_task, &job, n * c,
                               (size_t)(t * h * (w + kw - 1) * o),
                               (size_t)(2 * kt * kh), threads);
  free(filters);
  return status;
}
