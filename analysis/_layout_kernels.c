/* The audit's compiled kernels: the pairwise part of the layout statistics, one pass
over box pairs, and the report's box-centre bins (centre_bin_keys, at the end).

Why C: in NumPy each pairwise test was a full pass over an (n, n, m) array, about a
hundred passes per block of images, and most of the time went to writing and reading
back those temporaries. Here each (box, box) pair is visited once per statistic family
with its counts kept in registers, 16 images at a time (GCC/Clang vector extensions:
SSE2, AVX2 or AVX-512, picked when the library loads where GCC can clone functions per
target). Measured in docs/audit.md: the same statistics in an eighth of the time.

The results are exactly the integers and float32 values of the NumPy formulation they
replace (the audit's outputs were byte-identical): the same int16 offsets in units of
1/QUANT, the same tolerances (passed in from analysis/layout_group.py, where they are
defined), the same unsigned-compare rules, and float32 squares summed without fused
multiply-add (-ffp-contract=off in setup.py). tests/analysis/test_layout_equivalence.py
checks every output against a per-image reference written from the definitions.

Layout: every array is (n, m), row-major, box i of image k at [i * m + k] (the image axis
last, as analysis/layout_group.py gathers them). Called through ctypes, which releases the
GIL, so the audit's threads run blocks at once. A minimal module init makes the library
importable, so that Python finds it wherever pip put it, and records the hash of this
source it was built from (analysis/layout_kernels.py refuses a stale build).
*/
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

typedef int16_t i16;
#define L 16
typedef int16_t v16 __attribute__((vector_size(32)));
typedef uint16_t u16v __attribute__((vector_size(32)));
typedef float vf __attribute__((vector_size(64)));
typedef int32_t vi32 __attribute__((vector_size(64)));

/* One clone per x86-64 level, chosen when the library loads (GCC on Linux); elsewhere the
   compiler's default target. */
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(__clang__)
#define ATTR __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define ATTR
#endif

/* 16 images' values of one box row; a short last group is padded with zeros (its lanes
   are computed but never stored). */
static inline v16 ld(const i16 *p, int kk) {
    v16 v = {0};
    if (__builtin_expect(kk == L, 1)) memcpy(&v, p, sizeof v);
    else memcpy(&v, p, (size_t)kk * 2);
    return v;
}
static inline void st(i16 *p, v16 v, int kk) {
    if (__builtin_expect(kk == L, 1)) memcpy(p, &v, sizeof v);
    else memcpy(p, &v, (size_t)kk * 2);
}
/* Comparisons give -1 (true) or 0 per lane: masks, and counts are kept by subtracting them. */
static inline v16 vabs(v16 d) { v16 s = d >> 15; return (d ^ s) - s; }
static inline v16 sel(v16 m, v16 a, v16 b) { return (a & m) | (b & ~m); }
static inline v16 vmin(v16 a, v16 b) { return sel(a < b, a, b); }
static inline v16 vmax(v16 a, v16 b) { return sel(a > b, a, b); }
static inline v16 splat(int x) { return (v16){0} + (i16)x; }

/* The tolerances, in the quantised units of analysis/layout_group.py. */
typedef struct {
    int qtol, cut_qtol, cut_shift, qcross, quant, big, size_tol, row_shift, base_shift;
} Tol;

/* Squared distance from each box centre to its nearest other centre, in float32 as
   dx * dx + dy * dy from the doubled-centre offsets (the Clark-Evans ratio's input). */
ATTR
static void nearest(int n, int m, int k, int kk, const i16 *c2x, const i16 *c2y, float *d2min) {
    for (int i = 0; i < n; i++) {
        const size_t oi = (size_t)i * m + k;
        v16 xi = ld(c2x + oi, kk), yi = ld(c2y + oi, kk);
        vf best = (vf){0} + __builtin_inff();
        for (int j = 0; j < n; j++) {
            if (j == i) continue;
            const size_t oj = (size_t)j * m + k;
            vf fx = __builtin_convertvector(vabs(ld(c2x + oj, kk) - xi), vf);
            vf fy = __builtin_convertvector(vabs(ld(c2y + oj, kk) - yi), vf);
            vf d = fx * fx;
            vf e = fy * fy;
            d = d + e;
            vi32 lt = d < best;
            best = (vf)(((vi32)d & lt) | ((vi32)best & ~lt));
        }
        memcpy(d2min + oi, &best, (size_t)kk * 4);
    }
}

