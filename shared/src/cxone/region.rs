//! Where the vendor lives: the Checkmarx One region table, custom (private) deployments, and the
//! rules a URL must pass before the client may ever connect to it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use url::{Host, Url};

use super::error::ConfigError;

/// A Checkmarx One multi-tenant region: its API host and its IAM (Keycloak) host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub name: &'static str,
    /// Other spellings users type for it.
    pub aliases: &'static [&'static str],
    pub api_host: &'static str,
    pub iam_host: &'static str,
}

pub const REGIONS: [Region; 10] = [
    Region {
        name: "US",
        aliases: &[],
        api_host: "ast.checkmarx.net",
        iam_host: "iam.checkmarx.net",
    },
    Region {
        name: "US2",
        aliases: &[],
        api_host: "us.ast.checkmarx.net",
        iam_host: "us.iam.checkmarx.net",
    },
    Region {
        name: "EU",
        aliases: &[],
        api_host: "eu.ast.checkmarx.net",
        iam_host: "eu.iam.checkmarx.net",
    },
    Region {
        name: "EU2",
        aliases: &[],
        api_host: "eu-2.ast.checkmarx.net",
        iam_host: "eu-2.iam.checkmarx.net",
    },
    Region {
        name: "DEU",
        aliases: &["DE"],
        api_host: "deu.ast.checkmarx.net",
        iam_host: "deu.iam.checkmarx.net",
    },
    Region {
        name: "ANZ",
        aliases: &["AU"],
        api_host: "anz.ast.checkmarx.net",
        iam_host: "anz.iam.checkmarx.net",
    },
    Region {
        name: "IND",
        aliases: &["IN"],
        api_host: "ind.ast.checkmarx.net",
        iam_host: "ind.iam.checkmarx.net",
    },
    Region {
        name: "SNG",
        aliases: &["SG"],
        api_host: "sng.ast.checkmarx.net",
        iam_host: "sng.iam.checkmarx.net",
    },
    Region {
        name: "UAE",
        aliases: &["MEA"],
        api_host: "mea.ast.checkmarx.net",
        iam_host: "mea.iam.checkmarx.net",
    },
    Region {
        name: "IL-gov",
        aliases: &["IL", "GOV-IL"],
        api_host: "gov-il.ast.checkmarx.net",
        iam_host: "gov-il.iam.checkmarx.net",
    },
];

