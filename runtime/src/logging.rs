//! Structured logging and tracing shared by the binaries: `tracing` with `RUST_LOG` filtering,
//! and OpenTelemetry spans exported by OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (off
//! otherwise). The standard `OTEL_*` variables apply: `OTEL_EXPORTER_OTLP_PROTOCOL`
//! (`http/protobuf`, the default, or `http/json`), `OTEL_SERVICE_NAME`, `OTEL_BSP_*`. A build
//! without the `otlp` feature logs an error naming the feature when the endpoint is set.

use std::io::IsTerminal;
use std::str::FromStr;

#[cfg(feature = "otlp")]
use opentelemetry::trace::TracerProvider as _;
#[cfg(feature = "otlp")]
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
#[cfg(feature = "otlp")]
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// How log lines are printed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines, for a terminal.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!(
                "unknown log format {other:?} (expected text or json)"
            )),
        }
    }
}

/// The tracing pipeline of a process; [`Telemetry::shutdown`] flushes spans not yet exported.
#[derive(Debug, Default)]
pub struct Telemetry {
    #[cfg(feature = "otlp")]
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn is_exporting(&self) -> bool {
        #[cfg(feature = "otlp")]
        return self.provider.is_some();
        #[cfg(not(feature = "otlp"))]
        false
    }

    /// Exports what is buffered and stops the exporter.
    pub fn shutdown(self) {
        #[cfg(feature = "otlp")]
        if let Some(Err(e)) = self.provider.map(|p| p.shutdown()) {
            tracing::warn!(error = %e, "trace exporter shutdown failed");
        }
    }
}

/// Installs the global subscriber. The filter comes from `RUST_LOG` and defaults to `info`.
pub fn init(service: &'static str, format: LogFormat) -> Telemetry {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::stderr().is_terminal();
    let (text, json) = match format {
        LogFormat::Text => (
            Some(
                tracing_subscriber::fmt::layer()
                    .with_ansi(ansi)
                    .with_writer(std::io::stderr),
            ),
            None,
        ),
        LogFormat::Json => (
            None,
            Some(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_writer(std::io::stderr),
            ),
        ),
    };
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(text)
        .with(json);
    #[cfg(feature = "otlp")]
    let (telemetry, registry, otlp_error) = {
        let (provider, otlp_error) = match otlp_provider(service) {
            Ok(provider) => (provider, None),
            Err(e) => (None, Some(e)),
        };
        let otel = provider
            .as_ref()
            .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer(service)));
        (Telemetry { provider }, registry.with(otel), otlp_error)
    };
    #[cfg(not(feature = "otlp"))]
    let (telemetry, otlp_error) = {
        let missing = crate::features::Feature::Otlp
            .require(service, "OTEL_EXPORTER_OTLP_ENDPOINT")
            .err()
            .filter(|_| otlp_configured());
        (Telemetry::default(), missing.map(|m| m.to_string()))
    };
    // A second initialisation (tests starting several services in one process) is harmless.
    let _ = registry.try_init();
    tracing::info!(
        service,
        version = env!("CARGO_PKG_VERSION"),
        tracing = telemetry.is_exporting(),
        "starting"
    );
    if let Some(e) = otlp_error {
        tracing::error!("OTLP trace export disabled: {e}");
    }
    telemetry
}

/// Whether `OTEL_EXPORTER_OTLP_ENDPOINT` (or the traces-specific variable) asks for export.
fn otlp_configured() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()))
}

/// The OTLP pipeline when [`otlp_configured`].
#[cfg(feature = "otlp")]
fn otlp_provider(service: &'static str) -> Result<Option<SdkTracerProvider>, String> {
    if !otlp_configured() {
        return Ok(None);
    }
    let protocol = match std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL").as_deref() {
        Ok("http/json") => Protocol::HttpJson,
        Ok("http/protobuf") | Err(_) => Protocol::HttpBinary,
        Ok(other) => {
            return Err(format!(
                "OTEL_EXPORTER_OTLP_PROTOCOL={other} is not supported (use http/protobuf or http/json)"
            ));
        }
    };
    // The blocking HTTP client refuses to be built on an async runtime's thread.
    let exporter = std::thread::spawn(move || {
        opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(protocol)
            .build()
    })
    .join()
    .map_err(|_| "the exporter builder panicked".to_owned())?
    .map_err(|e| e.to_string())?;
    let name = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| service.to_owned());
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    Ok(Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(Resource::builder().with_service_name(name).build())
            .build(),
    ))
}