/* Everything that needs MIN_BOXES_FOR_EVIDENCE boxes, for images k..k+kk-1: per image the
   number of boxes with two or more row (column, baseline) partners; per box line the
   seam strength; per image the largest cut and the fewest boxes in a quadrant of the
   most balanced free cross. */
ATTR
static void evidence_stats(
    int n, int m, int k, int kk,
    const i16 *q0, const i16 *q1, const i16 *q2, const i16 *q3,
    const i16 *c2x, const i16 *c2y, const i16 *wq, const i16 *hq,
    const i16 *lw, const i16 *lh, const i16 *in_x, const i16 *in_y, Tol t,
    i16 *row_part, i16 *col_part, i16 *base_part,
    i16 *str_x, i16 *str_y, i16 *cut_x, i16 *cut_y, i16 *cross_min)
{
    const v16 zero = {0}, one = splat(1), two = splat(2);
    /* Alignment: partners of similar size (|log size ratio| within size_tol), beside each
       other (|dx| > mean width / 2) and in one row (|dy| < ROW_TOL x mean height) or on
       one baseline (bottoms within BASELINE_TOL x mean height); or stacked in one column
       (|dy| > mean height / 2, |dx| < mean width / 4). Offsets are of doubled centres and
       thresholds shifts of the summed sizes (row_shift, base_shift: the tolerances as
       powers of two). */
    v16 prow = zero, pcol = zero, pbase = zero;
    const v16 st2 = splat(2 * t.size_tol);
    for (int i = 0; i < n; i++) {
        const size_t oi = (size_t)i * m + k;
        v16 xi = ld(c2x + oi, kk), yi = ld(c2y + oi, kk), wi = ld(wq + oi, kk), hi = ld(hq + oi, kk);
        v16 lwi = ld(lw + oi, kk) - (i16)t.size_tol, lhi = ld(lh + oi, kk) - (i16)t.size_tol;
        v16 bi = ld(q3 + oi, kk);
        v16 nr = zero, nc = zero, nb = zero;
        for (int j = 0; j < n; j++) {
            const size_t oj = (size_t)j * m + k;
            v16 adx = vabs(ld(c2x + oj, kk) - xi), ady = vabs(ld(c2y + oj, kk) - yi);
            v16 ws = ld(wq + oj, kk) + wi, hs = ld(hq + oj, kk) + hi;
            v16 beside = ((u16v)(ld(lh + oj, kk) - lhi) < (u16v)st2) & (adx > (ws >> 1));
            v16 colm = ((u16v)(ld(lw + oj, kk) - lwi) < (u16v)st2) & (ady > (hs >> 1)) & (adx < (ws >> 2));
            v16 rowm = (ady < (hs >> t.row_shift)) & beside;
            v16 basem = (vabs(ld(q3 + oj, kk) - bi) < (hs >> t.base_shift)) & beside;
            nr -= rowm;
            nc -= colm;
            nb -= basem;
        }
        prow -= nr >= two;
        pcol -= nc >= two;
        pbase -= nb >= two;
    }
    st(row_part + k, prow, kk);
    st(col_part + k, pcol, kk);
    st(base_part + k, pbase, kk);
    /* Seams and cuts, per axis, on the line at each box's far edge. An edge is on the line
       within qtol (cut_qtol for cuts); the line is crossed by a box that starts before
       it and ends after it. A seam line is crossed by no box and has a box beyond it; a
       cut is crossed by no box along the span of the boxes on it (a second pass, once
       that span is known). */
    const v16 q2tol = splat(2 * t.qtol), c2tol = splat(2 * t.cut_qtol), cshift = splat(t.cut_shift);
    const v16 vbig = splat(t.big), nbig = splat(-t.big), vn = splat(n);
    for (int axis = 0; axis < 2; axis++) {
        const i16 *qlo = axis ? q1 : q0, *qhi = axis ? q3 : q2;
        const i16 *olo = axis ? q0 : q1, *ohi = axis ? q2 : q3;
        const i16 *inside = axis ? in_y : in_x;
        i16 *strength = axis ? str_y : str_x;
        v16 cutbest = zero;
        for (int i = 0; i < n; i++) {
            const size_t oi = (size_t)i * m + k;
            v16 b = ld(qhi + oi, kk) - (i16)t.qtol;
            v16 con = zero, cbef = zero, ccross = zero, con2 = zero, amin = vbig, bmax = nbig;
            for (int j = 0; j < n; j++) {
                const size_t oj = (size_t)j * m + k;
                v16 dh = ld(qhi + oj, kk) - b, dl = ld(qlo + oj, kk) - b;
                u16v near = (u16v)sel((u16v)dh < (u16v)dl, dh, dl);
                v16 on = near < (u16v)q2tol;
                v16 before = dl < zero;
                v16 on2 = (near - (u16v)cshift) < (u16v)c2tol;
                con -= on;
                cbef -= before;
                ccross |= before & (dh > q2tol);
                con2 -= on2;
                amin = vmin(amin, sel(on2, ld(olo + oj, kk), vbig));
                bmax = vmax(bmax, sel(on2, ld(ohi + oj, kk), nbig));
            }
            v16 ccross2 = zero;
            for (int j = 0; j < n; j++) {
                const size_t oj = (size_t)j * m + k;
                v16 dh = ld(qhi + oj, kk) - b, dl = ld(qlo + oj, kk) - b;
                ccross2 |= (dl < zero) & (dh > q2tol) & (ld(olo + oj, kk) < bmax) & (ld(ohi + oj, kk) > amin);
            }
            /* boxes beyond the line: all but those starting before it, and box i itself when
               it is thinner than qtol (then it does not start before its own line) */
            v16 tiny = (ld(qlo + oi, kk) - ld(qhi + oi, kk)) >= splat(-t.qtol);
            v16 far_ok = (vn - cbef + tiny) >= one; /* tiny is -1 when true */
            v16 in = zero - ld(inside + oi, kk);
            v16 ok = ~ccross & far_ok & in;
            st(strength + oi, con & ok, kk);
            v16 cv = con2 & (~ccross2 & in & (con2 >= two));
            cutbest = vmax(cutbest, cv);
        }
        st((axis ? cut_y : cut_x) + k, cutbest, kk);
    }
    /* The most balanced free cross: per axis, of the lines at every box's near and far
       edge that lie in the central band and are crossed by no box, the first one with the
       most box centres on its smaller side; then the fewest boxes in any of the four
       quadrants the two lines make (0 unless both lines are free). */
    v16 bestc[2], bestf[2];
    const v16 qc = splat(t.qcross), qc_hi = splat(t.quant - t.qcross), vq = splat(t.qtol);
    for (int axis = 0; axis < 2; axis++) {
        const i16 *lo = axis ? q1 : q0, *hi = axis ? q3 : q2;
        const i16 *c2 = axis ? c2y : c2x;
        v16 bestv = splat(-1), bc = zero, bf = zero;
        for (int l = 0; l < 2 * n; l++) {
            v16 c = ld((l < n ? lo : hi) + (size_t)(l % n) * m + k, kk);
            v16 clo = c - vq, chi = c + vq, c2l = c + c;
            v16 cr = zero, cnt = zero;
            for (int j = 0; j < n; j++) {
                const size_t oj = (size_t)j * m + k;
                cr |= (ld(lo + oj, kk) < clo) & (ld(hi + oj, kk) > chi);
                cnt -= ld(c2 + oj, kk) < c2l;
            }
            v16 fr = ~cr & (c > qc) & (c < qc_hi);
            v16 v = (vmin(cnt, vn - cnt) + one) & fr;
            v16 take = v > bestv;
            bestv = sel(take, v, bestv);
            bc = sel(take, c, bc);
            bf = sel(take, fr, bf);
        }
        bestc[axis] = bc + bc;
        bestf[axis] = bf;
    }
    v16 quad[4] = {zero, zero, zero, zero};
    for (int j = 0; j < n; j++) {
        const size_t oj = (size_t)j * m + k;
        v16 left = ld(c2x + oj, kk) < bestc[0], top = ld(c2y + oj, kk) < bestc[1];
        quad[0] -= left & top;
        quad[1] -= left & ~top;
        quad[2] -= ~left & top;
        quad[3] -= ~left & ~top;
    }
    v16 low = vmin(vmin(quad[0], quad[1]), vmin(quad[2], quad[3]));
    st(cross_min + k, low & bestf[0] & bestf[1], kk);
}

