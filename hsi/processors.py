"""External processors: products computed by a tool written in any language (docs/PROCESSORS.md).

A processor is declared in ``hsi.yaml`` under ``processors:`` (:class:`hsi.config.ProcessorConfig`)
and registered as an ordinary product of that name, so ``hsi product NAME ITEM``, the sources'
``products:`` lists, plans and deployments treat it like a built-in. What differs is ``fit``: the
first pass of the windowed engine streams the selected bands (physical float32, NaN = nodata) into
one input file on the scene's grid, then runs the tool once as a subprocess (a process group, killed
on timeout) and checks its output; the compute pass reads the tool's output window by window, so
the engine's nodata rules, statistics and streaming COG writer are the same as for built-ins.

The tool's identity (command, image digest, tool version, I/O contract) is hashed into the
product's version, and so into the product key: change the command or the image and every item it
made is stale.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import ConfigDict, create_model

from hsi.config.models import ProcessorConfig, ProcessorInput
from hsi.errors import ProductError
from hsi.products.base import (
    AllGoodBands,
    BandRange,
    BandRequest,
    ChunkReader,
    ComputeContext,
    InputSpec,
    OutputBand,
    OutputSpec,
    Params,
    Product,
)
from hsi.products.registry import ProductRegistry, default_registry

if TYPE_CHECKING:  # rasterio is imported where a run needs it: registering processors stays light
    from rasterio.windows import Window

__all__ = ["ProcessorRun", "image_digest", "processor_product", "register_processors"]

log = logging.getLogger(__name__)

SOURCE = "config:processors"  # registry source of config-declared processors
STDERR_TAIL = 2000  # characters of the tool's stderr kept in errors
_PROPERTIES_MAX = 64 * 1024  # bytes of properties.json accepted
_VERSION_CACHE: dict[tuple[str, ...], str] = {}


class ProcessorParams(Params):
    """Free-form parameters (the tool validates them); unknown keys are passed through."""

    model_config = ConfigDict(extra="allow", frozen=True)


# ---------------------------------------------------------------------------------- identity
def _runtime() -> str | None:
    for name in ("docker", "podman"):
        if shutil.which(name):
            return name
    return None


def image_digest(image: str | None) -> str | None:
    """The immutable identity of ``image``: its ``@sha256:`` digest when pinned, else the digest a
    local container runtime reports for it, else None (the reference as written is then keyed)."""
    if not image:
        return None
    if "@sha256:" in image:
        return image.split("@", 1)[1]
    rt = _runtime()
    if rt is None:
        return None
    try:
        out = subprocess.run(
            [rt, "image", "inspect", "--format", "{{json .RepoDigests}}|{{.Id}}", image],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0 or "|" not in out.stdout:
        return None
    digests, image_id = out.stdout.strip().split("|", 1)
    with contextlib.suppress(ValueError):
        for d in json.loads(digests) or []:
            if "@sha256:" in d:
                return str(d.split("@", 1)[1])
    return image_id or None


def _resolve_argv(argv: Sequence[str], base_dir: str | None) -> list[str]:
    """``./x`` and ``../x`` resolve against the configuration's directory; the rest stays."""
    out = []
    for a in argv:
        if base_dir and (a.startswith("./") or a.startswith("../")):
            out.append(str((Path(base_dir) / a).resolve()))
        else:
            out.append(a)
    return out


