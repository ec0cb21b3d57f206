#!/usr/bin/env python3
"""Checks template.yaml against the resources the code expects (shared/src/resources.rs).

    .venv/bin/python infra/check_template.py [RESOURCES_JSON] [--template PATH]

RESOURCES_JSON is the output of `cargo run -q -p webhooks-local -- resources`; without it the
script runs that command from the repository root. PATH defaults to template.yaml at the
repository root (the TEMPLATE environment variable overrides the default too).

Prints one "ok: ..." or "FAIL: ..." line per check, then `template-check: N passed, M failed`,
and exits 1 if any check failed (2 if the inputs could not be loaded).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
DLQ_RETENTION_S = 1_209_600  # 14 days, the SQS maximum
SQS_VISIBILITY_FACTOR = 6  # AWS: queue visibility timeout >= 6 x the function timeout
LAMBDA_DEFAULT_TIMEOUT_S = 3
# Environment variables that name a resource, and the logical id they must refer to.
RESOURCE_ENV = {
    "WEBHOOKS_TABLE": "WebhooksTable",
    "DELIVERIES_TABLE": "DeliveriesTable",
    "EVENTS_QUEUE_URL": "EventsQueue",
    "DELIVERY_QUEUE_URL": "DeliveryQueue",
    "EVENTS_DLQ_URL": "EventsDeadLetterQueue",
    "DELIVERY_DLQ_URL": "DeliveryDeadLetterQueue",
}


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------


class CfnLoader(yaml.SafeLoader):
    """A SafeLoader that turns CloudFormation short tags into their long (JSON) form."""


def _short_tag(loader: CfnLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "Condition":
        return {"Condition": value}
    if suffix == "GetAtt" and isinstance(value, str):
        resource, _, attribute = value.partition(".")
        return {"Fn::GetAtt": [resource, attribute]}
    return {f"Fn::{suffix}": value}


CfnLoader.add_multi_constructor("!", _short_tag)


def load_template(path: Path) -> dict:
    with path.open(encoding="utf-8") as f:
        template = yaml.load(f, Loader=CfnLoader)  # noqa: S506 - SafeLoader subclass
    if not isinstance(template, dict) or not isinstance(template.get("Resources"), dict):
        raise ValueError(f"{path} has no Resources section")
    return template


def load_specs(json_path: str | None) -> dict:
    if json_path:
        text = Path(json_path).read_text(encoding="utf-8")
    else:
        cmd = ["cargo", "run", "-q", "-p", "webhooks-local", "--", "resources"]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"`{' '.join(cmd)}` failed ({proc.returncode}): {proc.stderr.strip()}")
        text = proc.stdout
    specs = json.loads(text)
    if not isinstance(specs.get("tables"), list) or not isinstance(specs.get("queues"), list):
        raise ValueError("resource specs lack 'tables' or 'queues'")
    return specs


# --------------------------------------------------------------------------------------
# Template helpers
# --------------------------------------------------------------------------------------


class Template:
    def __init__(self, doc: dict):
        self.doc = doc
        self.resources: dict[str, dict] = doc["Resources"]
        self.parameters: dict[str, dict] = doc.get("Parameters") or {}
        self.function_globals: dict = (doc.get("Globals") or {}).get("Function") or {}

    def of_type(self, type_name: str) -> dict[str, dict]:
        return {k: v for k, v in self.resources.items() if isinstance(v, dict) and v.get("Type") == type_name}

    @staticmethod
    def props(resource: dict) -> dict:
        return resource.get("Properties") or {}

    def resolve(self, value: Any) -> Any:
        """Replaces a Ref to a parameter with the parameter's default."""
        if isinstance(value, dict) and set(value) == {"Ref"} and value["Ref"] in self.parameters:
            return self.parameters[value["Ref"]].get("Default")
        return value

    def as_int(self, value: Any) -> int | None:
        value = self.resolve(value)
        try:
            return int(value)
        except (TypeError, ValueError):
            return None

    def function_prop(self, resource: dict, name: str) -> Any:
        """A function property, falling back to Globals.Function as SAM does."""
        props = self.props(resource)
        return props[name] if name in props else self.function_globals.get(name)

    def function_env(self, resource: dict) -> dict:
        """Globals.Function environment merged with the function's own, as SAM merges them."""
        env = dict(((self.function_globals.get("Environment") or {}).get("Variables")) or {})
        env.update(((self.props(resource).get("Environment") or {}).get("Variables")) or {})
        return env


