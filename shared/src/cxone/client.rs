//! The Checkmarx One client: authenticated GETs that re-authenticate on a 401, the shared retry
//! layer, and the list pages every pager reads.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use reqwest::StatusCode;
use serde_json::value::RawValue;
use url::Url;

use super::auth::TokenSource;
use super::config::VendorConfig;
use super::error::VendorError;
use super::transport::{CounterSnapshot, Retry, Transport, Verdict, classify, without_url};
use crate::secret::Credential;

/// How often one attempt goes again after a 401 on a token another request had already replaced
/// (each time with the token then held) before it gives up: a bound, not a loop.
const MAX_REFUSED_REPLACED_TOKENS: u32 = 4;

/// The only code that talks to Checkmarx One. Cheap to share (`Arc` inside); safe to use from
/// many tasks at once: the concurrency cap and the token cache are shared.
#[derive(Clone)]
pub struct CxOneClient {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub config: VendorConfig,
    pub transport: Transport,
    pub tokens: TokenSource,
    /// Pagers of this client that exist at this moment (from when each is made until it is
    /// dropped): they share its concurrency cap.
    pub readers: std::sync::atomic::AtomicUsize,
}

/// A list page as the server sent it, with where each record sits in the body.
pub(crate) struct ListPage {
    pub body: Bytes,
    pub total: u64,
    pub records: Vec<Range<usize>>,
    /// `pages_number` of DAST results pages.
    pub pages: Option<u64>,
    /// `scanID` of results pages: the scan the server says the page is of.
    pub scan_id: Option<String>,
}

impl ListPage {
    pub fn record(&self, range: &Range<usize>) -> &[u8] {
        &self.body[range.clone()]
    }
}

/// Finds the list and its total in a page body; the error says what is wrong, never echoes data.
/// One pass over the body: the list's records are located as the top-level object is read.
pub(crate) fn parse_list_page(
    body: Bytes,
    list_key: &str,
    total_keys: &[&str],
) -> Result<ListPage, String> {
    let text = std::str::from_utf8(&body)
        .map_err(|e| format!("body is not UTF-8 at byte {}", e.valid_up_to()))?;
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let top = serde::de::DeserializeSeed::deserialize(
        TopLevel {
            list_key,
            total_keys,
        },
        &mut deserializer,
    )
    .and_then(|top| deserializer.end().map(|()| top))
    .map_err(|e| {
        format!(
            "body is not a JSON object ({} at line {} column {})",
            kind(&e),
            e.line(),
            e.column()
        )
    })?;
    let items = top
        .list
        .ok_or_else(|| format!("no `{list_key}` list in the answer"))?
        .ok_or_else(|| format!("`{list_key}` is not a list"))?;
    let total = top
        .total
        .and_then(|(_, t)| serde_json::from_str::<u64>(t.get()).ok())
        .ok_or_else(|| {
            format!(
                "no whole-number `{}` in the answer",
                total_keys.join("` or `")
            )
        })?;
    let pages = top
        .pages
        .and_then(|p| serde_json::from_str::<u64>(p.get()).ok());
    let scan_id = top
        .scan_id
        .and_then(|id| serde_json::from_str::<String>(id.get()).ok());
    let base = text.as_ptr() as usize;
    let records = items
        .iter()
        .map(|raw| {
            let start = raw.get().as_ptr() as usize - base;
            start..start + raw.get().len()
        })
        .collect();
    Ok(ListPage {
        body,
        total,
        records,
        pages,
        scan_id,
    })
}

/// The members of a list page's top-level object that matter, located in the body; the last of
/// repeated keys wins, and of the names a total may go by (`total_keys`: the DAST scans list's is
/// `totalScans` as answered, `totalCount` as documented) the first present. `list` is
/// `Some(None)` when the key holds something other than a list or `null`.
struct TopLevel<'k> {
    list_key: &'k str,
    total_keys: &'k [&'k str],
}

#[derive(Default)]
struct TopMembers<'a> {
    list: Option<Option<Vec<&'a RawValue>>>,
    /// The total, with the place of its name in `total_keys`.
    total: Option<(usize, &'a RawValue)>,
    pages: Option<&'a RawValue>,
    scan_id: Option<&'a RawValue>,
}

