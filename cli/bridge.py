"""``hsi bridge run``: the S3/SNS/SQS -> Prefect event bridge as a long-running process."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    help="S3/SNS/SQS notifications -> Prefect events (hsi.raw.available).", no_args_is_help=True
)


@app.callback()
def _main() -> None:
    """S3/SNS/SQS notifications -> Prefect events."""


def _rules_and_catalog(config: Path | None) -> tuple[Any, str, str | None]:
    from hsi.bridge import rules_from_config
    from hsi.config import load_config

    if config is None:
        return rules_from_config(None), "", None
    cfg = load_config(config)
    return rules_from_config(cfg), cfg.catalog.url, cfg.prefect_api_url


@app.command()
def run(
    queue_url: Annotated[
        str, typer.Option(envvar="HSI_BRIDGE_QUEUE_URL", help="SQS queue receiving the notifications")
    ],
    dlq_url: Annotated[
        str | None, typer.Option(envvar="HSI_BRIDGE_DLQ_URL", help="DLQ for poison messages")
    ] = None,
    prefect_api_url: Annotated[
        str | None, typer.Option(envvar="PREFECT_API_URL", help="e.g. http://127.0.0.1:4200/api")
    ] = None,
    endpoint_url: Annotated[
        str | None,
        typer.Option(envvar="AWS_ENDPOINT_URL", help="S3/SQS endpoint (S3-compatible servers, tests)"),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="hsi.yaml; reads sources.<name>.patterns, catalog.url"),
    ] = None,
    region: Annotated[str | None, typer.Option(envvar="AWS_DEFAULT_REGION")] = None,
    wait_seconds: Annotated[int, typer.Option(min=0, max=20, help="SQS long-poll wait")] = 20,
    until_empty: Annotated[bool, typer.Option(help="exit once the queue is empty")] = False,
    log_level: Annotated[str, typer.Option(envvar="HSI_LOG_LEVEL")] = "INFO",
) -> None:
    """Consume the queue until SIGTERM/SIGINT (the current batch is finished, exit code 0).

    The queue and the Prefect API come from the options or $HSI_BRIDGE_QUEUE_URL and $PREFECT_API_URL.
    Example: `hsi bridge run --until-empty --wait-seconds 1`
    """
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    import boto3

    from hsi.bridge import RecentIds
    from hsi_pipeline.deployments.bridge.consumer import BridgeProcessor, PrefectEvents, SqsConsumer

    rules, catalog_href, cfg_api = _rules_and_catalog(config)
    api = prefect_api_url or cfg_api
    if not api:
        raise typer.BadParameter(
            "no Prefect API: pass --prefect-api-url, set PREFECT_API_URL or prefect_api_url"
        )
    session = boto3.session.Session(region_name=region or "us-east-1")
    s3 = session.client("s3", endpoint_url=endpoint_url)
    sqs = session.client("sqs", endpoint_url=endpoint_url)
    processor = BridgeProcessor(
        s3, PrefectEvents(api), rules=rules, recent=RecentIds(), catalog_href=catalog_href
    )
    consumer = SqsConsumer(sqs, queue_url, processor, dlq_url=dlq_url, wait_s=wait_seconds)

    stop = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        logging.getLogger("hsi.bridge").info("signal %s: finishing the current batch", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    raise typer.Exit(consumer.run(stop, until_empty=until_empty))


@app.command()
def replay(
    dlq_url: Annotated[str, typer.Option(envvar="HSI_BRIDGE_DLQ_URL", help="the bridge's dead-letter queue")],
    prefect_api_url: Annotated[
        str | None, typer.Option(envvar="PREFECT_API_URL", help="e.g. http://127.0.0.1:4200/api")
    ] = None,
    endpoint_url: Annotated[
        str | None,
        typer.Option(envvar="AWS_ENDPOINT_URL", help="S3/SQS endpoint (S3-compatible servers, tests)"),
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="hsi.yaml; reads sources.<name>.patterns, catalog.url")
    ] = None,
    region: Annotated[str | None, typer.Option(envvar="AWS_DEFAULT_REGION")] = None,
    max_messages: Annotated[int | None, typer.Option(min=1, help="replay at most N messages")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object per message")] = False,
) -> None:
    """Re-drive the dead-letter queue: each message ends posted (one run), duplicate (already run),
    kept (back on the DLQ with the new reason) or retry (transient failure).

    Example: `hsi bridge replay --max-messages 10`
    """
    import json

    import boto3

    from hsi_pipeline.deployments.bridge.consumer import BridgeProcessor, PrefectEvents
    from hsi_pipeline.deployments.bridge.replay import replay_dlq

    rules, catalog_href, cfg_api = _rules_and_catalog(config)
    api = prefect_api_url or cfg_api
    if not api:
        raise typer.BadParameter(
            "no Prefect API: pass --prefect-api-url, set PREFECT_API_URL or prefect_api_url"
        )
    session = boto3.session.Session(region_name=region or "us-east-1")
    s3 = session.client("s3", endpoint_url=endpoint_url)
    sqs = session.client("sqs", endpoint_url=endpoint_url)
    processor = BridgeProcessor(s3, PrefectEvents(api), rules=rules, catalog_href=catalog_href)
    outcomes = replay_dlq(sqs, dlq_url, processor, max_messages=max_messages)
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.outcome] = counts.get(o.outcome, 0) + 1
        if as_json:
            typer.echo(json.dumps(o.as_dict()))
        else:
            typer.echo(f"{o.outcome}\t{o.message_id}\t{', '.join(o.events) or o.reason}")
    if not as_json:
        typer.echo(f"{len(outcomes)} message(s): " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))


if __name__ == "__main__":
    app()
