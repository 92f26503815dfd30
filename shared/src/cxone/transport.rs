//! The HTTP layer every vendor call goes through: a guarded connector (SSRF rules applied to every
//! resolved address and redirect), a concurrency cap that holds for retries and token requests
//! too, the one retry layer (capped exponential backoff with full jitter, `Retry-After`
//! honoured, a bounded total wait), and one tracing span per request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{RequestBuilder, StatusCode};
use retry_policies::policies::{ExponentialBackoff, ExponentialBackoffTimed};
use retry_policies::{Jitter, RetryDecision, RetryPolicy};
use tokio::sync::Semaphore;
use tracing::Instrument;

use super::bodies::BodyBuffers;
use super::config::{RetrySettings, VendorConfig};
use super::error::VendorError;
use super::region::{NetworkPolicy, forbidden_socket};

/// Resolves host names and drops every address the network policy forbids, so a name that
/// resolves to a private, loopback or metadata address is refused before a socket is opened.
struct GuardedResolver {
    policy: NetworkPolicy,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy;
        Box::pin(async move {
            let allowed = resolve_allowed(name.as_str(), 0, policy).await?;
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The addresses of `host` the policy allows; an error when it resolves only to forbidden ones.
pub(crate) async fn resolve_allowed(
    host: &str,
    port: u16,
    policy: NetworkPolicy,
) -> Result<Vec<SocketAddr>, String> {
    let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    let allowed: Vec<SocketAddr> = resolved
        .iter()
        .copied()
        .filter(|a| forbidden_socket(*a, policy).is_none())
        .collect();
    if allowed.is_empty() {
        let reason = resolved
            .first()
            .and_then(|a| forbidden_socket(*a, policy).map(|r| format!("{a} is {r}")))
            .unwrap_or_else(|| "no address".to_string());
        return Err(format!(
            "refused {host}: it resolves only to forbidden addresses ({reason})"
        ));
    }
    Ok(allowed)
}

/// Builds the HTTP client: guarded resolver, same-host redirects only, HTTPS only unless the local
/// emulator is allowed, extra CA certificates from the bundle.
pub(crate) fn http_client(config: &VendorConfig) -> Result<reqwest::Client, VendorError> {
    let redirects = reqwest::redirect::Policy::custom(|attempt| {
        let origin = attempt.previous().first().map(|u| {
            (
                u.scheme().to_string(),
                u.host_str().map(str::to_string),
                u.port_or_known_default(),
            )
        });
        let next = (
            attempt.url().scheme().to_string(),
            attempt.url().host_str().map(str::to_string),
            attempt.url().port_or_known_default(),
        );
        if attempt.previous().len() > 3 {
            attempt.error("more than 3 redirects")
        } else if origin.as_ref() == Some(&next) {
            attempt.follow()
        } else {
            let to = attempt.url().host_str().unwrap_or("?").to_string();
            attempt.error(format!("refused a redirect to another host ({to})"))
        }
    });
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("cxone-etm/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(config.connect_timeout)
        .timeout(config.request_timeout)
        .redirect(redirects)
        .dns_resolver(Arc::new(GuardedResolver {
            policy: config.policy,
        }))
        .https_only(!config.policy.allow_insecure_local)
        .pool_max_idle_per_host(config.concurrency);
    if let Some(pem) = &config.ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| VendorError::Setup(format!("ca_bundle: {e}")))?;
        builder = builder.tls_certs_merge(certs);
    }
    builder
        .build()
        .map_err(|e| VendorError::Setup(e.to_string()))
}

tokio::task_local! {
    /// The counters of the unit of work the current task is doing (one item), kept besides the
    /// client's, so items collected at the same time over one client are told apart.
    static SCOPED: std::sync::Arc<Counters>;
}

/// Runs `work` with its own counters: every request, retry and 429 it causes is counted there too.
pub async fn counted<F: std::future::Future>(
    counters: std::sync::Arc<Counters>,
    work: F,
) -> F::Output {
    SCOPED.scope(counters, work).await
}

/// Spawns `work` as a task of its own that counts into the current unit of work's counters (a
/// task does not inherit the task-local they live in).
pub(crate) fn spawn_counted<F>(work: F) -> tokio::task::JoinHandle<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    match SCOPED.try_with(Arc::clone) {
        Ok(counters) => tokio::spawn(counted(counters, work)),
        Err(_) => tokio::spawn(work),
    }
}

fn bump(counters: &Counters, pick: impl Fn(&Counters) -> &AtomicU64, by: u64) {
    pick(counters).fetch_add(by, Ordering::Relaxed);
    let _ = SCOPED.try_with(|scoped| pick(scoped).fetch_add(by, Ordering::Relaxed));
}

/// Counters over the client's life, for run reports and tests.
#[derive(Debug, Default)]
pub struct Counters {
    pub requests: AtomicU64,
    pub retries: AtomicU64,
    pub rate_limited: AtomicU64,
    pub reauthentications: AtomicU64,
    pub token_requests: AtomicU64,
    pub bytes: AtomicU64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CounterSnapshot {
    pub requests: u64,
    pub retries: u64,
    pub rate_limited: u64,
    pub reauthentications: u64,
    pub token_requests: u64,
    pub bytes: u64,
}

impl Counters {
    pub fn snapshot(&self) -> CounterSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CounterSnapshot {
            requests: get(&self.requests),
            retries: get(&self.retries),
            rate_limited: get(&self.rate_limited),
            reauthentications: get(&self.reauthentications),
            token_requests: get(&self.token_requests),
            bytes: get(&self.bytes),
        }
    }
}

/// One HTTP exchange, read to the end.
pub(crate) struct Exchange {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

pub(crate) struct Transport {
    pub http: reqwest::Client,
    limiter: Semaphore,
    retry: RetrySettings,
    pub counters: Counters,
    pub bodies: Arc<BodyBuffers>,
}

/// The most room a body's `Content-Length` makes ahead of its bytes (a header that lies claims
/// no more; a larger body still grows to its size).
const BODY_ROOM_AT_MOST: u64 = 64 * 1024 * 1024;

/// Reads the whole body into one buffer, made the size the `Content-Length` announces. Reading
/// it as chunks and joining them at the end held each page twice, and left thousands of small
/// blocks behind, which a large scan's memory kept. A large body's buffer is one an earlier body
/// gave back, when there is one ([`BodyBuffers`]).
async fn read_body(
    mut response: reqwest::Response,
    buffers: &Arc<BodyBuffers>,
) -> Result<Bytes, reqwest::Error> {
    let announced = response
        .content_length()
        .unwrap_or(0)
        .min(BODY_ROOM_AT_MOST);
    let mut body = buffers.buffer_for(announced as usize);
    while let Some(chunk) = response.chunk().await? {
        body.extend_from_slice(&chunk);
    }
    Ok(buffers.hand_out(body, announced as usize))
}
impl Transport {
    pub fn new(config: &VendorConfig) -> Result<Self, VendorError> {
        Ok(Self {
            http: http_client(config)?,
            limiter: Semaphore::new(config.concurrency),
            retry: config.retry.clone(),
            counters: Counters::default(),
            bodies: Arc::default(),
        })
    }

