//! The mistakes a user can make when connecting to this tenant, each with the connection-test
//! check that must catch it and what that check must say: one table, run through the library, the
//! CLI and the Lambda route.

use serde_json::json;

use crate::Emulator;

/// A connection set up wrong in one way.
#[derive(Clone, Debug)]
pub struct Mistake {
    pub what: &'static str,
    pub api_url: String,
    pub iam_url: String,
    pub tenant: String,
    /// The secret's JSON, as Secrets Manager or a file holds it (test values only).
    pub secret: String,
    /// `sast` or `dast`.
    pub kind: &'static str,
    /// The check that fails, from 0 (network) to 4 (data fetch); the ones before pass or are
    /// skipped, the ones after are skipped.
    pub fails: usize,
    /// Text the failing check's detail holds.
    pub detail: String,
    /// Text its fix holds.
    pub fix: &'static str,
}

impl Emulator {
    /// Every mistake this emulator can show, but TLS (which needs an HTTPS emulator).
    pub fn mistakes(&self) -> Vec<Mistake> {
        let closed_port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            let port = listener.local_addr().expect("bound").port();
            format!("http://127.0.0.1:{port}")
        };
        let c = &self.credentials;
        let api_key = |key: &str| json!({ "api_key": key }).to_string();
        let client = |id: &str, secret: &str| {
            json!({ "client_id": id, "client_secret": secret }).to_string()
        };
        let base = Mistake {
            what: "",
            api_url: self.api_url.clone(),
            iam_url: self.iam_url.clone(),
            tenant: self.tenant.clone(),
            secret: api_key(&c.api_key),
            kind: "sast",
            fails: 2,
            detail: String::new(),
            fix: "",
        };
        let region_fix = "check the region";
        let tenant_fix = "set the region and tenant the credential was issued for";
        let new_key = "create a new API key";
        vec![
            Mistake {
                what: "a closed port",
                api_url: closed_port.clone(),
                iam_url: closed_port,
                fails: 0,
                detail: "cannot connect to 127.0.0.1".into(),
                fix: region_fix,
                ..base.clone()
            },
            Mistake {
                what: "a host that does not exist",
                api_url: "https://no-such-host.invalid".into(),
                iam_url: "https://no-such-host.invalid".into(),
                fails: 0,
                detail: "no-such-host.invalid".into(),
                fix: region_fix,
                ..base.clone()
            },
            Mistake {
                what: "the API host given as the IAM host (a wrong region)",
                iam_url: self.api_url.clone(),
                secret: client(&c.client_id, &c.client_secret),
                detail: "does not serve Checkmarx One tokens".into(),
                fix: tenant_fix,
                ..base.clone()
            },
            Mistake {
                what: "an API key of another tenant",
                tenant: format!("{}-typo", self.tenant),
                detail: format!("{}-typo", self.tenant),
                fix: tenant_fix,
                ..base.clone()
            },
            Mistake {
                what: "an OAuth client and a tenant that does not exist",
                tenant: "globex".into(),
                secret: client(&c.client_id, &c.client_secret),
                kind: "dast",
                detail: "tenant 'globex' does not exist".into(),
                fix: "set the tenant name exactly as Checkmarx One shows it",
                ..base.clone()
            },
            Mistake {
                what: "a revoked API key",
                secret: api_key("revoked-key"),
                detail: "the API key was rejected".into(),
                fix: new_key,
                ..base.clone()
            },
            Mistake {
                what: "an expired API key",
                secret: api_key(&c.api_key_expired),
                detail: "the API key expired at 2026-01-06T00:00:00Z".into(),
                fix: new_key,
                ..base.clone()
            },
            Mistake {
                what: "a wrong client secret",
                secret: client(&c.client_id, "not-the-secret"),
                kind: "dast",
                detail: "the OAuth client id or secret was rejected".into(),
                fix: "check the OAuth client id and secret",
                ..base.clone()
            },
            Mistake {
                what: "a client id that does not exist",
                secret: client("nobody", &c.client_secret),
                detail: "the OAuth client id or secret was rejected".into(),
                fix: "check the OAuth client id and secret",
                ..base.clone()
            },
            Mistake {
                what: "a SAST connection whose key may not read results",
                secret: api_key(&c.api_key_no_results),
                fails: 3,
                detail: "GET /api/results (403), GET /api/sast-results (403)".into(),
                fix: "view-results role",
                ..base.clone()
            },
            Mistake {
                what: "a DAST connection whose client may not read DAST",
                secret: client(&c.client_id_no_dast, &c.client_secret_no_dast),
                kind: "dast",
                fails: 3,
                detail: "GET /api/dast/scans/environments (403)".into(),
                fix: "give the credential a DAST role that can view environments, scans and results",
                ..base
            },
        ]
    }
}

impl Mistake {
    /// The connection's `vendor` settings, as a config document holds them.
    pub fn vendor(&self) -> serde_json::Value {
        json!({
            "custom_api_url": self.api_url,
            "custom_iam_url": self.iam_url,
            "tenant": self.tenant,
            "allow_insecure_local": true,
            "connect_timeout_secs": 2,
        })
    }

    /// Whether a connection report (as JSON) catches this mistake: the checks before the failing
    /// one did not fail, the later ones were skipped, the failing one names the cause and the fix
    /// (each once: the detail does not repeat the fix), and no secret value is in it.
    pub fn check_report(&self, report: &serde_json::Value) -> Result<(), String> {
        let checks = report["checks"]
            .as_array()
            .ok_or("the report has no checks")?;
        let statuses: Vec<&str> = checks
            .iter()
            .map(|c| c["status"].as_str().unwrap_or("?"))
            .collect();
        let shaped = statuses.len() == 5
            && statuses[..self.fails].iter().all(|s| *s != "fail")
            && statuses[self.fails] == "fail"
            && statuses[self.fails + 1..].iter().all(|s| *s == "skipped");
        let failed = &checks[self.fails];
        let detail = failed["detail"].as_str().unwrap_or_default();
        let fix = failed["fix"].as_str().unwrap_or_default();
        let problems = [
            (!shaped).then(|| format!("statuses {statuses:?}")),
            (report["passed"] != false).then(|| "the report passed".to_string()),
            (!detail.contains(&self.detail)).then(|| format!("the detail lacks '{}'", self.detail)),
            (!fix.contains(self.fix)).then(|| format!("the fix lacks '{}'", self.fix)),
            fix.split("; ")
                .any(|clause| !clause.is_empty() && detail.contains(clause))
                .then(|| "the detail repeats the fix".to_string()),
            serde_json::from_str::<serde_json::Value>(&self.secret)
                .ok()
                .and_then(|secret| {
                    let text = report.to_string();
                    ["api_key", "client_secret"]
                        .iter()
                        .filter_map(|field| secret[field].as_str())
                        .any(|value| value.len() > 8 && text.contains(value))
                        .then(|| "a secret value is in the report".to_string())
                }),
        ];
        let problems: Vec<String> = problems.into_iter().flatten().collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{}: {} in {report}",
                self.what,
                problems.join("; ")
            ))
        }
    }
}
