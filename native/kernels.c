/*
 * atlas._kernels: the hot pixel kernels of Atlas (pyramid downsampling, CT windowing).
 *
 * The numpy reference in src/atlas/_native.py is the specification; every function here
 * must give bit-identical results to it. The Python layer (src/atlas/kernels.py) validates
 * arguments and raises atlas.errors.InvalidInput; the checks here only keep direct callers
 * from crashing the interpreter (TypeError / ValueError).
 *
 * Block rule of both downsamplers: along an axis with factor 2 and odd size, the missing
 * neighbour of the last block is the edge value repeated (numpy edge padding to even size),
 * so every block holds exactly fz*fy*fx values. Values are visited in (dz, dy, dx)
 * lexicographic order, which fixes the floating-point summation order.
 *
 * Loops run row by row with the GIL released.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <numpy/arrayobject.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

/* Bump when the behaviour or signatures change; _native.py refuses a stale build. */
#define ATLAS_KERNELS_API_VERSION 1

#if defined(__GNUC__) || defined(__clang__)
#define ATLAS_INLINE static inline __attribute__((always_inline))
#else
#define ATLAS_INLINE static inline
#endif

/* Integer rounding below relies on >> of a negative int64 being a floor division by 2^k. */
_Static_assert(((int64_t)-5 >> 1) == (int64_t)-3, "arithmetic right shift required");

/* log2 of a block size in {1, 2, 4, 8}. */
ATLAS_INLINE int log2_count(const int count) { return (count >= 2) + (count >= 4) + (count >= 8); }

/* ------------------------------------------------------------------------------------------ */
/* Row kernels. Each handles one output row: `r` holds the nr = fz*fy input rows of the block  */
/* in (dz, dy) order, fx is 1 or 2, nx the input row length. The *_impl functions are always   */
/* inlined into a dispatcher that calls them with literal nr/fx, so every combination gets its */
/* own specialised loop.                                                                        */
/* ------------------------------------------------------------------------------------------ */

/* mean, integers up to 32 bits: exact int64 sum, floor((sum + count/2) / count). */
#define DEFINE_MEAN_SMALLINT(SUF, T)                                                              \
    ATLAS_INLINE void mean_##SUF##_impl(const T *const *r, const int nr, const int fx,            \
                                        const npy_intp nx, T *restrict o)                        \
    {                                                                                             \
        const int k = log2_count(nr * fx);                                                        \
        const int64_t half = (int64_t)((nr * fx) / 2);                                            \
        const npy_intp full = fx == 2 ? nx / 2 : nx;                                              \
        for (npy_intp i = 0; i < full; i++) {                                                     \
            int64_t s = 0;                                                                        \
            for (int j = 0; j < nr; j++) {                                                        \
                if (fx == 2)                                                                      \
                    s += (int64_t)r[j][2 * i] + (int64_t)r[j][2 * i + 1];                         \
                else                                                                              \
                    s += (int64_t)r[j][i];                                                        \
            }                                                                                     \
            o[i] = (T)((s + half) >> k);                                                          \
        }                                                                                         \
        if (fx == 2 && (nx & 1)) {                                                                \
            int64_t s = 0;                                                                        \
            for (int j = 0; j < nr; j++)                                                          \
                s += 2 * (int64_t)r[j][nx - 1];                                                   \
            o[full] = (T)((s + half) >> k);                                                       \
        }                                                                                         \
    }

/* mean, int64: a sum of 8 int64 values can overflow, so split every value v into
 * q = floor(v / c) and m = v mod c (c = count = 2^k); then
 * floor((sum + c/2) / c) == sum(q) + floor((sum(m) + c/2) / c), and no partial sum overflows. */
#define MEAN_I64_ADD(v)                                                                           \
    do {                                                                                          \
        const int64_t v_ = (v);                                                                   \
        q += v_ >> k;                                                                             \
        m += v_ & mask;                                                                           \
    } while (0)