def getatt_arn_target(value: Any) -> str | None:
    """`!GetAtt X.Arn` -> "X"; anything else -> None."""
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        target = value["Fn::GetAtt"]
        if isinstance(target, list) and len(target) == 2 and target[1] == "Arn":
            return target[0]
    return None


def redrive_of(t: Template, queue: dict) -> tuple[str | None, int | None]:
    policy = t.props(queue).get("RedrivePolicy")
    if policy is None:
        return None, None
    if isinstance(policy, str):
        policy = json.loads(policy)
    return getatt_arn_target(policy.get("deadLetterTargetArn")), t.as_int(policy.get("maxReceiveCount"))


def schedule_len(schedule: Any) -> int | None:
    if not isinstance(schedule, str):
        return None
    if schedule.strip() in ("", "none"):
        return 0
    return len([part for part in schedule.split(",") if part.strip()])


# --------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------


class Report:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def check(self, ok: bool, what: str, why: str = "") -> None:
        if ok:
            self.passed += 1
            print(f"ok: {what}")
        else:
            self.failed += 1
            print(f"FAIL: {what}" + (f" ({why})" if why else ""))


def check_tables(t: Template, specs: dict, r: Report) -> None:
    tables = t.of_type("AWS::DynamoDB::Table")
    want = {s["logicalId"]: s for s in specs["tables"]}
    r.check(
        set(tables) == set(want),
        f"DynamoDB tables are exactly {sorted(want)}",
        f"template has {sorted(tables)}",
    )
    for logical_id, spec in want.items():
        table = tables.get(logical_id)
        if table is None:
            continue
        p = t.props(table)
        keys = [(k.get("AttributeName"), k.get("KeyType")) for k in p.get("KeySchema") or []]
        want_keys = [(spec["hashKey"], "HASH"), (spec["rangeKey"], "RANGE")]
        r.check(keys == want_keys, f"{logical_id} key schema is {want_keys}", f"got {keys}")
        attrs = sorted((a.get("AttributeName"), a.get("AttributeType")) for a in p.get("AttributeDefinitions") or [])
        index = spec.get("index")
        want_attrs = [(spec["hashKey"], "S"), (spec["rangeKey"], "S")]
        if index:
            want_attrs += [(index["hashKey"], "S"), (index["rangeKey"], "S")]
        want_attrs = sorted(want_attrs)
        r.check(attrs == want_attrs, f"{logical_id} defines only attributes {want_attrs}", f"got {attrs}")
        r.check(not p.get("LocalSecondaryIndexes"), f"{logical_id} has no local secondary indexes", "it has some")
        got_indexes = []
        for g in p.get("GlobalSecondaryIndexes") or []:
            projection = g.get("Projection") or {}
            got_indexes.append({
                "name": g.get("IndexName"),
                "keys": [(k.get("AttributeName"), k.get("KeyType")) for k in g.get("KeySchema") or []],
                "projection": projection.get("ProjectionType"),
                "projected": sorted(projection.get("NonKeyAttributes") or []),
            })
        want_indexes = []
        if index:
            want_indexes.append({
                "name": index["name"],
                "keys": [(index["hashKey"], "HASH"), (index["rangeKey"], "RANGE")],
                "projection": "INCLUDE",
                "projected": sorted(index["projected"]),
            })
        r.check(got_indexes == want_indexes, f"{logical_id} global secondary indexes are {want_indexes}", f"got {got_indexes}")
        ttl_spec = p.get("TimeToLiveSpecification") or {}
        ttl = ttl_spec.get("AttributeName") if ttl_spec.get("Enabled") in (True, "true") else None
        r.check(
            ttl == spec["ttlAttribute"],
            f"{logical_id} TTL attribute is {spec['ttlAttribute'] or '(none)'}",
            f"got {ttl or '(none)'}",
        )
        billing = t.resolve(p.get("BillingMode"))
        r.check(billing == "PAY_PER_REQUEST", f"{logical_id} is PAY_PER_REQUEST by default", f"got {billing}")
        if isinstance(p.get("BillingMode"), dict):
            check_provisioned_option(t, logical_id, p, r)
        pitr = (p.get("PointInTimeRecoverySpecification") or {}).get("PointInTimeRecoveryEnabled")
        r.check(pitr in (True, "true"), f"{logical_id} has point-in-time recovery", f"got {pitr}")
        sse = (p.get("SSESpecification") or {}).get("SSEEnabled")
        r.check(sse in (True, "true"), f"{logical_id} has SSE enabled", f"got {sse}")
        r.check("TableName" not in p, f"{logical_id} has no fixed TableName", f"got {p.get('TableName')}")


