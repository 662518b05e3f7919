/* NDVI as an external processor in C (no library beyond libc): the `io: envi` contract.
 *
 *   cc -O2 -o ndvi ndvi.c
 *   usage: ndvi INPUT.img OUTPUT.img WIDTH HEIGHT
 *
 * INPUT.img is the pipeline's bands.img: band-sequential float32 (native byte order), band 1 = R,
 * band 2 = N, NaN = nodata. OUTPUT.img gets one float32 band of the same size; the pipeline puts
 * it back on the scene's grid. The arithmetic is IEEE single precision, like the built-in
 * index:NDVI, so the two agree bit for bit.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s INPUT.img OUTPUT.img WIDTH HEIGHT\n", argv[0]);
        return 2;
    }
    long w = strtol(argv[3], NULL, 10), h = strtol(argv[4], NULL, 10);
    if (w <= 0 || h <= 0) {
        fprintf(stderr, "ndvi: bad size %s x %s\n", argv[3], argv[4]);
        return 2;
    }
    FILE *in = fopen(argv[1], "rb");
    if (!in) {
        fprintf(stderr, "ndvi: cannot open %s: %s\n", argv[1], strerror(errno));
        return 1;
    }
    FILE *out = fopen(argv[2], "wb");
    if (!out) {
        fprintf(stderr, "ndvi: cannot create %s: %s\n", argv[2], strerror(errno));
        return 1;
    }
    size_t n = (size_t)w; /* one row at a time: memory is two input rows and one output row */
    float *r = malloc(n * sizeof(float)), *nir = malloc(n * sizeof(float)), *v = malloc(n * sizeof(float));
    if (!r || !nir || !v) {
        fprintf(stderr, "ndvi: out of memory\n");
        return 1;
    }
    long plane = w * h * (long)sizeof(float);
    for (long y = 0; y < h; y++) {
        long row = y * w * (long)sizeof(float);
        if (fseek(in, row, SEEK_SET) || fread(r, sizeof(float), n, in) != n ||
            fseek(in, plane + row, SEEK_SET) || fread(nir, sizeof(float), n, in) != n) {
            fprintf(stderr, "ndvi: %s is shorter than 2 x %ld x %ld float32\n", argv[1], w, h);
            return 1;
        }
        for (size_t x = 0; x < n; x++) v[x] = (nir[x] - r[x]) / (nir[x] + r[x]);
        if (fwrite(v, sizeof(float), n, out) != n) {
            fprintf(stderr, "ndvi: write failed: %s\n", strerror(errno));
            return 1;
        }
    }
    fclose(in);
    if (fclose(out)) {
        fprintf(stderr, "ndvi: close failed: %s\n", strerror(errno));
        return 1;
    }
    return 0;
}
