// Fused symmetry functions of n2p2 types 2, 3, 9, 12, 13 and their backward pass.
//
// Part of atomshard (models/bpnn). Compiled on first use by _native.py and called through
// ctypes; plain C ABI, no torch headers. Recompute instead of store (CabanaMD): the forward
// pass writes only G[atom, function]; the backward pass takes dE/dG and rebuilds every
// term of one centre atom, contracting its derivative on the spot, so no per-neighbour or
// per-pair derivative array exists beyond one centre's edges (per thread).
//
// Input layout: edges grouped by centre (CSR `edge_start`), edge vectors centre ->
// neighbour in the potential's length unit, element index per centre and per edge.
// Arithmetic is double for both float and double inputs; outputs are written in the
// input type.

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <thread>
#include <vector>

namespace {

// Flattened plan, built by _native.py (field order must match its ctypes Structure).
// "List" L = (c * E + a) * E + b with a <= b: the angular functions of centre element c
// over neighbour elements {a, b}.
struct Plan {
  int64_t n_elem;
  int64_t n_feat;       // row stride of G
  int64_t cutoff_type;  // n2p2 cutoff type 0..8
  double alpha;
  int64_t max_comb;  // largest number of radial or angular factors of any list
  // Radial functions of centre c and neighbour a: [rad_ptr[c*E+a], rad_ptr[c*E+a+1]).
  const int64_t* rad_ptr;
  const double* rad_eta;
  const double* rad_rs;
  const double* rad_rc;
  const double* rad_w;
  const int64_t* rad_col;
  // exp(-eta (r - rs)^2) of function f as ex[rad_ref[f]]^rad_pw[f] (ref: an earlier
  // function of the same list, rs and rc) or, with rad_ref[f] = -1, by its own exp
  const int64_t* rad_ref;
  const int64_t* rad_pw;
  // Per-edge tables of centre element c: distinct (eta, rs, rc), [tab_ptr[c], tab_ptr[c+1]).
  const int64_t* tab_ptr;
  const double* tab_eta;
  const double* tab_rs;
  const double* tab_rc;
  const int64_t* tab_ref;  // as rad_ref, local to the centre element's tables
  const int64_t* tab_pw;
  const double* ang_rc;  // per centre element: edges at r >= ang_rc[c] form no pairs
  // Radial factors of list L: table index (global) and whether r_jk enters.
  const int64_t* rcomb_ptr;
  const int64_t* rcomb_tab;
  // r_jk factor exp(-eta (r_jk - rs)^2) f_c(r_jk): 0 none, -1 by its own exp, n >= 1 as
  // e_base^n with e_base = exp(-eta_b (r_jk - rs_b)^2) of the list (one exp per pair; the
  // etas of a list are often integer multiples of the smallest).
  const int64_t* rcomb_rjk;
  const double* list_eta;
  const double* list_rs;
  // Angular factors of list L: distinct (lambda, zeta).
  const int64_t* acomb_ptr;
  const double* acomb_lam;
  const double* acomb_zeta;
  const double* acomb_pre;  // 2^(1 - zeta)
  // Functions of list L: radial factor, angular factor (both local to L), column, weight.
  const int64_t* fn_ptr;
  const int64_t* fn_r;
  const int64_t* fn_a;
  const int64_t* fn_col;
  const double* fn_w;
  const double* list_rjk_max;  // > 0: every function of L needs r_jk < this
};

const double kTanhNorm = std::pow(1.0 / std::tanh(1.0), 3.0);  // as _functions._TANH_NORM

// n2p2 polynomial core and its derivative (orders 1..4).
inline double core_poly(double x, int order, double* d) {
  switch (order) {
    case 1:
      *d = (6.0 * x - 6.0) * x;
      return (2.0 * x - 3.0) * x * x + 1.0;
    case 2:
      *d = ((-30.0 * x + 60.0) * x - 30.0) * x * x;
      return ((15.0 - 6.0 * x) * x - 10.0) * x * x * x + 1.0;
    case 3:
      *d = (((140.0 * x - 420.0) * x + 420.0) * x - 140.0) * x * x * x;
      return (x * (x * (20.0 * x - 70.0) + 84.0) - 35.0) * x * x * x * x + 1.0;
    default:
      *d = ((((-630.0 * x + 2520.0) * x - 3780.0) * x + 2520.0) * x - 630.0) * x * x * x * x;
      return (x * (x * ((315.0 - 70.0 * x) * x - 540.0) + 420.0) - 126.0) * x * x * x * x * x +
             1.0;
  }
}

// Cutoff function f_c(r) and df_c/dr (zero at and beyond rc), as in _functions.py.
inline double cutoff(double r, double rc, int type, double alpha, double* d) {
  *d = 0.0;
  if (!(r < rc)) return 0.0;
  if (type == 0) return 1.0;
  if (type == 2 || type == 3) {
    // tanh(u) = (1 - q) / (1 + q), q = exp(-2u), u in (0, 1]: exp is much cheaper than
    // tanh or expm1; the cancellation near rc (u -> 0) costs ~1e-16 absolute in t.
    const double q = std::exp(-2.0 * (1.0 - r / rc));
    const double t = (1.0 - q) / (1.0 + q);
    const double norm = type == 3 ? kTanhNorm : 1.0;
    *d = -norm * 3.0 * t * t * (1.0 - t * t) / rc;
    return norm * t * t * t;
  }
  const double rci = alpha * rc;
  const double inv = 1.0 / (rc - rci);
  double x = (r - rci) * inv;
  if (x <= 0.0) return 1.0;
  double dfdx;
  double f;
  if (type == 1) {
    f = 0.5 * (std::cos(M_PI * x) + 1.0);
    dfdx = -0.5 * M_PI * std::sin(M_PI * x);
  } else if (type == 4) {
    const double q = 1.0 - x * x;
    f = std::exp(1.0 - 1.0 / q);
    dfdx = f * (-2.0 * x / (q * q));
  } else {
    f = core_poly(x, type - 4, &dfdx);
  }
  *d = dfdx * inv;
  return f;
}

// exp(-eta (r - rs)^2) f_c(r) and its r-derivative.
inline double gauss_cut(double r, double eta, double rs, double rc, const Plan& p, double* d) {
  double dfc;
  const double fc = cutoff(r, rc, static_cast<int>(p.cutoff_type), p.alpha, &dfc);
  if (fc == 0.0 && dfc == 0.0) {
    *d = 0.0;
    return 0.0;
  }
  const double s = r - rs;
  const double e = std::exp(-eta * s * s);
  *d = e * (dfc - 2.0 * eta * s * fc);
  return e * fc;
}

inline double ipow(double x, int64_t n) {
  double result = 1.0;
  for (;;) {
    if (n & 1) result *= x;
    n >>= 1;
    if (!n) return result;
    x *= x;
  }
}

// 2^(1-zeta) (1 + lam cos)^zeta and its cos-derivative; zero where 1 + lam cos <= 0.
inline double cos_power(double cos, double lam, double zeta, double pre, double* d) {
  const double base = 1.0 + lam * cos;
  if (base <= 0.0) {
    *d = 0.0;
    return 0.0;
  }
  if (zeta == 1.0) {
    *d = pre * lam;
    return pre * base;
  }
  double pm1;  // base^(zeta - 1)
  const int n = static_cast<int>(zeta);
  if (static_cast<double>(n) == zeta && n > 0 && n <= 64) {
    pm1 = 1.0;
    for (int i = 1; i < n; ++i) pm1 *= base;
  } else {
    pm1 = std::pow(base, zeta - 1.0);
  }
  *d = pre * zeta * lam * pm1;
  return pre * pm1 * base;
}

struct Scratch {
  std::vector<double> x, y, z, r, tab, dtab, gr, gx, gy, gz, acc, grow, rad, drj, drk, drjk, ang,
      dang, grad_rad, grad_ang;
  std::vector<double> tmp, nbr_vec, nbr_grad, rex, tex;
  std::vector<int64_t> nbr_el, nbr_j;
  std::vector<int64_t> el, edge, boff, pos, perm, tmpi, cand;
};

template <typename T>
struct Edges {
  int64_t n_centres;
  const int64_t* edge_start;
  const T* vec;
  const int64_t* centre_elem;
  const int64_t* nbr_elem;
};

// One centre atom: forward (gG == nullptr: accumulate G into s.acc) or backward (write
// dE/dv of its edges into gvec).
template <typename T, bool bwd, typename TG = T>
void centre(const Plan& p, const Edges<T>& in, int64_t i, const TG* gG, T* gvec, Scratch& s) {
  const int64_t E = p.n_elem;
  const int64_t c = in.centre_elem[i];
  const int64_t e0 = in.edge_start[i], e1 = in.edge_start[i + 1];
  const TG* g_row = bwd ? gG + i * p.n_feat : nullptr;
  double* g_row_d = s.grow.data();
  if constexpr (bwd) {
    for (int64_t f = 0; f < p.n_feat; ++f) g_row_d[f] = static_cast<double>(g_row[f]);
  }
  // ---- radial functions (and the kept edges for angular ones)
  const double arc = p.ang_rc[c];
  s.x.clear(), s.y.clear(), s.z.clear(), s.r.clear(), s.el.clear(), s.edge.clear();
  for (int64_t e = e0; e < e1; ++e) {
    const double vx = in.vec[3 * e], vy = in.vec[3 * e + 1], vz = in.vec[3 * e + 2];
    const double r = std::sqrt(vx * vx + vy * vy + vz * vz);
    const int64_t a = in.nbr_elem[e];
    const int64_t l = c * E + a;
    double g_r = 0.0;
    double last_rc = -1.0, fc = 0.0, dfc = 0.0;
    const int64_t f0 = p.rad_ptr[l];
    double* rex = s.rex.data();
    for (int64_t f = f0; f < p.rad_ptr[l + 1]; ++f) {
      const double rc = p.rad_rc[f];
      if (!(r < rc)) continue;
      if (rc != last_rc) {
        fc = cutoff(r, rc, static_cast<int>(p.cutoff_type), p.alpha, &dfc);
        last_rc = rc;
      }
      const double sft = r - p.rad_rs[f];
      const int64_t ref = p.rad_ref[f];
      const double ex =
          ref < 0 ? std::exp(-p.rad_eta[f] * sft * sft) : ipow(rex[ref - f0], p.rad_pw[f]);
      rex[f - f0] = ex;
      if constexpr (bwd) {
        g_r += p.rad_w[f] * g_row_d[p.rad_col[f]] * ex *
               (dfc - 2.0 * p.rad_eta[f] * sft * fc);
      } else {
        s.acc[p.rad_col[f]] += p.rad_w[f] * ex * fc;
      }
    }
    if constexpr (bwd) {
      const double k = r > 0.0 ? g_r / r : 0.0;
      gvec[3 * e] = static_cast<T>(k * vx);
      gvec[3 * e + 1] = static_cast<T>(k * vy);
      gvec[3 * e + 2] = static_cast<T>(k * vz);
    }
    if (r < arc) {
      s.x.push_back(vx), s.y.push_back(vy), s.z.push_back(vz), s.r.push_back(r);
      s.el.push_back(a), s.edge.push_back(e);
    }
  }
  const int64_t m = static_cast<int64_t>(s.r.size());
  if (m < 2) return;
  // ---- kept edges bucketed by neighbour element (counting sort): pairs of one element
  // pair are then rectangles (triangles) with the list's parameters fixed
  s.boff.assign(E + 1, 0);
  for (int64_t j = 0; j < m; ++j) ++s.boff[s.el[j] + 1];
  for (int64_t a = 0; a < E; ++a) s.boff[a + 1] += s.boff[a];
  s.pos.assign(s.boff.begin(), s.boff.end() - 1);
  s.perm.resize(m);
  for (int64_t j = 0; j < m; ++j) s.perm[s.pos[s.el[j]]++] = j;
  for (auto* v : {&s.x, &s.y, &s.z, &s.r}) {
    s.tmp.resize(m);
    for (int64_t j = 0; j < m; ++j) s.tmp[j] = (*v)[s.perm[j]];
    v->swap(s.tmp);
  }
  s.tmpi.resize(m);
  for (int64_t j = 0; j < m; ++j) s.tmpi[j] = s.edge[s.perm[j]];
  s.edge.swap(s.tmpi);
  // ---- per-edge tables of the angular radial factors
  const int64_t t0 = p.tab_ptr[c], nt = p.tab_ptr[c + 1] - t0;
  s.tab.resize(m * nt), s.dtab.resize(m * nt), s.tex.resize(nt);
  for (int64_t j = 0; j < m; ++j) {
    const double r = s.r[j];
    double last_rc = -1.0, fc = 0.0, dfc = 0.0;
    for (int64_t t = 0; t < nt; ++t) {
      const double rc = p.tab_rc[t0 + t];
      double* tv = &s.tab[j * nt + t];
      double* dtv = &s.dtab[j * nt + t];
      if (!(r < rc)) {
        *tv = *dtv = s.tex[t] = 0.0;
        continue;
      }
      if (rc != last_rc) {
        fc = cutoff(r, rc, static_cast<int>(p.cutoff_type), p.alpha, &dfc);
        last_rc = rc;
      }
      const double eta = p.tab_eta[t0 + t];
      const double sft = r - p.tab_rs[t0 + t];
      const int64_t ref = p.tab_ref[t0 + t];
      const double ex = ref < 0 ? std::exp(-eta * sft * sft) : ipow(s.tex[ref], p.tab_pw[t0 + t]);
      s.tex[t] = ex;
      *tv = ex * fc;
      *dtv = ex * (dfc - 2.0 * eta * sft * fc);
    }
  }
  if constexpr (bwd) {
    s.gr.assign(m, 0.0), s.gx.assign(m, 0.0), s.gy.assign(m, 0.0), s.gz.assign(m, 0.0);
  }
  s.cand.resize(m);
  const double* X = s.x.data();
  const double* Y = s.y.data();
  const double* Z = s.z.data();
  // ---- pairs j < k, one neighbour-element pair (a, b), a <= b, at a time
  for (int64_t a = 0; a < E; ++a) {
    for (int64_t b = a; b < E; ++b) {
      const int64_t l = (c * E + a) * E + b;
      const int64_t f0 = p.fn_ptr[l], f1 = p.fn_ptr[l + 1];
      if (f0 == f1) continue;
      const double lim = p.list_rjk_max[l];
      const double lim2 = lim > 0.0 ? lim * lim : INFINITY;
  for (int64_t j = s.boff[a]; j < s.boff[a + 1]; ++j) {
    const double xj = X[j], yj = Y[j], zj = Z[j], rj = s.r[j];
    const double* tj = &s.tab[j * nt];
    const double* dtj = &s.dtab[j * nt];
    // candidates k within r_jk < lim (branch-free compress)
    const int64_t k0 = a == b ? j + 1 : s.boff[b], k1 = s.boff[b + 1];
    int64_t nc = 0;
    int64_t* cand = s.cand.data();
    for (int64_t k = k0; k < k1; ++k) {
      const double dx = X[k] - xj, dy = Y[k] - yj, dz = Z[k] - zj;
      cand[nc] = k;
      nc += (dx * dx + dy * dy + dz * dz) < lim2;
    }
    for (int64_t ci = 0; ci < nc; ++ci) {
      const int64_t k = cand[ci];
      const double dx = X[k] - xj, dy = Y[k] - yj, dz = Z[k] - zj;
      const double rjk2 = dx * dx + dy * dy + dz * dz;
      const double rjk = std::sqrt(rjk2);
      const double sb = rjk - p.list_rs[l];
      const double e_base = p.list_eta[l] > 0.0 ? std::exp(-p.list_eta[l] * sb * sb) : 0.0;
      const double rk = s.r[k];
      const double inv_rjrk = 1.0 / (rj * rk);
      const double cos = (xj * X[k] + yj * Y[k] + zj * Z[k]) * inv_rjrk;
      const double* tk = &s.tab[k * nt];
      const double* dtk = &s.dtab[k * nt];
      // radial factors (the r_jk cutoff is shared by factors with the same rc)
      const int64_t q0 = p.rcomb_ptr[l], nq = p.rcomb_ptr[l + 1] - q0;
      double* rad = s.rad.data();
      double* drj = s.drj.data();
      double* drk = s.drk.data();
      double* drjk = s.drjk.data();
      bool any = false;
      double last_rc = -1.0, fc = 0.0, dfc = 0.0;
      for (int64_t q = 0; q < nq; ++q) {
        const int64_t t = p.rcomb_tab[q0 + q] - t0;
        const double tt = tj[t] * tk[t];
        double x = 1.0, dxr = 0.0;
        const int64_t pw = p.rcomb_rjk[q0 + q];
        if (pw != 0) {
          const double rc = p.tab_rc[t0 + t];
          if (rc != last_rc) {
            fc = cutoff(rjk, rc, static_cast<int>(p.cutoff_type), p.alpha, &dfc);
            last_rc = rc;
          }
          const double sft = rjk - p.tab_rs[t0 + t];
          const double eta = p.tab_eta[t0 + t];
          double ex = 0.0;
          if (fc != 0.0 || dfc != 0.0) ex = pw > 0 ? ipow(e_base, pw) : std::exp(-eta * sft * sft);
          x = ex * fc;
          if constexpr (bwd) dxr = ex * (dfc - 2.0 * eta * sft * fc);
        }
        rad[q] = tt * x;
        if constexpr (bwd) {
          drj[q] = dtj[t] * tk[t] * x;
          drk[q] = tj[t] * dtk[t] * x;
          drjk[q] = tt * dxr;
          any = any || rad[q] != 0.0 || drj[q] != 0.0 || drk[q] != 0.0 || drjk[q] != 0.0;
        } else {
          any = any || rad[q] != 0.0;
        }
      }
      if (!any) continue;
      // angular factors
      const int64_t u0 = p.acomb_ptr[l], nu = p.acomb_ptr[l + 1] - u0;
      double* ang = s.ang.data();
      double* dang = s.dang.data();
      for (int64_t u = 0; u < nu; ++u) {
        ang[u] = cos_power(cos, p.acomb_lam[u0 + u], p.acomb_zeta[u0 + u], p.acomb_pre[u0 + u],
                           &dang[u]);
      }
      if constexpr (!bwd) {
        double* acc = s.acc.data();
        for (int64_t f = f0; f < f1; ++f) {
          acc[p.fn_col[f]] += p.fn_w[f] * rad[p.fn_r[f]] * ang[p.fn_a[f]];
        }
        continue;
      }
      double* grad_rad = s.grad_rad.data();
      double* grad_ang = s.grad_ang.data();
      std::fill(grad_rad, grad_rad + nq, 0.0);
      std::fill(grad_ang, grad_ang + nu, 0.0);
      for (int64_t f = f0; f < f1; ++f) {
        const double g = p.fn_w[f] * g_row_d[p.fn_col[f]];
        grad_rad[p.fn_r[f]] += g * ang[p.fn_a[f]];
        grad_ang[p.fn_a[f]] += g * rad[p.fn_r[f]];
      }
      double g_rj = 0.0, g_rk = 0.0, g_rjk = 0.0, g_cos = 0.0;
      for (int64_t q = 0; q < nq; ++q) {
        g_rj += grad_rad[q] * drj[q];
        g_rk += grad_rad[q] * drk[q];
        g_rjk += grad_rad[q] * drjk[q];
      }
      for (int64_t u = 0; u < nu; ++u) g_cos += grad_ang[u] * dang[u];
      // d cos/d v_j = v_k/(rj rk) - cos v_j/rj^2; d r_jk/d v_k = (v_k - v_j)/r_jk
      s.gr[j] += g_rj - g_cos * cos / rj;
      s.gr[k] += g_rk - g_cos * cos / rk;
      const double beta = g_cos * inv_rjrk;
      const double gam = rjk > 0.0 ? g_rjk / rjk : 0.0;
      s.gx[j] += beta * s.x[k] - gam * dx;
      s.gy[j] += beta * s.y[k] - gam * dy;
      s.gz[j] += beta * s.z[k] - gam * dz;
      s.gx[k] += beta * xj + gam * dx;
      s.gy[k] += beta * yj + gam * dy;
      s.gz[k] += beta * zj + gam * dz;
    }
  }
    }
  }
  if constexpr (bwd) {
    for (int64_t j = 0; j < m; ++j) {
      const int64_t e = s.edge[j];
      const double k = s.gr[j] / s.r[j];
      gvec[3 * e] = static_cast<T>(static_cast<double>(gvec[3 * e]) + s.gx[j] + k * s.x[j]);
      gvec[3 * e + 1] =
          static_cast<T>(static_cast<double>(gvec[3 * e + 1]) + s.gy[j] + k * s.y[j]);
      gvec[3 * e + 2] =
          static_cast<T>(static_cast<double>(gvec[3 * e + 2]) + s.gz[j] + k * s.z[j]);
    }
  }
}

template <typename T>
void run(const Plan& p, const Edges<T>& in, T* out, const T* gG, T* gvec, int n_threads) {
  constexpr int64_t kChunk = 16;
  std::atomic<int64_t> next{0};
  auto work = [&]() {
    Scratch s;
    s.acc.resize(p.n_feat), s.grow.resize(p.n_feat), s.rex.resize(p.n_feat * p.n_elem + 1);
    for (auto* v : {&s.rad, &s.drj, &s.drk, &s.drjk, &s.ang, &s.dang, &s.grad_rad, &s.grad_ang}) {
      v->resize(p.max_comb);
    }
    for (;;) {
      const int64_t i0 = next.fetch_add(kChunk);
      if (i0 >= in.n_centres) break;
      const int64_t i1 = std::min(i0 + kChunk, in.n_centres);
      for (int64_t i = i0; i < i1; ++i) {
        if (gG == nullptr) {
          std::fill(s.acc.begin(), s.acc.end(), 0.0);
          centre<T, false>(p, in, i, gG, gvec, s);
          for (int64_t f = 0; f < p.n_feat; ++f) out[i * p.n_feat + f] = static_cast<T>(s.acc[f]);
        } else {
          centre<T, true>(p, in, i, gG, gvec, s);
        }
      }
    }
  };
  const int64_t useful = (in.n_centres + kChunk - 1) / kChunk;
  const int nt = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(n_threads, useful)));
  std::vector<std::thread> pool;
  for (int t = 1; t < nt; ++t) pool.emplace_back(work);
  work();
  for (auto& th : pool) th.join();
}