ATLAS_INLINE void mean_i64_impl(const int64_t *const *r, const int nr, const int fx,
                                const npy_intp nx, int64_t *restrict o)
{
    const int k = log2_count(nr * fx);
    const int64_t mask = (int64_t)(nr * fx) - 1;
    const int64_t half = (int64_t)((nr * fx) / 2);
    const npy_intp full = fx == 2 ? nx / 2 : nx;
    for (npy_intp i = 0; i < full; i++) {
        int64_t q = 0, m = 0;
        for (int j = 0; j < nr; j++) {
            if (fx == 2) {
                MEAN_I64_ADD(r[j][2 * i]);
                MEAN_I64_ADD(r[j][2 * i + 1]);
            }
            else {
                MEAN_I64_ADD(r[j][i]);
            }
        }
        o[i] = q + ((m + half) >> k);
    }
    if (fx == 2 && (nx & 1)) {
        int64_t q = 0, m = 0;
        for (int j = 0; j < nr; j++) {
            MEAN_I64_ADD(r[j][nx - 1]);
            MEAN_I64_ADD(r[j][nx - 1]);
        }
        o[full] = q + ((m + half) >> k);
    }
}

/* mean, floats: sum in double starting from the first value, in (dz, dy, dx) order. */
#define DEFINE_MEAN_FLOAT(SUF, T)                                                                 \
    ATLAS_INLINE void mean_##SUF##_impl(const T *const *r, const int nr, const int fx,            \
                                        const npy_intp nx, T *restrict o)                        \
    {                                                                                             \
        const double count = (double)(nr * fx);                                                   \
        const npy_intp full = fx == 2 ? nx / 2 : nx;                                              \
        for (npy_intp i = 0; i < full; i++) {                                                     \
            const npy_intp x0 = fx == 2 ? 2 * i : i;                                              \
            double s = (double)r[0][x0];                                                          \
            if (fx == 2)                                                                          \
                s += (double)r[0][x0 + 1];                                                        \
            for (int j = 1; j < nr; j++) {                                                        \
                s += (double)r[j][x0];                                                            \
                if (fx == 2)                                                                      \
                    s += (double)r[j][x0 + 1];                                                    \
            }                                                                                     \
            o[i] = (T)(s / count);                                                                \
        }                                                                                         \
        if (fx == 2 && (nx & 1)) {                                                                \
            double s = (double)r[0][nx - 1];                                                      \
            s += (double)r[0][nx - 1];                                                            \
            for (int j = 1; j < nr; j++) {                                                        \
                s += (double)r[j][nx - 1];                                                        \
                s += (double)r[j][nx - 1];                                                        \
            }                                                                                     \
            o[full] = (T)(s / count);                                                             \
        }                                                                                         \
    }

/* mode: sort the (at most 8) block values with a sorting network, then take the longest run;
 * a later run must be strictly longer to win, so ties go to the smallest value. */
#define CSWAP(T, a, b)                                                                            \
    do {                                                                                          \
        const T lo_ = (a) < (b) ? (a) : (b);                                                      \
        const T hi_ = (a) < (b) ? (b) : (a);                                                      \
        (a) = lo_;                                                                                \
        (b) = hi_;                                                                                \
    } while (0)

