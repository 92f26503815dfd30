//! What a transform map may read (vendor source paths) and write (ETM target paths), per connector
//! kind. Maps are checked against these lists when they are loaded.

use crate::Engine;

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
    /// A list of texts written as one, comma-separated (an empty list is no value).
    Joined,
    /// Tags as a list of texts: `{"team": "payments", "pci": ""}` becomes `["team:payments",
    /// "pci"]`; a list of names (or of `{"name": …}` objects) stays a list of names.
    Tags,
    /// A custom attribute: a text, number, boolean or list of texts, as the vendor sent it.
    Attribute,
    /// A number, whole or not (a CVSS score).
    Number,
    /// `true` or `false` (also from the texts `"true"` and `"false"`).
    Boolean,
    /// A CVSS vector: a text as sent, or built from the metrics of a CVSS object
    /// (`{"attackVector": "NETWORK", …}` becomes `AV:N/…`); an empty object is no value.
    CvssVector,
    /// SCA dependency paths (lists of packages from the project down to the vulnerable one),
    /// each written as one text of names joined by ` > `.
    DependencyPaths,
    /// A list of texts, or of objects named by `fullName`, `methodName` or `name` (the first
    /// present), as names.
    Names,
}

/// A source the connector computes instead of reading it from the record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Computed {
    /// The result in Checkmarx One's result viewer (SAST).
    ResultLink,
    /// The scan the finding came from, in Checkmarx One.
    ScanLink,
    /// SCA: the package's ecosystem (`Npm`, `Maven`), the first part of its identifier
    /// (`Npm-jquery-2.1.4`).
    PackageEcosystem,
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
    pub kind: Engine,
    /// The array of findings in source paths (`findings` → `findings[].id`).
    pub finding_array: &'static str,
    /// Sources on the project / environment record.
    pub asset_sources: &'static [&'static str],
    /// Source prefixes that accept any key below them (`tags.team`).
    pub open_asset_prefixes: &'static [&'static str],
    /// Sources on each finding record, without the `findings[].` prefix, in groups (the fields
    /// every engine's records share, then the engine's own).
    pub finding_sources: &'static [&'static [&'static str]],
    /// Finding sources the connector computes (`connector.resultLink`).
    pub computed_sources: &'static [(&'static str, Computed)],
    /// Targets, in groups (the asset's, the findings every engine fills, the engine's own).
    pub targets: &'static [&'static [Target]],
}

/// Where custom attributes go: any name below these prefixes is a target of type `Attribute`.
pub const ASSET_ATTRIBUTES: &str = "asset.customAttributes.";
pub const FINDING_ATTRIBUTES: &str = "findingGroup.findings[].customAttributes.";
static ASSET_ATTRIBUTE: Target =
    asset("asset.customAttributes.<name>", ValueType::Attribute, false);
static FINDING_ATTRIBUTE: Target = finding(
    "findingGroup.findings[].customAttributes.<name>",
    ValueType::Attribute,
    false,
);

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

/// A project record's fields, the asset of every project engine's findings.
const PROJECT_SOURCES: &[&str] = &[
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
    "tags",
];

/// Fields every `/api/results` record has, whatever its engine.
const RESULT_SOURCES: &[&str] = &[
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
];

const PROJECT_ASSET_TARGETS: &[Target] = &[
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
    asset("asset.tags", Tags, false),
    asset("asset.groups", List, false),
    asset("asset.applications", List, false),
    asset("asset.mainBranch", Text, false),
    asset("asset.repositoryUrl", Text, false),
    asset("asset.criticality", Integer, false),
];

/// Finding targets every project engine fills alike.
const RESULT_TARGETS: &[Target] = &[
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
    finding("findingGroup.findings[].vendorScanURL", Text, false),
];

/// Sources of a known vulnerability (SCA, containers): its CWE, CVE and CVSS.
const CVE_SOURCES: &[&str] = &[
    "vulnerabilityDetails.cweId",
    "vulnerabilityDetails.cveName",
    "vulnerabilityDetails.cvssScore",
    "vulnerabilityDetails.cvss",
];

/// The vulnerable package's name and version (SCA, containers).
const PACKAGE_TARGETS: &[Target] = &[
    finding("findingGroup.findings[].package.name", Text, false),
    finding("findingGroup.findings[].package.version", Text, false),
];

/// Targets of a known vulnerability (SCA, containers): its CVE and CVSS.
const CVE_TARGETS: &[Target] = &[
    finding(
        "findingGroup.findings[].findingType.vulnerability.cveId",
        Text,
        false,
    ),
    finding(
        "findingGroup.findings[].findingType.vulnerability.cvssScore",
        Number,
        false,
    ),
    finding(
        "findingGroup.findings[].findingType.vulnerability.cvssVector",
        CvssVector,
        false,
    ),
];

