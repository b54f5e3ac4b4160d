"""The fast decoder's CPU kernels: int8 weight products, and each row's own LoRA update.

Decoding one token reads every weight once, so on a small CPU its speed is the memory bandwidth
divided by the weights' size: int8 weights (one fp32 scale per output row) read 4x less than
fp32. PyTorch has no fast int8-weight x fp32-vector kernel for AVX2 machines, so a small C
kernel (AVX2 + FMA, OpenMP) is compiled once with the system C compiler and called through
ctypes; it runs on PyTorch's own OpenMP threads. Where no compiler or no AVX2 is available, the
same maths runs in PyTorch (dequantize, then matmul): correct, just not faster.

A batch's rows may each use a different LoRA adapter. In PyTorch that is a gather, two small
matmuls and a scatter per adapter, per projection, per layer: at 8 chats on 4 adapters, 2,000
tiny ops a step and a third of the step's time (profiled on `fewtune serve`). `lora_rows` does
every row's update in one call per projection instead (the BGMV kernel of Punica / S-LoRA, on
the CPU).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from storage.settings import cache_dir

log = logging.getLogger(__name__)

# Rows of x the kernel takes in one call, reading the weights once for all of them (a decode
# batch and a chunk of a prompt); longer inputs (a whole prompt) use a dequantized fp32 matmul.
# Each row's result is the same whatever the number of rows.
KERNEL_MAX_ROWS = 128  # a batch of up to 64 chats and a prompt's chunk of 48

_SOURCE = r"""
#include <immintrin.h>
#include <stdint.h>
#include <stddef.h>
#include <math.h>

#define TILE 16  /* weight rows the int8 products take at a time */

static inline float hsum(__m256 v) {
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_shuffle_ps(lo, lo, 1));
    return _mm_cvtss_f32(lo);
}

/* y[t, i] = scale[i] * sum_j w[i, j] * x[t, j]  for t < m;  w int8 [n, k] row-major. */
void gemv_i8(const float *x, const int8_t *w, const float *scale, float *y,
             int64_t m, int64_t n, int64_t k, int threads) {
    #pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t i = 0; i < n; i++) {
        const int8_t *row = w + i * k;
        for (int64_t t = 0; t < m; t++) {
            const float *xt = x + t * k;
            __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
            __m256 a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
            int64_t j = 0;
            for (; j + 32 <= k; j += 32) {
                __m256i b = _mm256_loadu_si256((const __m256i *)(row + j));
                __m128i lo = _mm256_castsi256_si128(b), hi = _mm256_extracti128_si256(b, 1);
                __m256 w0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo));
                __m256 w1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8)));
                __m256 w2 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi));
                __m256 w3 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8)));
                a0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xt + j), a0);
                a1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xt + j + 8), a1);
                a2 = _mm256_fmadd_ps(w2, _mm256_loadu_ps(xt + j + 16), a2);
                a3 = _mm256_fmadd_ps(w3, _mm256_loadu_ps(xt + j + 24), a3);
            }
            float s = hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
            for (; j < k; j++) s += (float)row[j] * xt[j];
            y[t * n + i] = s * scale[i];
        }
    }
}

/* 32 values of x as int8 with one scale, as llama.cpp's Q8_0: the scale is returned and the
   int8 values' sum left in *sum. */
static inline float quantize32(const float *xb, int8_t *q, int *sum) {
    float amax = 0.0f;
    for (int j = 0; j < 32; j++) {
        float a = xb[j] < 0 ? -xb[j] : xb[j];
        amax = a > amax ? a : amax;
    }
    float id = amax > 0 ? 127.0f / amax : 0.0f;
    int total = 0;
    for (int j = 0; j < 32; j++) {
        float v = xb[j] * id;
        q[j] = (int8_t)(v < 0 ? v - 0.5f : v + 0.5f);
        total += q[j];
    }
    *sum = total;
    return amax / 127.0f;
}

/* The same product with x quantized to int8 in blocks of 32 (one scale each, as llama.cpp's
   Q8_0): integer multiply-adds do the work, about twice as fast as converting w to float.
   k must be a multiple of 32 and at most 4096. */
