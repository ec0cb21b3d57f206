//! Logging: JSON lines for CloudWatch in Lambda, readable text locally.

use tracing_subscriber::EnvFilter;

/// `LOG_FORMAT=json|text` (default: json inside Lambda, text elsewhere); `RUST_LOG` filters.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let in_lambda = std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some();
    let json = match std::env::var("LOG_FORMAT").as_deref() {
        Ok("json") => true,
        Ok("text") => false,
        _ => in_lambda,
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    let _ = if json {
        builder.json().flatten_event(true).without_time().try_init()
    } else {
        builder.with_ansi(false).try_init()
    };
}

/// Ends a function's process when its start-up failed, naming the error (a missing variable,
/// say) in the logs and on stderr, where Lambda's init error report shows it.
pub fn exit_on_error<E: std::fmt::Display>(function: &str, result: Result<(), E>) {
    if let Err(e) = result {
        tracing::error!(error = %e, function, "function stopped");
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