def tool_version(cfg: ProcessorConfig) -> str | None:
    """What ``version_command`` prints (first line), cached per command; None when not declared."""
    if not cfg.version_command:
        return None
    argv = tuple(_resolve_argv(cfg.version_command, cfg.base_dir))
    if argv not in _VERSION_CACHE:
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd=cfg.base_dir or None)
            text = (p.stdout.strip() or p.stderr.strip()).splitlines()
            _VERSION_CACHE[argv] = (
                text[0][:200] if p.returncode == 0 and text else f"unavailable (exit {p.returncode})"
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            _VERSION_CACHE[argv] = f"unavailable ({type(e).__name__})"
    return _VERSION_CACHE[argv]


def identity(cfg: ProcessorConfig) -> dict[str, Any]:
    """Everything about the tool that changes what it computes (hashed into the product version)."""
    return {
        "command": list(cfg.command or []),
        "image": cfg.image,
        "image_digest": image_digest(cfg.image),
        "tool_version": tool_version(cfg),
        "io": cfg.io,
        "dtype": cfg.dtype,
        "nodata": cfg.nodata,
        "inputs": [i.model_dump(mode="json", exclude_defaults=True) for i in cfg.inputs],
        "outputs": [o.model_dump(mode="json") for o in cfg.outputs],
    }


# ---------------------------------------------------------------------------------- product
def _input_spec(i: ProcessorInput) -> InputSpec:
    if i.wavelength is not None:
        return BandRequest(i.name, i.wavelength, i.tolerance)
    if i.lo is not None and i.hi is not None:
        return BandRange(i.name, i.lo, i.hi, i.min_bands)
    return AllGoodBands(i.name, max(i.min_bands, 1))


def processor_product(name: str, cfg: ProcessorConfig) -> Product:
    """The :class:`Product` that runs ``cfg``'s tool (see the module docstring)."""
    ident = identity(cfg)
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]
    params_model = create_model(  # type: ignore[call-overload]
        f"Params_{name.replace('-', '_').replace(':', '_')}",
        __base__=ProcessorParams,
        **{k: (Any, v) for k, v in cfg.params.items()},
    )
    output = OutputSpec(
        bands=tuple(OutputBand(o.name, o.description or o.name) for o in cfg.outputs),
        dtype=cfg.dtype,
        nodata=cfg.nodata,
    )
    return Product(
        name=name,
        version=f"{cfg.version}+{digest}",
        title=cfg.title or f"external processor {name}",
        inputs=tuple(_input_spec(i) for i in cfg.inputs),
        output=output,
        compute=_compute,
        params_model=params_model,
        fit=_make_fit(name, cfg, ident),
        reference=cfg.description,
        kind="other",
        extra={"processor": ident},
    )


def register_processors(
    processors: Mapping[str, ProcessorConfig], registry: ProductRegistry | None = None
) -> list[str]:
    """Register every processor as a product (replacing an earlier registration of the same
    processor); a name that a built-in or plugin product already has is a :class:`ProductError`."""
    reg = registry or default_registry()
    names = []
    for name, cfg in processors.items():
        owner = reg.sources.get(name)
        if owner is not None and owner != SOURCE:
            raise ProductError(
                f"processor '{name}' has the name of a product registered by '{owner}'; rename the processor"
            )
        reg.register(processor_product(name, cfg), replace=True)
        reg.sources[name] = SOURCE
        names.append(name)
    return names


# ---------------------------------------------------------------------------------- running
@dataclass
class ProcessorRun:
    """A finished tool run (the engine's fit state): reads the output by window, then cleans up."""

    name: str
    scratch: Path
    output: Path
    io: str
    shape: tuple[int, int, int]  # (bands, height, width)
    dtype: str
    nodata: float | None
    info: dict[str, Any] = field(default_factory=dict)
    _ds: Any = None
    _mm: Any = None

    def read(self, window: Window) -> np.ndarray:
        r0, c0 = int(window.row_off), int(window.col_off)
        r1, c1 = r0 + int(window.height), c0 + int(window.width)
        if self.io == "envi":
            if self._mm is None:
                self._mm = np.memmap(self.output, dtype=self.dtype, mode="r", shape=self.shape)
            arr = np.array(self._mm[:, r0:r1, c0:c1])
        else:
            if self._ds is None:
                import rasterio

                self._ds = rasterio.open(self.output)
            arr = self._ds.read(window=window)
        out = arr.astype(np.float64) if arr.dtype.kind != "f" else arr
        if self.nodata is not None and not np.isnan(self.nodata):
            out = np.where(arr == self.nodata, np.nan, out)
        return out

    def summary(self, n_out: int) -> dict[str, Any]:
        return {"processor": self.info}

    def close(self) -> None:
        if self._ds is not None:
            self._ds.close()
            self._ds = None
        self._mm = None
        shutil.rmtree(self.scratch, ignore_errors=True)


