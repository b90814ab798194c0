/* C reference for bench/aggregate.ts, compiled at bench time with gcc -O3 -march=native.
 * Generates the same updates as the TypeScript side (same integer hash), times each aggregation over
 * them and prints one JSON line with the best time of each and a checksum of each result, so the bench
 * can check that both sides computed the same thing.
 *
 *   aggregate <updates> <params> <fedavg reps> <median reps>
 *
 * fedavg_naive:   acc[i] += w * (double)x[i] over each update, then out = (float)(acc / W): the plain loop,
 *                 on a calloc'ed accumulator (fresh pages, so the timing includes first-touch page faults).
 * fedavg_warm:    the same loop on an accumulator allocated and touched once before the clock starts
 *                 (zeroed with memset inside the timing), as a combiner reusing its accumulator would.
 * fedavg_batched: the algorithm of the wasm kernel (src/strategies/kernels/weighted-sum.ts): 16 updates
 *                 per pass, next = acc + w0*x0 + ... + w3*x3 with every value checked; swap when clean.
 * fedavg_f32inc:  running mean in float, m += (w / W_k) * (x - m) (FEDn's increment_average), for the
 *                 Float64-sum-versus-running-mean choice.
 * median, trimmed (beta 0.1): the TypeScript algorithm (src/strategies/kernels/select.ts): blocks of 256
 *                 columns transposed into a scratch, then Hoare quickselect with a median-of-three pivot.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

/* must match value() in bench/aggregate.ts */
static float value(uint32_t i, uint32_t k) {
  uint32_t h = (i * 0x9E3779B1u) ^ ((k + 1u) * 0x85EBCA77u);
  h ^= h >> 15;
  h *= 0x2C1B3C6Du;
  h ^= h >> 12;
  return (float)(h >> 8) / 16777216.0f - 0.5f;
}

static double weight(int k) { return 1 + (k % 7); }

static double checksum(const float *out, long d) {
  double s = 0;
  for (long i = 0; i < d; i++) s += out[i] * (double)((i % 13) + 1);
  return s;
}

static void *xalloc(size_t bytes) {
  void *p = aligned_alloc(64, (bytes + 63) / 64 * 64);
  if (!p) { fprintf(stderr, "out of memory\n"); exit(1); }
  return p;
}

/* The plain loop both FedAvg references time: acc[i] += w * (double)x[i], then one division. */
static inline void weighted_mean(double *acc, float **x, int n, long d, float *out) {
  double total = 0;
  for (int k = 0; k < n; k++) {
    const double w = weight(k);
    const float *xk = x[k];
    total += w;
    for (long i = 0; i < d; i++) acc[i] += w * (double)xk[i];
  }
  const double s = 1 / total;
  for (long i = 0; i < d; i++) out[i] = (float)(acc[i] * s);
}

static void fedavg_naive(float **x, int n, long d, float *out) {
  double *acc = calloc(d, sizeof(double));
  weighted_mean(acc, x, n, d, out);
  free(acc);
}

static double *warm_acc;
static void fedavg_warm(float **x, int n, long d, float *out) {
  memset(warm_acc, 0, d * sizeof(double));
  weighted_mean(warm_acc, x, n, d, out);
}

/* The wasm kernel's algorithm: up to BATCH updates per pass, dst = src + w0*x0 + w1*x1 + ... per coordinate
 * (in that order), every value checked (x - x != 0 for NaN/Inf), into the spare buffer; swap when clean. */
#define BATCH 16
static void fedavg_batched(float **x, int n, long d, float *out) {
  double *a = calloc(d, sizeof(double)), *b = calloc(d, sizeof(double));
  double total = 0;
  for (int k0 = 0; k0 < n; k0 += BATCH) {
    int m = n - k0 < BATCH ? n - k0 : BATCH;
    double w[BATCH];
    for (int j = 0; j < m; j++) w[j] = weight(k0 + j);
    int bad = 0;
    for (long i = 0; i < d; i++) {
      double s = a[i];
      for (int j = 0; j < m; j++) {
        float v = x[k0 + j][i];
        bad |= (v - v) != 0;
        s += w[j] * (double)v;
      }
      b[i] = s;
    }
    if (!bad) { double *t = a; a = b; b = t; for (int j = 0; j < m; j++) total += w[j]; }
  }
  const double s = 1 / total;
  for (long i = 0; i < d; i++) out[i] = (float)(a[i] * s);
  free(a); free(b);
}