#define DEFINE_MODE(SUF, T)                                                                       \
    ATLAS_INLINE T mode_sorted_##SUF(const T *v, const int k)                                     \
    {                                                                                             \
        T best = v[0];                                                                            \
        int best_n = 1, run = 1;                                                                  \
        for (int i = 1; i < k; i++) {                                                             \
            run = v[i] == v[i - 1] ? run + 1 : 1;                                                 \
            if (run > best_n) {                                                                   \
                best_n = run;                                                                     \
                best = v[i];                                                                      \
            }                                                                                     \
        }                                                                                         \
        return best;                                                                              \
    }                                                                                             \
                                                                                                  \
    ATLAS_INLINE T mode_block_##SUF(T *v, const int k)                                            \
    {                                                                                             \
        if (k == 1)                                                                               \
            return v[0];                                                                          \
        if (k == 2)                                                                               \
            return v[0] < v[1] ? v[0] : v[1];                                                     \
        /* fast path: uniform blocks (the common case inside label regions) */                    \
        int uniform = 1;                                                                          \
        for (int i = 1; i < k; i++)                                                               \
            uniform &= v[i] == v[0];                                                              \
        if (uniform)                                                                              \
            return v[0];                                                                          \
        switch (k) {                                                                              \
        case 4:                                                                                   \
            CSWAP(T, v[0], v[1]);                                                                 \
            CSWAP(T, v[2], v[3]);                                                                 \
            CSWAP(T, v[0], v[2]);                                                                 \
            CSWAP(T, v[1], v[3]);                                                                 \
            CSWAP(T, v[1], v[2]);                                                                 \
            return mode_sorted_##SUF(v, 4);                                                       \
        default: /* 8: optimal 19-comparator network */                                           \
            CSWAP(T, v[0], v[2]);                                                                 \
            CSWAP(T, v[1], v[3]);                                                                 \
            CSWAP(T, v[4], v[6]);                                                                 \
            CSWAP(T, v[5], v[7]);                                                                 \
            CSWAP(T, v[0], v[4]);                                                                 \
            CSWAP(T, v[1], v[5]);                                                                 \
            CSWAP(T, v[2], v[6]);                                                                 \
            CSWAP(T, v[3], v[7]);                                                                 \
            CSWAP(T, v[0], v[1]);                                                                 \
            CSWAP(T, v[2], v[3]);                                                                 \
            CSWAP(T, v[4], v[5]);                                                                 \
            CSWAP(T, v[6], v[7]);                                                                 \
            CSWAP(T, v[2], v[4]);                                                                 \
            CSWAP(T, v[3], v[5]);                                                                 \
            CSWAP(T, v[1], v[4]);                                                                 \
            CSWAP(T, v[3], v[6]);                                                                 \
            CSWAP(T, v[1], v[2]);                                                                 \
            CSWAP(T, v[3], v[4]);                                                                 \
            CSWAP(T, v[5], v[6]);                                                                 \
            return mode_sorted_##SUF(v, 8);                                                       \
        }                                                                                         \
    }                                                                                             \
                                                                                                  \
    ATLAS_INLINE void mode_##SUF##_impl(const T *const *r, const int nr, const int fx,            \
                                        const npy_intp nx, T *restrict o)                        \
    {                                                                                             \
        const npy_intp full = fx == 2 ? nx / 2 : nx;                                              \
        T v[8];                                                                                   \
        for (npy_intp i = 0; i < full; i++) {                                                     \
            const npy_intp x0 = fx == 2 ? 2 * i : i;                                              \
            for (int j = 0; j < nr; j++) {                                                        \
                v[j * fx] = r[j][x0];                                                             \
                if (fx == 2)                                                                      \
                    v[j * fx + 1] = r[j][x0 + 1];                                                 \
            }                                                                                     \
            o[i] = mode_block_##SUF(v, nr * fx);                                                  \
        }                                                                                         \
        if (fx == 2 && (nx & 1)) {                                                                \
            for (int j = 0; j < nr; j++) {                                                        \
                v[2 * j] = r[j][nx - 1];                                                          \
                v[2 * j + 1] = r[j][nx - 1];                                                      \
            }                                                                                     \
            o[full] = mode_block_##SUF(v, 2 * nr);                                                \
        }                                                                                         \
    }

/* Dispatcher: one call per output row, specialised for each (nr, fx) pair. */
typedef void (*row_fn)(const char *const *rows, int nr, int fx, npy_intp nx, char *out);

