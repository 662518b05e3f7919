"""The stack's data services, one section each: secrets, PostgreSQL (+ PostGIS), the STAC API on
pgstac, SeaweedFS S3. Install, start, health, stop. Prefect's server, flow starter and worker live in
:mod:`prefect_services`, the Dask cluster in :mod:`dask_services`."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from hsi_pipeline.deployments.local.common import (
    AWS_PROFILE,
    BUCKET,
    HOST,
    PG_BIN,
    PG_DB,
    PG_USER,
    POSTGIS_CONTROL,
    REGION,
    REQUIREMENTS,
    Layout,
    Proc,
    StackError,
    _http_status,
    _is_root,
    _log,
    _port_open,
    _run,
    _write_private,
    clean_env,
    wait_for,
)

# --------------------------------------------------------------------------------------------------
# secrets (generated once per state dir, 0600, never printed)


def _secrets(layout: Layout) -> dict[str, str]:
    if layout.secrets_file.exists():
        return json.loads(layout.secrets_file.read_text())
    data = {
        "pg_password": secrets.token_urlsafe(24),
        "s3_access_key": "HSI" + secrets.token_hex(8).upper(),
        "s3_secret_key": secrets.token_urlsafe(30),
    }
    _write_private(layout.secrets_file, json.dumps(data))
    return data


def _write_credentials(layout: Layout, sec: dict[str, str]) -> None:
    _write_private(
        layout.credentials_file,
        f"[{AWS_PROFILE}]\naws_access_key_id = {sec['s3_access_key']}\n"
        f"aws_secret_access_key = {sec['s3_secret_key']}\nregion = {REGION}\n",
    )
    _write_private(
        layout.s3_config,
        json.dumps(
            {
                "identities": [
                    {
                        "name": "hsi",
                        "credentials": [
                            {"accessKey": sec["s3_access_key"], "secretKey": sec["s3_secret_key"]}
                        ],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        ),
    )


# --------------------------------------------------------------------------------------------------
# installation steps (skipped when already done)


def ensure_postgis() -> None:
    if POSTGIS_CONTROL.exists() and (PG_BIN / "initdb").exists():
        return
    pkgs = ["postgresql-15", "postgresql-15-postgis-3"]
    if not _is_root():
        raise StackError(f"PostgreSQL 15 + PostGIS 3 missing: run `sudo apt-get install -y {' '.join(pkgs)}`")
    _log(f"installing {' '.join(pkgs)} with apt-get (once)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _run(["apt-get", "update"], env=env)
    _run(["apt-get", "install", "-y", "--no-install-recommends", *pkgs], env=env, timeout=1200)
    if not POSTGIS_CONTROL.exists():
        raise StackError(f"apt-get installed {pkgs} but {POSTGIS_CONTROL} is still missing")


def _requirements_hash() -> str:
    return hashlib.sha256(REQUIREMENTS.read_bytes() + sys.version.encode()).hexdigest()


def ensure_stack_venv(layout: Layout) -> None:
    marker = layout.venv / ".hsi-requirements"
    want = _requirements_hash()
    if marker.exists() and marker.read_text() == want and (layout.venv / "bin" / "uvicorn").exists():
        return
    _log(f"creating the STAC virtualenv {layout.venv} (once)")
    if not (layout.venv / "bin" / "python").exists():
        _run([sys.executable, "-m", "venv", str(layout.venv)])
    py = str(layout.venv / "bin" / "python")
    uv = Path(sys.executable).parent / "uv"
    uv_s = str(uv) if uv.exists() else shutil.which("uv")
    if uv_s:
        _run(
            [uv_s, "pip", "install", "--compile-bytecode", "--python", py, "-r", str(REQUIREMENTS)],
            env=clean_env(),
            timeout=1200,
        )
    else:
        _run([py, "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)], env=clean_env(), timeout=1200)
    marker.write_text(want)


# --------------------------------------------------------------------------------------------------
# components


def _pg_user() -> str | None:
    """The OS user that owns and runs the cluster: ``postgres`` when we are root (initdb refuses root)."""
    if not _is_root():
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError as e:
        raise StackError("user 'postgres' missing: install the postgresql-15 package") from e
    return "postgres"


def _pg_ready(layout: Layout) -> bool:
    p = subprocess.run(
        [str(PG_BIN / "pg_isready"), "-q", "-h", HOST, "-p", str(layout.ports["postgres"])],
        capture_output=True,
    )
    return p.returncode == 0


def psql(layout: Layout, sql: str, db: str = "postgres") -> str:
    p = _run(
        [
            str(PG_BIN / "psql"),
            "-X",
            "-q",
            "-tA",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            str(layout.pgsock),
            "-p",
            str(layout.ports["postgres"]),
            "-U",
            "postgres",
            "-d",
            db,
            "-f",
            "-",
        ],
        input=sql,
        env=clean_env(),
    )
    return p.stdout.strip()


def ensure_pg_dir(layout: Layout, user: str | None) -> None:
    """Give the cluster a directory ``user`` can reach. When the state dir sits below a directory the
    ``postgres`` user cannot traverse (a 0700 home, a ``mktemp -d``), the cluster lives in
    ``~postgres/hsi-stack/<hash of the state dir>`` and ``<state dir>/pg`` links to it."""
    link = layout.root / "pg"
    if user is None or link.exists() or link.is_symlink():
        return
    layout.root.mkdir(parents=True, exist_ok=True)
    if _run(["test", "-x", str(layout.root)], user=user, check=False).returncode == 0:
        return
    pw = pwd.getpwnam(user)
    home = Path(pw.pw_dir) / "hsi-stack" / hashlib.sha256(str(layout.root).encode()).hexdigest()[:16]
    home.mkdir(parents=True, exist_ok=True)
    for d in (home.parent, home):
        os.chown(d, pw.pw_uid, pw.pw_gid)
        os.chmod(d, 0o700)
    link.symlink_to(home)
    _log(f"{layout.root} is closed to user {user!r}: the cluster lives in {home} (linked from {link})")


def up_postgres(layout: Layout, sec: dict[str, str]) -> str:
    user = _pg_user()
    port = layout.ports["postgres"]
    ensure_pg_dir(layout, user)
    if not (layout.pgdata / "PG_VERSION").exists():
        layout.pg.mkdir(parents=True, exist_ok=True)
        layout.pgsock.mkdir(parents=True, exist_ok=True)
        if user:
            pw = pwd.getpwnam(user)
            for p in (layout.pg, layout.pgsock):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        os.chmod(layout.pg, 0o700)
        _log(f"initdb {layout.pgdata}")
        _run(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(layout.pgdata),
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ],
            user=user,
            env=clean_env(),
        )
        with open(layout.pgdata / "postgresql.conf", "a") as f:
            f.write(
                f"\n# hsi stack\nlisten_addresses = '{HOST}'\nport = {port}\n"
                f"unix_socket_directories = '{layout.pgsock}'\nmax_connections = 200\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
            )
    if _pg_ready(layout):
        state = "running"
    else:
        if _port_open(port):
            raise StackError(f"port {port} is in use by another process (set HSI_STACK_PORT_POSTGRES)")
        layout.logs.mkdir(parents=True, exist_ok=True)
        # pg_ctl -w polls the server itself until it accepts connections
        _run(
            [
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(layout.pgdata),
                "-l",
                str(layout.pg / "postgres.log"),
                "-w",
                "-t",
                "60",
                "start",
            ],
            user=user,
            env=clean_env(),
        )
        wait_for("postgres", lambda: _pg_ready(layout), 60, log_hint=layout.pg / "postgres.log")
        state = "started"
    marker = layout.pg / ".pgstac-migrated"
    want = _requirements_hash()
    if not (marker.exists() and marker.read_text() == want):
        pw_sql = sec["pg_password"].replace("'", "''")
        psql(
            layout,
            f"""
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{PG_USER}') THEN
    CREATE ROLE {PG_USER} LOGIN SUPERUSER PASSWORD '{pw_sql}';
  ELSE
    ALTER ROLE {PG_USER} LOGIN SUPERUSER PASSWORD '{pw_sql}';
  END IF;