fn region_names() -> String {
    REGIONS
        .iter()
        .map(|r| r.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The two base URLs every request goes to, already checked against the [`NetworkPolicy`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoints {
    pub api: Url,
    pub iam: Url,
    /// The region, when the endpoints come from the table.
    pub region: Option<&'static str>,
}

/// What the client may connect to beyond the public regions on port 443.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetworkPolicy {
    /// Plain HTTP and loopback addresses (any port), for a local emulator only.
    pub allow_insecure_local: bool,
    /// A port other than 443 on a custom deployment.
    pub allow_custom_port: bool,
}

/// Resolves the configured region (a name or a region's URL) or custom deployment URLs into
/// endpoints, refusing anything the policy does not allow.
pub fn resolve(
    region: Option<&str>,
    custom_api_url: Option<&str>,
    custom_iam_url: Option<&str>,
    policy: NetworkPolicy,
) -> Result<Endpoints, ConfigError> {
    match (
        region.map(str::trim).filter(|r| !r.is_empty()),
        custom_api_url.map(str::trim).filter(|u| !u.is_empty()),
    ) {
        (Some(_), Some(_)) => Err(ConfigError::new(
            "region",
            "both `region` and `custom_api_url` are set",
            "set `region` for a Checkmarx One region, or `custom_api_url` (with `custom_iam_url`) for a private deployment, not both",
        )),
        (None, None) => Err(ConfigError::new(
            "region",
            "no region is set",
            format!(
                "set `region` to one of {} or its URL (e.g. https://eu.ast.checkmarx.net)",
                region_names()
            ),
        )),
        (Some(region), None) => {
            if custom_iam_url.is_some_and(|u| !u.trim().is_empty()) {
                return Err(ConfigError::new(
                    "custom_iam_url",
                    "`custom_iam_url` is set for a public region",
                    "remove `custom_iam_url`: a region's IAM host is derived from the region",
                ));
            }
            let found = find_region(region).ok_or_else(|| {
                ConfigError::new(
                    "region",
                    format!("{} is not a Checkmarx One region", shown(region)),
                    format!(
                        "use one of {} or its URL (e.g. https://eu.ast.checkmarx.net); for a private deployment set `custom_api_url` instead",
                        region_names()
                    ),
                )
            })?;
            Ok(Endpoints {
                api: Url::parse(&format!("https://{}/", found.api_host))
                    .expect("table hosts are valid"),
                iam: Url::parse(&format!("https://{}/", found.iam_host))
                    .expect("table hosts are valid"),
                region: Some(found.name),
            })
        }
        (None, Some(api)) => {
            let api = checked_url("custom_api_url", api, policy)?;
            let iam = match custom_iam_url.map(str::trim).filter(|u| !u.is_empty()) {
                Some(iam) => checked_url("custom_iam_url", iam, policy)?,
                None => derive_iam(&api),
            };
            Ok(Endpoints {
                api,
                iam,
                region: None,
            })
        }
    }
}

/// A region by name or alias (any case), or by the URL of its API or IAM host.
fn find_region(text: &str) -> Option<&'static Region> {
    let by_name = REGIONS.iter().find(|r| {
        r.name.eq_ignore_ascii_case(text) || r.aliases.iter().any(|a| a.eq_ignore_ascii_case(text))
    });
    by_name.or_else(|| {
        let url = Url::parse(text).ok()?;
        let plain = url.scheme() == "https"
            && url.username().is_empty()
            && url.password().is_none()
            && url.port().is_none_or(|p| p == 443)
            && matches!(url.path(), "" | "/")
            && url.query().is_none();
        let host = url.host_str()?.to_ascii_lowercase();
        plain
            .then(|| {
                REGIONS
                    .iter()
                    .find(|r| r.api_host == host || r.iam_host == host)
            })
            .flatten()
    })
}

/// The IAM host of a private deployment, by Checkmarx's own rule: `ast.` → `iam.`; else the same host.
fn derive_iam(api: &Url) -> Url {
    let mut iam = api.clone();
    if let Some(host) = api.host_str() {
        let derived = if let Some(rest) = host.strip_prefix("ast.") {
            Some(format!("iam.{rest}"))
        } else {
            host.find(".ast.")
                .map(|at| format!("{}.iam.{}", &host[..at], &host[at + 5..]))
        };
        if let Some(derived) = derived {
            let _ = iam.set_host(Some(&derived));
        }
    }
    iam
}

/// A region or URL as an error may quote it: not where an `@` in it may follow a password
/// (`https://user:pass@host`).
fn shown(text: &str) -> String {
    if text.contains('@') {
        "the text (not shown: its `@` may follow a password)".to_string()
    } else {
        format!("'{text}'")
    }
}

/// Parses a base URL and applies the SSRF rules: HTTPS only (plain HTTP only to loopback when
/// allowed), no user info, no query or fragment, port 443 unless allowed, and no address that
/// reaches inside the network (loopback, private, link-local, metadata) unless it is the allowed
/// local loopback.
pub fn checked_url(
    field: &'static str,
    text: &str,
    policy: NetworkPolicy,
) -> Result<Url, ConfigError> {
    let url = Url::parse(text).map_err(|e| {
        ConfigError::new(
            field,
            format!("{} is not a URL ({e})", shown(text)),
            "give a full URL such as https://cxone.example.com",
        )
    })?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ConfigError::new(
            field,
            "the URL carries user info",
            "remove the `user:password@` part; credentials come from the secret",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ConfigError::new(
            field,
            "the URL has a query or fragment",
            "give only the scheme, host and optional path",
        ));
    }
    let host = url.host().ok_or_else(|| {
        ConfigError::new(
            field,
            "the URL has no host",
            "give a full URL such as https://cxone.example.com",
        )
    })?;
    let loopback = is_loopback_host(&host);
    match url.scheme() {
        "https" => {}
        "http" if loopback && policy.allow_insecure_local => {}
        "http" if loopback => {
            return Err(ConfigError::new(
                field,
                "plain HTTP is refused",
                "use https://, or set `allow_insecure_local` for a local emulator on loopback",
            ));
        }
        other => {
            return Err(ConfigError::new(
                field,
                format!("scheme '{other}' is refused"),
                "use https://",
            ));
        }
    }
    if let Some(ip) = host_ip(&host) {
        if let Some(reason) = forbidden_address(ip, policy) {
            return Err(ConfigError::new(
                field,
                format!("{ip} is {reason}"),
                "point the URL at the vendor's public host name",
            ));
        }
    } else if loopback && !policy.allow_insecure_local {
        return Err(ConfigError::new(
            field,
            "localhost is refused",
            "set `allow_insecure_local` for a local emulator on loopback",
        ));
    }
    // With `allow_insecure_local` any name may resolve to loopback, and the resolver cannot see
    // the port: the Runtime API's port is refused whatever the host.
    if (loopback || policy.allow_insecure_local)
        && url.port_or_known_default() == Some(lambda_runtime_api_port())
    {
        return Err(ConfigError::new(
            field,
            "the Lambda Runtime API's port on loopback is refused",
            "point the URL at the vendor, or at a local emulator on another port",
        ));
    }
    let port_ok = url.port().is_none_or(|p| p == 443)
        || policy.allow_custom_port
        || (loopback && policy.allow_insecure_local);
    if !port_ok {
        return Err(ConfigError::new(
            field,
            format!("port {} is refused", url.port().unwrap_or(443)),
            "use the standard HTTPS port 443, or set `allow_custom_port` for a private deployment that needs another",
        ));
    }
    Ok(url)
}