void gemv_q8(const float *x, const int8_t *w, const float *scale, float *y,
             int64_t m, int64_t n, int64_t k, int threads) {
    int64_t nb = k / 32;
    int8_t xq[m * k] __attribute__((aligned(32)));
    float xs[m * nb];
    const __m256i ones = _mm256_set1_epi16(1);
    #pragma omp parallel num_threads(threads)
    {
        #pragma omp for schedule(static)
        for (int64_t t = 0; t < m; t++) {
            int sum;
            for (int64_t b = 0; b < nb; b++)
                xs[t * nb + b] = quantize32(x + t * k + b * 32, xq + t * k + b * 32, &sum);
        }
        /* A tile of TILE weight rows at a time, in L1 while every row of x goes by (reading
           all of x for each weight row spills to L2 past a few rows of x). */
        #pragma omp for schedule(static)
        for (int64_t i0 = 0; i0 < n; i0 += TILE) {
            int64_t i1 = i0 + TILE < n ? i0 + TILE : n;
            for (int64_t t = 0; t < m; t++) {
                const int8_t *xt = xq + t * k;
                const float *st = xs + t * nb;
                for (int64_t i = i0; i < i1; i++) {
                    const int8_t *row = w + i * k;
                    __m256 acc = _mm256_setzero_ps();
                    for (int64_t b = 0; b < nb; b++) {
                        __m256i wv = _mm256_loadu_si256((const __m256i *)(row + b * 32));
                        __m256i xv = _mm256_loadu_si256((const __m256i *)(xt + b * 32));
                        __m256i ax = _mm256_sign_epi8(xv, xv);
                        __m256i sw = _mm256_sign_epi8(wv, xv);
                        __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(ax, sw), ones);
                        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(st[b]), acc);
                    }
                    y[t * n + i] = hsum(acc) * scale[i];
                }
            }
        }
    }
}

/* Where the CPU has AVX-512 VNNI: the same product (x quantized as in gemv_q8), with one
   instruction for 64 multiply-adds (vpdpbusd takes unsigned x signed bytes, so w is shifted
   to w + 128 by flipping its sign bit and 128 * sum(x) taken off again), and each 64 weights
   loaded once for up to 4 rows of x. k must be a multiple of 64 and at most 4096.
   Each row's result is the same whatever m is. */
__attribute__((target("avx512f,avx512bw,avx512vnni")))
void gemv_vnni(const float *x, const int8_t *w, const float *scale, float *y,
               int64_t m, int64_t n, int64_t k, int threads) {
    int64_t nb = k / 32, nc = k / 64;
    /* On the caller's stack, sized to this call; the OpenMP threads read them. */
    int8_t xq[m * k] __attribute__((aligned(64)));
    float sv[m * nc * 16] __attribute__((aligned(64)));  /* per row, per 64 weights: lane scales */
    float corr[m];
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    #pragma omp parallel num_threads(threads)
    {
        #pragma omp for schedule(static)
        for (int64_t t = 0; t < m; t++) {
            float c = 0.0f;
            for (int64_t b = 0; b < nb; b++) {
                int sum;
                float d = quantize32(x + t * k + b * 32, xq + t * k + b * 32, &sum);
                for (int l = 0; l < 8; l++) sv[(t * nc + b / 2) * 16 + (b % 2) * 8 + l] = d;
                c += d * (float)sum;
            }
            corr[t] = 128.0f * c;
        }
        /* Tiled as gemv_q8: TILE weight rows stay in L1 while each 4 rows of x go by. */
        #pragma omp for schedule(static)
        for (int64_t i0 = 0; i0 < n; i0 += TILE) {
            int64_t i1 = i0 + TILE < n ? i0 + TILE : n;
            for (int64_t t0 = 0; t0 < m; t0 += 4) {
                int64_t tm = m - t0 < 4 ? m - t0 : 4;
                for (int64_t i = i0; i < i1; i++) {
                    const int8_t *row = w + i * k;
                    __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(),
                                     _mm512_setzero_ps(), _mm512_setzero_ps()};
                    for (int64_t c = 0; c < nc; c++) {
                        __m512i wv = _mm512_xor_si512(_mm512_loadu_si512(row + c * 64), flip);
                        for (int64_t u = 0; u < tm; u++) {
                            int64_t t = t0 + u;
                            __m512i xv = _mm512_load_si512(xq + t * k + c * 64);
                            __m512i p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wv, xv);
                            acc[u] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p),
                                                     _mm512_load_ps(sv + (t * nc + c) * 16),
                                                     acc[u]);
                        }
                    }
                    for (int64_t u = 0; u < tm; u++)
                        y[(t0 + u) * n + i] =
                            (_mm512_reduce_add_ps(acc[u]) - corr[t0 + u]) * scale[i];
                }
            }
        }
    }
}

