// The per-example loop of the Rao-Blackwellised multiclass moments. Per example it forms the
// whitened cross-covariance D = L^-1 Cov(z, phi) once, then for every sample the conditional
// mean's contraction Y = D^T-weighted residuals, all in cache. As ATen ops this part was a chain
// of batched small GEMMs (one BLAS call per example each) and large temporaries; fused, it is one
// pass per example. The arithmetic loops are compiled twice (AVX2/FMA and baseline x86-64) and
// chosen at load time.
#include "rb_kernel.h"

// The 32-byte vector helpers are always inlined, so their by-value ABI never matters.
#pragma GCC diagnostic ignored "-Wpsabi"

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

namespace bayesagg {
namespace detail {
namespace {

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define BAYESAGG_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define BAYESAGG_CLONES
#endif

/// 32-byte vectors (GCC's vector extension: one AVX register, two SSE registers in the baseline
/// clone); explicit so that the accumulators of a block stay in registers across the inner loop.
template <typename T>
struct Vec {
  typedef T type __attribute__((vector_size(32)));
  static constexpr int64_t lanes = 32 / sizeof(T);
};
template <typename T>
__attribute__((always_inline)) inline typename Vec<T>::type load(const T* p) {
  typename Vec<T>::type v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}
template <typename T>
__attribute__((always_inline)) inline void store(T* p, typename Vec<T>::type v) {
  __builtin_memcpy(p, &v, sizeof v);
}

/// One example: see rb_accumulate. `d` is scratch of K * K * q values and `y` of 2 K q.
template <typename T>
__attribute__((always_inline)) inline void example(const RbChunk<T>& c, int64_t i, T* __restrict d,
                                                   T* __restrict y, double* __restrict s1,
                                                   double* __restrict s2, double* __restrict sx,
                                                   double* __restrict rr) {
  const int64_t K = c.classes, q = c.cols, n = c.samples, kq = K * q;
  const T* __restrict cov = c.cov + i * K * kq;  // [l][k][a]
  const T* __restrict linv = c.linv + i * K * K;
  const T* __restrict g0 = c.g0 + i * q;
  const T* __restrict mean = c.mean;
  // D[k][m][a] = sum_{l <= m} Linv[m][l] Cov[l][k][a], accumulated in registers over l.
  using V = typename Vec<T>::type;
  constexpr int64_t L = Vec<T>::lanes, kBlock = 4 * L;
  for (int64_t k = 0; k < K; ++k) {
    for (int64_t m = 0; m < K; ++m) {
      const T* __restrict w = linv + m * K;
      T* __restrict dst = d + k * kq + m * q;
      int64_t a0 = 0;
      for (; a0 + kBlock <= q; a0 += kBlock) {
        V c0 = {}, c1 = {}, c2 = {}, c3 = {};
        for (int64_t l = 0; l <= m; ++l) {
          const T* __restrict src = cov + l * kq + k * q + a0;
          const T wl = w[l];
          c0 += wl * load(src), c1 += wl * load(src + L);
          c2 += wl * load(src + 2 * L), c3 += wl * load(src + 3 * L);
        }
        store(dst + a0, c0), store(dst + a0 + L, c1);
        store(dst + a0 + 2 * L, c2), store(dst + a0 + 3 * L, c3);
      }
      for (int64_t a = a0; a < q; ++a) {
        T acc = 0;
        for (int64_t l = 0; l <= m; ++l) acc += w[l] * cov[l * kq + k * q + a];
        dst[a] = acc;
      }
    }
  }
  std::vector<T> a1(q, T(0)), a2(q, T(0)), ax(q, T(0));
  // Samples in pairs: Y_s[m][a] = sum_k r_sk D[k][m][a] for two samples at once shares the loads
  // of D and gives the FMA units eight independent chains.
  for (int64_t s0 = 0; s0 < n; s0 += 2) {
    const bool pair = s0 + 1 < n;
    const T* __restrict r0 = c.resid + (i * n + s0) * K;
    const T* __restrict r1 = pair ? r0 + K : r0;
    T* __restrict y0 = y;
    T* __restrict y1 = y + kq;
    int64_t j0 = 0;
    for (; j0 + kBlock <= kq; j0 += kBlock) {
      V p0 = {}, p1 = {}, p2 = {}, p3 = {}, t0 = {}, t1 = {}, t2 = {}, t3 = {};
      for (int64_t k = 0; k < K; ++k) {
        const T u = r0[k], v = r1[k];
        const T* __restrict src = d + k * kq + j0;
        const V d0 = load(src), d1 = load(src + L), d2 = load(src + 2 * L), d3 = load(src + 3 * L);
        p0 += u * d0, p1 += u * d1, p2 += u * d2, p3 += u * d3;
        t0 += v * d0, t1 += v * d1, t2 += v * d2, t3 += v * d3;
      }
      store(y0 + j0, p0), store(y0 + j0 + L, p1), store(y0 + j0 + 2 * L, p2);
      store(y0 + j0 + 3 * L, p3);
      store(y1 + j0, t0), store(y1 + j0 + L, t1), store(y1 + j0 + 2 * L, t2);
      store(y1 + j0 + 3 * L, t3);
    }
    for (; j0 + L <= kq; j0 += L) {
      V p0 = {}, t0 = {};
      for (int64_t k = 0; k < K; ++k) {
        const V d0 = load(d + k * kq + j0);
        p0 += r0[k] * d0, t0 += r1[k] * d0;
      }
      store(y0 + j0, p0), store(y1 + j0, t0);
    }
    for (int64_t j = j0; j < kq; ++j) {
      T acc0 = 0, acc1 = 0;
      for (int64_t k = 0; k < K; ++k) acc0 += r0[k] * d[k * kq + j], acc1 += r1[k] * d[k * kq + j];
      y0[j] = acc0, y1[j] = acc1;
    }
    for (int64_t t = 0; t < (pair ? 2 : 1); ++t) {
      const T* __restrict xi = c.xi + (i * n + s0 + t) * K;
      const T* __restrict r = t ? r1 : r0;
      const T* __restrict ys = t ? y1 : y0;
      // e = r^T M - g0 + sum_m xi_m Y[m] and the explained variance sum_m Y[m]^2, in column
      // blocks held in registers over the class loop; then their running sums.
      int64_t a0 = 0;
      for (; a0 + 2 * L <= q; a0 += 2 * L) {
        V e0 = -load(g0 + a0), e1 = -load(g0 + a0 + L), x0 = {}, x1 = {};
        for (int64_t k = 0; k < K; ++k) {
          const T rk = r[k], xk = xi[k];
          const V y0v = load(ys + k * q + a0), y1v = load(ys + k * q + a0 + L);
          e0 += rk * load(mean + k * q + a0) + xk * y0v;
          e1 += rk * load(mean + k * q + a0 + L) + xk * y1v;
          x0 += y0v * y0v, x1 += y1v * y1v;
        }
        store(a1.data() + a0, load(a1.data() + a0) + e0);
        store(a1.data() + a0 + L, load(a1.data() + a0 + L) + e1);
        store(a2.data() + a0, load(a2.data() + a0) + e0 * e0);
        store(a2.data() + a0 + L, load(a2.data() + a0 + L) + e1 * e1);
        store(ax.data() + a0, load(ax.data() + a0) + x0);
        store(ax.data() + a0 + L, load(ax.data() + a0 + L) + x1);
      }
      for (int64_t a = a0; a < q; ++a) {
        T ea = -g0[a], xa = 0;
        for (int64_t k = 0; k < K; ++k) {
          const T yk = ys[k * q + a];
          ea += r[k] * mean[k * q + a] + xi[k] * yk;
          xa += yk * yk;
        }
        a1[a] += ea, a2[a] += ea * ea, ax[a] += xa;
      }
      for (int64_t k = 0; k < K; ++k) {
        for (int64_t l = 0; l < K; ++l) rr[k * K + l] += static_cast<double>(r[k]) * r[l];
      }
    }
  }
  for (int64_t a = 0; a < q; ++a) {
    s1[a] += a1[a];
    s2[a] += a2[a];
    sx[a] += ax[a];
  }
}

// The two instantiations, each compiled for AVX2/FMA and for baseline x86-64.
BAYESAGG_CLONES
void example_f(const RbChunk<float>& c, int64_t i, float* d, float* y, double* s1, double* s2,
               double* sx, double* rr) {
  example<float>(c, i, d, y, s1, s2, sx, rr);
}
BAYESAGG_CLONES
void example_d(const RbChunk<double>& c, int64_t i, double* d, double* y, double* s1, double* s2,
               double* sx, double* rr) {
  example<double>(c, i, d, y, s1, s2, sx, rr);
}

template <typename T, typename F>
void accumulate(const RbChunk<T>& c, const F& one, double* s1, double* s2, double* sx, double* rr) {
  const int64_t K = c.classes, q = c.cols;
  at::parallel_for(0, c.batch, 8, [&](int64_t begin, int64_t end) {
    std::vector<T> d(K * K * q), y(2 * K * q);
    for (int64_t i = begin; i < end; ++i) {
      one(c, i, d.data(), y.data(), s1 + i * q, s2 + i * q, sx + i * q, rr + i * K * K);
    }
  });
}

template <typename T>
void logit_cov(const T* cov, const T* h, int64_t batch, int64_t K, int64_t q, double* out) {
  at::parallel_for(0, batch, 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const T* hi = h + i * q;
      double* o = out + i * K * K;
      for (int64_t lm = 0; lm < K * K; ++lm) {
        const T* row = cov + (i * K * K + lm) * q;
        double acc = 0;
        for (int64_t a = 0; a < q; ++a) acc += static_cast<double>(row[a]) * hi[a];
        o[lm] = acc;
      }
      for (int64_t l = 0; l < K; ++l) {
        for (int64_t m = 0; m < l; ++m)
          o[l * K + m] = o[m * K + l] = 0.5 * (o[l * K + m] + o[m * K + l]);
      }
    }
  });
}

}  // namespace

void logit_covariances(const float* cov, const float* h, int64_t batch, int64_t classes,
                       int64_t cols, double* out) {
  logit_cov(cov, h, batch, classes, cols, out);
}

void logit_covariances(const double* cov, const double* h, int64_t batch, int64_t classes,
                       int64_t cols, double* out) {
  logit_cov(cov, h, batch, classes, cols, out);
}

void rb_accumulate(const RbChunk<float>& c, double* s1, double* s2, double* sx, double* rr) {
  accumulate(c, example_f, s1, s2, sx, rr);
}

void rb_accumulate(const RbChunk<double>& c, double* s1, double* s2, double* sx, double* rr) {
  accumulate(c, example_d, s1, s2, sx, rr);
}

}  // namespace detail
}  // namespace bayesagg