// ---- positions path: neighbours from a cell list, forces and virial directly (no edge
// list for the whole system). Periodic cells only, with at least 3 bins of width >= the
// cutoff along every lattice direction, so the 27 neighbouring bins are distinct and each
// (atom, image) pair is seen once.
struct Cells {
  int64_t n_atoms;
  const double* pos;   // [n, 3] wrapped Cartesian positions (potential length unit)
  const int64_t* elem;
  const double* cell;  // rows a, b, c
  int64_t nb[3];
  const int64_t* bin_of;     // [n] bin of each atom (x-major)
  const int64_t* bin_start;  // [nbins + 1] CSR into order
  const int64_t* order;      // atoms sorted by bin
  double cutoff;
};

// Neighbours of atom i into s.nbr_vec / s.nbr_el / s.nbr_j.
inline void gather(const Cells& c, int64_t i, Scratch& s) {
  s.nbr_vec.clear(), s.nbr_el.clear(), s.nbr_j.clear();
  const int64_t b = c.bin_of[i];
  const int64_t bz = b % c.nb[2], by = (b / c.nb[2]) % c.nb[1], bx = b / (c.nb[1] * c.nb[2]);
  const double xi = c.pos[3 * i], yi = c.pos[3 * i + 1], zi = c.pos[3 * i + 2];
  const double rc2 = c.cutoff * c.cutoff;
  for (int dx = -1; dx <= 1; ++dx) {
    int64_t nx = bx + dx, wx = 0;
    if (nx < 0) nx += c.nb[0], wx = -1;
    if (nx >= c.nb[0]) nx -= c.nb[0], wx = 1;
    for (int dy = -1; dy <= 1; ++dy) {
      int64_t ny = by + dy, wy = 0;
      if (ny < 0) ny += c.nb[1], wy = -1;
      if (ny >= c.nb[1]) ny -= c.nb[1], wy = 1;
      for (int dz = -1; dz <= 1; ++dz) {
        int64_t nz = bz + dz, wz = 0;
        if (nz < 0) nz += c.nb[2], wz = -1;
        if (nz >= c.nb[2]) nz -= c.nb[2], wz = 1;
        const double sx = wx * c.cell[0] + wy * c.cell[3] + wz * c.cell[6];
        const double sy = wx * c.cell[1] + wy * c.cell[4] + wz * c.cell[7];
        const double sz = wx * c.cell[2] + wy * c.cell[5] + wz * c.cell[8];
        const bool home = wx == 0 && wy == 0 && wz == 0;
        const int64_t nbin = (nx * c.nb[1] + ny) * c.nb[2] + nz;
        for (int64_t q = c.bin_start[nbin]; q < c.bin_start[nbin + 1]; ++q) {
          const int64_t j = c.order[q];
          if (home && j == i) continue;
          const double vx = c.pos[3 * j] + sx - xi, vy = c.pos[3 * j + 1] + sy - yi,
                       vz = c.pos[3 * j + 2] + sz - zi;
          if (vx * vx + vy * vy + vz * vz < rc2) {
            s.nbr_vec.push_back(vx), s.nbr_vec.push_back(vy), s.nbr_vec.push_back(vz);
            s.nbr_el.push_back(c.elem[j]), s.nbr_j.push_back(j);
          }
        }
      }
    }
  }
}