fn host_ip(host: &Host<&str>) -> Option<IpAddr> {
    match host {
        Host::Ipv4(ip) => Some(IpAddr::V4(*ip)),
        Host::Ipv6(ip) => Some(IpAddr::V6(*ip)),
        Host::Domain(_) => None,
    }
}

fn is_loopback_host(host: &Host<&str>) -> bool {
    match host {
        Host::Domain(name) => {
            // `localhost.` is the same name, fully qualified.
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            name == "localhost" || name.ends_with(".localhost")
        }
        other => host_ip(other).is_some_and(|ip| ip.is_loopback()),
    }
}

/// The Lambda Runtime API's port on this host (`AWS_LAMBDA_RUNTIME_API`, 9001 by default): a
/// function must never call it as a vendor, even with `allow_insecure_local`.
fn lambda_runtime_api_port() -> u16 {
    std::env::var("AWS_LAMBDA_RUNTIME_API")
        .ok()
        .and_then(|api| {
            let with_scheme = if api.contains("://") {
                api
            } else {
                format!("http://{api}")
            };
            Url::parse(&with_scheme).ok()?.port()
        })
        .unwrap_or(9001)
}

/// Why the client must not connect to `address`, if it must not: its IP (see
/// [`forbidden_address`]), or the Lambda Runtime API on loopback.
pub fn forbidden_socket(
    address: std::net::SocketAddr,
    policy: NetworkPolicy,
) -> Option<&'static str> {
    if address.ip().is_loopback() && address.port() == lambda_runtime_api_port() {
        return Some("the Lambda Runtime API (refused even with allow_insecure_local)");
    }
    forbidden_address(address.ip(), policy)
}

/// Why the client must not connect to `ip`, if it must not.
pub fn forbidden_address(ip: IpAddr, policy: NetworkPolicy) -> Option<&'static str> {
    let ip = match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    if ip.is_loopback() {
        return (!policy.allow_insecure_local).then_some(
            "a loopback address (only a local emulator with allow_insecure_local may use it)",
        );
    }
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip == Ipv4Addr::new(169, 254, 169, 254) || ip == Ipv4Addr::new(169, 254, 170, 2) {
        Some("a cloud metadata / credentials address")
    } else if ip.is_link_local() {
        Some("a link-local address")
    } else if ip.is_private() || (a == 100 && (64..128).contains(&b)) {
        Some("a private network address")
    } else if ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
    {
        Some("not a routable unicast address")
    } else {
        None
    }
}

