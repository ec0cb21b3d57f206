//! `cargo run -p webhooks-local` serves the API on 127.0.0.1:${PORT:-3000}.
//! `cargo run -p webhooks-local -- token --sub alice [--tenant acme] [--ttl 3600]` mints a token.
//! `cargo run -p webhooks-local -- bootstrap` creates the tables and queues at AWS_ENDPOINT_URL.
//! `cargo run -p webhooks-local -- listen [--port 8080] [--secret S] [--forward URL]` receives,
//! verifies and prints deliveries.

use std::time::Duration;

use rand::RngCore;
use webhooks::auth;
use webhooks_local::{Backend, BackendChoice, Runner, listen, local_config};

const USAGE: &str = "usage: webhooks-local [serve | token --sub SUB [--tenant TENANT] [--ttl SECONDS] | listen [--port P] [--secret S] [--forward URL] | bootstrap [--prefix P] | resources | redrive [--queue delivery|events] [--max N]]";

/// The most messages one `redrive` moves unless `--max` says otherwise.
#[cfg(feature = "aws")]
const REDRIVE_DEFAULT_MAX: usize = 100_000;

/// What a quick-start build (`--no-default-features`) says when asked for the AWS backend,
/// rather than quietly serving from memory.
#[cfg(not(feature = "aws"))]
const NO_AWS: &str = "this webhooks-local was built without the `aws` feature (the embedded quick start), so it has no DynamoDB/SQS backend; unset AWS_ENDPOINT_URL* and BACKEND=aws (the default backend is SQLite in DATA_DIR), or build it with default features: cargo run -p webhooks-local";

#[cfg(feature = "aws")]
fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = local_config(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))?;
    match args.first().map(String::as_str) {
        None | Some("serve") => serve(config).await,
        Some("token") => {
            let secret = config
                .jwt_secret()
                .map_err(|_| "token needs JWT_SECRET (the one the server uses)")?;
            let value = |name: &str| -> Result<Option<String>, String> {
                match args.iter().position(|a| a == name) {
                    None => Ok(None),
                    Some(i) => match args.get(i + 1).filter(|v| !v.starts_with("--")) {
                        Some(v) => Ok(Some(v.clone())),
                        None => Err(format!("{name} needs a value; {USAGE}")),
                    },
                }
            };
            let sub = value("--sub")?
                .filter(|s| !s.is_empty())
                .ok_or_else(|| format!("--sub is required (the token's subject, e.g. --sub alice); {USAGE}"))?;
            let ttl = match value("--ttl")? {
                None => 24 * 3600,
                Some(t) => t
                    .parse::<u64>()
                    .ok()
                    .filter(|t| *t > 0)
                    .ok_or_else(|| format!("--ttl must be a positive number of seconds, not '{t}'"))?,
            };
            let tenant = value("--tenant")?;
            let mut claims = auth::claims_for(&sub, tenant.as_deref(), ttl);
            claims.iss = config.jwt_issuer.clone();
            claims.aud = config.jwt_audience.clone().map(auth::Audience::One);
            println!("{}", auth::mint(secret, &claims));
            Ok(())
        }
        Some("listen") => {
            let options = listen::ListenOptions::parse(&args[1..])?;
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", options.port))
                .await
                .map_err(|e| {
                    format!(
                        "--port {}: cannot listen on 127.0.0.1:{}: {e}",
                        options.port, options.port
                    )
                })?;
            println!(
                "webhooks-local listen: receiving webhooks on http://{}/ (any path)",
                listener.local_addr()?
            );
            match (&options.secret, &options.forward) {
                (None, _) => println!("  no --secret: signatures are shown, not checked"),
                (Some(_), _) => println!(
                    "  verifying X-Webhook-Signature and webhook-signature with --secret; a mismatch is answered 401"
                ),
            }
            if let Some(url) = &options.forward {
                println!("  forwarding each delivery to {url}, answering with its status");
            }
            let print: listen::Printer = std::sync::Arc::new(|line| println!("{line}"));
            listen::serve(options, listener, print).await?;
            Ok(())
        }
        #[cfg(not(feature = "aws"))]
        Some("bootstrap") => Err(NO_AWS.into()),
        #[cfg(feature = "aws")]
        Some("bootstrap") => {
            let endpoints = ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL_SQS"];
            if endpoints
                .iter()
                .all(|k| std::env::var_os(k).is_none_or(|v| v.is_empty()))
            {
                return Err(
                    "bootstrap creates resources at AWS_ENDPOINT_URL; set it (for example http://127.0.0.1:4566)"
                        .into(),
                );
            }
            let sdk = webhooks::aws_config().await;
            let prefix = flag(&args, "--prefix").unwrap_or_default();
            webhooks::resources::bootstrap(&sdk, &config, &prefix).await?;
            Ok(())
        }
        #[cfg(not(feature = "aws"))]
        Some("redrive") => Err(NO_AWS.into()),
        #[cfg(feature = "aws")]
        Some("redrive") => {
            // The embedded backend lives in the serving process: only an AWS API has a DLQ to
            // move from here.
            let endpoints = ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL_SQS"];
            let aws = endpoints
                .iter()
                .any(|k| std::env::var_os(k).is_some_and(|v| !v.is_empty()))
                || std::env::var("BACKEND").as_deref() == Ok("aws");
            if !aws {
                return Err(
                    "redrive moves a DLQ of an AWS API: set AWS_ENDPOINT_URL (LocalStack, moto) or BACKEND=aws".into(),
                );
            }
            let (from, to) = match flag(&args, "--queue").as_deref() {
                None | Some("delivery") => (config.delivery_dlq_url()?, config.delivery_queue_url()?),
                Some("events") => (config.events_dlq_url()?, config.events_queue_url()?),
                Some(other) => return Err(format!("--queue must be delivery or events, not '{other}'").into()),
            };
            let max = flag(&args, "--max")
                .map(|m| m.parse::<usize>())
                .transpose()?
                .unwrap_or(REDRIVE_DEFAULT_MAX);
            let sdk = webhooks::aws_config().await;
            let queue = webhooks::sqs::SqsQueue::new(aws_sdk_sqs::Client::new(&sdk));
            let moved = webhooks_local::redrive(&queue, from, to, max).await?;
            println!("redrive: moved {moved} messages from {from} to {to}");
            Ok(())
        }
        Some("resources") => {
            println!("{}", serde_json::to_string_pretty(&webhooks::resources::specs_json())?);
            Ok(())
        }
        Some(_) => Err(USAGE.into()),
    }
}