/* sum_j a[j] * b[j], j < d, in one fixed order. */
static inline float dot(const float *a, const float *b, int64_t d) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int64_t j = 0;
    for (; j + 16 <= d; j += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + j), _mm256_loadu_ps(b + j), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + j + 8), _mm256_loadu_ps(b + j + 8), s1);
    }
    float s = hsum(_mm256_add_ps(s0, s1));
    for (; j < d; j++) s += a[j] * b[j];
    return s;
}

/* Each row's own LoRA update, added to y (the base product): for each row t with an adapter,
   y[t] += (a_t x[t]) @ bt_t, where a_t is [r_t, k] and bt_t is [r_t, n] (B transposed, the
   LoRA scale folded in), fp32 row-major. `table` holds m pointers to the a_t, m to the bt_t
   and m ranks; a null a_t means no adapter. Each row's sums run in one fixed order, so its
   result is the same whatever the other rows are. */
void lora_rows(const float *x, float *y, int64_t m, int64_t n, int64_t k,
               const int64_t *table, int threads) {
    const float *const *a = (const float *const *)table;
    const float *const *bt = (const float *const *)(table + m);
    const int64_t *rank = table + 2 * m;
    int64_t width = 1;
    for (int64_t t = 0; t < m; t++)
        if (a[t] != NULL && rank[t] > width) width = rank[t];
    float u[m * width];  /* a_t x[t] for each row */
    int64_t groups = (n + 7) / 8;
    #pragma omp parallel num_threads(threads)
    {
        #pragma omp for schedule(static)
        for (int64_t t = 0; t < m; t++) {
            if (a[t] == NULL) continue;
            const float *xt = x + t * k;
            for (int64_t j = 0; j < rank[t]; j++) u[t * width + j] = dot(a[t] + j * k, xt, k);
        }
        /* the implicit barrier: every u is ready */
        #pragma omp for schedule(static)
        for (int64_t g = 0; g < groups; g++) {
            int64_t o = g * 8;
            for (int64_t t = 0; t < m; t++) {
                if (a[t] == NULL) continue;
                const float *ut = u + t * width, *b = bt[t];
                float *yt = y + t * n;
                if (o + 8 <= n) {
                    __m256 acc = _mm256_setzero_ps();
                    for (int64_t j = 0; j < rank[t]; j++)
                        acc = _mm256_fmadd_ps(_mm256_set1_ps(ut[j]), _mm256_loadu_ps(b + j * n + o),
                                              acc);
                    _mm256_storeu_ps(yt + o, _mm256_add_ps(_mm256_loadu_ps(yt + o), acc));
                } else {
                    for (int64_t p = o; p < n; p++) {
                        float s = 0.0f;
                        for (int64_t j = 0; j < rank[t]; j++) s += ut[j] * b[j * n + p];
                        yt[p] += s;
                    }
                }
            }
        }
    }
}

/* Rotary position embedding of one head x[d] at a position: cos and sin are that position's
   rows of the tables (each half repeats the same frequencies); out may not be x. */
static inline void rope(const float *x, const float *cos, const float *sin, float *out,
                        int64_t d) {
    int64_t half = d / 2;
    for (int64_t j = 0; j < half; j++) {
        out[j] = x[j] * cos[j] - x[j + half] * sin[j];
        out[j + half] = x[j + half] * cos[j + half] + x[j] * sin[j + half];
    }
}

