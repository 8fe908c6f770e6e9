"""Who hears about a retrain: each decision of the flow is a Prefect event, and automations on
the Prefect server call a webhook when a bertflow deployment's run fails or crashes, or when a
retrain is held back by drift or by a gain that is not significant.

    bertflow notify --webhook https://hooks.example.com/T000/B000   # once per server

The server that PREFECT_API_URL names runs the automations; its event and automation services
(on by default in `prefect server start`) must be running. A webhook on a private or loopback
address (10.x, 192.168.x, 127.0.0.1, a cluster-internal name) is refused unless
--allow-private-urls sets the Webhook block's `allow_private_urls`.

    >>> outcome_event("blocked-by-drift")
    'bertflow.retrain.blocked-by-drift'
    >>> model_resource("bertflow-mrpc")["prefect.resource.id"]
    'bertflow.model.bertflow-mrpc'
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Annotated, Optional
from urllib.parse import urlsplit

import typer

OUTCOMES = ("promoted", "not-better", "not-significant", "collapsed", "parity-failed",
            "blocked-by-drift", "no-op")
NOTIFIED = ("blocked-by-drift", "not-significant")  # the outcomes a person should look at
BLOCK_NAME = "bertflow-notify"
RUN_FAILED = "bertflow: a deployment's run failed"
NEEDS_A_LOOK = "bertflow: a retrain needs a look"

# Webhook bodies, rendered by the server (Jinja; `tojson` escapes messages into valid JSON).
# "text" is the line a chat webhook (Slack, Mattermost, ...) shows; the other fields are for bots.
RUN_FAILED_BODY = """{"text": {{ ("bertflow: " ~ flow.name ~ "/" ~ deployment.name ~ " run "
   ~ flow_run.name ~ " " ~ flow_run.state.name ~ ": " ~ (flow_run.state.message or ""))|tojson }},
 "flow_run": {{ flow_run.name|tojson }},
 "flow_run_id": {{ flow_run.id|string|tojson }},
 "deployment": {{ (flow.name ~ "/" ~ deployment.name)|tojson }},
 "state": {{ flow_run.state.name|tojson }},
 "message": {{ flow_run.state.message|tojson }}}"""
OUTCOME_BODY = """{"text": {{ ("bertflow: " ~ event.payload.model ~ " " ~ event.payload.code
   ~ ": " ~ event.payload.reason)|tojson }},
 "event": {{ event.event|tojson }},
 "code": {{ event.payload.code|tojson }},
 "model": {{ event.payload.model|tojson }},
 "version": {{ event.payload.version|tojson }},
 "reason": {{ event.payload.reason|tojson }},
 "details": {{ event.payload.details|tojson }},
 "flow_run": {{ (flow_run.name if flow_run else none)|tojson }}}"""


def outcome_event(code: str) -> str:
    """The event name of a retrain's outcome; an unknown code is refused.

    >>> outcome_event("promoted")
    'bertflow.retrain.promoted'
    >>> outcome_event("better")
    Traceback (most recent call last):
    ...
    ValueError: unknown outcome 'better': one of promoted, not-better, not-significant, \
collapsed, parity-failed, blocked-by-drift, no-op
    """
    if code not in OUTCOMES:
        raise ValueError(f"unknown outcome {code!r}: one of {', '.join(OUTCOMES)}")
    return f"bertflow.retrain.{code}"


def model_resource(model: str) -> dict[str, str]:
    """The Prefect resource an outcome is about: the registered model."""
    return {"prefect.resource.id": f"bertflow.model.{model}", "prefect.resource.name": model}


def check_webhook_url(url: str, allow_private_urls: bool = False) -> None:
    """Refuse what the server could not call: a URL that is not http(s), and (without
    `allow_private_urls`) a loopback or private address. A host name is resolved by the server
    when it calls, so one that resolves to a private address fails there, in the automation's
    events.

    >>> check_webhook_url("https://hooks.slack.com/services/T0/B0/x")
    >>> check_webhook_url("http://127.0.0.1:8000/hook", allow_private_urls=True)
    >>> check_webhook_url("http://localhost:8000/hook")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: http://localhost:8000/hook is a private address: pass --allow-private-urls ...
    >>> check_webhook_url("hooks.slack.com/x")
    Traceback (most recent call last):
    ...
    ValueError: hooks.slack.com/x: give an http:// or https:// URL
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url}: give an http:// or https:// URL")
    try:
        private = ipaddress.ip_address(parts.hostname).is_private
    except ValueError:  # a name
        private = parts.hostname == "localhost" or parts.hostname.endswith(".localhost")
    if private and not allow_private_urls:
        raise ValueError(f"{url} is a private address: pass --allow-private-urls to let the "
                         "server call it")


def emit_outcome(code: str, model: str, version: str | None, reason: str,
                 details: dict[str, str]) -> None:
    """Emit `bertflow.retrain.<code>` about `model`, with the decision in its payload. Inside
    a flow or task run, Prefect relates the event to that run."""
    from prefect.events import emit_event

    payload = {"code": code, "model": model, "version": version, "reason": reason,
               "details": dict(details)}
    emit_event(outcome_event(code), resource=model_resource(model), payload=payload)