pub static SAST: Catalog = Catalog {
    kind: Engine::Sast,
    finding_array: "findings",
    asset_sources: PROJECT_SOURCES,
    open_asset_prefixes: &["tags."],
    finding_sources: &[
        RESULT_SOURCES,
        &[
            "data.queryId",
            "data.queryName",
            "data.group",
            "data.resultHash",
            "data.languageName",
            // The data flow's first node is the source, its last the sink.
            "data.nodes[first].fileName",
            "data.nodes[first].line",
            "data.nodes[first].column",
            "data.nodes[first].method",
            "data.nodes[first].name",
            "data.nodes[last].fileName",
            "data.nodes[last].line",
            "data.nodes[last].column",
            "data.nodes[last].method",
            "data.nodes[last].name",
            "vulnerabilityDetails.cweId",
            "vulnerabilityDetails.compliances",
        ],
    ],
    computed_sources: &[
        ("connector.resultLink", Computed::ResultLink),
        ("connector.scanLink", Computed::ScanLink),
    ],
    targets: &[
        PROJECT_ASSET_TARGETS,
        RESULT_TARGETS,
        &[
            finding("findingGroup.findings[].compliances", List, false),
            finding("findingGroup.findings[].language", Text, false),
            finding("findingGroup.findings[].queryGroup", Text, false),
            finding("findingGroup.findings[].source.file", Text, false),
            finding("findingGroup.findings[].source.line", Integer, false),
            finding("findingGroup.findings[].source.column", Integer, false),
            finding("findingGroup.findings[].source.method", Text, false),
            finding("findingGroup.findings[].sink.file", Text, false),
            finding("findingGroup.findings[].sink.line", Integer, false),
            finding("findingGroup.findings[].sink.column", Integer, false),
            finding("findingGroup.findings[].sink.method", Text, false),
            finding("findingGroup.findings[].vendorFindingURL", Text, false),
        ],
    ],
};

pub static SCA: Catalog = Catalog {
    kind: Engine::Sca,
    finding_array: "findings",
    asset_sources: PROJECT_SOURCES,
    open_asset_prefixes: &["tags."],
    finding_sources: &[
        RESULT_SOURCES,
        &[
            "scaType",
            "data.packageIdentifier",
            "data.packageName",
            "data.packageVersion",
            "data.packageData",
            "data.recommendedVersion",
            "data.publishedAt",
            "data.exploitableMethods",
            "data.scaPackageData.id",
            "data.scaPackageData.fixLink",
            "data.scaPackageData.locations",
            "data.scaPackageData.dependencyPaths",
            "data.scaPackageData.isDirectDependency",
            "data.scaPackageData.typeOfDependency",
            "data.scaPackageData.outdated",
        ],
        CVE_SOURCES,
    ],
    computed_sources: &[
        ("connector.scanLink", Computed::ScanLink),
        ("connector.packageEcosystem", Computed::PackageEcosystem),
    ],
    targets: &[
        PROJECT_ASSET_TARGETS,
        RESULT_TARGETS,
        CVE_TARGETS,
        PACKAGE_TARGETS,
        &[
            finding("findingGroup.findings[].package.identifier", Text, false),
            finding("findingGroup.findings[].package.ecosystem", Text, false),
            finding("findingGroup.findings[].package.direct", Boolean, false),
            finding(
                "findingGroup.findings[].package.dependencyPaths",
                DependencyPaths,
                false,
            ),
            finding("findingGroup.findings[].package.locations", List, false),
            finding("findingGroup.findings[].recommendedVersion", Text, false),
            finding("findingGroup.findings[].fixLink", Text, false),
            finding("findingGroup.findings[].publishedOn", DateTime, false),
            finding("findingGroup.findings[].exploitableMethods", Names, false),
        ],
    ],
};

pub static KICS: Catalog = Catalog {
    kind: Engine::Kics,
    finding_array: "findings",
    asset_sources: PROJECT_SOURCES,
    open_asset_prefixes: &["tags."],
    finding_sources: &[
        RESULT_SOURCES,
        &[
            "data.queryId",
            "data.queryName",
            "data.group",
            "data.line",
            "data.platform",
            "data.issueType",
            "data.expectedValue",
            "data.value",
            "data.filename",
            // Some tenants spell it with a capital N.
            "data.fileName",
        ],
    ],
    computed_sources: &[("connector.scanLink", Computed::ScanLink)],
    targets: &[
        PROJECT_ASSET_TARGETS,
        RESULT_TARGETS,
        &[
            finding("findingGroup.findings[].queryGroup", Text, false),
            finding("findingGroup.findings[].platform", Text, false),
            finding("findingGroup.findings[].location.file", Text, false),
            finding("findingGroup.findings[].location.line", Integer, false),
            finding("findingGroup.findings[].issueType", Text, false),
            finding("findingGroup.findings[].expectedValue", Text, false),
            finding("findingGroup.findings[].actualValue", Text, false),
        ],
    ],
};