/* One decoding step's attention in one layer, for rows 0..m-1 of the batch, each at its own
   position pos[t] (the tokens its slot held before): the row's new key (rotated) and value go
   into its slot of the cache, then each query head attends over the row's own pos[t] + 1
   positions, no further. qkv [m, (heads + 2 * kv_heads) * d]: query heads, key heads, value
   heads. kc and vc: this layer's cache [slots, kv_heads, cap, d]; cos, sin [positions, d];
   out [m, heads * d]. Each row's sums run in one fixed order, whatever the other rows are. */
void attend_rows(const float *qkv, float *kc, float *vc, const int64_t *pos,
                 const float *cos, const float *sin, float *out, int64_t m, int64_t heads,
                 int64_t kv_heads, int64_t d, int64_t cap, int threads) {
    int64_t group = heads / kv_heads, width = (heads + 2 * kv_heads) * d;
    float scale = 1.0f / sqrtf((float)d);
    #pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t task = 0; task < m * kv_heads; task++) {
        int64_t t = task / kv_heads, g = task % kv_heads, n = pos[t] + 1;
        const float *row = qkv + t * width, *c = cos + pos[t] * d, *s = sin + pos[t] * d;
        float *keys = kc + (t * kv_heads + g) * cap * d, *values = vc + (t * kv_heads + g) * cap * d;
        rope(row + (heads + g) * d, c, s, keys + pos[t] * d, d);
        for (int64_t j = 0; j < d; j++) values[pos[t] * d + j] = row[(heads + kv_heads + g) * d + j];
        float q[group * d], scores[group * n];
        for (int64_t h = 0; h < group; h++) rope(row + (g * group + h) * d, c, s, q + h * d, d);
        for (int64_t p = 0; p < n; p++)
            for (int64_t h = 0; h < group; h++)
                scores[h * n + p] = dot(q + h * d, keys + p * d, d) * scale;
        for (int64_t h = 0; h < group; h++) {
            float *sc = scores + h * n, top = sc[0], total = 0.0f;
            for (int64_t p = 1; p < n; p++) top = sc[p] > top ? sc[p] : top;
            for (int64_t p = 0; p < n; p++) {
                sc[p] = expf(sc[p] - top);
                total += sc[p];
            }
            float *o = out + t * heads * d + (g * group + h) * d;
            for (int64_t j = 0; j < d; j++) o[j] = 0.0f;
            for (int64_t p = 0; p < n; p++) {
                float w = sc[p] / total;
                const float *v = values + p * d;
                int64_t j = 0;
                for (; j + 8 <= d; j += 8)
                    _mm256_storeu_ps(o + j, _mm256_fmadd_ps(_mm256_set1_ps(w), _mm256_loadu_ps(v + j),
                                                            _mm256_loadu_ps(o + j)));
                for (; j < d; j++) o[j] += w * v[j];
            }
        }
    }
}

