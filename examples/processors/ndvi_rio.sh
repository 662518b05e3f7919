#!/bin/sh
# NDVI as an external processor: a shell script around rasterio's `rio calc` (GDAL underneath).
#
#   usage: ndvi_rio.sh INPUT OUTPUT_DIR
#
# INPUT is the pipeline's bands.tif: band 1 = R (~655 nm), band 2 = N (~830 nm), float32 physical
# reflectance, NaN = nodata, on the scene's grid. The script writes OUTPUT_DIR/output.tif on the
# same grid (float32; NaN stays NaN and the pipeline turns it into the product's nodata).
set -eu
in="$1"
out="$2"
command -v rio >/dev/null 2>&1 || { echo "ndvi_rio.sh: 'rio' (rasterio's CLI) is not on PATH" >&2; exit 127; }
rio calc --not-masked --dtype float32 \
    "(/ (- (read 1 2) (read 1 1)) (+ (read 1 2) (read 1 1)))" \
    "$in" "$out/output.tif"
# optional: a small JSON of extra item properties
printf '{"tool": "rio calc", "formula": "(N - R) / (N + R)"}\n' > "$out/properties.json"
