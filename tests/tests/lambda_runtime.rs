//! The three function binaries, started as Lambda starts them (against a stand-in Runtime API
//! on 127.0.0.1), handle the event shapes AWS sends: an API Gateway HTTP API v2 request and SQS
//! batches. The chain api -> events queue -> ingest -> delivery queue -> dispatcher -> receiver
//! runs through the real binaries and the emulator's DynamoDB and SQS.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use webhooks::resources::{DELIVERIES_TABLE, WEBHOOKS_TABLE, create_queues, create_table};
use webhooks::signing;
use webhooks_tests::runtime_api::{Outcome, RuntimeApi, binary};
use webhooks_tests::{JWT_SECRET, Receiver, Reply, emulator, token, unique};

const WITHIN: Duration = Duration::from_secs(20);

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).expect("fixture")
}

/// A fixture with its placeholders filled in; string values are JSON-escaped.
fn fill(name: &str, vars: &[(&str, &str)]) -> Value {
    let mut text = fixture(name);
    for (k, v) in vars {
        let escaped = serde_json::to_string(v).expect("string");
        text = text.replace(&format!("{{{{{k}}}}}"), &escaped[1..escaped.len() - 1]);
    }
    serde_json::from_str(&text).expect("fixture is JSON")
}

struct Function {
    api: RuntimeApi,
    child: tokio::process::Child,
}