impl<'de> serde::de::DeserializeSeed<'de> for TopLevel<'_> {
    type Value = TopMembers<'de>;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for TopLevel<'_> {
    type Value = TopMembers<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut top = TopMembers::default();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key == self.list_key {
                top.list = Some(map.next_value::<ListOrOther<'de>>()?.0);
            } else if let Some(rank) = self.total_keys.iter().position(|k| *k == key) {
                let value = map.next_value()?;
                if top.total.is_none_or(|(kept, _)| rank <= kept) {
                    top.total = Some((rank, value));
                }
            } else if key == "pages_number" {
                top.pages = Some(map.next_value()?);
            } else if key == "scanID" {
                top.scan_id = Some(map.next_value()?);
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(top)
    }
}

/// A list's records, located; `None` for any other value, read past.
struct ListOrOther<'a>(Option<Vec<&'a RawValue>>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for ListOrOther<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Records;
        impl<'de> serde::de::Visitor<'de> for Records {
            type Value = ListOrOther<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut records = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(record) = seq.next_element()? {
                    records.push(record);
                }
                Ok(ListOrOther(Some(records)))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                while map
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(ListOrOther(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(ListOrOther(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(ListOrOther(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(ListOrOther(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(ListOrOther(None))
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(ListOrOther(None))
            }
            // `null` is an empty list, as Go writes one (a clean scan's `results`): the total
            // beside it still decides whether the pull is whole.
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(ListOrOther(Some(Vec::new())))
            }
        }
        deserializer.deserialize_any(Records)
    }
}

fn kind(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Eof => "cut off",
        serde_json::error::Category::Syntax => "invalid JSON",
        _ => "unexpected shape",
    }
}

impl CxOneClient {
    pub fn new(config: VendorConfig, credential: &Credential) -> Result<Self, VendorError> {
        let transport = Transport::new(&config)?;
        let tokens = TokenSource::new(credential, &config)?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                transport,
                tokens,
                readers: std::sync::atomic::AtomicUsize::new(0),
            }),
        })
    }

    pub fn config(&self) -> &VendorConfig {
        &self.inner.config
    }

    /// Requests, retries, 429s, re-authentications, token requests and bytes so far.
    pub fn counters(&self) -> CounterSnapshot {
        self.inner.transport.counters.snapshot()
    }

    /// `{api}{path}?{query}`
    pub(crate) fn api_url(&self, path: &str, query: &[(&str, String)]) -> Url {
        let mut url = self.inner.config.endpoints.api.clone();
        let base = url.path().trim_end_matches('/').to_string();
        url.set_path(&format!("{base}{path}"));
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        url
    }

    /// Gets an access token now (the credential check of the connection test).
    pub async fn authenticate(&self) -> Result<(), VendorError> {
        self.inner
            .tokens
            .bearer(&self.inner.transport)
            .await
            .map(|_| ())
    }

    /// An authenticated GET, read whole. A 401 on the token held drops it, re-authenticates and
    /// goes again; a second 401 on the token held, with no other answer between, means the
    /// credential no longer works, while a token that dies during a retry's wait is renewed
    /// again. A 401 on a token another request has already replaced says nothing about the
    /// credential: the request goes again with the token now held (a few times at most). 429, 5xx, timeouts, broken connections and bodies that
    /// `accept` refuses are retried by the one retry layer; other answers fail at once.
    pub(crate) async fn get_checked<T>(
        &self,
        endpoint: &'static str,
        url: &Url,
        accept: impl Fn(Bytes) -> Result<T, String>,
    ) -> Result<T, VendorError> {
        let inner = &self.inner;
        let mut retries = inner.transport.retries(endpoint);
        let mut refused_in_a_row = false;
        let mut refused_replaced_tokens = 0;
        loop {
            let bearer = inner.tokens.bearer(&inner.transport).await?;
            let request = inner
                .transport
                .http
                .get(url.clone())
                .bearer_auth(bearer.expose())
                .header("Accept", "application/json");
            let retry = match inner
                .transport
                .exchange(endpoint, retries.attempt(), request)
                .await
            {
                Err(error) => Retry::after(without_url(&error)),
                Ok(exchange) if exchange.status.is_success() => match accept(exchange.body) {
                    Ok(value) => return Ok(value),
                    Err(problem) => Retry::after(problem),
                },
                Ok(exchange) if exchange.status == StatusCode::UNAUTHORIZED => {
                    if !inner.tokens.holds(&bearer).await {
                        refused_replaced_tokens += 1;
                        if refused_replaced_tokens > MAX_REFUSED_REPLACED_TOKENS {
                            return Err(VendorError::Unauthorized { endpoint });
                        }
                        tracing::info!(endpoint, "access token refused, already replaced");
                        continue;
                    }
                    if refused_in_a_row {
                        return Err(VendorError::Unauthorized { endpoint });
                    }
                    refused_in_a_row = true;
                    if inner.tokens.invalidate(&bearer).await {
                        inner
                            .transport
                            .counters
                            .reauthentications
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    tracing::info!(endpoint, "access token refused; re-authenticating");
                    continue;
                }
                Ok(exchange) => match classify(endpoint, &exchange) {
                    Verdict::Retry(retry) => retry,
                    Verdict::Fail(error) => return Err(error),
                },
            };
            (refused_in_a_row, refused_replaced_tokens) = (false, 0);
            retries.wait(retry).await?;
        }
    }

    /// A list page with its records located; a body that is not such a page is retried.
    pub(crate) async fn get_list(
        &self,
        endpoint: &'static str,
        url: &Url,
        list_key: &str,
        total_keys: &[&str],
    ) -> Result<ListPage, VendorError> {
        self.get_checked(endpoint, url, |body| {
            parse_list_page(body, list_key, total_keys)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        /// Whatever the server sends: an error naming the problem, or records that are each a
        /// whole JSON value inside the body. Never a panic.
        #[test]
        fn any_body_parses_or_is_refused_without_panicking(
            body in prop_oneof![
                prop::collection::vec(any::<u8>(), 0..200),
                ("[ -~]{0,40}", 0u64..5, "[ -~]{0,20}").prop_map(|(junk, total, tail)| {
                    format!(r#"{{"results":[{{"id":"a"}},{junk}],"totalCount":{total}{tail}"#).into_bytes()
                }),
            ],
            cut in any::<prop::sample::Index>(),
        ) {
            let body = Bytes::from(body);
            let cut_short = body.slice(..cut.index(body.len() + 1));
            for candidate in [body, cut_short] {
                match parse_list_page(candidate.clone(), "results", &["totalCount"]) {
                    Ok(page) => {
                        for range in &page.records {
                            prop_assert!(range.end <= candidate.len());
                            prop_assert!(serde_json::from_slice::<serde_json::Value>(page.record(range)).is_ok());
                        }
                    }
                    Err(reason) => prop_assert!(!reason.is_empty()),
                }
            }
        }
    }

    /// A count that goes by two names (the DAST scans list's `totalScans`, as the live API
    /// answers, and `totalCount`, as documented) is read by the first present, wherever it is.
    #[test]
    fn a_total_is_read_by_the_first_of_its_names_present() {
        let page = |body: &'static str| {
            parse_list_page(
                Bytes::from_static(body.as_bytes()),
                "scans",
                &["totalScans", "totalCount"],
            )
        };
        assert_eq!(page(r#"{"scans":[],"totalCount":3}"#).unwrap().total, 3);
        assert_eq!(
            page(r#"{"totalScans":2,"scans":[],"totalCount":3}"#)
                .unwrap()
                .total,
            2
        );
        assert_eq!(
            page(r#"{"totalCount":3,"scans":[],"totalScans":2}"#)
                .unwrap()
                .total,
            2
        );
        assert_eq!(
            page(r#"{"scans":[],"total":3}"#).err().unwrap(),
            "no whole-number `totalScans` or `totalCount` in the answer"
        );
    }

    #[test]
    fn list_pages_locate_each_record() {
        let body = Bytes::from_static(
            b"{\"results\":[ {\"id\":\"a\"} ,\n\t{\"id\":\"b]\\\"}\",\"x\":[1,2]}\r\n, \"c\\\"d\" ],\"totalCount\": 7 ,\"scanID\":\"s\"}",
        );
        let page = parse_list_page(body, "results", &["totalCount"]).unwrap();
        assert_eq!(page.total, 7);
        let records: Vec<&[u8]> = page.records.iter().map(|r| page.record(r)).collect();
        assert_eq!(
            records,
            vec![
                &br#"{"id":"a"}"#[..],
                &br#"{"id":"b]\"}","x":[1,2]}"#[..],
                &br#""c\"d""#[..]
            ]
        );
    }

    #[test]
    fn list_pages_take_the_last_of_repeated_keys_and_escaped_keys() {
        let body = Bytes::from_static(
            br#"{"results":[{"id":"old"}],"totalCount":1,"results":[{"id":"a"},{"id":"b"}],"pages_number":3,"tot\u0061lCount":2}"#,
        );
        let page = parse_list_page(body, "results", &["totalCount"]).unwrap();
        assert_eq!((page.total, page.pages), (2, Some(3)));
        let records: Vec<&[u8]> = page.records.iter().map(|r| page.record(r)).collect();
        assert_eq!(records, vec![&br#"{"id":"a"}"#[..], &br#"{"id":"b"}"#[..]]);
    }

    /// Valid JSON the transform's reader cannot read (a lone UTF-16 surrogate, a number past a
    /// 64-bit float's range) passes: the page is whole, and the transform rejects such a record
    /// alone (`a_record_the_reader_cannot_read_is_rejected_alone_and_holds_the_absent`).
    #[test]
    fn valid_json_the_reader_cannot_read_passes_the_check() {
        let body = Bytes::from_static(
            br#"{"results":[{"id":"a\ud83d"},{"id":"b","similarityId":1e999}],"totalCount":2}"#,
        );
        let page = parse_list_page(body, "results", &["totalCount"]).unwrap();
        assert_eq!(page.records.len(), 2);
    }

    #[test]
    fn a_null_list_is_an_empty_one_whose_total_still_counts() {
        for (body, total) in [
            (&br#"{"results":null,"totalCount":0}"#[..], 0),
            (&br#"{"results":null,"totalCount":7}"#[..], 7),
        ] {
            let page =
                parse_list_page(Bytes::from_static(body), "results", &["totalCount"]).unwrap();
            assert_eq!((page.records.len(), page.total), (0, total));
        }
    }

    #[test]
    fn broken_pages_are_described_without_their_content() {
        let cases: [(&[u8], &str); 12] = [
            (br#"{"results":[{"id":"a"}"#, "cut off"),
            (
                br#"{"results":[{"id":tru}],"totalCount":1}"#,
                "invalid JSON",
            ),
            (br#"{"results":[{"x":[1,}],"totalCount":1}"#, "invalid JSON"),
            (
                br#"{"results":[{"x":"\uZZZZ"}],"totalCount":1}"#,
                "invalid JSON",
            ),
            (
                b"{\"results\":[{\"x\":\"\xff\"}],\"totalCount\":1}",
                "not UTF-8 at byte 18",
            ),
            (b"<html>502 Bad Gateway</html>", "invalid JSON"),
            (br#"{"items":[],"totalCount":0}"#, "no `results` list"),
            (
                br#"{"results":[],"totalCount":-1}"#,
                "no whole-number `totalCount`",
            ),
            (
                br#"{"results":{"a":[1]},"totalCount":0}"#,
                "`results` is not a list",
            ),
            (
                br#"{"results":"[]","totalCount":0}"#,
                "`results` is not a list",
            ),
            (br#"[{"results":[]}]"#, "unexpected shape"),
            (br#"{"results":[],"totalCount":0} {}"#, "invalid JSON"),
        ];
        for (body, expected) in cases {
            let error = parse_list_page(Bytes::from_static(body), "results", &["totalCount"])
                .err()
                .unwrap();
            assert!(error.contains(expected), "{error}");
        }
    }
}