#define DEFINE_ROW_DISPATCH(KIND, SUF, T)                                                         \
    static void KIND##_##SUF##_row(const char *const *rows, const int nr, const int fx,           \
                                   const npy_intp nx, char *out)                                  \
    {                                                                                             \
        const T *r[4];                                                                            \
        for (int j = 0; j < nr; j++)                                                              \
            r[j] = (const T *)(const void *)rows[j];                                              \
        T *o = (T *)(void *)out;                                                                  \
        switch (nr * 4 + fx) {                                                                    \
        case 1 * 4 + 1:                                                                           \
            KIND##_##SUF##_impl(r, 1, 1, nx, o);                                                  \
            break;                                                                                \
        case 1 * 4 + 2:                                                                           \
            KIND##_##SUF##_impl(r, 1, 2, nx, o);                                                  \
            break;                                                                                \
        case 2 * 4 + 1:                                                                           \
            KIND##_##SUF##_impl(r, 2, 1, nx, o);                                                  \
            break;                                                                                \
        case 2 * 4 + 2:                                                                           \
            KIND##_##SUF##_impl(r, 2, 2, nx, o);                                                  \
            break;                                                                                \
        case 4 * 4 + 1:                                                                           \
            KIND##_##SUF##_impl(r, 4, 1, nx, o);                                                  \
            break;                                                                                \
        default:                                                                                  \
            KIND##_##SUF##_impl(r, 4, 2, nx, o);                                                  \
            break;                                                                                \
        }                                                                                         \
    }

DEFINE_MEAN_SMALLINT(i8, int8_t)
DEFINE_MEAN_SMALLINT(u8, uint8_t)
DEFINE_MEAN_SMALLINT(i16, int16_t)
DEFINE_MEAN_SMALLINT(u16, uint16_t)
DEFINE_MEAN_SMALLINT(i32, int32_t)
DEFINE_MEAN_SMALLINT(u32, uint32_t)
DEFINE_MEAN_FLOAT(f32, float)
DEFINE_MEAN_FLOAT(f64, double)

DEFINE_ROW_DISPATCH(mean, i8, int8_t)
DEFINE_ROW_DISPATCH(mean, u8, uint8_t)
DEFINE_ROW_DISPATCH(mean, i16, int16_t)
DEFINE_ROW_DISPATCH(mean, u16, uint16_t)
DEFINE_ROW_DISPATCH(mean, i32, int32_t)
DEFINE_ROW_DISPATCH(mean, u32, uint32_t)
DEFINE_ROW_DISPATCH(mean, i64, int64_t)
DEFINE_ROW_DISPATCH(mean, f32, float)
DEFINE_ROW_DISPATCH(mean, f64, double)

DEFINE_MODE(i8, int8_t)
DEFINE_MODE(u8, uint8_t)
DEFINE_MODE(i16, int16_t)
DEFINE_MODE(u16, uint16_t)
DEFINE_MODE(i32, int32_t)
DEFINE_MODE(u32, uint32_t)
DEFINE_MODE(i64, int64_t)

DEFINE_ROW_DISPATCH(mode, i8, int8_t)
DEFINE_ROW_DISPATCH(mode, u8, uint8_t)
DEFINE_ROW_DISPATCH(mode, i16, int16_t)
DEFINE_ROW_DISPATCH(mode, u16, uint16_t)
DEFINE_ROW_DISPATCH(mode, i32, int32_t)
DEFINE_ROW_DISPATCH(mode, u32, uint32_t)
DEFINE_ROW_DISPATCH(mode, i64, int64_t)

/* Window: y = (x - lo) * 255 / width in double, floor(y + 0.5) clipped to [0, 255], NaN -> 0.
 * For t = y + 0.5 in [0, 255), floor(t) is the truncating cast; t < 0 and NaN give 0. */
ATLAS_INLINE uint8_t window_one(const double x, const double lo, const double width)
{
    const double y = (x - lo) * 255.0 / width;
    const double t = y + 0.5;
    return t >= 0.0 ? (t < 255.0 ? (uint8_t)t : (uint8_t)255) : (uint8_t)0;
}