/* The entry point, for a block of m images with n boxes each: q0..q3 the quantised
   x0, y0, x1, y1; c2x, c2y the doubled centres; wq, hq the sizes; lw, lh the quantised log
   sizes; in_x, in_y 1 where the far edge is inside the seam margins. Outputs: d2min (n, m);
   the rest only when `evidence`: partner counts (m), seam strengths (n, m), cuts and
   cross minima (m). */
void pairwise_block(
    int n, int m, int evidence,
    const i16 *q0, const i16 *q1, const i16 *q2, const i16 *q3,
    const i16 *c2x, const i16 *c2y, const i16 *wq, const i16 *hq,
    const i16 *lw, const i16 *lh, const i16 *in_x, const i16 *in_y,
    int qtol, int cut_qtol, int cut_shift, int qcross, int quant, int big, int size_tol,
    int row_shift, int base_shift,
    float *d2min, i16 *row_part, i16 *col_part, i16 *base_part,
    i16 *str_x, i16 *str_y, i16 *cut_x, i16 *cut_y, i16 *cross_min)
{
    Tol t = {qtol, cut_qtol, cut_shift, qcross, quant, big, size_tol, row_shift, base_shift};
    for (int k = 0; k < m; k += L) {
        const int kk = m - k < L ? m - k : L;
        nearest(n, m, k, kk, c2x, c2y, d2min);
        if (evidence)
            evidence_stats(n, m, k, kk, q0, q1, q2, q3, c2x, c2y, wq, hq, lw, lh, in_x, in_y, t,
                           row_part, col_part, base_part, str_x, str_y, cut_x, cut_y, cross_min);
    }
}