pub static CONTAINERS: Catalog = Catalog {
    kind: Engine::Containers,
    finding_array: "findings",
    asset_sources: PROJECT_SOURCES,
    open_asset_prefixes: &["tags."],
    finding_sources: &[
        RESULT_SOURCES,
        &[
            "data.packageName",
            "data.packageVersion",
            "data.imageName",
            "data.imageTag",
            "data.imageFilePath",
            "data.imageOrigin",
            "data.publishedAt",
        ],
        CVE_SOURCES,
    ],
    computed_sources: &[("connector.scanLink", Computed::ScanLink)],
    targets: &[
        PROJECT_ASSET_TARGETS,
        RESULT_TARGETS,
        CVE_TARGETS,
        PACKAGE_TARGETS,
        &[
            finding("findingGroup.findings[].image.name", Text, false),
            finding("findingGroup.findings[].image.tag", Text, false),
            finding("findingGroup.findings[].image.filePath", Text, false),
            finding("findingGroup.findings[].image.origin", Text, false),
            finding("findingGroup.findings[].publishedOn", DateTime, false),
        ],
    ],
};

pub static DAST: Catalog = Catalog {
    kind: Engine::Dast,
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
        "tags",
    ],
    open_asset_prefixes: &[],
    finding_sources: &[&[
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
    ]],
    computed_sources: &[("connector.scanLink", Computed::ScanLink)],
    targets: &[&[
        asset("externalAssetId", Text, false),
        asset("asset.webAppUrl", Text, true),
        asset("asset.webAppName", Text, false),
        asset("asset.tags", Tags, false),
        asset("asset.groups", List, false),
        asset("asset.scanType", Text, false),
        finding("findingGroup.findings[].externalFindingId", Text, true),
        finding("findingGroup.findings[].findingName", Text, false),
        finding("findingGroup.findings[].findingSeverity", Severity, false),
        finding("findingGroup.findings[].findingStatus", Status, false),
        finding("findingGroup.findings[].findingDescription", Text, false),
        finding("findingGroup.findings[].recommendation", Text, false),
        finding("findingGroup.findings[].cweId", Cwe, false),
        finding("findingGroup.findings[].owaspTop10Name", Joined, false),
        finding("findingGroup.findings[].sourceFindingURL", Text, false),
        finding("findingGroup.findings[].detectionMethod", Text, false),
        finding("findingGroup.findings[].httpMethod", Text, false),
        finding("findingGroup.findings[].vendorScanURL", Text, false),
    ]],
};

pub fn catalog(kind: Engine) -> &'static Catalog {
    match kind {
        Engine::Sast => &SAST,
        Engine::Sca => &SCA,
        Engine::Kics => &KICS,
        Engine::Containers => &CONTAINERS,
        Engine::Dast => &DAST,
    }
}

impl Catalog {
    /// The target at `path`: one of the kind's, or a custom attribute (`asset.customAttributes.x`,
    /// `findingGroup.findings[].customAttributes.x`, one name without dots).
    pub fn target(&self, path: &str) -> Option<&'static Target> {
        let custom = |prefix: &str| {
            path.strip_prefix(prefix)
                .is_some_and(|name| !name.is_empty() && !name.contains(['.', '[', ']']))
        };
        if custom(ASSET_ATTRIBUTES) {
            return Some(&ASSET_ATTRIBUTE);
        }
        if custom(FINDING_ATTRIBUTES) {
            return Some(&FINDING_ATTRIBUTE);
        }
        self.targets().find(|t| t.path == path)
    }

    /// Every target of the kind, custom attributes aside.
    pub fn targets(&self) -> impl Iterator<Item = &'static Target> + '_ {
        self.targets.iter().flat_map(|group| group.iter())
    }

    /// What the connector computes for a finding source path, if it is one of its own.
    pub fn computed(&self, path: &str) -> Option<Computed> {
        let rest = path.strip_prefix(&format!("{}[].", self.finding_array))?;
        self.computed_sources
            .iter()
            .find(|(name, _)| *name == rest)
            .map(|(_, computed)| *computed)
    }

    /// The JSON pointer of an asset source path into the vendor's record: each `.` a level, but
    /// under an open prefix (`tags.`) the rest is one key, whatever it holds (a tag named
    /// `team/owner` or `app.tier`), escaped as a pointer's token is (`~0`, `~1`).
    pub fn source_pointer(&self, path: &str) -> String {
        let open = self.open_asset_prefixes.iter().find_map(|prefix| {
            let key = path.strip_prefix(prefix)?;
            Some((prefix.trim_end_matches('.'), key))
        });
        match open {
            Some((object, key)) => format!(
                "/{}/{}",
                object.replace('.', "/"),
                key.replace('~', "~0").replace('/', "~1")
            ),
            None => format!("/{}", path.replace('.', "/")),
        }
    }

    /// The scope of a source path, if it is one this kind knows.
    pub fn source_scope(&self, path: &str) -> Option<Scope> {
        let prefix = format!("{}[].", self.finding_array);
        if let Some(rest) = path.strip_prefix(&prefix) {
            let known = self.finding_sources.iter().any(|g| g.contains(&rest))
                || self.computed_sources.iter().any(|(name, _)| *name == rest);
            return known.then_some(Scope::Finding);
        }
        let open = self
            .open_asset_prefixes
            .iter()
            .any(|p| path.strip_prefix(p).is_some_and(|k| !k.is_empty()));
        (self.asset_sources.contains(&path) || open).then_some(Scope::Asset)
    }
}
