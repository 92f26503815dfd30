//! What a transform map may read (vendor source paths) and write (ETM target paths), per connector
//! kind. Maps are checked against these lists when they are loaded.

use crate::ConnectorKind;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Asset,
    Finding,
}

/// The type a target holds; values are coerced to it or flagged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueType {
    Text,
    /// Whole number (`"CWE-79"` and `"79"` become 79).
    Integer,
    /// ETM severity 1–5.
    Severity,
    /// A CWE id, a whole number from 1 (`"CWE-79"` and `"79"` become 79). Checkmarx writes "no
    /// CWE" as -1 (DAST's `cwe_id: "-1"`) or 0: such values are left out and flagged.
    Cwe,
    /// ETM finding status: NEW, ACTIVE, FIXED, REOPENED (also PROTECTED, RETEST).
    Status,
    /// RFC 3339 time stamp.
    DateTime,
    /// A list of texts (a single text becomes a one-element list).
    List,
}

#[derive(Debug)]
pub struct Target {
    /// The path as maps write it (`findingGroup.findings[].name`).
    pub path: &'static str,
    pub ty: ValueType,
    pub scope: Scope,
    /// A map must fill it.
    pub required: bool,
}

pub struct Catalog {
    pub kind: ConnectorKind,
    /// The array of findings in source paths (`findings` → `findings[].id`).
    pub finding_array: &'static str,
    /// Sources on the project / environment record.
    pub asset_sources: &'static [&'static str],
    /// Source prefixes that accept any key below them (`tags.team`).
    pub open_asset_prefixes: &'static [&'static str],
    /// Sources on each finding record, without the `findings[].` prefix.
    pub finding_sources: &'static [&'static str],
    pub targets: &'static [Target],
}

pub const FINDING_PREFIX: &str = "findingGroup.findings[].";

const fn asset(path: &'static str, ty: ValueType, required: bool) -> Target {
    Target {
        path,
        ty,
        scope: Scope::Asset,
        required,
    }
}

const fn finding(path: &'static str, ty: ValueType, required: bool) -> Target {
    Target {
        path,
        ty,
        scope: Scope::Finding,
        required,
    }
}

use ValueType::*;

pub static SAST: Catalog = Catalog {
    kind: ConnectorKind::Sast,
    finding_array: "findings",
    asset_sources: &[
        "id",
        "name",
        "createdAt",
        "updatedAt",
        "repoUrl",
        "mainBranch",
        "origin",
        "criticality",
        "groups",
        "tenantId",
        "applicationIds",
    ],
    open_asset_prefixes: &["tags."],
    finding_sources: &[
        "type",
        "label",
        "id",
        "similarityId",
        "alternateId",
        "status",
        "state",
        "severity",
        "confidenceLevel",
        "created",
        "firstFoundAt",
        "foundAt",
        "firstScanId",
        "description",
        "descriptionHTML",
        "data.queryId",
        "data.queryName",
        "data.group",
        "data.resultHash",
        "data.languageName",
        "vulnerabilityDetails.cweId",
        "vulnerabilityDetails.compliances",
    ],
    targets: &[
        asset("externalAssetId", Text, true),
        asset("vendorAssetId", Text, false),
        asset("asset.assetDetail.name", Text, true),
        asset(
            "asset.assetDetail.genericApplicationAssetClass.name",
            Text,
            false,
        ),
        asset("asset.assetDetail.sourceCreatedAt", DateTime, false),
        asset("asset.assetDetail.description", Text, false),
        finding("findingGroup.findings[].externalFindingId", Text, true),
        finding("findingGroup.findings[].subCategory", Text, false),
        finding("findingGroup.findings[].findingStatus", Status, false),
        finding("findingGroup.findings[].severity", Severity, false),
        finding("findingGroup.findings[].firstFoundOn", DateTime, false),
        finding("findingGroup.findings[].lastFoundOn", DateTime, false),
        finding("findingGroup.findings[].description", Text, false),
        finding("findingGroup.findings[].name", Text, false),
        finding("findingGroup.findings[].category", Text, false),
        finding(
            "findingGroup.findings[].findingType.vulnerability.cweId",
            Cwe,
            false,
        ),
        finding("findingGroup.findings[].compliances", List, false),
        finding("findingGroup.findings[].language", Text, false),
    ],
};

pub static DAST: Catalog = Catalog {
    kind: ConnectorKind::Dast,
    finding_array: "scanResults",
    asset_sources: &[
        "environmentId",
        "domain",
        "url",
        "scanType",
        "created",
        "riskRating",
        "lastScanID",
        "projectIds",
        "groups",
    ],
    open_asset_prefixes: &[],
    finding_sources: &[
        "id",
        "severity",
        "state",
        "status",
        "name",
        "description",
        "solution",
        "url",
        "method",
        "path",
        "cwe_id",
        "owasp",
        "scan_type",
        "environment_id",
    ],
    targets: &[
        asset("externalAssetId", Text, false),
        asset("asset.webAppUrl", Text, true),
        asset("asset.webAppName", Text, false),
        finding("findingGroup.findings[].externalFindingId", Text, true),
        finding("findingGroup.findings[].findingName", Text, false),
        finding("findingGroup.findings[].findingSeverity", Severity, false),
        finding("findingGroup.findings[].findingStatus", Status, false),
        finding("findingGroup.findings[].findingDescription", Text, false),
        finding("findingGroup.findings[].recommendation", Text, false),
        finding("findingGroup.findings[].cweId", Cwe, false),
        finding("findingGroup.findings[].owaspTop10Name", Text, false),
        finding("findingGroup.findings[].sourceFindingURL", Text, false),
        finding("findingGroup.findings[].detectionMethod", Text, false),
        finding("findingGroup.findings[].httpMethod", Text, false),
    ],
};

pub fn catalog(kind: ConnectorKind) -> &'static Catalog {
    match kind {
        ConnectorKind::Sast => &SAST,
        ConnectorKind::Dast => &DAST,
    }
}

impl Catalog {
    pub fn target(&self, path: &str) -> Option<&'static Target> {
        self.targets.iter().find(|t| t.path == path)
    }

    /// The scope of a source path, if it is one this kind knows.
    pub fn source_scope(&self, path: &str) -> Option<Scope> {
        let prefix = format!("{}[].", self.finding_array);
        if let Some(rest) = path.strip_prefix(&prefix) {
            return self
                .finding_sources
                .contains(&rest)
                .then_some(Scope::Finding);
        }
        let open = self
            .open_asset_prefixes
            .iter()
            .any(|p| path.strip_prefix(p).is_some_and(|k| !k.is_empty()));
        (self.asset_sources.contains(&path) || open).then_some(Scope::Asset)
    }
}