END $$;""",
        )
        if psql(layout, f"SELECT 1 FROM pg_database WHERE datname = '{PG_DB}'") != "1":
            psql(layout, f"CREATE DATABASE {PG_DB} OWNER {PG_USER}")
        _log("pypgstac migrate")
        _run([str(layout.venv / "bin" / "pypgstac"), "migrate"], env=clean_env(_pg_env(layout, sec)))
        marker.write_text(want)
    return state


def _pg_env(layout: Layout, sec: dict[str, str]) -> dict[str, str]:
    port = str(layout.ports["postgres"])
    return {
        # pypgstac and stac-fastapi-pgstac >= 5 (PostgresSettings)
        "PGHOST": HOST,
        "PGPORT": port,
        "PGUSER": PG_USER,
        "PGPASSWORD": sec["pg_password"],
        "PGDATABASE": PG_DB,
        # older stac-fastapi-pgstac names, harmless for 7.x
        "POSTGRES_HOST_READER": HOST,
        "POSTGRES_HOST_WRITER": HOST,
        "POSTGRES_PORT": port,
        "POSTGRES_USER": PG_USER,
        "POSTGRES_PASS": sec["pg_password"],
        "POSTGRES_DBNAME": PG_DB,
    }


def stop_postgres(layout: Layout) -> bool:
    if not (layout.pgdata / "PG_VERSION").exists():
        return False
    user = _pg_user()
    st = _run(
        [str(PG_BIN / "pg_ctl"), "-D", str(layout.pgdata), "status"], user=user, check=False, env=clean_env()
    )
    if st.returncode != 0:
        return False
    _run(
        [str(PG_BIN / "pg_ctl"), "-D", str(layout.pgdata), "-m", "fast", "-w", "-t", "60", "stop"],
        user=user,
        env=clean_env(),
    )
    return True


def _stac_ok(layout: Layout) -> bool:
    return _http_status(layout.stac_url + "/_mgmt/ping") == 200


def up_stac(layout: Layout, sec: dict[str, str]) -> str:
    proc = Proc(layout, "stac-api")
    if proc.pid() and _stac_ok(layout):
        return "running"
    port = layout.ports["stac"]
    if not proc.pid():
        if _port_open(port):
            raise StackError(f"port {port} is in use by another process (set HSI_STACK_PORT_STAC)")
        cwd = layout.root / "stac"  # empty cwd: no stray .env is read by pydantic-settings
        cwd.mkdir(parents=True, exist_ok=True)
        env = clean_env(
            {
                **_pg_env(layout, sec),
                "ENABLE_TRANSACTIONS_EXTENSIONS": "TRUE",
                "DB_MIN_CONN_SIZE": "1",
                "DB_MAX_CONN_SIZE": "10",
                "APP_HOST": HOST,
                "APP_PORT": str(port),
            }
        )
        proc.start(
            [
                str(layout.venv / "bin" / "uvicorn"),
                "stac_fastapi.pgstac.app:create_app",
                "--factory",
                "--host",
                HOST,
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            env,
            cwd,
        )
    return "started"


def _s3_client(layout: Layout, sec: dict[str, str]) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=layout.s3_endpoint,
        region_name=REGION,
        aws_access_key_id=sec["s3_access_key"],
        aws_secret_access_key=sec["s3_secret_key"],
        config=Config(
            s3={"addressing_style": "path"}, connect_timeout=2, read_timeout=5, retries={"max_attempts": 1}
        ),
    )


def _s3_ok(layout: Layout, sec: dict[str, str]) -> bool:
    names = [b["Name"] for b in _s3_client(layout, sec).list_buckets().get("Buckets", [])]
    return BUCKET in names


def up_seaweedfs(layout: Layout, sec: dict[str, str]) -> str:
    proc = Proc(layout, "seaweedfs")
    if proc.pid():
        return "running"
    p = layout.ports
    for name in ("s3", "weed_master", "weed_volume", "weed_filer", "weed_admin"):
        for port in (p[name], p[name] + 10000):  # http and gRPC (+10000)
            if _port_open(port):
                raise StackError(
                    f"port {port} (SeaweedFS {name}{' gRPC' if port != p[name] else ''}) is in use "
                    f"by another process (set HSI_STACK_PORT_{name.upper()})"
                )
    layout.weed_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        str(layout.venv / "bin" / "weed"),
        "mini",
        f"-dir={layout.weed_dir}",
        f"-ip={HOST}",
        f"-ip.bind={HOST}",
        f"-s3.port={p['s3']}",
        f"-master.port={p['weed_master']}",
        f"-volume.port={p['weed_volume']}",
        f"-filer.port={p['weed_filer']}",
        f"-admin.port={p['weed_admin']}",
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={layout.s3_config}",
        f"-bucket={BUCKET}",
        "-master.telemetry=false",
    ]
    proc.start(argv, clean_env(), layout.weed_dir)
    return "started"


def _ensure_bucket(layout: Layout, sec: dict[str, str]) -> None:
    s3 = _s3_client(layout, sec)
    names = [b["Name"] for b in s3.list_buckets().get("Buckets", [])]
    if BUCKET not in names:
        s3.create_bucket(Bucket=BUCKET)