    /// Sends one request under a concurrency permit and reads the whole body, in a span with
    /// the endpoint, attempt, status, duration and bytes. Headers and bodies are never logged.
    pub async fn exchange(
        &self,
        endpoint: &'static str,
        attempt: u32,
        request: RequestBuilder,
    ) -> Result<Exchange, reqwest::Error> {
        let span = tracing::info_span!(
            "vendor_request",
            endpoint,
            attempt,
            status = tracing::field::Empty,
            duration_ms = tracing::field::Empty,
            bytes = tracing::field::Empty
        );
        async {
            let _permit = self
                .limiter
                .acquire()
                .await
                .expect("the semaphore is never closed");
            bump(&self.counters, |c| &c.requests, 1);
            let started = Instant::now();
            let result = async {
                let response = request.send().await?;
                let status = response.status();
                let headers = response.headers().clone();
                let body = read_body(response, &self.bodies).await?;
                Ok(Exchange {
                    status,
                    headers,
                    body,
                })
            }
            .await;
            let span = tracing::Span::current();
            span.record("duration_ms", started.elapsed().as_millis() as u64);
            match &result {
                Ok(exchange) => {
                    span.record("status", exchange.status.as_u16());
                    span.record("bytes", exchange.body.len());
                    bump(&self.counters, |c| &c.bytes, exchange.body.len() as u64);
                    tracing::debug!("vendor answered");
                }
                Err(error) => tracing::debug!(error = %without_url(error), "vendor request failed"),
            }
            result
        }
        .instrument(span)
        .await
    }

