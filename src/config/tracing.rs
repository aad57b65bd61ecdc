//! OpenTelemetry traces: the standard `OTEL_*` variables, parsed into [`TracingConfig`]. Traces
//! are off unless an OTLP endpoint is set (and `OTEL_SDK_DISABLED` is not `true`).

use std::time::Duration;

use super::{parse_switch, vars, Reader, Secret};

/// How a new trace (or a request whose parent said nothing) is sampled
/// (`OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampler {
    AlwaysOn,
    AlwaysOff,
    /// This fraction of trace ids, 0.0 to 1.0.
    Ratio(f64),
    /// The client's sampled flag when it sent a `traceparent`, else the root sampler.
    ParentBased(Root),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Root {
    AlwaysOn,
    AlwaysOff,
    Ratio(f64),
}

#[derive(Debug, Clone)]
pub struct TracingConfig {
    /// Where spans are POSTed (`.../v1/traces`), OTLP HTTP/protobuf.
    pub endpoint: String,
    /// `OTEL_EXPORTER_OTLP_HEADERS`: often an API key, so values are secrets.
    pub headers: Vec<(String, Secret)>,
    pub service_name: String,
    pub sampler: Sampler,
    /// Longest one export may take (`OTEL_EXPORTER_OTLP_TIMEOUT`, milliseconds).
    pub export_timeout: Duration,
    /// Most finished spans waiting for export; more are dropped and counted.
    pub max_queue: usize,
    /// Most spans in one export request.
    pub max_batch: usize,
    /// Longest a finished span waits before its batch is exported.
    pub schedule_delay: Duration,
    /// CA certificates trusted for an `https://` collector besides the system roots
    /// (`OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE`, else `OTEL_EXPORTER_OTLP_CERTIFICATE`: a PEM file).
    pub ca_certs: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// Prompts and answers exported (`OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`).
    pub capture_content: bool,
}

impl TracingConfig {
    /// One line for `--check-config` (header values masked).
    pub fn describe(&self) -> String {
        let headers: Vec<String> = self
            .headers
            .iter()
            .map(|(k, _)| format!("{k}=***"))
            .collect();
        format!(
            "otlp http/protobuf {} service={} sampler={:?} headers=[{}] content={}",
            self.endpoint,
            self.service_name,
            self.sampler,
            headers.join(","),
            if self.capture_content { "on" } else { "off" }
        )
    }
}

/// The traces URL: the signal's own variable as is, else the base endpoint + `/v1/traces`.
fn traces_url(base: Option<&str>, traces: Option<&str>) -> Option<String> {
    if let Some(t) = traces {
        return Some(t.to_string());
    }
    base.map(|b| format!("{}/v1/traces", b.trim_end_matches('/')))
}

fn check_url(v: &str) -> Result<(), String> {
    match url::Url::parse(v) {
        Ok(u) if (u.scheme() == "http" || u.scheme() == "https") && u.host_str().is_some() => {
            Ok(())
        }
        _ => Err("expected an http:// or https:// URL, e.g. http://127.0.0.1:4318".into()),
    }
}

/// `key1=value1,key2=value2`, values percent-decoded (the OTLP exporter's format).
fn parse_headers(v: &str) -> Result<Vec<(String, Secret)>, String> {
    let mut out = Vec::new();
    for pair in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, val)) = pair.split_once('=') else {
            return Err("expected key=value pairs separated by commas".into());
        };
        let k = k.trim();
        let val = percent_encoding::percent_decode_str(val.trim())
            .decode_utf8()
            .map_err(|_| "a header value is not UTF-8 once percent-decoded".to_string())?;
        if http::HeaderName::from_bytes(k.as_bytes()).is_err()
            || http::HeaderValue::from_str(&val).is_err()
        {
            return Err(format!("{k:?} is not a valid HTTP header"));
        }
        out.push((k.to_string(), Secret::new(val.into_owned())));
    }
    Ok(out)
}

/// The CA certificates of a PEM file (at least one).
fn read_ca_file(path: &str) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read the file: {e}"))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut std::io::BufReader::new(pem.as_slice()))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("not a PEM certificate file: {e}"))?;
    if certs.is_empty() {
        return Err("no PEM certificate in the file".into());
    }
    Ok(certs)
}

fn parse_ratio(arg: Option<&str>) -> Result<f64, String> {
    match arg {
        None => Ok(1.0),
        Some(a) => match a.parse::<f64>() {
            Ok(x) if (0.0..=1.0).contains(&x) => Ok(x),
            _ => Err("expected a ratio from 0 to 1".into()),
        },
    }
}