def _compute(chunk: Mapping[str, np.ndarray], params: Any, ctx: ComputeContext) -> np.ndarray:
    state = ctx.state
    if not isinstance(state, ProcessorRun):
        raise ProductError(f"product '{ctx.product}' is an external processor: run it through the engine")
    return state.read(ctx.window)


def _band_names(reader_groups: Sequence[tuple[str, np.ndarray]]) -> list[str]:
    names: list[str] = []
    for name, wl in reader_groups:
        if np.ndim(wl) == 0:
            names.append(name)
        else:
            names.extend(f"{name}:{float(w):.2f}" for w in np.atleast_1d(wl))
    return names


def _write_input(reader: ChunkReader, ctx: ComputeContext, path: Path, io: str) -> list[str]:
    """Stream the selected bands (physical float32, NaN = nodata) into ``path`` on the scene grid."""
    import rasterio

    grid = ctx.grid or {}
    windows: list[Window] = list(getattr(reader, "windows", []))
    names: list[str] | None = None
    dst = None
    try:
        for w, chunk in zip(windows, reader, strict=True):
            arrays = [a[None] if a.ndim == 2 else a for a in chunk.values()]
            stack = np.concatenate(arrays, axis=0).astype(np.float32, copy=False)
            if dst is None:
                names = _band_names([(k, ctx.wavelengths.get(k, 0.0)) for k in chunk])
                profile: dict[str, Any] = {
                    "driver": "ENVI" if io == "envi" else "GTiff",
                    "width": grid["width"],
                    "height": grid["height"],
                    "count": stack.shape[0],
                    "dtype": "float32",
                    "crs": grid.get("crs"),
                    "transform": grid.get("transform"),
                    "nodata": float("nan"),
                }
                if io == "envi":
                    profile["interleave"] = "bsq"
                else:
                    profile.update(tiled=True, blockxsize=256, blockysize=256, bigtiff="IF_SAFER")
                dst = rasterio.open(path, "w", **profile)
                for i, n in enumerate(names, start=1):
                    dst.set_band_description(i, n)
            dst.write(stack, window=w)
    finally:
        if dst is not None:
            dst.close()
    if names is None:
        raise ProductError(f"product '{ctx.product}': the scene has no pixels to process")
    return names


def _substitute(argv: Sequence[str], values: Mapping[str, str], params: Mapping[str, Any]) -> list[str]:
    out = []
    for a in argv:
        s = a
        for k, v in values.items():
            s = s.replace("{" + k + "}", v)
        for k, v in params.items():
            s = s.replace("{param:" + k + "}", v if isinstance(v, str) else json.dumps(v))
        out.append(s)
    return out


def _tail(path: Path) -> str:
    try:
        data = path.read_bytes()[-STDERR_TAIL:]
    except OSError:
        return ""
    return data.decode("utf-8", "replace").strip()