    pub fn retries(&self, endpoint: &'static str) -> Retries<'_> {
        let policy = ExponentialBackoff::builder()
            .retry_bounds(
                Duration::from_millis(self.retry.base_delay_ms),
                Duration::from_secs(self.retry.max_delay_secs),
            )
            // Spread between half the base delay and the backoff: no attempt follows at once.
            .jitter(Jitter::Bounded)
            .base(2)
            .build_with_total_retry_duration_and_max_retries(
                Duration::from_secs(self.retry.max_total_wait_secs),
                self.retry.max_retries,
            );
        Retries {
            endpoint,
            policy,
            max_retries: self.retry.max_retries,
            floor: Duration::from_millis(self.retry.base_delay_ms / 2),
            budget: Duration::from_secs(self.retry.max_total_wait_secs),
            started: SystemTime::now(),
            started_at: Instant::now(),
            retries: 0,
            counters: &self.counters,
        }
    }
}

/// A transport error's text without the URL (kept out of messages on principle).
pub(crate) fn without_url(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else if error.is_body() || error.is_decode() {
        "the response body was cut off or unreadable"
    } else if error.is_redirect() {
        "redirect refused"
    } else {
        "the request failed"
    };
    let mut detail = String::new();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        detail = cause.to_string();
        source = cause.source();
    }
    if detail.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {detail}")
    }
}

/// What a failed attempt means for the next one.
pub(crate) enum Verdict {
    /// Worth another attempt after the backoff (or the server's `Retry-After`).
    Retry(Retry),
    Fail(VendorError),
}

/// Why an attempt is made again, and what the server said of when.
pub(crate) struct Retry {
    pub reason: String,
    pub retry_after: Option<Duration>,
    /// A 429: counted as rate limiting.
    pub rate_limited: bool,
}

impl Retry {
    /// A failure the server said nothing of (a connection error, a body that is not the page).
    pub fn after(reason: String) -> Self {
        Self {
            reason,
            retry_after: None,
            rate_limited: false,
        }
    }
}

/// Classifies an answer that is not a success, for the retry layer.
pub(crate) fn classify(endpoint: &'static str, exchange: &Exchange) -> Verdict {
    let status = exchange.status;
    if status == StatusCode::TOO_MANY_REQUESTS {
        return Verdict::Retry(Retry {
            reason: "HTTP 429 Too Many Requests".into(),
            retry_after: retry_after(&exchange.headers),
            rate_limited: true,
        });
    }
    if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT {
        return Verdict::Retry(Retry {
            reason: format!("HTTP {}", status.as_u16()),
            // A gateway in maintenance may say when to come back.
            retry_after: (status == StatusCode::SERVICE_UNAVAILABLE)
                .then(|| retry_after(&exchange.headers))
                .flatten(),
            rate_limited: false,
        });
    }
    Verdict::Fail(match status {
        StatusCode::FORBIDDEN => VendorError::Forbidden {
            endpoint,
            role_hint: role_hint(endpoint),
        },
        StatusCode::NOT_FOUND => VendorError::NotFound {
            endpoint,
            what: message_of(&exchange.body),
        },
        _ => VendorError::Rejected {
            endpoint,
            status: status.as_u16(),
            message: message_of(&exchange.body),
        },
    })
}

/// The role a call needs, as a phrase that follows "give the credential" and "lacks".
fn role_hint(endpoint: &'static str) -> &'static str {
    match endpoint {
        "results" | "sast-results" => {
            "the view-results role (ast-viewer and ast-scanner include it)"
        }
        "projects" | "branches" => "the view-projects role",
        "last-scan" | "scans" => "the view-scans role",
        e if e.starts_with("dast") => {
            "a DAST role that can view environments, scans and results (dast-admin, or ast-viewer with DAST access)"
        }
        _ => "a role that can read this resource",
    }
}

/// The `message` of a vendor error body, or the start of the body when it is not JSON, as
/// [`vendor_text`].
pub(crate) fn message_of(body: &[u8]) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let message = parsed.as_ref().and_then(|v| {
        ["message", "error_description", "error"]
            .iter()
            .find_map(|k| v.get(k).and_then(|m| m.as_str()).map(str::to_string))
    });
    let message = message.unwrap_or_else(|| {
        String::from_utf8_lossy(&body[..body.len().min(4 * LONGEST_VENDOR_TEXT)]).into_owned()
    });
    vendor_text(&message)
}

/// The most characters of a vendor's text an error carries.
const LONGEST_VENDOR_TEXT: usize = 200;

/// Credentials a vendor's text may echo from the request (a proxy or gateway that quotes it): a
/// JWT (an API key, an access token), a bearer value, a secret's form field (`name=value`) or JSON
/// field (`"name": "value"`, quoted either way, escaped or not). Prose that names one (`invalid
/// bearer token`, `password: must be 12 characters`) is left as it is.
static ECHOED_SECRET: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
    const NAMES: &str = "client_secret|refresh_token|access_token|api_?key|password";
    // A JSON field's name and colon; its value follows in double quotes, single ones, or none.
    let field = format!(r#"\\?["'](?:{NAMES})\\?["']\s*:\s*"#);
    regex::Regex::new(&format!(
        r#"(?i)eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_.-]*|(?P<bearer>bearer\s+)[A-Za-z0-9._~+/-]{{16,}}=*|(?P<form>\b(?:{NAMES})=)[^&\s"']+|(?P<dq>{field}\\?")[^"\\]*|(?P<sq>{field}\\?')[^'\\]*|(?P<bare>{field})[^"'\s,}}\]]+"#
    ))
    .expect("a valid pattern")
});