/// The IPv4 addresses an IPv6 address carries and would reach: IPv4-compatible (`::a.b.c.d`),
/// NAT64 (`64:ff9b::/96`, `64:ff9b:1::/48`), 6to4 (`2002::/16`) and Teredo (`2001::/32`, server and
/// client).
fn embedded_v4(ip: Ipv6Addr) -> Vec<Ipv4Addr> {
    let s = ip.segments();
    let v4 = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    match s {
        [0, 0, 0, 0, 0, 0, hi, lo] if (hi, lo) != (0, 0) && (hi, lo) != (0, 1) => vec![v4(hi, lo)],
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] | [0x64, 0xff9b, 1, _, _, _, hi, lo] => vec![v4(hi, lo)],
        [0x2002, hi, lo, ..] => vec![v4(hi, lo)],
        [0x2001, 0, server_hi, server_lo, _, _, hi, lo] => {
            vec![v4(server_hi, server_lo), v4(!hi, !lo)]
        }
        _ => Vec::new(),
    }
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    for v4 in embedded_v4(ip) {
        if v4.is_loopback() {
            return Some("an IPv6 address that carries a loopback IPv4 address");
        }
        if forbidden_v4(v4).is_some() {
            return Some(
                "an IPv6 address that carries a forbidden IPv4 address (metadata, link-local, private or unroutable)",
            );
        }
    }
    if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        Some("a cloud metadata address")
    } else if first & 0xffc0 == 0xfe80 {
        Some("a link-local address")
    } else if first & 0xfe00 == 0xfc00 {
        Some("a private network address")
    } else if ip.is_unspecified() || ip.is_multicast() {
        Some("not a routable unicast address")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPEN: NetworkPolicy = NetworkPolicy {
        allow_insecure_local: false,
        allow_custom_port: false,
    };
    const LOCAL: NetworkPolicy = NetworkPolicy {
        allow_insecure_local: true,
        allow_custom_port: false,
    };

    #[test]
    fn every_region_resolves_by_name_alias_and_url() {
        for region in REGIONS {
            let by_name = resolve(Some(&region.name.to_lowercase()), None, None, OPEN).unwrap();
            assert_eq!(by_name.api.host_str(), Some(region.api_host));
            assert_eq!(by_name.iam.host_str(), Some(region.iam_host));
            assert_eq!(by_name.region, Some(region.name));
            let by_url = resolve(
                Some(&format!("https://{}/", region.api_host)),
                None,
                None,
                OPEN,
            )
            .unwrap();
            assert_eq!(by_url, by_name);
            let by_iam = resolve(
                Some(&format!("https://{}", region.iam_host)),
                None,
                None,
                OPEN,
            )
            .unwrap();
            assert_eq!(by_iam, by_name);
        }
        assert_eq!(
            resolve(Some("MEA"), None, None, OPEN).unwrap().region,
            Some("UAE")
        );
    }

    #[test]
    fn unknown_regions_and_conflicts_name_the_field_and_the_fix() {
        let e = resolve(Some("moon"), None, None, OPEN).unwrap_err();
        assert_eq!(e.field, "region");
        assert!(
            e.to_string()
                .contains("'moon' is not a Checkmarx One region")
                && e.to_string().contains("custom_api_url")
        );
        assert!(
            resolve(Some("https://evil.example.com"), None, None, OPEN).is_err(),
            "a URL outside the table is not a region"
        );
        // A region written as a URL with a password is refused without quoting it.
        let e = resolve(
            Some("https://admin:hunter2@eu.ast.checkmarx.net"),
            None,
            None,
            OPEN,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("not shown") && !e.contains("hunter2"), "{e}");
        assert!(
            resolve(Some("http://eu.ast.checkmarx.net"), None, None, OPEN).is_err(),
            "http:// is not a region URL"
        );
        assert_eq!(resolve(None, None, None, OPEN).unwrap_err().field, "region");
        assert!(
            resolve(Some("EU"), Some("https://cx.example.com"), None, OPEN)
                .unwrap_err()
                .problem
                .contains("both")
        );
        assert_eq!(
            resolve(Some("EU"), None, Some("https://iam.example.com"), OPEN)
                .unwrap_err()
                .field,
            "custom_iam_url"
        );
    }

    #[test]
    fn custom_deployments_derive_the_iam_host() {
        let e = resolve(None, Some("https://ast.cx.example.com"), None, OPEN).unwrap();
        assert_eq!(e.iam.as_str(), "https://iam.cx.example.com/");
        let e = resolve(None, Some("https://acme.ast.cxone.cloud"), None, OPEN).unwrap();
        assert_eq!(e.iam.host_str(), Some("acme.iam.cxone.cloud"));
        let e = resolve(
            None,
            Some("https://cx.example.com"),
            Some("https://login.example.com"),
            OPEN,
        )
        .unwrap();
        assert_eq!(e.iam.host_str(), Some("login.example.com"));
    }

    #[test]
    fn ssrf_shapes_are_refused_before_any_connection() {
        let refused = [
            ("http://cx.example.com", "scheme"),
            ("ftp://cx.example.com", "scheme"),
            ("https://user:pw@cx.example.com", "user info"),
            ("https://cx.example.com:8443", "port 8443"),
            ("https://127.0.0.1", "loopback"),
            ("https://localhost", "localhost"),
            ("https://10.1.2.3", "private"),
            ("https://192.168.0.10", "private"),
            ("https://172.20.0.1", "private"),
            ("https://100.64.0.1", "private"),
            ("https://169.254.169.254", "metadata"),
            ("https://169.254.170.2", "metadata"),
            ("https://169.254.1.1", "link-local"),
            ("https://[fd00:ec2::254]", "metadata"),
            ("https://[fe80::1]", "link-local"),
            ("https://[::ffff:10.0.0.1]", "private"),
            ("https://[::1]", "loopback"),
            ("https://0.0.0.0", "not a routable"),
            ("https://cx.example.com/?x=1", "query"),
            ("http://127.0.0.1:9001", "plain HTTP"),
        ];
        for (url, expected) in refused {
            let e = checked_url("custom_api_url", url, OPEN).unwrap_err();
            assert!(e.to_string().contains(expected), "{url}: {e}");
            assert_eq!(e.field, "custom_api_url");
        }
        // Text that is no URL is echoed, unless an `@` in it may follow a password.
        let e = checked_url(
            "custom_api_url",
            "https://user:hunter2@cx.example.com:99999",
            OPEN,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("not shown") && !e.contains("hunter2"), "{e}");
        let e = checked_url("custom_api_url", "cx.example.com", OPEN)
            .unwrap_err()
            .to_string();
        assert!(e.contains("'cx.example.com' is not a URL"), "{e}");
        let runtime_api =
            checked_url("custom_api_url", "http://127.0.0.1:9001", LOCAL).unwrap_err();
        assert!(
            runtime_api.to_string().contains("Lambda Runtime API"),
            "{runtime_api}"
        );
        assert!(checked_url("custom_api_url", "http://127.0.0.1:9002", LOCAL).is_ok());
        let local_any_port = NetworkPolicy {
            allow_custom_port: true,
            ..LOCAL
        };
        for url in [
            "http://localhost.:9001",
            "https://localhost.:9001",
            "https://runtime.example.com:9001",
        ] {
            let refused = checked_url("custom_api_url", url, local_any_port).unwrap_err();
            assert!(
                refused.to_string().contains("Lambda Runtime API"),
                "{url}: {refused}"
            );
        }
        for (url, expected) in [
            ("https://[64:ff9b::a00:1]", "carries a forbidden IPv4"),
            ("https://[64:ff9b:1::a9fe:a9fe]", "carries a forbidden IPv4"),
            ("https://[::a9fe:a9fe]", "carries a forbidden IPv4"),
            ("https://[2002:a9fe:a9fe::1]", "carries a forbidden IPv4"),
            ("https://[2002:7f00:1::1]", "carries a loopback"),
            ("https://[2001:0:a9fe:a9fe::1]", "carries a forbidden IPv4"),
            (
                "https://[2001:0:4136:e378:8000:63bf:f5ff:fffe]",
                "carries a forbidden IPv4",
            ),
        ] {
            let e = checked_url("custom_api_url", url, LOCAL).unwrap_err();
            assert!(e.to_string().contains(expected), "{url}: {e}");
        }
        // An address that carries a public IPv4 address stays allowed.
        assert!(checked_url("custom_api_url", "https://[2002:0808:0808::1]", OPEN).is_ok());
        assert!(checked_url("custom_api_url", "http://localhost:8080", LOCAL).is_ok());
        assert!(
            checked_url("custom_api_url", "http://10.0.0.1", LOCAL).is_err(),
            "local means loopback only"
        );
        assert!(checked_url("custom_api_url", "https://169.254.169.254", LOCAL).is_err());
        let port_ok = NetworkPolicy {
            allow_custom_port: true,
            ..OPEN
        };
        assert!(checked_url("custom_api_url", "https://cx.example.com:8443", port_ok).is_ok());
    }
}