def _run_tool(
    name: str, argv: list[str], cwd: Path, env: dict[str, str], timeout: float
) -> tuple[int, float]:
    """Run ``argv`` in its own process group; (exit code, seconds). Timeout kills the group."""
    out, err = cwd / "stdout.log", cwd / "stderr.log"
    t0 = time.monotonic()
    with out.open("wb") as fo, err.open("wb") as fe:
        try:
            proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=fo, stderr=fe, start_new_session=True)
        except FileNotFoundError as e:
            raise ProductError(
                f"processor '{name}': command not found: {argv[0]!r} (install it, or fix processors.{name}.command)"
            ) from e
        except PermissionError as e:
            raise ProductError(f"processor '{name}': {argv[0]!r} is not executable ({e.strerror})") from e
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
                try:
                    proc.wait(timeout=grace)
                    break
                except subprocess.TimeoutExpired:
                    continue
            tail = _tail(err)
            raise ProductError(
                f"processor '{name}' timed out after {timeout:g} s and was killed"
                + (f"; stderr: {tail}" if tail else "")
            ) from None
    return code, time.monotonic() - t0


def _container_argv(image: str, argv: list[str], scratch: Path) -> list[str] | None:
    rt = _runtime()
    if rt is None:
        return None
    uid = f"{os.getuid()}:{os.getgid()}"
    return [rt, "run", "--rm", "--network", "none", "--user", uid, "-v", f"{scratch}:{scratch}", "-w",
            str(scratch), image, *argv]  # fmt: skip


def _check_output(name: str, cfg: ProcessorConfig, out_dir: Path, grid: Mapping[str, Any]) -> Path:
    import rasterio

    n_out, h, w = len(cfg.outputs), int(grid["height"]), int(grid["width"])
    found = ", ".join(sorted(p.name for p in out_dir.iterdir())) or "nothing"
    if cfg.io == "envi":
        path = out_dir / "output.img"
        if not path.is_file():
            raise ProductError(
                f"processor '{name}' wrote no output.img in its output directory (found: {found})"
            )
        want = n_out * h * w * np.dtype(cfg.dtype).itemsize
        size = path.stat().st_size
        if size != want:
            raise ProductError(
                f"processor '{name}': output.img has {size} bytes; {n_out} band(s) x {h} x {w} "
                f"{cfg.dtype} (BSQ) is {want}"
            )
        return path
    path = out_dir / "output.tif"
    if not path.is_file():
        raise ProductError(f"processor '{name}' wrote no output.tif in its output directory (found: {found})")
    try:
        ds = rasterio.open(path)
    except rasterio.RasterioIOError as e:
        raise ProductError(f"processor '{name}': output.tif is not a readable raster ({e})") from e
    with ds:
        problems = []
        if (ds.height, ds.width) != (h, w):
            problems.append(f"size {ds.width}x{ds.height}, input {w}x{h}")
        if ds.crs != grid.get("crs"):
            problems.append(f"CRS {ds.crs}, input {grid.get('crs')}")
        t = grid.get("transform")
        if t is not None and not ds.transform.almost_equals(t, precision=1e-9):
            problems.append(f"transform {tuple(ds.transform)[:6]}, input {tuple(t)[:6]}")
        if ds.count != n_out:
            problems.append(f"{ds.count} band(s), declared {n_out}")
        if ds.dtypes[0] != cfg.dtype:
            problems.append(f"dtype {ds.dtypes[0]}, declared {cfg.dtype}")
        nd = ds.nodata
        float_out = np.dtype(cfg.dtype).kind == "f"
        if not (nd == cfg.nodata or (float_out and (nd is None or np.isnan(nd)))):
            problems.append(f"nodata {nd}, declared {cfg.nodata}")
        if problems:
            raise ProductError(
                f"processor '{name}': output.tif does not match its contract: {'; '.join(problems)}"
            )
    return path


def _make_fit(name: str, cfg: ProcessorConfig, ident: Mapping[str, Any]) -> Any:
    def fit(reader: ChunkReader, params: Any, ctx: ComputeContext) -> ProcessorRun:
        if ctx.grid is None:
            raise ProductError(f"product '{name}' is an external processor: run it through the engine")
        base = Path(ctx.scratch) if ctx.scratch is not None else None
        if base is not None:
            base.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".processor-{name.replace(':', '_')}-", dir=base))
        try:
            return _run(name, cfg, ident, reader, params, ctx, scratch)
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise

    return fit