/// A vendor's text as an error carries it: what looks like a credential echoed from the request
/// redacted, the rest trimmed and cut to [`LONGEST_VENDOR_TEXT`] characters. Errors reach run
/// records, the API's answers and the logs.
pub(crate) fn vendor_text(text: &str) -> String {
    let redacted = ECHOED_SECRET.replace_all(text, |found: &regex::Captures| {
        let kept = ["bearer", "form", "dq", "sq", "bare"]
            .iter()
            .find_map(|name| found.name(name))
            .map_or("", |kept| kept.as_str());
        format!("{kept}(redacted)")
    });
    let trimmed = redacted.trim();
    match trimmed.char_indices().nth(LONGEST_VENDOR_TEXT) {
        Some((cut, _)) => format!("{}…", &trimmed[..cut]),
        None => trimmed.to_string(),
    }
}

/// `Retry-After` as seconds or as an HTTP-date.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// The retry state of one call.
pub(crate) struct Retries<'a> {
    endpoint: &'static str,
    policy: ExponentialBackoffTimed,
    max_retries: u32,
    /// The least wait between attempts (half the base delay, as the bounded jitter's), whatever
    /// the server asks: `Retry-After: 0` from a server that is shedding load would otherwise be
    /// hammered.
    floor: Duration,
    budget: Duration,
    started: SystemTime,
    started_at: Instant,
    retries: u32,
    counters: &'a Counters,
}

