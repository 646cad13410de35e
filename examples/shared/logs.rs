//! The examples' logging: tracing's standard subscriber on stderr, filtered by `RUST_LOG`.

use tracing_subscriber::filter::LevelFilter;

/// Logs to stderr what `RUST_LOG` asks for; without it, `default` and up.
pub(crate) fn init(default: LevelFilter) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::builder()
                .with_default_directive(default.into())
                .from_env_lossy(),
        )
        .with_writer(std::io::stderr)
        .init();
}