def check_provisioned_option(t: Template, logical_id: str, p: dict, r: Report) -> None:
    """A table whose BillingMode is a parameter can be deployed PROVISIONED: then it and each of
    its indexes need throughput, and auto scaling targets (read and write) with a 70% target
    tracking policy, or the first busy minute throttles at the minimum capacity."""
    param = (p.get("BillingMode") or {}).get("Ref")
    allowed = sorted((t.parameters.get(param) or {}).get("AllowedValues") or [])
    r.check(
        allowed == ["PAY_PER_REQUEST", "PROVISIONED"],
        f"{logical_id} BillingMode parameter {param} allows exactly PAY_PER_REQUEST and PROVISIONED",
        f"got {allowed}",
    )

    def throughput_if_provisioned(node: dict) -> bool:
        pt = node.get("ProvisionedThroughput")
        return (
            isinstance(pt, dict)
            and "Fn::If" in pt
            and isinstance(pt["Fn::If"][1], dict)
            and {"ReadCapacityUnits", "WriteCapacityUnits"} <= set(pt["Fn::If"][1])
            and pt["Fn::If"][2] == {"Ref": "AWS::NoValue"}
        )

    r.check(throughput_if_provisioned(p), f"{logical_id} has ProvisionedThroughput when provisioned", "missing")
    scopes = [("table", f"table/${{{logical_id}}}")]
    for g in p.get("GlobalSecondaryIndexes") or []:
        name = g.get("IndexName")
        r.check(throughput_if_provisioned(g), f"{logical_id} index {name} has ProvisionedThroughput when provisioned", "missing")
        scopes.append(("index", f"table/${{{logical_id}}}/index/{name}"))
    targets = t.of_type("AWS::ApplicationAutoScaling::ScalableTarget")
    policies = t.of_type("AWS::ApplicationAutoScaling::ScalingPolicy")
    for kind, resource_id in scopes:
        for dim, metric in (("Write", "DynamoDBWriteCapacityUtilization"), ("Read", "DynamoDBReadCapacityUtilization")):
            what = f"{resource_id} {dim.lower()} capacity"
            found = [
                tid for tid, tr in targets.items()
                if (t.props(tr).get("ResourceId") or {}).get("Fn::Sub") == resource_id
                and t.props(tr).get("ScalableDimension") == f"dynamodb:{kind}:{dim}CapacityUnits"
            ]
            r.check(len(found) == 1, f"{what} has one scalable target", f"found {found}")
            if len(found) != 1:
                continue
            target = targets[found[0]]
            r.check(target.get("Condition") is not None,
                    f"{what} target exists only when provisioned", "no Condition")
            pol = [
                pp for pp in policies.values()
                if t.props(pp).get("ScalingTargetId") == {"Ref": found[0]}
            ]
            cfg = (t.props(pol[0]).get("TargetTrackingScalingPolicyConfiguration") or {}) if len(pol) == 1 else {}
            got = (cfg.get("TargetValue"), (cfg.get("PredefinedMetricSpecification") or {}).get("PredefinedMetricType"))
            r.check(got == (70, metric), f"{what} tracks {metric} at 70%", f"got {got}")