// Forward (forces == nullptr): G rows. Backward: forces [n, 3] (= -dE/dpos) and
// virial [9] (= -sum_e v_e (x) dE/dv_e), from dE/dG.
template <typename TG>
void run_cells(const Plan& p, const Cells& c, TG* out, const TG* gG, double* forces,
               double* virial, int n_threads) {
  constexpr int64_t kChunk = 16;
  const int64_t n = c.n_atoms;
  std::atomic<int64_t> next{0};
  const bool bwd = gG != nullptr;
  const int nt = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(n_threads, (n + kChunk - 1) / kChunk)));
  // per-thread force buffers (thread 0 writes into `forces` itself)
  std::vector<std::vector<double>> fbuf(bwd ? nt - 1 : 0);
  std::vector<std::array<double, 9>> vir(nt);
  auto work = [&](int tid) {
    Scratch s;
    s.acc.resize(p.n_feat), s.grow.resize(p.n_feat), s.rex.resize(p.n_feat * p.n_elem + 1);
    for (auto* v : {&s.rad, &s.drj, &s.drk, &s.drjk, &s.ang, &s.dang, &s.grad_rad, &s.grad_ang}) {
      v->resize(p.max_comb);
    }
    if (bwd && tid > 0) fbuf[tid - 1].assign(3 * n, 0.0);
    double* f = bwd ? (tid == 0 ? forces : fbuf[tid - 1].data()) : nullptr;
    std::array<double, 9> w{};
    int64_t start[2];
    for (;;) {
      const int64_t q0 = next.fetch_add(kChunk);
      if (q0 >= n) break;
      for (int64_t q = q0; q < std::min(q0 + kChunk, n); ++q) {
        const int64_t i = c.order[q];  // bin order: neighbours stay in cache
        gather(c, i, s);
        const int64_t m = static_cast<int64_t>(s.nbr_j.size());
        start[0] = 0, start[1] = m;
        Edges<double> in{1, start, s.nbr_vec.data(), c.elem + i, s.nbr_el.data()};
        if (!bwd) {
          std::fill(s.acc.begin(), s.acc.end(), 0.0);
          centre<double, false, TG>(p, in, 0, nullptr, nullptr, s);
          for (int64_t k = 0; k < p.n_feat; ++k) out[i * p.n_feat + k] = static_cast<TG>(s.acc[k]);
          continue;
        }
        s.nbr_grad.resize(3 * m);
        centre<double, true, TG>(p, in, 0, gG + i * p.n_feat, s.nbr_grad.data(), s);
        for (int64_t e = 0; e < m; ++e) {
          const double* g = &s.nbr_grad[3 * e];
          const double* v = &s.nbr_vec[3 * e];
          const int64_t j = s.nbr_j[e];
          // v = pos_j - pos_i: dE/dpos_j += g, dE/dpos_i -= g
          for (int a = 0; a < 3; ++a) {
            f[3 * i + a] += g[a];
            f[3 * j + a] -= g[a];
            for (int b = 0; b < 3; ++b) w[3 * a + b] -= v[a] * g[b];
          }
        }
      }
    }
    vir[tid] = w;
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < nt; ++t) pool.emplace_back(work, t);
  work(0);
  for (auto& th : pool) th.join();
  if (bwd) {
    for (auto& fb : fbuf) {
      for (int64_t k = 0; k < 3 * n; ++k) forces[k] += fb[k];
    }
    for (int k = 0; k < 9; ++k) {
      virial[k] = 0.0;
      for (int t = 0; t < nt; ++t) virial[k] += vir[t][k];
    }
  }
}

}  // namespace