def _run(
    name: str,
    cfg: ProcessorConfig,
    ident: Mapping[str, Any],
    reader: ChunkReader,
    params: Any,
    ctx: ComputeContext,
    scratch: Path,
) -> ProcessorRun:
    import rasterio

    grid = ctx.grid or {}
    in_dir, out_dir = scratch / "in", scratch / "out"
    in_dir.mkdir()
    out_dir.mkdir()
    in_path = in_dir / ("bands.img" if cfg.io == "envi" else "bands.tif")
    band_names = _write_input(reader, ctx, in_path, cfg.io)
    item_path = in_dir / "item.json"
    item_path.write_text(json.dumps(ctx.extra.get("item") or {"id": ctx.scene_id}, indent=1))
    p = params.model_dump(mode="json") if hasattr(params, "model_dump") else dict(params or {})
    values = {
        "input": str(in_path),
        "item": str(item_path),
        "output_dir": str(out_dir),
        "bands": ",".join(band_names),
        "width": str(grid["width"]),
        "height": str(grid["height"]),
        "params": json.dumps(p, sort_keys=True),
    }
    env = {**os.environ, **cfg.env, **{f"HSI_{k.upper()}": v for k, v in values.items()}}
    # the pipeline's own environment's tools (rio, gdal bindings ...) come first on PATH
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", os.defpath)])
    if cfg.base_dir:
        env["HSI_CONFIG_DIR"] = cfg.base_dir
    argv = _substitute(_resolve_argv(cfg.command or [], cfg.base_dir), values, p)
    how = "command"
    if not argv or (shutil.which(argv[0]) is None and not Path(argv[0]).is_file()):
        container = _container_argv(cfg.image, argv, scratch) if cfg.image else None
        if container is not None:
            argv, how = container, "container"
        elif not argv:
            raise ProductError(
                f"processor '{name}' has only an image ({cfg.image}) and no container runtime is available "
                "here: run it on the ECS work pool, or give it a command"
            )
    log.info("processor %s: running %s (%d input band(s))", name, " ".join(argv[:3]), len(band_names))
    code, seconds = _run_tool(name, argv, scratch, env, cfg.timeout_s)
    if code != 0:
        tail = _tail(scratch / "stderr.log")
        raise ProductError(
            f"processor '{name}' failed with exit code {code}" + (f"; stderr: {tail}" if tail else "")
        )
    output = _check_output(name, cfg, out_dir, grid)
    extra_props: dict[str, Any] = {}
    props_file = out_dir / "properties.json"
    if props_file.is_file():
        if props_file.stat().st_size > _PROPERTIES_MAX:
            raise ProductError(f"processor '{name}': properties.json is larger than {_PROPERTIES_MAX} bytes")
        try:
            extra_props = json.loads(props_file.read_text())
        except ValueError as e:
            raise ProductError(f"processor '{name}': properties.json is not JSON ({e})") from e
        if not isinstance(extra_props, dict):
            raise ProductError(f"processor '{name}': properties.json must hold a JSON object")
    nodata: float | None = cfg.nodata
    if cfg.io == "geotiff":
        with rasterio.open(output) as ds:
            nodata = ds.nodata
    info = {
        "name": name,
        "how": how,
        "command": list(cfg.command or []),
        "image": cfg.image,
        "image_digest": ident.get("image_digest"),
        "tool_version": ident.get("tool_version"),
        "exit_code": code,
        "duration_s": round(seconds, 3),
        "io": cfg.io,
        "input_bands": band_names,
    }
    if extra_props:
        info["properties"] = extra_props
    return ProcessorRun(
        name=name,
        scratch=scratch,
        output=output,
        io=cfg.io,
        shape=(len(cfg.outputs), int(grid["height"]), int(grid["width"])),
        dtype=cfg.dtype,
        nodata=nodata,
        info=info,
    )