def ensure_notifications(webhook_url: str, deployment_tags: Iterable[str] = ("bertflow",),
                         codes: Iterable[str] = NOTIFIED,
                         allow_private_urls: bool = False) -> list[str]:
    """The Webhook block `bertflow-notify` and the two automations calling it, made or brought
    up to date on the server PREFECT_API_URL names (run twice: still one of each); their ids."""
    from prefect.blocks.webhook import Webhook

    block = Webhook(url=webhook_url, headers={"Content-Type": "application/json"},
                    allow_private_urls=allow_private_urls)
    block_id = block.save(BLOCK_NAME, overwrite=True)
    return [_upsert(automation) for automation in (
        run_failed(block_id, deployment_tags), needs_a_look(block_id, codes))]


def run_failed(block_id, deployment_tags: Iterable[str]):
    """A flow run of a deployment tagged with one of `deployment_tags` enters Failed, Crashed
    or TimedOut -> the webhook, naming the run, its deployment, the state and its message."""
    from prefect.automations import Automation, CallWebhook, EventTrigger

    tags = [f"prefect.tag.{tag}" for tag in deployment_tags]
    return Automation(
        name=RUN_FAILED, description="Tells the webhook which run failed and why.",
        trigger=EventTrigger(
            expect={"prefect.flow-run.Failed", "prefect.flow-run.Crashed",
                    "prefect.flow-run.TimedOut"},
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related=[{"prefect.resource.role": "tag", "prefect.resource.id": tags},
                           {"prefect.resource.role": "deployment"}],
            posture="Reactive", threshold=1),
        actions=[CallWebhook(block_document_id=block_id, payload=RUN_FAILED_BODY)])


def needs_a_look(block_id, codes: Iterable[str]):
    """An outcome event with one of `codes` -> the webhook, with the code, model and reason."""
    from prefect.automations import Automation, CallWebhook, EventTrigger

    return Automation(
        name=NEEDS_A_LOOK, description="Tells the webhook a retrain was held back, and why.",
        trigger=EventTrigger(expect={outcome_event(code) for code in codes},
                             match={"prefect.resource.id": "bertflow.model.*"},
                             posture="Reactive", threshold=1),
        actions=[CallWebhook(block_document_id=block_id, payload=OUTCOME_BODY)])


def _upsert(automation) -> str:
    """Create `automation`, or update the one of its name (and drop any duplicates); its id."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        existing = client.read_automations_by_name(automation.name)
        for duplicate in existing[1:]:
            client.delete_automation(duplicate.id)
    if not existing:
        return str(automation.create().id)
    automation.id = existing[0].id
    automation.update()
    return str(automation.id)


def notify(
    ctx: typer.Context,
    webhook: Annotated[str, typer.Option(
        help="The URL to POST a JSON body to: a chat's incoming webhook (its \"text\" is the "
             "message), a bot, an incident tool.")],
    tag: Annotated[Optional[list[str]], typer.Option(
        help="Only runs of deployments with this tag (repeat for several; default "
             "bertflow).")] = None,
    allow_private_urls: Annotated[bool, typer.Option(
        "--allow-private-urls",
        help="Let the server call a private or loopback address (127.0.0.1, 10.x, an internal "
             "host name).")] = False,
):
    """Tell a webhook when a bertflow deployment's run fails or crashes, or a retrain is blocked
    by drift or not significant: automations on the Prefect server at PREFECT_API_URL, made or
    updated (run it again to change the URL)."""
    import httpx
    from prefect.settings import PREFECT_API_URL

    try:
        check_webhook_url(webhook, allow_private_urls)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--webhook") from err
    server = PREFECT_API_URL.value()
    if not server:
        _fail(ctx, "no Prefect server: set PREFECT_API_URL to the server the deployments run on "
              "(e.g. http://127.0.0.1:4200/api)")
    try:
        ids = ensure_notifications(webhook, tag or ("bertflow",),
                                   allow_private_urls=allow_private_urls)
    except (httpx.ConnectError, httpx.TimeoutException) as err:
        _fail(ctx, f"the Prefect server {server} did not answer ({err})\n  start it, or point "
              "PREFECT_API_URL at it, and run again", err)
    for name, automation_id in zip((RUN_FAILED, NEEDS_A_LOOK), ids, strict=True):
        typer.echo(f"{automation_id}  {name}")
    # the URL itself stays in the block (a secret there): a hook's path often holds its token
    typer.echo(f"calling {urlsplit(webhook).netloc} (Webhook block {BLOCK_NAME}) from {server}")


def _fail(ctx: typer.Context, message: str, err: BaseException | None = None):
    """The command's `error: ...` and exit 1; the traceback with --verbose."""
    from flows.cli import fail

    fail(message, err, verbose=ctx.find_root().params.get("verbose", False))
