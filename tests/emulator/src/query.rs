//! Query strings as real clients send them: array parameters either as repeated keys
//! (`statuses=A&statuses=B`) or comma-joined (`statuses=A,B`), both accepted.

use crate::error::{ApiError, Style};

pub struct Params(Vec<(String, String)>);

impl Params {
    pub fn parse(query: Option<&str>) -> Self {
        Self(
            form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .into_owned()
                .collect(),
        )
    }

    /// The last value given for `key`.
    pub fn one(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value given for `key`, repeated or comma-joined.
    pub fn list(&self, key: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .flat_map(|(_, v)| v.split(','))
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect()
    }

    /// The first value among several spellings of one key (`match[scantype]`, `match.scantype`).
    pub fn any_of(&self, keys: &[&str]) -> Option<&str> {
        keys.iter().find_map(|k| self.one(k))
    }

    pub fn u64(&self, key: &str, default: u64, style: Style) -> Result<u64, ApiError> {
        match self.one(key) {
            None | Some("") => Ok(default),
            Some(v) => v.parse().map_err(|_| {
                ApiError::bad_request(
                    style,
                    format!("query parameter '{key}' must be a non-negative integer, got '{v}'"),
                )
            }),
        }
    }

    pub fn bool(&self, key: &str, default: bool, style: Style) -> Result<bool, ApiError> {
        match self.one(key) {
            None | Some("") => Ok(default),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
            Some(v) => Err(ApiError::bad_request(
                style,
                format!("query parameter '{key}' must be true or false, got '{v}'"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_come_repeated_or_comma_joined() {
        let p = Params::parse(Some("statuses=A&statuses=B,C&x=1&x=2&empty="));
        assert_eq!(p.list("statuses"), vec!["A", "B", "C"]);
        assert_eq!(p.one("x"), Some("2"));
        assert!(p.list("empty").is_empty());
        assert!(p.u64("x", 0, Style::Ast).is_ok());
        assert!(
            p.u64("statuses", 0, Style::Ast)
                .unwrap_err()
                .message
                .contains("'statuses'")
        );
    }
}