static void fedavg_f32inc(float **x, int n, long d, float *out) {
  memset(out, 0, d * sizeof(float));
  float total = 0;
  for (int k = 0; k < n; k++) {
    const float w = (float)weight(k);
    total += w;
    const float c = w / total;
    const float *xk = x[k];
    for (long i = 0; i < d; i++) out[i] += c * (xk[i] - out[i]);
  }
}

static void select_in_place(float *a, long lo, long hi, long k) {
  while (hi - lo > 12) {
    long mid = (lo + hi) >> 1;
    float x = a[lo], y = a[mid], z = a[hi];
    if (x > y) { float t = x; x = y; y = t; }
    float pivot = z < x ? x : z > y ? y : z;
    long i = lo, j = hi;
    do {
      while (a[i] < pivot) i++;
      while (pivot < a[j]) j--;
      if (i <= j) { float t = a[i]; a[i] = a[j]; a[j] = t; i++; j--; }
    } while (i <= j);
    if (j < k) lo = i;
    if (k < i) hi = j;
    if (lo >= hi) return;
  }
  for (long i = lo + 1; i <= hi; i++) {
    float v = a[i];
    long j = i - 1;
    while (j >= lo && a[j] > v) { a[j + 1] = a[j]; j--; }
    a[j + 1] = v;
  }
}

static float median_of(float *a, long n, long trim_unused) {
  (void)trim_unused;
  long k = (n - 1) >> 1;
  select_in_place(a, 0, n - 1, k);
  float lower = a[k];
  if (n % 2 == 1) return lower;
  float upper = a[k + 1];
  for (long i = k + 2; i < n; i++) if (a[i] < upper) upper = a[i];
  return (float)(((double)lower + upper) / 2);
}

static float trimmed_of(float *a, long n, long trim) {
  if (trim > 0) {
    select_in_place(a, 0, n - 1, trim);
    select_in_place(a, trim, n - 1, n - 1 - trim);
  }
  double s = 0;
  for (long i = trim; i <= n - 1 - trim; i++) s += a[i];
  return (float)(s / (n - 2 * trim));
}

#define COLS 256
static void columnwise(float **x, int n, long d, float *out, float (*reduce)(float *, long, long), long trim) {
  float *scratch = xalloc((size_t)n * COLS * sizeof(float));
  for (long start = 0; start < d; start += COLS) {
    long cols = d - start < COLS ? d - start : COLS;
    for (int r = 0; r < n; r++) {
      const float *row = x[r] + start;
      for (long j = 0, at = r; j < cols; j++, at += n) scratch[at] = row[j];
    }
    for (long j = 0; j < cols; j++) out[start + j] = reduce(scratch + j * n, n, trim);
  }
  free(scratch);
}

static void median(float **x, int n, long d, float *out) { columnwise(x, n, d, out, median_of, 0); }
static void trimmed(float **x, int n, long d, float *out) { columnwise(x, n, d, out, trimmed_of, (long)floor(0.1 * n)); }

typedef void (*kernel)(float **, int, long, float *);

static void timeit(const char *name, kernel f, float **x, int n, long d, float *out, int reps, int last) {
  double best = INFINITY;
  for (int r = 0; r < reps; r++) {
    double t0 = now_ms();
    f(x, n, d, out);
    double t = now_ms() - t0;
    if (t < best) best = t;
  }
  printf("\"%sMs\":%.3f,\"%sChecksum\":%.9g%s", name, best, name, checksum(out, d), last ? "" : ",");
}

int main(int argc, char **argv) {
  if (argc < 5) { fprintf(stderr, "usage: aggregate <updates> <params> <fedavg reps> <median reps>\n"); return 2; }
  int n = atoi(argv[1]);
  long d = atol(argv[2]);
  int reps = atoi(argv[3]), mreps = atoi(argv[4]);
  float **x = malloc(n * sizeof(float *));
  for (int k = 0; k < n; k++) {
    x[k] = xalloc(d * sizeof(float));
    for (long i = 0; i < d; i++) x[k][i] = value((uint32_t)i, (uint32_t)k);
  }
  float *out = xalloc(d * sizeof(float));
  warm_acc = xalloc(d * sizeof(double));
  memset(warm_acc, 0, d * sizeof(double));
  printf("{");
  timeit("fedavgNaive", fedavg_naive, x, n, d, out, reps, 0);
  timeit("fedavgWarm", fedavg_warm, x, n, d, out, reps, 0);
  timeit("fedavgBatched", fedavg_batched, x, n, d, out, reps, 0);
  timeit("fedavgF32Inc", fedavg_f32inc, x, n, d, out, reps, 0);
  timeit("median", median, x, n, d, out, mreps, 0);
  timeit("trimmedMean", trimmed, x, n, d, out, mreps, 1);
  printf("}\n");
  return 0;
}
