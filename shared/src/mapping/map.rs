//! Transform maps as data: the document users export, edit and point a connection at; its
//! validation (each error names the entry and the problem); and its compilation, once, into a
//! plan that reads each record in one pass without looking at paths again.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::catalog::{Computed, FINDING_PREFIX, Scope, Target, ValueType, catalog};
use super::identity::identity_sources;
use crate::Engine;
use crate::field_error::FieldError;

/// The target of a finding's id.
const ID_TARGET: &str = "findingGroup.findings[].externalFindingId";

/// The `findingStatus` values ETM takes (the batch schema's enum).
pub const FINDING_STATUSES: [&str; 6] =
    ["NEW", "ACTIVE", "FIXED", "REOPENED", "PROTECTED", "RETEST"];

pub const DEFAULT_SAST_MAP: &str = include_str!("../../maps/sast-default.json");
pub const DEFAULT_DAST_MAP: &str = include_str!("../../maps/dast-default.json");
pub const DEFAULT_SCA_MAP: &str = include_str!("../../maps/sca-default.json");
pub const DEFAULT_KICS_MAP: &str = include_str!("../../maps/kics-default.json");
pub const DEFAULT_CONTAINERS_MAP: &str = include_str!("../../maps/containers-default.json");

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TransformMap {
    pub version: u32,
    pub name: String,
    /// The engine whose records it maps.
    pub kind: Engine,
    pub entries: Vec<MapEntry>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MapEntry {
    /// Vendor path; `findings[].x` (SAST) or `scanResults[].x` (DAST) reads each finding.
    pub source: String,
    /// ETM path; `findingGroup.findings[].x` writes each finding.
    pub target: String,
    /// Vendor value → ETM value; unmatched values take `default` (or stay as they are, flagged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_map: Option<BTreeMap<String, Value>>,
    /// Used when the source is absent or null, or its value is not in `valueMap`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// A record without a value here (and no default) is rejected.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub required: bool,
}

impl TransformMap {
    pub fn default_for(kind: Engine) -> Self {
        let text = match kind {
            Engine::Sast => DEFAULT_SAST_MAP,
            Engine::Sca => DEFAULT_SCA_MAP,
            Engine::Kics => DEFAULT_KICS_MAP,
            Engine::Containers => DEFAULT_CONTAINERS_MAP,
            Engine::Dast => DEFAULT_DAST_MAP,
        };
        serde_json::from_str(text).expect("the shipped maps parse")
    }

    /// Parses and compiles a map document; every problem is listed.
    pub fn parse(text: &str) -> Result<Plan, Vec<FieldError>> {
        let map: TransformMap = parse_document(text, "transform map")?;
        map.compile()
    }

    pub fn compile(&self) -> Result<Plan, Vec<FieldError>> {
        Plan::compile(self)
    }
}

/// Where a source path's value lands while a record is read.
#[derive(Clone, Debug, Default)]
pub(crate) struct PathTree {
    /// Looked up for every key of every record: hashed the cheap way (the tree is the map's,
    /// fixed before any record is read; vendor keys are only looked up, never added).
    pub children: HashMap<String, PathTree, foldhash::fast::RandomState>,
    pub slot: Option<usize>,
}

impl PathTree {
    /// The slot of `path`, adding it if new (equal paths share a slot). A list element is named
    /// by its position: `data.nodes[first].line`, `data.nodes[last].line`.
    pub(crate) fn slot_for(&mut self, path: &str, next: &mut usize) -> usize {
        let segments = path
            .split('.')
            .flat_map(|segment| match segment.split_once('[') {
                Some((name, _)) => vec![name, &segment[name.len()..]],
                None => vec![segment],
            });
        debug_assert!(!path.contains("[]"), "{path}");
        let node = segments.fold(self, |node, segment| {
            node.children.entry(segment.to_string()).or_default()
        });
        *node.slot.get_or_insert_with(|| {
            *next += 1;
            *next - 1
        })
    }
}

/// How the mapped finding fields nest in the output object.
#[derive(Clone, Debug)]
pub(crate) enum Layout {
    Leaf(usize),
    Object(Vec<LayoutField>),
}

/// One member of an output object: its name, written once as the output spells it (`"name":`,
/// escaped) so that millions of findings copy it rather than escape it again, and its value.
#[derive(Clone, Debug)]
pub(crate) struct LayoutField {
    name: String,
    pub(crate) written_name: Box<[u8]>,
    pub(crate) node: Layout,
}

impl LayoutField {
    fn new(name: &str, node: Layout) -> Self {
        let mut written_name = serde_json::to_vec(name).expect("a string serializes");
        written_name.push(b':');
        Self {
            name: name.to_string(),
            written_name: written_name.into(),
            node,
        }
    }
}

impl Layout {
    fn insert(children: &mut Vec<LayoutField>, path: &[String], entry: usize) {
        match path {
            [] => {}
            [last] => children.push(LayoutField::new(last, Layout::Leaf(entry))),
            [first, rest @ ..] => {
                if !children.iter().any(|f| &f.name == first) {
                    children.push(LayoutField::new(first, Layout::Object(Vec::new())));
                }
                if let Some(LayoutField {
                    node: Layout::Object(inner),
                    ..
                }) = children.iter_mut().find(|f| &f.name == first)
                {
                    Layout::insert(inner, rest, entry);
                }
            }
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct CompiledEntry {
    pub label: String,
    /// Where a finding entry's value lands while the record is read (not used by asset entries
    /// and computed sources).
    pub slot: usize,
    /// A source the connector computes (a link) instead of reading it.
    pub computed: Option<Computed>,
    /// The source path below the record (`data.queryName`).
    pub source: String,
    /// The source as a JSON pointer (asset entries read the project / environment with it).
    pub pointer: String,
    pub target: &'static Target,
    /// Target segments below the asset root or the finding object.
    pub segments: Vec<String>,
    pub value_map: Option<HashMap<String, Value>>,
    pub default: Option<Value>,
    pub required: bool,
}

/// Slots every finding needs whatever the map says: identity for rejections, the engine type,
/// lifecycle status, triage state and severity.
#[derive(Clone, Debug)]
pub(crate) struct Implicit {
    pub id: usize,
    pub kind: Option<usize>,
    pub status: usize,
    pub state: usize,
    pub severity: usize,
    /// SAST: `data.resultHash`, the key of the severity before triage.
    pub result_hash: Option<usize>,
    /// The fields a repeated vendor id's suffix is derived from (`identity::identity_sources`).
    pub identity: Vec<usize>,
    /// Every id takes its identity suffix, repeated or not: the engine's vendor ids are CVE ids,
    /// which name a vulnerability, not a finding (SCA, containers).
    pub always_suffixed: bool,
    /// SCA: `data.packageIdentifier`, whose first part is the package's ecosystem.
    pub package: Option<usize>,
    /// SAST: the sink's file and line, to say where a rejected record points.
    pub sink: Option<(usize, usize)>,
}

/// A compiled map: apply it to any number of records.
#[derive(Clone, Debug)]
pub struct Plan {
    pub kind: Engine,
    pub name: String,
    pub(crate) asset_entries: Vec<CompiledEntry>,
    pub(crate) finding_entries: Vec<CompiledEntry>,
    pub(crate) finding_tree: PathTree,
    pub(crate) finding_slots: usize,
    pub(crate) finding_layout: Vec<LayoutField>,
    pub(crate) implicit: Implicit,
    /// The finding entry that fills `externalFindingId` (kept unique within an asset).
    pub(crate) external_finding_id: Option<usize>,
    /// The finding entry that fills `findingStatus` (a triage outcome may override it).
    pub(crate) finding_status: Option<usize>,
}

impl Plan {
    fn compile(map: &TransformMap) -> Result<Self, Vec<FieldError>> {
        let catalog = catalog(map.kind);
        let mut errors = Vec::new();
        if map.version != 1 {
            errors.push(FieldError::new(
                "version",
                format!("version {} is not supported; use 1", map.version),
            ));
        }
        let (mut finding_tree, mut finding_slots) = (PathTree::default(), 0);
        let (mut asset_entries, mut finding_entries) = (Vec::new(), Vec::new());
        let mut targets_seen: HashMap<&str, usize> = HashMap::new();
        let finding_prefix = format!("{}[].", catalog.finding_array);
        for (n, entry) in map.entries.iter().enumerate() {
            let label = format!("`{}` → `{}`", entry.source, entry.target);
            let field = format!("entries[{n}]");
            let Some(target) = catalog.target(&entry.target) else {
                let known: Vec<&str> = catalog
                    .targets()
                    .map(|t| t.path)
                    .chain([
                        "asset.customAttributes.<name>",
                        "findingGroup.findings[].customAttributes.<name>",
                    ])
                    .collect();
                errors.push(FieldError::new(
                    &field,
                    format!(
                        "{label}: unknown target `{}`; {} targets are: {}",
                        entry.target,
                        kind_name(map.kind),
                        known.join(", ")
                    ),
                ));
                continue;
            };
            if let Some(first) = targets_seen.insert(entry.target.as_str(), n) {
                errors.push(FieldError::new(
                    &field,
                    format!(
                        "{label}: target `{}` is already filled by entries[{first}]; each target once",
                        entry.target
                    ),
                ));
                continue;
            }
            let Some(scope) = catalog.source_scope(&entry.source) else {
                errors.push(FieldError::new(
                    &field,
                    format!(
                        "{label}: unknown source path `{}`; see docs/etm-batch.md for the {} source fields (finding fields start with `{finding_prefix}`)",
                        entry.source,
                        kind_name(map.kind)
                    ),
                ));
                continue;
            };
            if scope != target.scope {
                let (from, to) = if scope == Scope::Finding {
                    ("a finding field", "an asset target")
                } else {
                    ("an asset field", "a finding target")
                };
                errors.push(FieldError::new(
                    &field,
                    format!("{label}: maps {from} to {to}; findings map to `{FINDING_PREFIX}…`, assets to the others"),
                ));
                continue;
            }
            if let Some(problem) = value_map_problem(entry, target) {
                errors.push(FieldError::new(&field, format!("{label}: {problem}")));
                continue;
            }
            // A default id would make every record without one a finding, the same one: the
            // record it stands for would not be rejected, and the pull's absent findings (that
            // record's among them) would be closed rather than held open.
            if entry.default.is_some() && target.path == ID_TARGET {
                errors.push(FieldError::new(
                    &field,
                    format!(
                        "{label}: `default` on `{ID_TARGET}`: a record without an id must be rejected (and the absent findings held open), not given one; remove `default`"
                    ),
                ));
                continue;
            }
            let (source, segments_of) = match scope {
                Scope::Asset => (entry.source.as_str(), entry.target.as_str()),
                Scope::Finding => (
                    &entry.source[finding_prefix.len()..],
                    &entry.target[FINDING_PREFIX.len()..],
                ),
            };
            let computed = catalog.computed(&entry.source);
            let compiled = CompiledEntry {
                // A rejected record's reason names the entry that refused it.
                label: format!("{field} ({label})"),
                slot: if scope == Scope::Finding && computed.is_none() {
                    finding_tree.slot_for(source, &mut finding_slots)
                } else {
                    0
                },
                computed,
                source: source.to_string(),
                pointer: catalog.source_pointer(source),
                target,
                segments: segments_of.split('.').map(str::to_string).collect(),
                value_map: entry.value_map.as_ref().map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.trim().to_string(), v.clone()))
                        .collect()
                }),
                default: entry.default.clone(),
                required: entry.required || target.required,
            };
            match scope {
                Scope::Asset => asset_entries.push(compiled),
                Scope::Finding => finding_entries.push(compiled),
            }
        }
        for target in catalog.targets().filter(|t| t.required) {
            if !targets_seen.contains_key(target.path) {
                errors.push(FieldError::new(
                    "entries",
                    format!(
                        "required target `{}` is not filled by any entry",
                        target.path
                    ),
                ));
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let implicit = Implicit {
            id: finding_tree.slot_for("id", &mut finding_slots),
            kind: map
                .kind
                .on_projects()
                .then(|| finding_tree.slot_for("type", &mut finding_slots)),
            status: finding_tree.slot_for("status", &mut finding_slots),
            state: finding_tree.slot_for("state", &mut finding_slots),
            severity: finding_tree.slot_for("severity", &mut finding_slots),
            result_hash: (map.kind == Engine::Sast)
                .then(|| finding_tree.slot_for("data.resultHash", &mut finding_slots)),
            identity: identity_sources(map.kind)
                .iter()
                .map(|path| finding_tree.slot_for(path, &mut finding_slots))
                .collect(),
            package: (map.kind == Engine::Sca)
                .then(|| finding_tree.slot_for("data.packageIdentifier", &mut finding_slots)),
            always_suffixed: map.kind.ids_always_suffixed(),
            sink: (map.kind == Engine::Sast).then(|| {
                (
                    finding_tree.slot_for("data.nodes[last].fileName", &mut finding_slots),
                    finding_tree.slot_for("data.nodes[last].line", &mut finding_slots),
                )
            }),
        };
        let mut finding_layout = Vec::new();
        for (index, entry) in finding_entries.iter().enumerate() {
            Layout::insert(&mut finding_layout, &entry.segments, index);
        }
        let external_finding_id = finding_entries
            .iter()
            .position(|e| e.segments == ["externalFindingId"]);
        let finding_status = finding_entries
            .iter()
            .position(|e| e.segments == ["findingStatus"]);
        Ok(Plan {
            kind: map.kind,
            name: map.name.clone(),
            asset_entries,
            finding_entries,
            finding_tree,
            finding_slots,
            finding_layout,
            implicit,
            external_finding_id,
            finding_status,
        })
    }
}

impl Plan {
    /// Where `externalFindingId` is read from in each record (`id` in the shipped maps); `None`
    /// when the map computes it.
    pub(crate) fn id_source(&self) -> Option<&str> {
        let entry = &self.finding_entries[self.external_finding_id?];
        entry.computed.is_none().then_some(entry.source.as_str())
    }
}

/// Parses a JSON document of `what` (a transform map, a scoring table); an error names the field's
/// path (`entries[3].valueMap`) and text after the document is refused.
pub(crate) fn parse_document<T: serde::de::DeserializeOwned>(
    text: &str,
    what: &str,
) -> Result<T, Vec<FieldError>> {
    let mut json = serde_json::Deserializer::from_str(text);
    let document: T = serde_path_to_error::deserialize(&mut json).map_err(|e| {
        let at_root = e
            .path()
            .iter()
            .all(|s| matches!(s, serde_path_to_error::Segment::Unknown));
        if at_root {
            vec![FieldError::document(format!(
                "not a {what} document: {}",
                e.inner()
            ))]
        } else {
            vec![FieldError::new(e.path().to_string(), e.inner().to_string())]
        }
    })?;
    json.end().map_err(|e| {
        vec![FieldError::document(format!(
            "{e}: text follows the JSON document; remove it"
        ))]
    })?;
    Ok(document)
}

fn kind_name(kind: Engine) -> &'static str {
    match kind {
        Engine::Sast => "SAST",
        Engine::Sca => "SCA",
        Engine::Kics => "KICS",
        Engine::Containers => "containers",
        Engine::Dast => "DAST",
    }
}

/// Why a value map (or default) cannot apply to its target, if it cannot.
fn value_map_problem(entry: &MapEntry, target: &Target) -> Option<String> {
    let fits = |v: &Value| match target.ty {
        ValueType::Severity => v.as_i64().is_some_and(|n| (1..=5).contains(&n)),
        ValueType::Integer => v.is_i64() || v.is_u64(),
        ValueType::Cwe => v.as_i64().is_some_and(|n| n >= 1),
        ValueType::Status => v.as_str().is_some_and(|s| FINDING_STATUSES.contains(&s)),
        ValueType::Text | ValueType::DateTime | ValueType::Joined => v.is_string(),
        ValueType::List | ValueType::Tags => v.is_array() || v.is_string(),
        ValueType::Attribute => !v.is_object() && !v.is_null(),
        ValueType::Number => v.is_number(),
        ValueType::Boolean => v.is_boolean(),
        ValueType::CvssVector => v.is_string(),
        ValueType::DependencyPaths | ValueType::Names => v.is_array(),
    };
    let expected = match target.ty {
        ValueType::Severity => "a severity from 1 to 5",
        ValueType::Integer => "a whole number",
        ValueType::Cwe => "a CWE id from 1",
        ValueType::Status => "one of NEW, ACTIVE, FIXED, REOPENED, PROTECTED, RETEST",
        ValueType::Text | ValueType::Joined => "a text",
        ValueType::DateTime => "an RFC 3339 time stamp",
        ValueType::List | ValueType::Tags => "a list or a text",
        ValueType::Attribute => "a text, number, boolean or list",
        ValueType::Number => "a number",
        ValueType::Boolean => "true or false",
        ValueType::CvssVector => "a CVSS vector text",
        ValueType::DependencyPaths | ValueType::Names => "a list",
    };
    if let Some(map) = &entry.value_map {
        if map.is_empty() {
            return Some("the value map is empty; remove it or list the vendor values".into());
        }
        // The vendor's words are read with ASCII case and surrounding blanks aside (the keys
        // trimmed as compiled): two keys of one word sending it to different values would send
        // it to either.
        let mut keys: Vec<(String, &String, &Value)> = map
            .iter()
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), k, v))
            .collect();
        keys.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some(pair) = keys
            .windows(2)
            .find(|w| w[0].0 == w[1].0 && w[0].2 != w[1].2)
        {
            return Some(format!(
                "value map keys '{}' and '{}' are one vendor word (letter case and blanks aside) sent to {} and {}: keep one",
                pair[0].1, pair[1].1, pair[0].2, pair[1].2
            ));
        }
        if let Some((from, to)) = map.iter().find(|(_, to)| !fits(to)) {
            return Some(format!(
                "value map sends '{from}' to {to}, but `{}` takes {expected}",
                target.path
            ));
        }
    }
    if let Some(default) = &entry.default
        && !fits(default)
    {
        return Some(format!(
            "default {default} does not fit `{}`, which takes {expected}",
            target.path
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::field_error::Described;

    #[test]
    fn the_shipped_maps_reproduce_the_spec_tables_and_compile() {
        let sast = TransformMap::default_for(Engine::Sast);
        // The spec's rows come first, in its order; what the connector adds beyond them follows.
        let rows: Vec<(&str, &str)> = sast
            .entries
            .iter()
            .take(14)
            .map(|e| (e.source.as_str(), e.target.as_str()))
            .collect();
        assert_eq!(
            rows,
            vec![
                (
                    "name",
                    "asset.assetDetail.genericApplicationAssetClass.name"
                ),
                ("createdAt", "asset.assetDetail.sourceCreatedAt"),
                ("id", "externalAssetId"),
                ("name", "asset.assetDetail.name"),
                ("id", "vendorAssetId"),
                ("findings[].type", "findingGroup.findings[].subCategory"),
                ("findings[].id", "findingGroup.findings[].externalFindingId"),
                ("findings[].status", "findingGroup.findings[].findingStatus"),
                ("findings[].severity", "findingGroup.findings[].severity"),
                (
                    "findings[].firstFoundAt",
                    "findingGroup.findings[].firstFoundOn"
                ),
                ("findings[].foundAt", "findingGroup.findings[].lastFoundOn"),
                (
                    "findings[].description",
                    "findingGroup.findings[].description"
                ),
                ("findings[].data.queryName", "findingGroup.findings[].name"),
                (
                    "findings[].vulnerabilityDetails.cweId",
                    "findingGroup.findings[].findingType.vulnerability.cweId"
                ),
            ]
        );
        sast.compile().unwrap();
        let dast = TransformMap::default_for(Engine::Dast);
        let severity = dast
            .entries
            .iter()
            .find(|e| e.source == "scanResults[].severity")
            .unwrap()
            .value_map
            .clone()
            .unwrap();
        assert_eq!(severity.len(), 5);
        assert_eq!(
            (severity["INFO"].clone(), severity["CRITICAL"].clone()),
            (Value::from(1), Value::from(5))
        );
        let status = dast
            .entries
            .iter()
            .find(|e| e.source == "scanResults[].status")
            .unwrap()
            .value_map
            .clone()
            .unwrap();
        let expected: BTreeMap<String, Value> = [
            ("New", "NEW"),
            ("Recurrent", "ACTIVE"),
            ("Fixed", "FIXED"),
            ("Resurfaced", "REOPENED"),
            ("Active", "ACTIVE"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), Value::from(v)))
        .collect();
        assert_eq!(status, expected);
        dast.compile().unwrap();
    }

    #[test]
    fn each_map_error_names_the_entry_and_the_problem() {
        let text = r#"{"version":1,"name":"broken","kind":"sast","entries":[
            {"source":"id","target":"externalAssetId"},
            {"source":"name","target":"asset.assetDetail.name"},
            {"source":"findings[].id","target":"findingGroup.findings[].externalFindingId"},
            {"source":"findings[].nope","target":"findingGroup.findings[].name"},
            {"source":"findings[].type","target":"findingGroup.findings[].madeUp"},
            {"source":"findings[].id","target":"findingGroup.findings[].externalFindingId"},
            {"source":"findings[].severity","target":"findingGroup.findings[].severity","valueMap":{"HIGH":"very"}},
            {"source":"findings[].status","target":"findingGroup.findings[].findingStatus","default":"OPEN"},
            {"source":"name","target":"findingGroup.findings[].description"},
            {"source":"findings[].state","target":"findingGroup.findings[].customAttributes.state","valueMap":{"URGENT":"u","Urgent":"v"}},
            {"source":"findings[].state","target":"findingGroup.findings[].customAttributes.state2","valueMap":{" URGENT":"u","urgent ":"u","URGENT":"u"}}
        ]}"#;
        let errors = TransformMap::parse(text).unwrap_err();
        let all = errors.described("\n");
        let of = |field: &str| -> String {
            errors
                .iter()
                .filter(|e| e.field.as_deref() == Some(field))
                .map(|e| e.problem.clone())
                .collect()
        };
        assert!(of("entries[3]").starts_with("`findings[].nope` → `findingGroup.findings[].name`: unknown source path `findings[].nope`"), "{all}");
        assert!(
            of("entries[4]").starts_with(
                "`findings[].type` → `findingGroup.findings[].madeUp`: unknown target"
            ),
            "{all}"
        );
        assert!(
            of("entries[5]").contains("already filled by entries[2]"),
            "{all}"
        );
        assert!(
            of("entries[6]").contains("sends 'HIGH' to \"very\"")
                && of("entries[6]").contains("a severity from 1 to 5"),
            "{all}"
        );
        assert!(
            of("entries[7]").contains("default \"OPEN\" does not fit"),
            "{all}"
        );
        assert!(of("entries[8]").contains("`name` → `findingGroup.findings[].description`: maps an asset field to a finding target"), "{all}");
        assert!(
            of("entries[9]").contains(
                "value map keys 'URGENT' and 'Urgent' are one vendor word (letter case and blanks aside) sent to \"u\" and \"v\": keep one"
            ),
            "{all}"
        );
        // One word sent to one value, however it is written: nothing to choose between.
        assert!(of("entries[10]").is_empty(), "{all}");
        assert_eq!(errors.len(), 7, "{all}");

        // A default id would stand for every record without one: refused.
        let defaulted = r#"{"version":1,"name":"d","kind":"sast","entries":[
            {"source":"id","target":"externalAssetId"},
            {"source":"findings[].id","target":"findingGroup.findings[].externalFindingId","default":"n/a"}
        ]}"#;
        let all = TransformMap::parse(defaulted).unwrap_err().described("\n");
        assert!(
            all.contains("entries[1]")
                && all.contains("a record without an id must be rejected")
                && all.contains("remove `default`"),
            "{all}"
        );

        let missing = r#"{"version":1,"name":"m","kind":"dast","entries":[{"source":"domain","target":"asset.webAppName"}]}"#;
        let all = TransformMap::parse(missing).unwrap_err().described("\n");
        assert!(
            all.contains("required target `asset.webAppUrl` is not filled"),
            "{all}"
        );
        assert!(
            all.contains(
                "required target `findingGroup.findings[].externalFindingId` is not filled"
            ),
            "{all}"
        );
        assert!(
            TransformMap::parse(r#"{"version":1}"#).unwrap_err()[0]
                .problem
                .contains("not a transform map document")
        );
        let wrong_type = TransformMap::parse(
            r#"{"version":1,"name":"m","kind":"sast","entries":[{"source":"id","target":"asset.id","required":"yes"}]}"#,
        )
        .unwrap_err();
        assert_eq!(
            wrong_type[0].field.as_deref(),
            Some("entries[0].required"),
            "{wrong_type:?}"
        );
        let shipped = serde_json::to_string(&TransformMap::default_for(Engine::Sast)).unwrap();
        let trailing = TransformMap::parse(&format!("{shipped} {{}}")).unwrap_err();
        assert!(trailing[0].problem.contains("text follows"), "{trailing:?}");
    }

    #[test]
    fn equal_source_paths_share_one_slot() {
        let plan = TransformMap::default_for(Engine::Dast).compile().unwrap();
        assert_eq!(
            plan.finding_slots, 13,
            "ten mapped sources plus the implicit state and the identity fields method and path; id, status, severity, name, url, cwe_id and scan_type are shared"
        );
        let plan = TransformMap::default_for(Engine::Sast).compile().unwrap();
        assert_eq!(plan.asset_entries[0].pointer, "/name");
        let id_entry = plan
            .finding_entries
            .iter()
            .find(|e| e.target.path.ends_with("externalFindingId"))
            .unwrap();
        assert_eq!(plan.implicit.id, id_entry.slot);
    }
}