/* The report's heatmap bin of each box centre, y * bins + x: exactly
   searchsorted(edges, (lo + hi) / 2, "right") - 1 clipped to [0, bins) per axis, in
   float64 (np.histogram2d's bins for uniform edges), from an estimate moved by at most
   a step past the neighbouring edges. In NumPy the float32 estimate and its float64
   repair took about 16 bytes of temporaries a box and 54 ms a 200,000-image part. */
static inline int32_t centre_bin(float lo, float hi, const double *edges, int bins) {
    double c = ((double)lo + (double)hi) / 2;
    if (!(c >= 0)) return 0; /* below the first edge, or NaN (NumPy's cast clips to 0) */
    long at = c >= 1 ? bins : (long)(c * bins);
    if (at > bins) at = bins;
    while (at < bins && edges[at + 1] <= c) at++;
    while (at > 0 && edges[at] > c) at--;
    return (int32_t)(at < bins ? at : bins - 1);
}

void centre_bin_keys(int64_t n, const float *x0, const float *y0, const float *x1,
                     const float *y1, const double *edges, int bins, int32_t *key) {
    for (int64_t k = 0; k < n; k++)
        key[k] = centre_bin(y0[k], y1[k], edges, bins) * bins + centre_bin(x0[k], x1[k], edges, bins);
}

static struct PyModuleDef layout_kernels_module = {
    PyModuleDef_HEAD_INIT, "_layout_kernels",
    "The audit's compiled kernels; called through ctypes (analysis.layout_kernels).",
    -1, NULL,
};

#ifndef LAYOUT_KERNELS_SOURCE_SHA256
#define LAYOUT_KERNELS_SOURCE_SHA256 ""
#endif

PyMODINIT_FUNC PyInit__layout_kernels(void) {
    PyObject *module = PyModule_Create(&layout_kernels_module);
    if (module && PyModule_AddStringConstant(module, "source_sha256", LAYOUT_KERNELS_SOURCE_SHA256)) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