def check_queues(t: Template, specs: dict, r: Report) -> None:
    queues = t.of_type("AWS::SQS::Queue")
    want = {s["logicalId"]: s for s in specs["queues"]}
    r.check(
        set(queues) == set(want),
        f"SQS queues are exactly {sorted(want)}",
        f"template has {sorted(queues)}",
    )
    for logical_id, spec in want.items():
        queue = queues.get(logical_id)
        if queue is None:
            continue
        p = t.props(queue)
        vis = t.as_int(p.get("VisibilityTimeout"))
        r.check(vis == spec["visibilityTimeout"], f"{logical_id} VisibilityTimeout is {spec['visibilityTimeout']}", f"got {vis}")
        ret = t.as_int(p.get("MessageRetentionPeriod"))
        r.check(ret == spec["retentionPeriod"], f"{logical_id} MessageRetentionPeriod is {spec['retentionPeriod']}", f"got {ret}")
        redrive = redrive_of(t, queue)
        want_redrive = (spec["deadLetterQueue"], spec["maxReceiveCount"])
        r.check(redrive == want_redrive, f"{logical_id} redrive (DLQ, maxReceiveCount) is {want_redrive}", f"got {redrive}")
    for logical_id, queue in queues.items():
        sse = t.props(queue).get("SqsManagedSseEnabled")
        r.check(sse in (True, "true"), f"{logical_id} has SqsManagedSseEnabled", f"got {sse}")
    dlqs = {redrive_of(t, q)[0] for q in queues.values()} | {s["deadLetterQueue"] for s in specs["queues"]}
    for dlq in sorted(d for d in dlqs if d):
        queue = queues.get(dlq)
        ret = t.as_int(t.props(queue).get("MessageRetentionPeriod")) if queue else None
        r.check(ret == DLQ_RETENTION_S, f"dead-letter queue {dlq} keeps messages {DLQ_RETENTION_S} s", f"got {ret}")


def sqs_events(t: Template, function: dict) -> list[tuple[str, dict]]:
    events = t.props(function).get("Events") or {}
    return [(name, e.get("Properties") or {}) for name, e in events.items() if isinstance(e, dict) and e.get("Type") == "SQS"]


def check_functions(t: Template, r: Report) -> None:
    queues = t.of_type("AWS::SQS::Queue")
    functions = t.of_type("AWS::Serverless::Function")
    consumed: dict[str, list[str]] = {}
    for fn_id, fn in functions.items():
        timeout = t.as_int(t.function_prop(fn, "Timeout"))
        if timeout is None:
            timeout = LAMBDA_DEFAULT_TIMEOUT_S
        for event_name, ev in sqs_events(t, fn):
            where = f"{fn_id}.{event_name}"
            queue_id = getatt_arn_target(ev.get("Queue"))
            queue = queues.get(queue_id or "")
            r.check(queue is not None, f"{where} reads a queue of this template", f"Queue is {ev.get('Queue')}")
            if queue is not None:
                consumed.setdefault(queue_id, []).append(fn_id)
                vis = t.as_int(t.props(queue).get("VisibilityTimeout"))
                need = SQS_VISIBILITY_FACTOR * timeout
                r.check(
                    vis is not None and vis >= need,
                    f"{queue_id} VisibilityTimeout >= {SQS_VISIBILITY_FACTOR} x {fn_id} Timeout {timeout} = {need}",
                    f"got {vis}",
                )
            types = ev.get("FunctionResponseTypes")
            r.check(
                types == ["ReportBatchItemFailures"],
                f"{where} has FunctionResponseTypes [ReportBatchItemFailures]",
                f"got {types}",
            )
        env = t.function_env(fn)
        for var, target in RESOURCE_ENV.items():
            if var in env:
                r.check(env[var] == {"Ref": target}, f"{fn_id} {var} is !Ref {target}", f"got {env[var]}")
    # Every queue with a dead-letter queue is a work queue: some function must consume it.
    for queue_id, queue in sorted(queues.items()):
        if redrive_of(t, queue)[0] is not None:
            users = consumed.get(queue_id, [])
            r.check(len(users) == 1, f"work queue {queue_id} has exactly one consumer function", f"consumers {users}")