impl Retries<'_> {
    /// The attempt number about to be made (1-based).
    pub fn attempt(&self) -> u32 {
        self.retries + 1
    }

    /// Waits before the next attempt, or gives up with the reason of the last failure.
    pub async fn wait(&mut self, retry: Retry) -> Result<(), VendorError> {
        let Retry {
            reason,
            retry_after,
            rate_limited,
        } = retry;
        let waited = self.started_at.elapsed();
        let exhausted = || VendorError::RetriesExhausted {
            endpoint: self.endpoint,
            attempts: self.retries + 1,
            waited,
            last: reason.clone(),
        };
        if self.retries >= self.max_retries {
            return Err(exhausted());
        }
        if rate_limited {
            bump(self.counters, |c| &c.rate_limited, 1);
        }
        let delay = match retry_after {
            Some(asked) => {
                let left = self.budget.saturating_sub(waited);
                if asked > left {
                    return Err(VendorError::RetryAfterTooLong {
                        endpoint: self.endpoint,
                        asked,
                        budget: left,
                    });
                }
                after_asked(asked, self.floor).min(left)
            }
            None => match self.policy.should_retry(self.started, self.retries) {
                RetryDecision::Retry { execute_after } => execute_after
                    .duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO),
                RetryDecision::DoNotRetry => return Err(exhausted()),
            },
        };
        tracing::info!(endpoint = self.endpoint, attempt = self.retries + 1, delay_ms = delay.as_millis() as u64, %reason, "retrying");
        self.retries += 1;
        bump(self.counters, |c| &c.retries, 1);
        tokio::time::sleep(delay).await;
        Ok(())
    }
}

