//! Links back into the Checkmarx One web app, for a person reading a finding in ETM: the result
//! viewer and the scan. The formats are not in the API's documentation; they are what Checkmarx's
//! own integrations and users' ticket templates build (checkmarx-one-api.md, "Links back to
//! results"), so they are kept here, in one place, with a test of each.

use url::Url;

/// What the links of one scan's findings are built from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanLinks {
    /// The tenant's AST base (`https://eu.ast.checkmarx.net`).
    pub base: Url,
    pub scan_id: String,
    /// The project (SAST); DAST scans belong to an environment.
    pub project_id: Option<String>,
    /// The scan's branch (SAST), when known.
    pub branch: Option<String>,
}

impl ScanLinks {
    /// The base with `segments` appended, each one segment whatever it holds (the url crate
    /// escapes `/`, `?`, `#` and spaces). A `.` or `..` segment has no escaped form a browser
    /// would not resolve (`%2E%2E` is `..` to a URL parser), and an empty one would shift the
    /// others, so such an id gets no link: better none than one that opens another page.
    fn at(&self, segments: &[&str]) -> Option<Url> {
        if segments.iter().any(|s| matches!(*s, "" | "." | "..")) {
            return None;
        }
        let mut url = self.base.clone();
        url.set_query(None);
        url.set_fragment(None);
        url.path_segments_mut()
            .ok()?
            .pop_if_empty()
            .extend(segments);
        Some(url)
    }

    /// `{base}/results/{scanId}/{projectId}/sast?result-id={resultHash}`: the SAST result viewer.
    /// `None` without a project.
    pub fn sast_result(&self, result_hash: &str) -> Option<String> {
        let project = self.project_id.as_deref()?;
        let mut url = self.at(&["results", &self.scan_id, project, "sast"])?;
        url.query_pairs_mut().append_pair("result-id", result_hash);
        Some(url.into())
    }

    /// `{base}/scans?id={scanId}&branch={branch}`: the scan's page.
    pub fn scan(&self) -> Option<String> {
        let mut url = self.at(&["scans"])?;
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("id", &self.scan_id);
            if let Some(branch) = &self.branch {
                query.append_pair("branch", branch);
            }
        }
        Some(url.into())
    }
}

/// One scan's links built once, for every finding of an item: the scan's page, and the result
/// viewer's URL up to the result hash, which each finding appends (escaped as
/// [`ScanLinks::sast_result`] escapes it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ItemLinks {
    scan: Option<String>,
    result_prefix: Option<String>,
}

impl From<&ScanLinks> for ItemLinks {
    fn from(links: &ScanLinks) -> Self {
        // The viewer's URL with an empty result id ends in `result-id=`.
        let result_prefix = links.sast_result("");
        Self {
            scan: links.scan(),
            result_prefix,
        }
    }
}

impl ItemLinks {
    pub fn scan(&self) -> Option<&str> {
        self.scan.as_deref()
    }

    pub fn sast_result(&self, result_hash: &str) -> Option<String> {
        let prefix = self.result_prefix.as_deref()?;
        let mut url = String::with_capacity(prefix.len() + result_hash.len() * 2);
        url.push_str(prefix);
        url.extend(url::form_urlencoded::byte_serialize(result_hash.as_bytes()));
        Some(url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links(base: &str, project: &str) -> ScanLinks {
        ScanLinks {
            base: Url::parse(base).unwrap(),
            scan_id: "b1f2c3d4-0000-4000-8000-000000000001".into(),
            project_id: Some(project.into()),
            branch: Some("release/2.0".into()),
        }
    }

    #[test]
    fn a_sast_result_link_escapes_the_result_hash_and_names_scan_then_project() {
        let l = links("https://eu.ast.checkmarx.net", "p-1");
        assert_eq!(
            l.sast_result("kSWz+lub/J2c5=").unwrap(),
            "https://eu.ast.checkmarx.net/results/b1f2c3d4-0000-4000-8000-000000000001/p-1/sast?result-id=kSWz%2Blub%2FJ2c5%3D"
        );
        assert_eq!(
            l.scan().unwrap(),
            "https://eu.ast.checkmarx.net/scans?id=b1f2c3d4-0000-4000-8000-000000000001&branch=release%2F2.0"
        );
    }

    #[test]
    fn links_built_once_per_item_are_the_links_built_per_finding() {
        for project in ["p-1", "a/../b c", ".."] {
            let scan = links("https://cx.example.com/ast/", project);
            let item = ItemLinks::from(&scan);
            assert_eq!(item.scan(), scan.scan().as_deref());
            for hash in ["kSWz+lub/J2c5=", "a b&c", "é", ""] {
                assert_eq!(
                    item.sast_result(hash),
                    scan.sast_result(hash),
                    "{project} {hash}"
                );
            }
        }
    }

    #[test]
    fn hostile_ids_stay_one_segment_and_a_base_path_is_kept() {
        let l = links("https://cx.example.com/ast/", "a/../b c");
        let url = l.sast_result("h").unwrap();
        assert_eq!(
            url,
            "https://cx.example.com/ast/results/b1f2c3d4-0000-4000-8000-000000000001/a%2F..%2Fb%20c/sast?result-id=h"
        );
        let dotted = links("https://cx.example.com", "..");
        assert_eq!(
            dotted.sast_result("h"),
            None,
            "a `..` id would climb out of the path: no link rather than a wrong one"
        );
        assert!(dotted.scan().is_some(), "the scan's link names no project");
        let empty = links("https://cx.example.com", "");
        assert_eq!(
            empty.sast_result("h"),
            None,
            "an empty id shifts no segment"
        );
        let without_project = ScanLinks {
            project_id: None,
            ..dotted
        };
        assert_eq!(without_project.sast_result("h"), None);
    }
}