def check_retry_schedule(t: Template, r: Report) -> None:
    """The dispatcher bounds attempts itself (counted in the delivery record) and dead-letters
    after the last one, so the queue's maxReceiveCount must only never cut the schedule short;
    its attempt timeout must fit in its function timeout, which it is told."""
    queues = t.of_type("AWS::SQS::Queue")
    found = False
    for fn_id, fn in t.of_type("AWS::Serverless::Function").items():
        env = t.function_env(fn)
        if "RETRY_SCHEDULE_SECONDS" not in env:
            continue
        found = True
        schedule = t.resolve(env["RETRY_SCHEDULE_SECONDS"])
        delays = schedule_len(schedule)
        for event_name, ev in sqs_events(t, fn):
            queue_id = getatt_arn_target(ev.get("Queue"))
            if queue_id not in queues:
                continue
            dlq, max_receive = redrive_of(t, queues[queue_id])
            r.check(
                delays is not None and max_receive is not None and max_receive >= delays + 1,
                f"{queue_id} maxReceiveCount >= {delays} retry delays + 1 (RETRY_SCHEDULE_SECONDS of {fn_id})",
                f"maxReceiveCount {max_receive}, schedule {schedule!r}",
            )
            r.check(
                env.get("DELIVERY_DLQ_URL") == {"Ref": dlq},
                f"{fn_id} dead-letters into {queue_id}'s DLQ {dlq} (DELIVERY_DLQ_URL)",
                f"got {env.get('DELIVERY_DLQ_URL')!r}",
            )
        timeout = t.as_int(t.function_prop(fn, "Timeout"))
        told = t.as_int(t.resolve(env.get("FUNCTION_TIMEOUT_SECONDS")))
        r.check(told == timeout, f"{fn_id} FUNCTION_TIMEOUT_SECONDS == its Timeout {timeout}", f"got {told}")
        attempt = t.as_int(t.resolve(env.get("DELIVERY_TIMEOUT_SECONDS", "15")))
        r.check(
            attempt is not None and timeout is not None and attempt + 2 <= timeout,
            f"{fn_id} DELIVERY_TIMEOUT_SECONDS {attempt} + 2 s fits in its Timeout {timeout}",
        )
    r.check(found, "a function sets RETRY_SCHEDULE_SECONDS", "none does")


# Routes anyone may call: the UI's files and the OpenAPI document. Every other route is an API
# route and must sit behind the JWT authorizer whenever AuthorizerIssuer is set.
PUBLIC_ROUTES = {"GET /", "GET /ui/{proxy+}", "GET /api/openapi.json"}
GATEWAY_CONDITION = "UseGatewayAuthorizer"