async fn start(name: &str, env: &[(String, String)]) -> Function {
    let path = binary(name, "debug");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --bins` (make test does)",
        path.display()
    );
    let api = RuntimeApi::start().await;
    let child = tokio::process::Command::new(&path)
        .envs(api.lambda_env(name))
        .envs(env.iter().cloned())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn function binary");
    Function { api, child }
}

fn response(o: Outcome) -> Value {
    match o {
        Outcome::Response(v) => v,
        Outcome::Error(e) => panic!("the function reported an error: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binaries_handle_real_lambda_events() {
    let Some(sdk) = emulator().await else { return };
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let (webhooks_table, deliveries_table) = (unique("webhooks"), unique("deliveries"));
    create_table(&dynamo, &WEBHOOKS_TABLE, &webhooks_table)
        .await
        .expect("table");
    create_table(&dynamo, &DELIVERIES_TABLE, &deliveries_table)
        .await
        .expect("table");
    let urls = create_queues(&sqs, &format!("{}-", unique("q"))).await.expect("queues");
    let url = |id: &str| {
        urls.iter()
            .find(|(l, _)| *l == id)
            .map(|(_, u)| u.clone())
            .expect("url")
    };
    let mut env: Vec<(String, String)> = [
        ("JWT_SECRET", String::from_utf8_lossy(JWT_SECRET).into_owned()),
        ("WEBHOOKS_TABLE", webhooks_table),
        ("DELIVERIES_TABLE", deliveries_table),
        ("EVENTS_QUEUE_URL", url("EventsQueue")),
        ("EVENTS_DLQ_URL", url("EventsDeadLetterQueue")),
        ("DELIVERY_QUEUE_URL", url("DeliveryQueue")),
        ("DELIVERY_DLQ_URL", url("DeliveryDeadLetterQueue")),
        ("FUNCTION_TIMEOUT_SECONDS", "30".into()),
        ("ALLOW_HTTP_TARGETS", "true".into()),
        ("ALLOW_PRIVATE_TARGETS", "true".into()),
        ("RETRY_SCHEDULE_SECONDS", "1".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for k in [
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_DYNAMODB",
        "AWS_ENDPOINT_URL_SQS",
        "AWS_REGION",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    ] {
        if let Ok(v) = std::env::var(k) {
            env.push((k.to_string(), v));
        }
    }
    let tenant = unique("acme");
    let jwt = token(&tenant);

    // api: an API Gateway HTTP API v2 GET and POST.
    let mut api = start("api", &env).await;
    let res = response(
        api.api
            .invoke(fill("apigw-http-v2-get.json", &[("TOKEN", &jwt)]), WITHIN)
            .await,
    );
    assert_eq!(res["statusCode"], 200, "{res}");
    let types: Value = serde_json::from_str(res["body"].as_str().expect("body")).expect("json body");
    assert_eq!(types.as_array().expect("array").len(), 24);
    let receiver = Receiver::start(Reply::Status(200)).await;
    let body =
        json!({"url": receiver.url("/lambda"), "events": ["workflow.execution.completed"], "secret": "s3-0123456789abcdef"}).to_string();
    let len = body.len().to_string();
    let post = fill(
        "apigw-http-v2-post.json",
        &[("TOKEN", &jwt), ("BODY", &body), ("LENGTH", &len)],
    );
    let res = response(api.api.invoke(post, WITHIN).await);
    assert_eq!(res["statusCode"], 201, "{res}");
    let created: Value = serde_json::from_str(res["body"].as_str().expect("body")).expect("json");
    assert_eq!(created["url"], receiver.url("/lambda"));
    let unauthenticated = fill("apigw-http-v2-get.json", &[("TOKEN", "not-a-token")]);
    let res = response(api.api.invoke(unauthenticated, WITHIN).await);
    assert_eq!(res["statusCode"], 401);
    let _ = api.child.kill().await;

    // ingest: an SQS event carrying a producer's event.
    let mut ingest = start("ingest", &env).await;
    let event = json!({"event": "workflow.execution.completed", "payload": {"id": "1", "status": "COMPLETED"}, "tenant": tenant}).to_string();
    let mut batch = fill("sqs-event.json", &[("BODY", &event)]);
    let mut poison = batch["Records"][0].clone();
    poison["messageId"] = json!("poison-1");
    poison["body"] = json!("{not json");
    batch["Records"].as_array_mut().expect("records").push(poison);
    let res = response(ingest.api.invoke(batch, WITHIN).await);
    assert_eq!(
        res,
        json!({"batchItemFailures": []}),
        "the poison message went to the DLQ, not back to the queue"
    );
    let _ = ingest.child.kill().await;

    // The delivery job ingest enqueued, as the dispatcher's event source would hand it over.
    let got = sqs
        .receive_message()
        .queue_url(url("DeliveryQueue"))
        .wait_time_seconds(2)
        .send()
        .await
        .expect("receive");
    let job = got.messages()[0].clone();
    let mut batch = fill("sqs-event.json", &[("BODY", job.body().expect("body"))]);
    batch["Records"][0]["receiptHandle"] = json!(job.receipt_handle().expect("receipt"));
    batch["Records"][0]["eventSourceARN"] = json!("arn:aws:sqs:us-east-1:123456789012:webhook-delivery-jobs");
    let mut dispatcher = start("dispatcher", &env).await;
    let res = response(dispatcher.api.invoke(batch, WITHIN).await);
    assert_eq!(res, json!({"batchItemFailures": []}));
    let _ = dispatcher.child.kill().await;
    let req = &receiver.wait_for(1, WITHIN).await[0];
    assert_eq!(req.path, "/lambda");
    assert!(signing::verify_guide_signature(
        "s3-0123456789abcdef",
        &req.body,
        req.header("x-webhook-signature").expect("signed")
    ));
}

#[tokio::test]
async fn a_missing_setting_fails_at_cold_start_and_names_itself() {
    let api = RuntimeApi::start().await;
    let path = binary("dispatcher", "debug");
    assert!(path.exists(), "{} is missing: run `cargo build --bins`", path.display());
    let out = tokio::process::Command::new(&path)
        .envs(api.lambda_env("dispatcher"))
        .env("AWS_REGION", "us-east-1")
        .env_remove("DELIVERY_QUEUE_URL")
        .output();
    let out = tokio::time::timeout(WITHIN, out).await.expect("exits").expect("runs");
    assert!(!out.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("DELIVERY_QUEUE_URL is required"), "{text}");
}

/// `AUTH_MODE=api-gateway`: API Gateway's JWT authorizer (here a Cognito ID token's claims, as
/// HTTP API v2 passes them) verified the token; the api binary takes the tenant from the claim
/// it is told (`JWT_TENANT_CLAIM=custom:tenant`) and needs no `JWT_SECRET`. A request without
/// the authorizer's claims is refused, even with a token that would verify: fail closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_binary_reads_the_claims_of_api_gateways_jwt_authorizer() {
    let Some(sdk) = emulator().await else { return };
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    let table = unique("webhooks");
    create_table(&dynamo, &WEBHOOKS_TABLE, &table).await.expect("table");
    let mut env: Vec<(String, String)> = [
        ("AUTH_MODE", "api-gateway".to_string()),
        ("JWT_TENANT_CLAIM", "custom:tenant".to_string()),
        ("WEBHOOKS_TABLE", table),
        ("DELIVERIES_TABLE", unique("deliveries")),
        ("EVENTS_QUEUE_URL", "http://127.0.0.1:9/unused".to_string()),
        ("DELIVERY_QUEUE_URL", "http://127.0.0.1:9/unused".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for k in [
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_DYNAMODB",
        "AWS_REGION",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    ] {
        if let Ok(v) = std::env::var(k) {
            env.push((k.to_string(), v));
        }
    }
    let mut api = start("api", &env).await;
    let tenant = unique("acme");
    let mut post = fill(
        "apigw-http-v2-jwt-authorizer.json",
        &[("TOKEN", "verified-by-api-gateway"), ("TENANT", &tenant)],
    );
    let body = json!({"url": "https://example.com/hook", "events": ["*"]}).to_string();
    post["requestContext"]["http"]["method"] = json!("POST");
    post["headers"]["content-type"] = json!("application/json");
    post["headers"]["content-length"] = json!(body.len().to_string());
    post["body"] = json!(body);
    let res = response(api.api.invoke(post, WITHIN).await);
    assert_eq!(res["statusCode"], 201, "{res}");
    let get = fill(
        "apigw-http-v2-jwt-authorizer.json",
        &[("TOKEN", "verified-by-api-gateway"), ("TENANT", &tenant)],
    );
    let res = response(api.api.invoke(get, WITHIN).await);
    let list: Value = serde_json::from_str(res["body"].as_str().expect("body")).expect("json");
    assert_eq!(
        list.as_array().map(Vec::len),
        Some(1),
        "the tenant of custom:tenant: {res}"
    );
    let other = fill(
        "apigw-http-v2-jwt-authorizer.json",
        &[("TOKEN", "verified-by-api-gateway"), ("TENANT", &unique("other"))],
    );
    let res = response(api.api.invoke(other, WITHIN).await);
    assert_eq!(res["body"], "[]", "another tenant sees nothing");
    let no_authorizer = fill("apigw-http-v2-get.json", &[("TOKEN", &token(&tenant))]);
    let res = response(api.api.invoke(no_authorizer, WITHIN).await);
    assert_eq!(res["statusCode"], 401, "{res}");
    let _ = api.child.kill().await;
}