#define DEFINE_WINDOW(SUF, T)                                                                     \
    static void window_##SUF(const char *in, const npy_intp n, const double lo,                   \
                             const double width, uint8_t *restrict o)                             \
    {                                                                                             \
        const T *a = (const T *)(const void *)in;                                                 \
        for (npy_intp i = 0; i < n; i++)                                                          \
            o[i] = window_one((double)a[i], lo, width);                                           \
    }

/* 8- and 16-bit inputs: evaluate window_one once per possible value into a lookup table (same
 * function, so the same bits) when the array is large enough to pay for it. */
#define DEFINE_WINDOW_LUT(SUF, T, TMIN, NVALUES)                                                  \
    static void window_##SUF(const char *in, const npy_intp n, const double lo,                   \
                             const double width, uint8_t *restrict o)                             \
    {                                                                                             \
        const T *a = (const T *)(const void *)in;                                                 \
        uint8_t *lut = n >= (NVALUES) / 4 ? (uint8_t *)malloc(NVALUES) : NULL;                    \
        if (lut == NULL) {                                                                        \
            for (npy_intp i = 0; i < n; i++)                                                      \
                o[i] = window_one((double)a[i], lo, width);                                       \
            return;                                                                               \
        }                                                                                         \
        for (int32_t v = 0; v < (NVALUES); v++)                                                   \
            lut[v] = window_one((double)((TMIN) + v), lo, width);                                 \
        for (npy_intp i = 0; i < n; i++)                                                          \
            o[i] = lut[(int32_t)a[i] - (TMIN)];                                                   \
        free(lut);                                                                                \
    }

typedef void (*window_fn)(const char *in, npy_intp n, double lo, double width, uint8_t *o);

DEFINE_WINDOW_LUT(i8, int8_t, INT8_MIN, 256)
DEFINE_WINDOW_LUT(u8, uint8_t, 0, 256)
DEFINE_WINDOW_LUT(i16, int16_t, INT16_MIN, 65536)
DEFINE_WINDOW_LUT(u16, uint16_t, 0, 65536)
DEFINE_WINDOW(i32, int32_t)
DEFINE_WINDOW(u32, uint32_t)
DEFINE_WINDOW(i64, int64_t)
DEFINE_WINDOW(f32, float)
DEFINE_WINDOW(f64, double)

/* ------------------------------------------------------------------------------------------ */
/* Dtype selection                                                                              */
/* ------------------------------------------------------------------------------------------ */

enum dtype_code { DT_NONE = -1, DT_I8, DT_U8, DT_I16, DT_U16, DT_I32, DT_U32, DT_I64, DT_F32, DT_F64 };

/* By kind and size rather than type number, so C long/long long differences do not matter. */
static enum dtype_code dtype_of(PyArrayObject *arr)
{
    const PyArray_Descr *d = PyArray_DESCR(arr);
    const npy_intp size = PyArray_ITEMSIZE(arr);
    switch (d->kind) {
    case 'i':
        return size == 1 ? DT_I8 : size == 2 ? DT_I16 : size == 4 ? DT_I32 : size == 8 ? DT_I64 : DT_NONE;
    case 'u':
        return size == 1 ? DT_U8 : size == 2 ? DT_U16 : size == 4 ? DT_U32 : DT_NONE;
    case 'f':
        return size == 4 ? DT_F32 : size == 8 ? DT_F64 : DT_NONE;
    default:
        return DT_NONE;
    }
}

static const row_fn MEAN_ROWS[] = {mean_i8_row,  mean_u8_row,  mean_i16_row,
                                   mean_u16_row, mean_i32_row, mean_u32_row,
                                   mean_i64_row, mean_f32_row, mean_f64_row};