def check_api_auth(t: Template, r: Report) -> None:
    """Who verifies bearer tokens: ApiFunction by default, API Gateway's JWT authorizer when the
    AuthorizerIssuer parameter is set, and then the function must be told (AUTH_MODE) and no
    API route may be left without the authorizer (the function would refuse its requests, but
    the template should not rely on that)."""
    param = t.parameters.get("AuthorizerIssuer") or {}
    r.check(param.get("Default") == "", "parameter AuthorizerIssuer defaults to empty (the function verifies tokens)", f"got {param.get('Default')!r}")
    cond = (t.doc.get("Conditions") or {}).get(GATEWAY_CONDITION)
    want = {"Fn::Not": [{"Fn::Equals": [{"Ref": "AuthorizerIssuer"}, ""]}]}
    r.check(cond == want, f"condition {GATEWAY_CONDITION} is AuthorizerIssuer != ''", f"got {cond}")
    authorizers = t.of_type("AWS::ApiGatewayV2::Authorizer")
    r.check(list(authorizers) == ["GatewayAuthorizer"], "one authorizer, GatewayAuthorizer", f"got {list(authorizers)}")
    auth = authorizers.get("GatewayAuthorizer") or {}
    props = t.props(auth)
    r.check(auth.get("Condition") == GATEWAY_CONDITION, f"GatewayAuthorizer exists only under {GATEWAY_CONDITION}", f"got {auth.get('Condition')}")
    r.check(props.get("AuthorizerType") == "JWT", "GatewayAuthorizer is API Gateway's JWT authorizer", f"got {props.get('AuthorizerType')}")
    jwt = props.get("JwtConfiguration") or {}
    r.check(
        jwt.get("Issuer") == {"Ref": "AuthorizerIssuer"} and jwt.get("Audience") == {"Ref": "AuthorizerAudience"},
        "GatewayAuthorizer checks iss = AuthorizerIssuer and aud in AuthorizerAudience",
        f"got {jwt}",
    )
    r.check(props.get("IdentitySource") == ["$request.header.Authorization"], "GatewayAuthorizer reads the Authorization header", f"got {props.get('IdentitySource')}")
    functions = t.of_type("AWS::Serverless::Function")
    api_fn = functions.get("ApiFunction") or {}
    mode = t.function_env(api_fn).get("AUTH_MODE")
    r.check(
        mode == {"Fn::If": [GATEWAY_CONDITION, "api-gateway", "token"]},
        f"ApiFunction AUTH_MODE is api-gateway exactly when {GATEWAY_CONDITION}",
        f"got {mode}",
    )
    integrations = t.of_type("AWS::ApiGatewayV2::Integration")
    to_api = {i for i, res in integrations.items() if getatt_arn_target(t.props(res).get("IntegrationUri")) == "ApiFunction"}
    routes = t.of_type("AWS::ApiGatewayV2::Route")
    keys = {t.props(res).get("RouteKey") for res in routes.values()}
    for key in sorted(PUBLIC_ROUTES | {"ANY /api", "ANY /api/{proxy+}"}):
        r.check(key in keys, f"route {key} exists", f"routes {sorted(k for k in keys if k)}")
    for route_id, res in sorted(routes.items()):
        p = t.props(res)
        key = p.get("RouteKey")
        target = p.get("Target")
        r.check(
            any(target == {"Fn::Sub": f"integrations/${{{i}}}"} for i in to_api),
            f"route {key} ({route_id}) goes to ApiFunction's integration",
            f"got {target}",
        )
        if key in PUBLIC_ROUTES:
            r.check(p.get("AuthorizationType") == "NONE" and "AuthorizerId" not in p, f"route {key} is public", f"got {p.get('AuthorizationType')}")
        else:
            r.check(
                p.get("AuthorizationType") == {"Fn::If": [GATEWAY_CONDITION, "JWT", "NONE"]}
                and p.get("AuthorizerId") == {"Fn::If": [GATEWAY_CONDITION, {"Ref": "GatewayAuthorizer"}, {"Ref": "AWS::NoValue"}]},
                f"route {key} is behind GatewayAuthorizer when {GATEWAY_CONDITION}",
                f"got {p.get('AuthorizationType')} / {p.get('AuthorizerId')}",
            )
    permissions = [
        t.props(res) for res in t.of_type("AWS::Lambda::Permission").values()
        if t.props(res).get("Principal") == "apigateway.amazonaws.com"
    ]
    r.check(
        any(p.get("FunctionName") == {"Ref": "ApiFunction"} for p in permissions),
        "API Gateway may invoke ApiFunction",
        f"permissions {permissions}",
    )


def queue_alarms(t: Template, metric: str) -> dict[str, list[str]]:
    """Queue logical id -> the alarms on its `metric` (AWS/SQS, by QueueName)."""
    out: dict[str, list[str]] = {}
    for alarm_id, alarm in t.of_type("AWS::CloudWatch::Alarm").items():
        p = t.props(alarm)
        if p.get("Namespace") != "AWS/SQS" or p.get("MetricName") != metric:
            continue
        for d in p.get("Dimensions") or []:
            value = d.get("Value")
            if d.get("Name") == "QueueName" and isinstance(value, dict) and "Fn::GetAtt" in value:
                target = value["Fn::GetAtt"]
                if isinstance(target, list) and target[1:] == ["QueueName"]:
                    out.setdefault(target[0], []).append(alarm_id)
    return out