pub(super) fn read(r: &mut Reader) -> Option<TracingConfig> {
    let disabled = r.parse(vars::OTEL_SDK_DISABLED, false, parse_switch);
    let url = traces_url(
        r.get(vars::OTEL_EXPORTER_OTLP_ENDPOINT),
        r.get(vars::OTEL_EXPORTER_OTLP_TRACES_ENDPOINT),
    );
    for name in [
        vars::OTEL_EXPORTER_OTLP_TRACES_PROTOCOL,
        vars::OTEL_EXPORTER_OTLP_PROTOCOL,
    ] {
        if let Some(p) = r.get(name) {
            if p != "http/protobuf" {
                r.error(
                    name,
                    p,
                    "only http/protobuf is supported (the OTLP/HTTP default)",
                );
            }
            break;
        }
    }
    let headers_var = if r.get(vars::OTEL_EXPORTER_OTLP_TRACES_HEADERS).is_some() {
        vars::OTEL_EXPORTER_OTLP_TRACES_HEADERS
    } else {
        vars::OTEL_EXPORTER_OTLP_HEADERS
    };
    let headers = r.parse(headers_var, Vec::new(), parse_headers);
    let service_name = r
        .get(vars::OTEL_SERVICE_NAME)
        .unwrap_or("ai-gateway")
        .to_string();
    let arg = r.get(vars::OTEL_TRACES_SAMPLER_ARG);
    let sampler = r.parse(
        vars::OTEL_TRACES_SAMPLER,
        Sampler::ParentBased(Root::AlwaysOn),
        |v| {
            let ratio = || {
                parse_ratio(arg).map_err(|e| format!("{} {e}", vars::OTEL_TRACES_SAMPLER_ARG))
            };
            Ok(match v {
                "always_on" => Sampler::AlwaysOn,
                "always_off" => Sampler::AlwaysOff,
                "traceidratio" => Sampler::Ratio(ratio()?),
                "parentbased_always_on" => Sampler::ParentBased(Root::AlwaysOn),
                "parentbased_always_off" => Sampler::ParentBased(Root::AlwaysOff),
                "parentbased_traceidratio" => Sampler::ParentBased(Root::Ratio(ratio()?)),
                _ => return Err("expected always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio".into()),
            })
        },
    );
    let export_timeout = Duration::from_millis(r.number(vars::OTEL_EXPORTER_OTLP_TIMEOUT, 10_000));
    let positive = |v: &str| match v.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err("expected a whole number >= 1".to_string()),
    };
    let max_queue = r.parse(vars::OTEL_BSP_MAX_QUEUE_SIZE, 2048, positive);
    let max_batch = r.parse(vars::OTEL_BSP_MAX_EXPORT_BATCH_SIZE, 512, positive);
    let schedule_delay =
        Duration::from_millis(r.number(vars::OTEL_BSP_SCHEDULE_DELAY, 5000u64).max(1));
    let ca_var = if r.get(vars::OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE).is_some() {
        vars::OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE
    } else {
        vars::OTEL_EXPORTER_OTLP_CERTIFICATE
    };
    let ca_certs = r.parse(ca_var, Vec::new(), read_ca_file);
    let capture_content = r.parse(
        vars::OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT,
        false,
        parse_switch,
    );
    let url = url?;
    let var = if r.get(vars::OTEL_EXPORTER_OTLP_TRACES_ENDPOINT).is_some() {
        vars::OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
    } else {
        vars::OTEL_EXPORTER_OTLP_ENDPOINT
    };
    if let Err(e) = check_url(&url) {
        let v = r.get(var).unwrap_or_default();
        r.error(var, v, &e);
        return None;
    }
    if disabled {
        return None;
    }
    Some(TracingConfig {
        endpoint: url,
        headers,
        service_name,
        sampler,
        export_timeout,
        max_queue,
        max_batch: max_batch.min(max_queue),
        schedule_delay,
        ca_certs,
        capture_content,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn read_map(pairs: &[(&str, &str)]) -> (Option<TracingConfig>, Vec<String>) {
        let env: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut r = Reader::new(&env);
        let c = read(&mut r);
        (c, r.errors)
    }

    #[test]
    fn off_without_an_endpoint_or_when_disabled() {
        assert!(read_map(&[]).0.is_none());
        let (c, e) = read_map(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
            ("OTEL_SDK_DISABLED", "true"),
        ]);
        assert!(c.is_none() && e.is_empty(), "{e:?}");
    }

    #[test]
    fn endpoints_follow_the_specification() {
        let (c, _) = read_map(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/")]);
        assert_eq!(c.unwrap().endpoint, "http://c:4318/v1/traces");
        let (c, _) = read_map(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:9/custom"),
        ]);
        let c = c.unwrap();
        assert_eq!(c.endpoint, "http://t:9/custom");
        assert_eq!(c.sampler, Sampler::ParentBased(Root::AlwaysOn));
        assert_eq!(c.service_name, "ai-gateway");
    }

    #[test]
    fn samplers_headers_and_errors() {
        let (c, e) = read_map(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "x-honeycomb-team=abc%20def,b=c",
            ),
        ]);
        let c = c.unwrap_or_else(|| panic!("{e:?}"));
        assert_eq!(c.sampler, Sampler::ParentBased(Root::Ratio(0.25)));
        assert_eq!(c.headers[0].0, "x-honeycomb-team");
        assert_eq!(c.headers[0].1.expose(), "abc def");
        assert!(!c.describe().contains("abc"));
        let (_, e) = read_map(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_TRACES_SAMPLER", "sometimes"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "secretvalue"),
        ]);
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(e.iter().any(|m| m.starts_with("OTEL_TRACES_SAMPLER=")));
        assert!(e.iter().all(|m| !m.contains("secretvalue")), "{e:?}");
        let (c, e) = read_map(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://api.honeycomb.io")]);
        assert!(e.is_empty(), "{e:?}");
        let c = c.unwrap();
        assert_eq!(c.endpoint, "https://api.honeycomb.io/v1/traces");
        assert!(c.ca_certs.is_empty());
        let (_, e) = read_map(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4318"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
                "/nonexistent/ca.pem",
            ),
        ]);
        assert!(
            e[0].starts_with("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE="),
            "{e:?}"
        );
        let (_, e) = read_map(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "not a url")]);
        assert!(e[0].starts_with("OTEL_EXPORTER_OTLP_ENDPOINT="), "{e:?}");
    }
}