static const row_fn MODE_ROWS[] = {mode_i8_row,  mode_u8_row,  mode_i16_row, mode_u16_row,
                                   mode_i32_row, mode_u32_row, mode_i64_row, NULL, NULL};
static const window_fn WINDOWS[] = {window_i8,  window_u8,  window_i16, window_u16, window_i32,
                                    window_u32, window_i64, window_f32, window_f64};

/* A C-contiguous, aligned, native-byte-order array of a supported dtype (new reference). */
static PyArrayObject *as_input(PyObject *obj, const char *func, enum dtype_code *code)
{
    PyArrayObject *arr = (PyArrayObject *)PyArray_FROM_OF(obj, NPY_ARRAY_IN_ARRAY);
    if (arr == NULL)
        return NULL;
    if (!PyArray_ISNOTSWAPPED(arr)) {
        PyErr_Format(PyExc_ValueError, "%s: input must be in native byte order", func);
        Py_DECREF(arr);
        return NULL;
    }
    *code = dtype_of(arr);
    if (*code == DT_NONE) {
        PyErr_Format(PyExc_TypeError,
                     "%s: unsupported dtype (expected int8, uint8, int16, uint16, int32, uint32, "
                     "int64, float32 or float64)",
                     func);
        Py_DECREF(arr);
        return NULL;
    }
    return arr;
}

/* ------------------------------------------------------------------------------------------ */
/* Downsampling driver                                                                          */
/* ------------------------------------------------------------------------------------------ */

static void run_blocks(const char *in, const npy_intp nz, const npy_intp ny, const npy_intp nx,
                       const int fz, const int fy, const int fx, const npy_intp itemsize,
                       char *out, const npy_intp oz, const npy_intp oy, const npy_intp ox,
                       const row_fn fn)
{
    const npy_intp in_row = nx * itemsize, out_row = ox * itemsize;
    for (npy_intp bz = 0; bz < oz; bz++) {
        const npy_intp z0 = bz * fz;
        const npy_intp zs[2] = {z0, z0 + 1 < nz ? z0 + 1 : z0};
        for (npy_intp by = 0; by < oy; by++) {
            const npy_intp y0 = by * fy;
            const npy_intp ys[2] = {y0, y0 + 1 < ny ? y0 + 1 : y0};
            const char *rows[4];
            int nr = 0;
            for (int dz = 0; dz < fz; dz++)
                for (int dy = 0; dy < fy; dy++)
                    rows[nr++] = in + (zs[dz] * ny + ys[dy]) * in_row;
            fn(rows, nr, fx, nx, out + (bz * oy + by) * out_row);
        }
    }
}

static PyObject *downsample(PyObject *args, const char *func, const row_fn *table)
{
    PyObject *obj;
    int fz, fy, fx;
    if (!PyArg_ParseTuple(args, "Oiii", &obj, &fz, &fy, &fx))
        return NULL;
    if ((fz != 1 && fz != 2) || (fy != 1 && fy != 2) || (fx != 1 && fx != 2)) {
        PyErr_Format(PyExc_ValueError, "%s: every factor must be 1 or 2, got (%d, %d, %d)", func,
                     fz, fy, fx);
        return NULL;
    }
    enum dtype_code code;
    PyArrayObject *arr = as_input(obj, func, &code);
    if (arr == NULL)
        return NULL;
    if (PyArray_NDIM(arr) != 3) {
        PyErr_Format(PyExc_ValueError, "%s: expected a 3-D array, got %d-D", func,
                     PyArray_NDIM(arr));
        Py_DECREF(arr);
        return NULL;
    }
    const row_fn fn = table[code];
    if (fn == NULL) {
        PyErr_Format(PyExc_TypeError, "%s: integer dtypes only", func);
        Py_DECREF(arr);
        return NULL;
    }
    const npy_intp *dims = PyArray_DIMS(arr);
    npy_intp odims[3] = {(dims[0] + fz - 1) / fz, (dims[1] + fy - 1) / fy,
                         (dims[2] + fx - 1) / fx};
    PyArrayObject *res = (PyArrayObject *)PyArray_SimpleNew(3, odims, PyArray_TYPE(arr));
    if (res == NULL) {
        Py_DECREF(arr);
        return NULL;
    }
    const char *in = PyArray_BYTES(arr);
    char *out = PyArray_BYTES(res);
    const npy_intp itemsize = PyArray_ITEMSIZE(arr);
    Py_BEGIN_ALLOW_THREADS;
    run_blocks(in, dims[0], dims[1], dims[2], fz, fy, fx, itemsize, out, odims[0], odims[1],
               odims[2], fn);
    Py_END_ALLOW_THREADS;
    Py_DECREF(arr);
    return (PyObject *)res;
}