def emitted_metrics() -> list[str]:
    """The names in the `pub mod metric` blocks of the dispatcher and ingest (their EMF lines)."""
    names: list[str] = []
    for src in ("functions/dispatcher/src/lib.rs", "functions/ingest/src/lib.rs"):
        text = (ROOT / src).read_text(encoding="utf-8")
        block = re.search(r"pub mod metric \{(.*?)\n\}", text, re.S)
        if block:
            names += re.findall(r'pub const [A-Z_]+: &str = "([A-Za-z]+)";', block.group(1))
    return names


def check_alarms_and_dashboard(t: Template, r: Report) -> None:
    queues = t.of_type("AWS::SQS::Queue")
    work = sorted(q for q, queue in queues.items() if redrive_of(t, queue)[0] is not None)
    dlqs = sorted({redrive_of(t, queues[q])[0] for q in work})
    ages = queue_alarms(t, "ApproximateAgeOfOldestMessage")
    for q in work:
        r.check(bool(ages.get(q)), f"work queue {q} has an ApproximateAgeOfOldestMessage alarm", f"alarms: {ages}")
    visible = queue_alarms(t, "ApproximateNumberOfMessagesVisible")
    for q in dlqs:
        r.check(bool(visible.get(q)), f"dead-letter queue {q} has an ApproximateNumberOfMessagesVisible alarm", f"alarms: {visible}")
    dashboards = t.of_type("AWS::CloudWatch::Dashboard")
    r.check(len(dashboards) == 1, "one CloudWatch dashboard", f"got {sorted(dashboards)}")
    names = emitted_metrics()
    r.check(len(names) >= 8, "the functions' metric names are found in their `pub mod metric`", f"got {names}")
    for dash_id, dash in dashboards.items():
        body = t.props(dash).get("DashboardBody")
        if isinstance(body, dict) and "Fn::Sub" in body:
            sub = body["Fn::Sub"]
            body = sub[0] if isinstance(sub, list) else sub
        try:
            # ${...} are substituted by CloudFormation; any string stands in for them here.
            doc = json.loads(re.sub(r"\$\{[^}]+\}", "x", body)) if isinstance(body, str) else None
        except json.JSONDecodeError as e:
            doc = None
            r.check(False, f"{dash_id} body is JSON", str(e))
        if doc is None:
            continue
        shown = {
            (m[0], m[1])
            for w in doc.get("widgets", [])
            for m in (w.get("properties") or {}).get("metrics", [])
            if isinstance(m, list) and len(m) >= 2
        }
        for name in names:
            r.check(("Webhooks", name) in shown, f"{dash_id} shows Webhooks/{name}", f"shown: {sorted(shown)}")
        sub = t.props(dash).get("DashboardBody", {}).get("Fn::Sub") if isinstance(t.props(dash).get("DashboardBody"), dict) else None
        variables = sub[1] if isinstance(sub, list) and len(sub) == 2 and isinstance(sub[1], dict) else {}
        named = {v["Fn::GetAtt"][0] for v in variables.values() if isinstance(v, dict) and "Fn::GetAtt" in v}
        r.check(("AWS/SQS", "ApproximateAgeOfOldestMessage") in shown, f"{dash_id} shows the queues' ApproximateAgeOfOldestMessage")
        for q in work:
            r.check(q in named, f"{dash_id} names work queue {q}", f"names {sorted(named)}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("resources_json", nargs="?", help="output of `webhooks-local resources` (default: run it)")
    parser.add_argument(
        "--template",
        default=os.environ.get("TEMPLATE") or str(ROOT / "template.yaml"),
        help="template to check (default: template.yaml at the repository root)",
    )
    args = parser.parse_args(argv)
    report = Report()
    try:
        template = Template(load_template(Path(args.template)))
        specs = load_specs(args.resources_json)
    except (OSError, ValueError, RuntimeError, yaml.YAMLError) as e:
        report.check(False, "load template and resource specs", str(e))
        print(f"template-check: {report.passed} passed, {report.failed} failed")
        return 2
    check_tables(template, specs, report)
    check_queues(template, specs, report)
    check_functions(template, report)
    check_retry_schedule(template, report)
    check_api_auth(template, report)
    check_alarms_and_dashboard(template, report)
    print(f"template-check: {report.passed} passed, {report.failed} failed")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