async fn serve(config: webhooks::config::Config) -> Result<(), Box<dyn std::error::Error>> {
    webhooks::telemetry::init();
    let (secret, generated) = match &config.jwt_secret {
        Some(s) => (s.clone(), false),
        None => {
            let mut bytes = [0u8; 24];
            rand::rng().fill_bytes(&mut bytes);
            (hex::encode(bytes).into_bytes(), true)
        }
    };
    let backend = match BackendChoice::from_lookup(|k| std::env::var(k).ok())? {
        BackendChoice::Memory => Backend::Memory,
        BackendChoice::Sqlite(dir) => Backend::Sqlite(dir),
        #[cfg(feature = "aws")]
        BackendChoice::Aws => Backend::Aws(Box::new(webhooks::aws_config().await)),
        #[cfg(not(feature = "aws"))]
        BackendChoice::Aws => return Err(NO_AWS.into()),
    };
    // Build everything first, so a missing setting fails before the banner.
    let runner = Runner::new(&config, &secret, &backend)?;
    let port: u16 = std::env::var("PORT")
        .ok()
        .map(|p| p.parse())
        .transpose()?
        .unwrap_or(3000);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    let token = auth::mint(&secret, &{
        let mut c = auth::claims_for("local-dev", None, 24 * 3600);
        c.iss = config.jwt_issuer.clone();
        c.aud = config.jwt_audience.clone().map(auth::Audience::One);
        c
    });
    println!("webhooks-local listening on http://{addr}");
    println!("  storage: {}", backend.describe());
    println!(
        "  targets: private addresses {}, plain http {} (ALLOW_PRIVATE_TARGETS / ALLOW_HTTP_TARGETS)",
        if config.policy.allow_private {
            "ALLOWED"
        } else {
            "refused"
        },
        if config.policy.allow_http { "ALLOWED" } else { "refused" },
    );
    if generated {
        // A development secret generated for this run; set JWT_SECRET to keep tokens valid
        // across restarts.
        println!(
            "  JWT_SECRET not set; development secret for this run: {}",
            String::from_utf8_lossy(&secret)
        );
    }
    println!("  token (sub=local-dev, 24 h): {token}");
    // The token rides in the fragment, which browsers never send to a server or a Referer.
    println!("  UI (signs you in): http://{addr}/#token={token}");
    println!("  try: curl -H 'Authorization: Bearer {token}' http://{addr}/api/event-types");
    if matches!(backend, Backend::Memory) {
        println!("  note: the in-memory backend keeps nothing across a restart (webhooks, queued events, the log)");
    }
    // In-flight deliveries get their whole attempt timeout, plus time to record them.
    let grace = config.delivery_timeout + Duration::from_secs(5);
    let finished = runner.serve_until(listener, shutdown_signal(), grace).await?;
    if finished {
        println!("webhooks-local stopped: deliveries in flight finished and were recorded");
    } else {
        println!(
            "webhooks-local stopped after {} s; some deliveries were still in flight",
            grace.as_secs()
        );
    }
    Ok(())
}

/// Ctrl-C or SIGTERM: stop receiving, finish what is in flight, then exit 0.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    println!("webhooks-local: stopping; waiting for deliveries in flight");
}