int has_vnni(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
        && __builtin_cpu_supports("avx512vnni");
}
"""

_kernel: ctypes.CDLL | None = None
_tried = False


def _compile() -> ctypes.CDLL | None:
    if "avx2" not in torch.backends.cpu.get_cpu_capability().lower() and not _has_avx2():
        log.info("int8 kernel: no AVX2 on this CPU; using the PyTorch fallback")
        return None
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if compiler is None:
        log.info("int8 kernel: no C compiler found; using the PyTorch fallback")
        return None
    digest = hashlib.sha256(_SOURCE.encode()).hexdigest()[:16]
    target = cache_dir("kernels") / f"gemv_i8-{digest}.so"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            source = Path(tmp) / "gemv_i8.c"
            source.write_text(_SOURCE)
            built = Path(tmp) / "gemv_i8.so"
            command = [compiler, "-O3", "-mavx2", "-mfma", "-fopenmp", "-shared", "-fPIC"]
            result = subprocess.run(
                [*command, str(source), "-o", str(built), "-lm"], capture_output=True, text=True
            )
            if result.returncode != 0:
                log.warning("int8 kernel did not compile; PyTorch fallback: %s", result.stderr)
                return None
            os.replace(built, target)  # atomic: concurrent builders each install a whole file
    library = ctypes.CDLL(str(target))
    for function in (library.gemv_i8, library.gemv_q8, library.gemv_vnni):
        function.restype = None
        function.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int64] * 3 + [ctypes.c_int]
    library.lora_rows.restype = None
    library.lora_rows.argtypes = (
        [ctypes.c_void_p] * 2
        + [ctypes.c_int64] * 3
        + [
            ctypes.c_void_p,
            ctypes.c_int,
        ]
    )
    library.attend_rows.restype = None
    library.attend_rows.argtypes = [ctypes.c_void_p] * 7 + [ctypes.c_int64] * 5 + [ctypes.c_int]
    library.has_vnni.restype = ctypes.c_int
    library.has_vnni.argtypes = []
    return library


def _has_avx2() -> bool:
    try:
        return " avx2 " in Path("/proc/cpuinfo").read_text().replace("\n", " ")
    except OSError:
        return False


def kernel() -> ctypes.CDLL | None:
    """The compiled kernel, or None where it cannot be built (compiled once, then cached)."""
    global _kernel, _tried
    if not _tried:
        _tried = True
        try:
            _kernel = _compile()
        except OSError as exc:
            log.warning("int8 kernel unavailable (%s); using the PyTorch fallback", exc)
    return _kernel


def _pick(library: ctypes.CDLL, k: int) -> Any:
    """The fastest product this CPU runs for rows of `k` values."""
    if k % 64 == 0 and k <= 4096 and library.has_vnni():
        return library.gemv_vnni
    if k % 32 == 0 and k <= 4096:
        return library.gemv_q8
    return library.gemv_i8


class Int8Weight:
    """A weight [out, in] stored as int8 with one fp32 scale per output row."""

    def __init__(self, weight: torch.Tensor) -> None:
        weight = weight.detach().float()
        scale = weight.abs().amax(dim=1).clamp(min=1e-12) / 127.0
        self.q = torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8).contiguous()
        self.scale = scale.contiguous()
        self.out_features, self.in_features = self.q.shape
        self._kernel = kernel()
        self._function = None
        if self._kernel is not None:
            self._function = _pick(self._kernel, self.in_features)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x [T, in] fp32 -> [T, out] fp32."""
        rows = x.shape[0]
        if self._function is None or rows > KERNEL_MAX_ROWS:
            return F.linear(x, self.q.float()) * self.scale
        x = x.contiguous()
        out = torch.empty(rows, self.out_features)
        self._function(
            x.data_ptr(),
            self.q.data_ptr(),
            self.scale.data_ptr(),
            out.data_ptr(),
            rows,
            self.out_features,
            self.in_features,
            torch.get_num_threads(),
        )
        return out


def lora_rows(x: torch.Tensor, out: torch.Tensor, table: torch.Tensor, at: int) -> None:
    """Add each row's own LoRA update to `out` (x [m, in] -> out [m, out], both contiguous
    fp32): `table` is an int64 tensor whose 3 * m values from `at` are the rows' A pointers,
    B-transposed pointers and ranks (see the C source; a zero pointer: no adapter)."""
    library = kernel()
    assert library is not None, "lora_rows needs the compiled kernel"
    rows, n = out.shape
    library.lora_rows(
        x.data_ptr(),
        out.data_ptr(),
        rows,
        n,
        x.shape[1],
        table.data_ptr() + at * 8,
        torch.get_num_threads(),
    )


def attend_rows(
    qkv: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    positions: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    heads: int,
) -> torch.Tensor:
    """One decoding step's attention in one layer for rows 0..m-1 (see the C source): writes
    each row's new key and value at positions[row] in k_cache/v_cache ([slots, kv_heads, cap,
    d], contiguous) and returns the attention output [m, heads * d]."""
    library = kernel()
    assert library is not None, "attend_rows needs the compiled kernel"
    rows = positions.shape[0]
    _, kv_heads, capacity, dim = k_cache.shape
    out = torch.empty(rows, heads * dim)
    library.attend_rows(
        qkv.data_ptr(),
        k_cache.data_ptr(),
        v_cache.data_ptr(),
        positions.data_ptr(),
        cos.data_ptr(),
        sin.data_ptr(),
        out.data_ptr(),
        rows,
        heads,
        kv_heads,
        dim,
        capacity,
        torch.get_num_threads(),
    )
    return out