/// The wait for a server's `Retry-After`: never less than asked nor than `floor`, plus up to
/// `floor` more at random, so the workers one rate limit stopped together do not come back in
/// the same instant (and are stopped together again).
fn after_asked(asked: Duration, floor: Duration) -> Duration {
    asked.max(floor) + floor.mul_f64(rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn a_retry_after_is_waited_out_and_spread_by_up_to_the_floor() {
        let floor = Duration::from_millis(250);
        for asked in [
            Duration::ZERO,
            Duration::from_millis(100),
            Duration::from_secs(7),
        ] {
            let waits: Vec<Duration> = (0..200).map(|_| after_asked(asked, floor)).collect();
            let least = asked.max(floor);
            assert!(
                waits.iter().all(|&w| w >= least && w <= least + floor),
                "{asked:?}: {waits:?}"
            );
            let spread = waits
                .iter()
                .max()
                .unwrap()
                .saturating_sub(*waits.iter().min().unwrap());
            assert!(spread > floor / 2, "{asked:?}: the waits spread {spread:?}");
        }
    }

    #[tokio::test]
    async fn names_that_resolve_to_forbidden_addresses_are_refused_before_connecting() {
        let denied = NetworkPolicy::default();
        let e = resolve_allowed("localhost", 443, denied).await.unwrap_err();
        assert!(
            e.contains("forbidden addresses") && e.contains("loopback"),
            "{e}"
        );
        assert!(
            resolve_allowed(
                "localhost",
                443,
                NetworkPolicy {
                    allow_insecure_local: true,
                    ..denied
                }
            )
            .await
            .is_ok()
        );
        // The Lambda Runtime API stays refused when loopback is allowed.
        let runtime_api = resolve_allowed(
            "localhost",
            9001,
            NetworkPolicy {
                allow_insecure_local: true,
                ..denied
            },
        )
        .await
        .unwrap_err();
        assert!(runtime_api.contains("Lambda Runtime API"), "{runtime_api}");

        // Through the real HTTP client: a listener on loopback sees no connection at all.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let config = crate::cxone::VendorSettings::for_region("EU", "acme")
            .validate(crate::cxone::CaBundleAt::Named)
            .unwrap();
        let client = http_client(&config).unwrap();
        let error = client
            .get(format!("https://localhost:{port}/"))
            .send()
            .await
            .unwrap_err();
        assert!(
            format!("{error:?}").contains("forbidden addresses"),
            "{error:?}"
        );
        let accepted = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
        assert!(accepted.is_err(), "a connection was made");
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
        headers.insert(RETRY_AFTER, HeaderValue::from_str(&date).unwrap());
        let d = retry_after(&headers).unwrap();
        assert!(
            d > Duration::from_secs(15) && d <= Duration::from_secs(30),
            "{d:?}"
        );
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(
            retry_after(&headers),
            Some(Duration::ZERO),
            "a past date means now"
        );
        headers.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn error_bodies_give_their_message_or_their_start() {
        assert_eq!(
            message_of(br#"{"message":"bad scan id","type":"ERROR","code":400}"#),
            "bad scan id"
        );
        assert_eq!(
            message_of(br#"{"code":400,"message":"limit too big","data":null}"#),
            "limit too big"
        );
        assert_eq!(message_of(b"<html>503</html>"), "<html>503</html>");
    }

    /// A gateway or proxy that quotes the request in its error: the credentials it echoes are
    /// not carried, and no vendor text is longer than 200 characters.
    #[test]
    fn a_vendor_text_carries_no_echoed_credential_and_is_cut_short() {
        let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJhenAiOiJhc3QtYXBwIn0.c2lnbmF0dXJl";
        for (body, kept) in [
            (
                format!(
                    r#"{{"message":"bad form: grant_type=refresh_token&refresh_token={jwt}&client_id=ast-app"}}"#
                ),
                "bad form: grant_type=refresh_token&refresh_token=(redacted)&client_id=ast-app"
                    .to_string(),
            ),
            (
                r#"{"error":"denied","error_description":"client_secret=s3cr3t-VALUE is wrong"}"#
                    .to_string(),
                "client_secret=(redacted) is wrong".to_string(),
            ),
            (
                format!("<html>Authorization: Bearer {jwt} refused</html>"),
                "<html>Authorization: Bearer (redacted) refused</html>".to_string(),
            ),
            (
                r#"{"message":"echo {\"password\": \"hunter2, too\", \"apiKey\": \"k-123\"}"}"#
                    .to_string(),
                r#"echo {"password": "(redacted)", "apiKey": "(redacted)"}"#.to_string(),
            ),
            (
                r#"{"message":"echo {\"password\": 12345678, \"api_key\": \"it's-k-123\"}"}"#
                    .to_string(),
                r#"echo {"password": (redacted), "api_key": "(redacted)"}"#.to_string(),
            ),
            (
                r#"{"message":"echo {'client_secret': 's3cr3t VALUE'}"}"#.to_string(),
                "echo {'client_secret': '(redacted)'}".to_string(),
            ),
            // A body with no message, quoting JSON escaped.
            (
                r#"<p>{\"client_secret\":\"s3cr3t-VALUE\"}</p>"#.to_string(),
                r#"<p>{\"client_secret\":\"(redacted)\"}</p>"#.to_string(),
            ),
        ] {
            let text = message_of(body.as_bytes());
            assert_eq!(text, kept, "{body}");
            for secret in [jwt, "s3cr3t", "hunter2", "too", "k-123", "12345678"] {
                assert!(!text.contains(secret), "{text}");
            }
        }
        // Prose that names a credential is not a credential.
        for prose in [
            "Invalid bearer token",
            "password: must be 12 characters",
            "access_token: expired",
            "the apiKey field is required by the password policy",
        ] {
            let body = serde_json::json!({ "message": prose }).to_string();
            assert_eq!(message_of(body.as_bytes()), prose);
        }
        let long = format!(r#"{{"message":"{}"}}"#, "é".repeat(5000));
        let text = message_of(long.as_bytes());
        assert_eq!(text.chars().count(), 201, "200 and an ellipsis");
        assert!(text.ends_with('…'));
        let raw = "x".repeat(100_000);
        assert_eq!(message_of(raw.as_bytes()).chars().count(), 201);
    }
}
