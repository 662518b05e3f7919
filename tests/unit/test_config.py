"""hsi.yaml: every error at once with file:line:field, semantic checks, generated deployments."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from hsi.bridge import DEFAULT_RULES, classify_key, rules_from_config
from hsi.config import PipelineConfig, load_config, mask_secrets, validate_text
from hsi.errors import ConfigError
from hsi.events import EventPayload, EventResource

ROOT = Path(__file__).resolve().parents[2]
THREE_MISTAKES = """\
storage:
  root: s3://hsi/assets
catalog:
  url: htp:/x
engine:
  max_workers: many
sources:
  aviris-ng:
    products:
      - product: index:NDVX
"""


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "hsi.yaml"
    p.write_text(text)
    return p


def test_three_mistakes_three_precise_errors_in_one_run(tmp_path: Path) -> None:
    path = _write(tmp_path, THREE_MISTAKES)
    with pytest.raises(ConfigError) as ei:
        load_config(path)
    issues = ei.value.issues  # type: ignore[attr-defined]
    assert [(i.line, i.path) for i in issues] == [
        (4, "catalog.url"), (6, "engine.max_workers"), (10, "sources.aviris-ng.products[0].product"),
    ]  # fmt: skip
    lines = str(ei.value).splitlines()
    assert len(lines) == 3 and all(ln.startswith(f"{path}:") for ln in lines)
    assert "'htp:/x' is not a local path, an s3:// prefix or an http(s) URL" in lines[0]
    assert "valid integer" in lines[1] and "'many'" in lines[1]
    assert "unknown product 'index:NDVX'" in lines[2] and "did you mean: index:NDVI" in lines[2]


def test_cli_validate_reports_all_errors_and_exit_code(tmp_path: Path) -> None:
    from hsi_pipeline.cli.main import app

    path = _write(tmp_path, THREE_MISTAKES)
    r = CliRunner().invoke(app, ["config", "validate", str(path)])
    assert r.exit_code == 2
    assert r.output.count(f"error: {path}:") == 3 and "3 error(s)" in r.output
    ok = CliRunner().invoke(app, ["config", "validate", str(ROOT / "hsi.example.yaml")])
    assert ok.exit_code == 0, ok.output
    assert "OK (2 source(s)" in ok.output


@pytest.mark.parametrize(
    ("text", "line", "path", "needle"),
    [
        ("catalog:\n  url: http://u:pw@stac\n", 2, "catalog.url", "credentials in the URL"),
        (
            "catalog:\n  url: x\n  auth: {type: bearer, token: abc}\n",
            3,
            "catalog.auth.token",
            "never written",
        ),
        (
            "catalog:\n  auth: {type: bearer, token_env: 'ey.J-x'}\n",
            2,
            "catalog.auth.token_env",
            "not an environment",
        ),
        ("catalog:\n  auth: {type: basic, username_env: U}\n", 2, "catalog.auth", "password_env"),
        ("storage:\n  root: https://bucket/x\n", 2, "storage.root", "local directory or an s3://"),
        ("storage:\n  root: s3://Bad_Bucket/x\n", 2, "storage.root", "not a valid s3://"),
        ("storage:\n  aws_secret_access_key: abc\n", 2, "storage.aws_secret_access_key", "never written"),
        ("engine:\n  ecs: {env: {AWS_SECRET_ACCESS_KEY: x}}\n", 2, "engine.ecs.env", "never written"),
        ("engine:\n  task_runner: spark\n", 2, "engine.task_runner", "'threads' or 'dask'"),
        ("engine:\n  wrok_pool: x\n", 2, "engine.wrok_pool", "allowed: task_runner"),
        ("sources:\n  prisma: {}\n", 2, "sources.prisma", "known: emit, aviris-ng"),
        (
            "sources:\n  aviris-ng:\n    products:\n      - product: oil-spill\n        params: {hi_threshold: x}\n",
            5,
            "sources.aviris-ng.products[0].params.hi_threshold",
            "parameters: hi_threshold",
        ),
        (
            "sources:\n  emit:\n    products:\n      - product: index:NDVI\n        params: {geometry: raw}\n",
            5,
            "sources.emit.products[0].params",
            "geometry must be 'ortho' or 'sensor'",
        ),
        (
            "sources:\n  aviris-ng:\n    products:\n      - params: {}\n",
            4,
            "sources.aviris-ng.products[0].product",
            "required",
        ),
        ("inputs:\n  - prefix: /local\n", 2, "inputs[0].prefix", "s3://"),
        ("catalog: {url: x}\ncatalog: {url: y}\n", 2, "catalog", "duplicate key"),
        ("storage: [\n", 2, "", "not valid YAML"),
    ],
)
def test_each_error_names_line_field_and_what_is_allowed(
    text: str, line: int, path: str, needle: str
) -> None:
    cfg, issues = validate_text(text, "hsi.yaml")
    assert cfg is None
    hit = [i for i in issues if i.path == path]
    assert hit, [str(i) for i in issues]
    assert hit[0].line == line and needle in hit[0].message, str(hit[0])
    assert str(hit[0]).startswith(f"hsi.yaml:{line}: ")


def test_defaults_and_example(tmp_path: Path) -> None:
    cfg = load_config(None, base=tmp_path)
    assert cfg.storage.root == str(tmp_path / "hsi-data" / "assets")
    assert cfg.engine.work_pool == "hsi-process" and cfg.sources == {}
    ex = load_config(ROOT / "hsi.example.yaml")
    assert [p.product for p in ex.sources["aviris-ng"].products] == [
        "index:NDVI",
        "tree-mortality",
        "oil-spill",
    ]
    # programmatic construction runs the same semantic checks
    with pytest.raises(ValueError, match="unknown product"):
        PipelineConfig.model_validate({"sources": {"aviris-ng": {"products": [{"product": "nope"}]}}})


def test_inputs_longest_prefix_wins_else_storage() -> None:
    cfg = PipelineConfig.model_validate({
        "storage": {"root": "s3://assets/x", "endpoint_url": "http://127.0.0.1:1"},
        "inputs": [{"prefix": "s3://landing", "endpoint_url": "http://127.0.0.1:2"},
                   {"prefix": "s3://landing/special/", "endpoint_url": "http://127.0.0.1:3"}],
    })  # fmt: skip
    assert cfg.s3_access_for("s3://landing/a/b").endpoint_url == "http://127.0.0.1:2"
    assert cfg.s3_access_for("s3://landing/special/b").endpoint_url == "http://127.0.0.1:3"
    assert cfg.s3_access_for("s3://landingzone/b") is cfg.storage
    assert cfg.s3_access_for("s3://assets/x/y") is cfg.storage


def test_bridge_rules_from_typed_sources() -> None:
    assert rules_from_config(PipelineConfig()) == DEFAULT_RULES
    cfg = PipelineConfig.model_validate({"sources": {
        "aviris-ng": {},
        "envi": {"patterns": ["lab/**/*.img"], "scene_id_regex": r"^(?P<scene>[a-z]+\d+)"},
    }})  # fmt: skip
    rules = rules_from_config(cfg)
    assert [r.source for r in rules] == ["aviris-ng", "envi"]
    assert rules[0] == DEFAULT_RULES[0]
    c = classify_key("lab/2024/cal42.img", rules)
    assert (c.kind, c.source, c.scene_id) == ("data", "envi", "cal42")
    assert classify_key("x/f130329t01p00r06_img", rules).kind == "ignored"  # aviris-classic not configured


def test_mask_secrets_and_schema() -> None:
    assert mask_secrets({"a": {"password": "x", "password_env": "P", "url": "http://u:pw@h/"}}) == {
        "a": {"password": "****", "password_env": "P", "url": "http://u:****@h/"}
    }
    from hsi_pipeline.cli.main import app

    r = CliRunner().invoke(app, ["config", "schema"])
    doc = json.loads(r.output)
    assert {"storage", "catalog", "sources", "inputs", "engine"} <= set(doc["properties"])
    shown = CliRunner().invoke(app, ["config", "show", str(ROOT / "hsi.example.yaml")])
    assert shown.exit_code == 0 and "work_pool: hsi-process" in shown.output


# ------------------------------------------------------------------------------ generated deployments


def test_committed_prefect_yaml_matches_the_generator() -> None:
    from hsi_pipeline.deployments.generate import render

    expected = render(load_config(ROOT / "hsi.example.yaml"))
    assert (ROOT / "prefect.yaml").read_text() == expected, (
        "prefect.yaml is stale: run `hsi deploy --config hsi.example.yaml --out prefect.yaml`"
    )


def test_generated_deployments_triggers_and_template_labels() -> None:
    from hsi_pipeline.deployments.generate import automation_names, deployment_names, generate

    spec = generate(load_config(ROOT / "hsi.example.yaml"))
    assert deployment_names(spec) == ["activate/new-scene", "activate/activate", "index/index", "product/run-product", "on-demand/on-demand",
                                      "products-batch/products-batch",
                                      "products/aviris-ng", "products/aviris-classic"]  # fmt: skip
    assert automation_names(spec) == ["hsi-new-scene"]  # the products run in the activation run
    new, *_, ng, _classic = spec["deployments"]
    (t,) = new["triggers"]
    assert t["expect"] == ["hsi.raw.available"] and t["match"] == {
        "hsi.source": ["aviris-ng", "aviris-classic"]
    }
    assert t["parameters"]["uri"] == "{{ event.payload.uri }}"
    assert t["parameters"]["trigger"]["event_id"] == "{{ event.id | string }}"
    assert t["parameters"]["trigger"]["automation_id"] == "{{ automation.id | string }}"
    assert t["parameters"]["run_products"] is True
    act = spec["deployments"][1]
    assert act["name"] == "activate" and act["parameters"] == {"run_products": True} and act["triggers"] == []
    assert ng["triggers"] == []  # kept for on-demand runs, reprocessing and replay
    assert ng["parameters"]["products"][2] == {"product": "oil-spill", "params": {"hi_threshold": 0.02}}
    assert all(d["work_pool"]["name"] == "hsi-process" for d in spec["deployments"])
    # every label / payload key a template reads is set by every emitter
    labels = set(EventResource(collection="c", item_id="i").labels())
    payload = set(EventPayload.model_fields)
    text = yaml.safe_dump(spec)
    used_labels = set(re.findall(r"event\.resource\['([^']+)'\]", text)) | set(t["match"])
    used_payload = set(re.findall(r"event\.payload\.(\w+)", text))
    assert used_labels <= labels and used_payload <= payload, (used_labels - labels, used_payload - payload)
    from hsi_pipeline.deployments.generate import render

    rendered = render(load_config(ROOT / "hsi.example.yaml"))
    assert "&id" not in rendered and "/work/" not in rendered  # no YAML aliases, no machine paths


def test_every_deployment_parameter_is_a_parameter_of_its_flow() -> None:
    """A trigger/deployment parameter the entrypoint does not take would fail every triggered run."""
    import importlib
    import inspect

    from hsi_pipeline.deployments.generate import generate

    spec = generate(load_config(ROOT / "hsi.example.yaml"))
    for d in spec["deployments"]:
        path, func = d["entrypoint"].split(":")
        module = path.removesuffix(".py").replace("/", ".")
        params = set(inspect.signature(getattr(importlib.import_module(module), func).fn).parameters)
        given = set(d["parameters"]) | {k for t in d["triggers"] for k in t["parameters"]}
        assert given <= params, (d["name"], given - params)
    new = spec["deployments"][0]
    assert new["entrypoint"] == "flows/activate.py:activate_scene"
    assert set(new["triggers"][0]["parameters"]) == {"uri", "source", "run_products", "trigger"}


def test_pipeline_options_are_accepted_next_to_product_parameters() -> None:
    text = (
        "sources:\n  emit:\n    products:\n      - product: index:NDVI\n"
        "        params: {geometry: sensor, mask: false, radiance: refuse}\n"
    )
    cfg, issues = validate_text(text, "hsi.yaml")
    assert cfg is not None and not issues, [str(i) for i in issues]
    assert cfg.sources["emit"].products[0].params == {
        "geometry": "sensor",
        "mask": False,
        "radiance": "refuse",
    }