/* ------------------------------------------------------------------------------------------ */
/* Module functions                                                                             */
/* ------------------------------------------------------------------------------------------ */

static PyObject *py_downsample_mean(PyObject *self, PyObject *args)
{
    (void)self;
    return downsample(args, "downsample_mean", MEAN_ROWS);
}

static PyObject *py_downsample_mode(PyObject *self, PyObject *args)
{
    (void)self;
    return downsample(args, "downsample_mode", MODE_ROWS);
}

static PyObject *py_window_to_uint8(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *obj;
    double center, width;
    if (!PyArg_ParseTuple(args, "Odd", &obj, &center, &width))
        return NULL;
    if (!(width > 0.0) || !isfinite(width) || !isfinite(center)) {
        PyErr_SetString(PyExc_ValueError,
                        "window_to_uint8: width must be finite and > 0 and center finite");
        return NULL;
    }
    enum dtype_code code;
    PyArrayObject *arr = as_input(obj, "window_to_uint8", &code);
    if (arr == NULL)
        return NULL;
    PyArrayObject *res = (PyArrayObject *)PyArray_SimpleNew(PyArray_NDIM(arr), PyArray_DIMS(arr),
                                                            NPY_UINT8);
    if (res == NULL) {
        Py_DECREF(arr);
        return NULL;
    }
    const window_fn fn = WINDOWS[code];
    const char *in = PyArray_BYTES(arr);
    uint8_t *out = (uint8_t *)PyArray_BYTES(res);
    const npy_intp n = PyArray_SIZE(arr);
    const double lo = center - width / 2.0;
    Py_BEGIN_ALLOW_THREADS;
    fn(in, n, lo, width, out);
    Py_END_ALLOW_THREADS;
    Py_DECREF(arr);
    return (PyObject *)res;
}

static PyMethodDef kernel_methods[] = {
    {"downsample_mean", py_downsample_mean, METH_VARARGS,
     "downsample_mean(a, fz, fy, fx) -> ndarray\n\n"
     "Block mean of a 3-D array; factors 1 or 2; odd edges repeat the edge value.\n"
     "Integers: floor((sum + count/2) / count); floats: double sum / count."},
    {"downsample_mode", py_downsample_mode, METH_VARARGS,
     "downsample_mode(a, fz, fy, fx) -> ndarray\n\n"
     "Most frequent value of each block (integer dtypes); ties go to the smallest value."},
    {"window_to_uint8", py_window_to_uint8, METH_VARARGS,
     "window_to_uint8(a, center, width) -> uint8 ndarray\n\n"
     "floor((x - (center - width/2)) * 255 / width + 0.5) clipped to [0, 255]; NaN -> 0."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef kernels_module = {
    PyModuleDef_HEAD_INIT,
    "atlas._kernels",
    "Native pixel kernels of Atlas; the numpy reference in atlas._native is the specification.",
    -1,
    kernel_methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC PyInit__kernels(void)
{
    import_array();
    PyObject *m = PyModule_Create(&kernels_module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddIntConstant(m, "API_VERSION", ATLAS_KERNELS_API_VERSION) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