extern "C" {

// G[n_centres, n_feat] (written entirely). dtype: 0 float64, 1 float32.
int bp_forward(const Plan* p, int64_t n_centres, const int64_t* edge_start, const void* vec,
               const int64_t* centre_elem, const int64_t* nbr_elem, int dtype, void* out,
               int n_threads) {
  if (dtype == 0) {
    Edges<double> in{n_centres, edge_start, static_cast<const double*>(vec), centre_elem,
                     nbr_elem};
    run<double>(*p, in, static_cast<double*>(out), nullptr, nullptr, n_threads);
  } else {
    Edges<float> in{n_centres, edge_start, static_cast<const float*>(vec), centre_elem,
                    nbr_elem};
    run<float>(*p, in, static_cast<float*>(out), nullptr, nullptr, n_threads);
  }
  return 0;
}

// dE/dvec[n_edges, 3] (written entirely) from dE/dG[n_centres, n_feat].
int bp_backward(const Plan* p, int64_t n_centres, const int64_t* edge_start, const void* vec,
                const int64_t* centre_elem, const int64_t* nbr_elem, int dtype,
                const void* grad_g, void* grad_vec, int n_threads) {
  if (dtype == 0) {
    Edges<double> in{n_centres, edge_start, static_cast<const double*>(vec), centre_elem,
                     nbr_elem};
    run<double>(*p, in, nullptr, static_cast<const double*>(grad_g),
                static_cast<double*>(grad_vec), n_threads);
  } else {
    Edges<float> in{n_centres, edge_start, static_cast<const float*>(vec), centre_elem,
                    nbr_elem};
    run<float>(*p, in, nullptr, static_cast<const float*>(grad_g),
               static_cast<float*>(grad_vec), n_threads);
  }
  return 0;
}

// Positions path (see run_cells). forces must be zero on entry; dtype of G and dE/dG.
int bp_cells(const Plan* p, int64_t n_atoms, const double* pos, const int64_t* elem,
             const double* cell, const int64_t* nb, const int64_t* bin_of,
             const int64_t* bin_start, const int64_t* order, double cutoff, int dtype,
             void* out, const void* grad_g, double* forces, double* virial, int n_threads) {
  Cells c{n_atoms, pos, elem, cell, {nb[0], nb[1], nb[2]}, bin_of, bin_start, order, cutoff};
  if (dtype == 0) {
    run_cells<double>(*p, c, static_cast<double*>(out), static_cast<const double*>(grad_g),
                      forces, virial, n_threads);
  } else {
    run_cells<float>(*p, c, static_cast<float*>(out), static_cast<const float*>(grad_g), forces,
                     virial, n_threads);
  }
  return 0;
}

int bp_abi_version() { return 1; }
}
