//! A connection: a typed, validated JSON document. Secrets are never in it, only a reference to
//! where the credential lives.

use serde::{Deserialize, Serialize};

use super::schedule::{ParsedSchedule, Schedule};
pub use super::selection::{BranchPolicy, Filters};
use crate::cxone::{CaBundleAt, RunCalls, VendorConfig, VendorSettings};
use crate::field_error::FieldError;
use crate::mapping::{CompiledScoring, Plan, Scoring, TransformMap, TransformOptions, TriageMap};
use crate::secret::SecretRef;
use crate::{ConnectorKind, Engine};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionConfig {
    /// Letters, digits, '-' and '_' (it names the connection's folder in the bucket).
    pub id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub kind: ConnectorKind,
    pub vendor: VendorSettings,
    /// Where the credential is: a Secrets Manager ARN, `secretsmanager:NAME`, `env:VAR` or `file:PATH`.
    pub secret: String,
    /// The engines whose findings the connection delivers (`sast`, `sca`, `kics`, `containers`
    /// for project connections): the kind's own engine when absent. One pull of each project's
    /// scan serves them all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engines: Option<Vec<Engine>>,
    /// A transform map document for the engine its `kind` names; that engine's shipped map when
    /// absent. See `transform_maps` for more than one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform_map: Option<TransformMap>,
    /// Transform maps for several engines, one each (the shipped map for any engine not named).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transform_maps: Vec<TransformMap>,
    /// A scoring table; the shipped table when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scoring: Option<Scoring>,
    #[serde(default)]
    pub filters: Filters,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
    /// Items collected and transformed at once by the local runner (the state machine's MaxConcurrency on AWS).
    #[serde(default = "default_item_concurrency")]
    pub item_concurrency: usize,
    /// When a project or environment disappears from the tenant, close its open findings (closure
    /// records) instead of only reporting it. Off by default: a project can vanish from a listing
    /// for reasons other than its deletion (a changed role, a group filter).
    #[serde(default)]
    pub close_deleted_items: bool,
    /// Under `close_deleted_items`, how many assets one run may close as deleted; a run that
    /// would close more closes none of them and commits partial.
    #[serde(default)]
    pub deletion_limit: DeletionLimit,
    /// What each triage state means for ETM; NOT_EXPLOITABLE → PROTECTED, everything else (custom
    /// states included) kept open by default.
    #[serde(default)]
    pub triage: TriageMap,
    /// Which scan of a SAST project is taken: `{"policy": "main", "fallback_to_any": false}`
    /// (default), `{"policy": "any"}`, `{"policy": "pinned", "branch": "release"}` or
    /// `{"policy": "each_branch"}` (every branch its own asset).
    #[serde(default)]
    pub branches: BranchPolicy,
    /// SAST: also read each scan's severities as they were before triage (one slim
    /// `/api/sast-results?apply-predicates=false` pull per scan) so every finding carries both
    /// its triaged and its original severity. On by default; off saves that pull.
    #[serde(default = "default_true")]
    pub original_severity: bool,
    /// A project scan of more results than this is collected in parts of at most this many
    /// results (whole pages), by separate workers at once, and joined before its transform; 0
    /// never splits. The plan asks a scan its size only where the last committed run saw the
    /// item complete with more than half this many records.
    #[serde(default = "default_split_scans_above")]
    pub split_scans_above: u64,
}

/// The most assets one run may close as deleted (under `close_deleted_items`): `assets`, or
/// `percent` of the assets with findings open (this run's items that leave findings open, and
/// the assets it would close), whichever is more. A credential that loses its access to part of the tenant (its user removed from some
/// groups) is answered as those projects' deletion would be, as far as the API tells: without a
/// limit, one such run would close every finding of theirs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeletionLimit {
    #[serde(default = "default_deletion_limit_assets")]
    pub assets: u64,
    /// 0 to 100; 100 lets any deletion through.
    #[serde(default = "default_deletion_limit_percent")]
    pub percent: u8,
}

fn default_deletion_limit_assets() -> u64 {
    5
}

fn default_deletion_limit_percent() -> u8 {
    10
}

impl Default for DeletionLimit {
    fn default() -> Self {
        Self {
            assets: default_deletion_limit_assets(),
            percent: default_deletion_limit_percent(),
        }
    }
}

impl DeletionLimit {
    /// The most assets a run may close as deleted out of `held` assets with findings open.
    pub fn allowed(&self, held: u64) -> u64 {
        let share = u128::from(held) * u128::from(self.percent) / 100;
        self.assets.max(u64::try_from(share).unwrap_or(u64::MAX))
    }
}

fn default_split_scans_above() -> u64 {
    1_000_000
}

fn default_true() -> bool {
    true
}

fn default_item_concurrency() -> usize {
    4
}

/// A connection ready to run: every part parsed, checked and compiled.
#[derive(Clone)]
pub struct Connection {
    pub config: ConnectionConfig,
    /// The config's schedule, read.
    pub schedule: Option<ParsedSchedule>,
    pub vendor: VendorConfig,
    pub secret: SecretRef,
    /// One compiled map per engine the connection delivers, in the config's order.
    pub plans: Vec<Plan>,
    pub scoring: CompiledScoring,
    pub options: TransformOptions,
}

impl Connection {
    /// What this connection's runs call, for the connection test's scope check.
    pub fn run_calls(&self) -> RunCalls {
        let projects = self.config.kind.on_projects();
        RunCalls {
            kind: self.config.kind,
            engines: self.engines().collect(),
            severities_before_triage: self.delivers(Engine::Sast) && self.config.original_severity,
            branches: projects && self.config.branches == BranchPolicy::EachBranch,
        }
    }

    /// The engines the connection delivers, in the config's order.
    pub fn engines(&self) -> impl Iterator<Item = Engine> + '_ {
        self.plans.iter().map(|plan| plan.kind)
    }

    pub fn delivers(&self, engine: Engine) -> bool {
        self.engines().any(|e| e == engine)
    }

    /// The compiled map of the connection's first engine (its only one for SAST-only and DAST).
    pub fn first_plan(&self) -> &Plan {
        &self.plans[0]
    }
}

impl ConnectionConfig {
    /// A connection with the shipped map and scoring, both asset types, no schedule.
    pub fn new(id: &str, kind: ConnectorKind, vendor: VendorSettings, secret: &str) -> Self {
        Self {
            id: id.to_string(),
            name: id.to_string(),
            description: None,
            kind,
            vendor,
            secret: secret.to_string(),
            engines: None,
            transform_map: None,
            transform_maps: Vec::new(),
            scoring: None,
            filters: Filters::default(),
            schedule: None,
            item_concurrency: default_item_concurrency(),
            close_deleted_items: false,
            deletion_limit: DeletionLimit::default(),
            original_severity: true,
            split_scans_above: default_split_scans_above(),
            triage: TriageMap::default(),
            branches: BranchPolicy::default(),
        }
    }

    /// Parses (JSON, or YAML when the text does not start with `{`) and validates a connection
    /// document; every problem is listed.
    pub fn load(text: &str) -> Result<Connection, Vec<FieldError>> {
        Self::parse(text)?.validate()
    }

    /// Parses a connection document (JSON, or YAML when the text does not start with `{`) without
    /// validating it, so parts (a map, a scoring table) can be added before `validate`.
    pub fn parse(text: &str) -> Result<Self, Vec<FieldError>> {
        // The path of the field that did not fit leads the message (`branches`, `vendor.region`).
        fn named<E: std::fmt::Display>(
            e: serde_path_to_error::Error<E>,
            form: &str,
        ) -> Vec<FieldError> {
            let path = e.path().to_string();
            let problem = format!("{form}{}", e.inner());
            if path == "." {
                vec![FieldError::document(problem)]
            } else {
                vec![FieldError::new(path, problem)]
            }
        }
        let config: ConnectionConfig = if text.trim_start().starts_with('{') {
            let mut json = serde_json::Deserializer::from_str(text);
            let config = serde_path_to_error::deserialize(&mut json).map_err(|e| named(e, ""))?;
            // Text after the document is refused, not ignored: it is often a second, pasted config.
            json.end().map_err(|e| {
                vec![FieldError::document(format!(
                    "{e}: text follows the JSON document; remove it"
                ))]
            })?;
            config
        } else {
            serde_path_to_error::deserialize(serde_yaml_ng::Deserializer::from_str(text))
                .map_err(|e| named(e, "(YAML) "))?
        };
        Ok(config)
    }

    pub fn validate(self) -> Result<Connection, Vec<FieldError>> {
        self.validate_with(CaBundleAt::Named)
    }

    /// Makes `map` the custom map of its engine: the one the config holds for that engine is
    /// replaced, wherever it is (`transform_map` or `transform_maps`), and another engine's is
    /// kept. Before, a map given to `connection put --map` always took `transform_map`'s place,
    /// dropping a custom map of another engine there (its assets then moved to the shipped map's
    /// identity), and a map of an engine in `transform_maps` was refused as a second one.
    pub fn put_map(&mut self, map: TransformMap) {
        if self
            .transform_map
            .as_ref()
            .is_some_and(|held| held.kind == map.kind)
        {
            self.transform_map = None;
        }
        self.transform_maps.retain(|held| held.kind != map.kind);
        match self.transform_map {
            None => self.transform_map = Some(map),
            Some(_) => self.transform_maps.push(map),
        }
    }

    /// As [`validate`](Self::validate), the vendor's CA bundle read from where `ca_at` says.
    pub fn validate_with(self, ca_at: CaBundleAt<'_>) -> Result<Connection, Vec<FieldError>> {
        let mut errors = Vec::new();
        if let Err(problem) = check_key_segment(&self.id) {
            errors.push(FieldError::new("id", problem));
        }
        if self.name.trim().is_empty() {
            errors.push(FieldError::new(
                "name",
                "it is empty; give the connection a display name",
            ));
        }
        if !(1..=64).contains(&self.item_concurrency) {
            errors.push(FieldError::new(
                "item_concurrency",
                format!("{} is out of range; use 1 to 64", self.item_concurrency),
            ));
        }
        if self.deletion_limit.percent > 100 {
            errors.push(FieldError::new(
                "deletion_limit.percent",
                format!(
                    "{} is not a percentage; use 0 to 100 (100 lets any deletion through)",
                    self.deletion_limit.percent
                ),
            ));
        }
        let page = u64::from(self.vendor.results_page_size);
        if self.split_scans_above != 0 && self.split_scans_above < page {
            errors.push(FieldError::new(
                "split_scans_above",
                format!(
                    "{} is less than one page of results ({page}, `vendor.results_page_size`); use 0 (never split) or at least {page}",
                    self.split_scans_above
                ),
            ));
        }
        let vendor = self
            .vendor
            .validate(ca_at)
            .map_err(|problems| errors.extend(problems.into_iter().map(FieldError::from)))
            .ok();
        let secret = self
            .secret
            .parse::<SecretRef>()
            .map_err(|e| errors.push(FieldError::new("secret", e.to_string())))
            .ok();
        let plans = self.compile_maps(&mut errors);
        let scoring = self.scoring.clone().unwrap_or_else(Scoring::default_table);
        let scoring = scoring
            .compile()
            .map_err(|problems| errors.extend(problems.into_iter().map(|p| p.under("scoring"))))
            .ok();
        let schedule = self
            .schedule
            .as_ref()
            .map(Schedule::parse)
            .transpose()
            .map_err(|problems| errors.extend(problems))
            .ok()
            .flatten();
        errors.extend(self.triage.problems());
        errors.extend(self.filters.problems());
        errors.extend(self.filters.unread_by(self.kind.on_projects()));
        errors.extend(self.branches.problems());
        if self.kind.on_projects()
            && !self.filters.asset_types.generic_application
            && !self.filters.asset_types.code_repository
        {
            errors.push(FieldError::new(
                "filters.asset_types",
                "both asset types are off, so nothing would be ingested; keep at least one",
            ));
        }
        match (vendor, secret, scoring) {
            (Some(vendor), Some(secret), Some(scoring)) if errors.is_empty() => {
                let options = TransformOptions {
                    asset_types: self.filters.asset_types,
                    triage: self.triage.clone(),
                    severities: self.filters.severities.clone(),
                    triage_states: self.filters.triage_states.clone(),
                    ..TransformOptions::default()
                };
                Ok(Connection {
                    config: self,
                    schedule,
                    vendor,
                    secret,
                    plans,
                    scoring,
                    options,
                })
            }
            _ => Err(errors),
        }
    }
}

impl ConnectionConfig {
    /// The engines asked for, checked against the kind: projects take any of `sast`, `sca`,
    /// `kics` and `containers` (each once); DAST takes `dast` only.
    fn checked_engines(&self, errors: &mut Vec<FieldError>) -> Vec<Engine> {
        let Some(engines) = &self.engines else {
            return self.kind.default_engines();
        };
        let mut problems = Vec::new();
        if engines.is_empty() {
            problems.push("the list is empty; name at least one engine".to_string());
        }
        for (n, engine) in engines.iter().enumerate() {
            if engines[..n].contains(engine) {
                problems.push(format!("`{engine}` is listed twice"));
            }
            if engine.on_projects() != self.kind.on_projects() {
                problems.push(if self.kind.on_projects() {
                    format!(
                        "`{engine}` is not an engine of a project's scans; use sast, sca, kics or containers"
                    )
                } else {
                    format!("a DAST connection delivers `dast` only, not `{engine}`")
                });
            }
        }
        if problems.is_empty() {
            engines.clone()
        } else {
            errors.extend(problems.into_iter().map(|p| FieldError::new("engines", p)));
            Vec::new()
        }
    }

    /// One compiled map per engine: the custom map naming it, else its shipped one.
    /// The config's own maps, each with the field that holds it.
    fn custom_maps(&self) -> Vec<(String, &TransformMap)> {
        (self.transform_map.iter())
            .map(|map| ("transform_map".to_string(), map))
            .chain(
                self.transform_maps
                    .iter()
                    .enumerate()
                    .map(|(n, map)| (format!("transform_maps[{n}]"), map)),
            )
            .collect()
    }

    /// The map a run uses for `engine`: the config's own, wherever it holds it, or the shipped one.
    pub fn map_for(&self, engine: Engine) -> TransformMap {
        match self
            .custom_maps()
            .into_iter()
            .find(|(_, m)| m.kind == engine)
        {
            Some((_, map)) => map.clone(),
            None => TransformMap::default_for(engine),
        }
    }

    fn compile_maps(&self, errors: &mut Vec<FieldError>) -> Vec<Plan> {
        let engines = self.checked_engines(errors);
        let custom = self.custom_maps();
        for (n, (field, map)) in custom.iter().enumerate() {
            if !engines.contains(&map.kind) && !engines.is_empty() {
                let delivered: Vec<&str> = engines.iter().map(|e| e.as_str()).collect();
                errors.push(FieldError::new(
                    field,
                    format!(
                        "the map is for {}, which this connection does not deliver (it delivers {}); add it to `engines` or change the map's `kind`",
                        map.kind,
                        delivered.join(", ")
                    ),
                ));
            } else if let Some((first, _)) = custom[..n].iter().find(|(_, m)| m.kind == map.kind) {
                errors.push(FieldError::new(
                    field,
                    format!(
                        "{first} is already the map for {}; one map per engine",
                        map.kind
                    ),
                ));
            }
        }
        let mut plans = Vec::new();
        for engine in engines {
            let field = custom
                .iter()
                .find(|(_, m)| m.kind == engine)
                .map_or("transform_map", |(field, _)| field.as_str());
            match self.map_for(engine).compile() {
                Ok(plan) => plans.push(plan),
                Err(problems) => errors.extend(problems.into_iter().map(|p| p.under(field))),
            }
        }
        plans
    }
}

/// A connection or run id is one segment of every key it owns: 1–64 ASCII letters, digits, `-` or
/// `_`, so no id (from a config, an API path or an event) reaches another's keys.
pub fn check_key_segment(id: &str) -> Result<(), String> {
    let well_formed = (1..=64).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if well_formed {
        Ok(())
    } else {
        Err(format!(
            "'{id}' must be 1–64 ASCII letters, digits, '-' or '_'"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::field_error::Described;

    const MINIMAL: &str = r#"{"id":"cx-sast","name":"Checkmarx SAST","kind":"sast","vendor":{"region":"EU","tenant":"acme"},"secret":"env:CX_KEY"}"#;

    #[test]
    fn a_minimal_document_gets_the_shipped_map_and_scoring() {
        let c = ConnectionConfig::load(MINIMAL).unwrap();
        assert_eq!(c.first_plan().name, "Checkmarx SAST Transformation Map");
        assert_eq!(c.secret, SecretRef::Env("CX_KEY".into()));
        assert_eq!(c.vendor.endpoints.region, Some("EU"));
        assert_eq!(c.config.item_concurrency, 4);
    }

    #[test]
    fn a_minimal_document_takes_main_branches_and_severities_before_triage() {
        let c = ConnectionConfig::load(MINIMAL).unwrap();
        assert_eq!(
            c.config.branches,
            BranchPolicy::Main {
                fallback_to_any: false
            }
        );
        assert!(c.config.original_severity);
        let each = MINIMAL.replace(
            r#""kind":"sast""#,
            r#""kind":"sast","branches":{"policy":"each_branch"},"original_severity":false"#,
        );
        let c = ConnectionConfig::load(&each).unwrap();
        assert_eq!(c.config.branches, BranchPolicy::EachBranch);
        assert!(!c.config.original_severity);
        let unknown = MINIMAL.replace(
            r#""kind":"sast""#,
            r#""kind":"sast","branches":{"policy":"every"}"#,
        );
        let errors = ConnectionConfig::load(&unknown)
            .err()
            .unwrap()
            .described("\n");
        assert!(
            errors.contains("config field `branches.policy`") && errors.contains("each_branch"),
            "{errors}"
        );
    }

    /// The example in docs/pipeline.md is a document that loads as written.
    #[test]
    fn the_documented_example_loads() {
        let doc = include_str!("../../../docs/pipeline.md");
        let at = doc
            .find("\"id\": \"cx-sast-prod\"")
            .expect("the example is in the doc");
        let start = doc[..at].rfind("```json\n").expect("a json block") + "```json\n".len();
        let end = start + doc[start..].find("```").expect("the block ends");
        let c = ConnectionConfig::load(&doc[start..end]).unwrap();
        assert_eq!(c.config.item_concurrency, 4);
        assert!(c.config.original_severity);
    }

    #[test]
    fn engines_take_their_shipped_maps_unless_a_custom_map_names_them() {
        let c = ConnectionConfig::load(MINIMAL).unwrap();
        assert_eq!(c.engines().collect::<Vec<_>>(), vec![Engine::Sast]);
        let sca = MINIMAL.replace(r#""kind":"sast""#, r#""kind":"sca""#);
        let c = ConnectionConfig::load(&sca).unwrap();
        assert_eq!(c.engines().collect::<Vec<_>>(), vec![Engine::Sca]);
        assert!(
            !c.run_calls().severities_before_triage,
            "no SAST, no SAST-only pull"
        );
        let custom_kics = r#"{"version":1,"name":"my KICS","kind":"kics","entries":[
            {"source":"id","target":"externalAssetId"},{"source":"name","target":"asset.assetDetail.name"},
            {"source":"findings[].id","target":"findingGroup.findings[].externalFindingId"}]}"#;
        let all = MINIMAL.replace(
            r#""kind":"sast""#,
            &format!(
                r#""kind":"sast","engines":["sca","sast","kics","containers"],"transform_maps":[{custom_kics}]"#
            ),
        );
        // A map put for an engine replaces that engine's custom map, wherever the config holds
        // it, and keeps another engine's.
        let mut put = ConnectionConfig::parse(&all).unwrap();
        let mut sast = TransformMap::default_for(Engine::Sast);
        sast.name = "my SAST".into();
        put.transform_map = Some(sast);
        let mut kics: TransformMap = serde_json::from_str(custom_kics).unwrap();
        kics.name = "my KICS, again".into();
        put.put_map(kics);
        let mut sca = TransformMap::default_for(Engine::Sca);
        sca.name = "my SCA".into();
        put.put_map(sca);
        let named = |c: &ConnectionConfig| -> Vec<String> {
            c.transform_map
                .iter()
                .chain(&c.transform_maps)
                .map(|m| m.name.clone())
                .collect()
        };
        assert_eq!(named(&put), ["my SAST", "my KICS, again", "my SCA"]);
        let mut sast = TransformMap::default_for(Engine::Sast);
        sast.name = "my SAST, again".into();
        put.put_map(sast);
        assert_eq!(named(&put), ["my SAST, again", "my KICS, again", "my SCA"]);
        put.clone().validate().unwrap();
        // A config holding two maps of one engine (refused) is mended by putting one.
        put.transform_maps.push(put.transform_map.clone().unwrap());
        assert!(put.clone().validate().is_err());
        put.put_map(TransformMap::default_for(Engine::Sast));
        put.validate().unwrap();
        let c = ConnectionConfig::load(&all).unwrap();
        let plans: Vec<(Engine, &str)> =
            c.plans.iter().map(|p| (p.kind, p.name.as_str())).collect();
        assert_eq!(
            plans,
            vec![
                (Engine::Sca, "Checkmarx SCA Transformation Map"),
                (Engine::Sast, "Checkmarx SAST Transformation Map"),
                (Engine::Kics, "my KICS"),
                (
                    Engine::Containers,
                    "Checkmarx Containers Transformation Map"
                ),
            ]
        );
        assert!(c.run_calls().severities_before_triage);
        let twice = all.replace(
            r#""transform_maps":["#,
            &format!(r#""transform_map":{custom_kics},"transform_maps":["#),
        );
        let errors = ConnectionConfig::load(&twice)
            .err()
            .unwrap()
            .described("\n");
        assert!(
            errors.contains("`transform_maps[0]`: transform_map is already the map for kics"),
            "{errors}"
        );
    }

    #[test]
    fn a_pinned_branch_policy_needs_its_branch() {
        let text = MINIMAL.replace(
            r#""kind":"sast""#,
            r#""kind":"sast","branches":{"policy":"pinned","branch":" "}"#,
        );
        let errors = ConnectionConfig::load(&text).err().unwrap().described("\n");
        assert!(errors.contains("`branches.branch`"), "{errors}");
        let main = MINIMAL.replace(
            r#""kind":"sast""#,
            r#""kind":"sast","branches":{"policy":"main","fallback_to_any":true}"#,
        );
        let c = ConnectionConfig::load(&main).unwrap();
        assert_eq!(
            c.config.branches,
            BranchPolicy::Main {
                fallback_to_any: true
            }
        );
    }

    #[test]
    fn the_deletion_limit_is_its_assets_or_its_share_whichever_is_more() {
        let limit = |assets, percent| DeletionLimit { assets, percent };
        let cases = [
            (DeletionLimit::default(), 20, 5),
            (DeletionLimit::default(), 1_000, 100),
            (DeletionLimit::default(), 1_009, 100),
            (limit(0, 100), 7, 7),
            (limit(3, 0), 1_000, 3),
            (limit(0, 100), u64::MAX, u64::MAX),
        ];
        for (limit, held, allowed) in cases {
            assert_eq!(limit.allowed(held), allowed, "{limit:?} of {held}");
        }
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases = [
            (r#""id":"cx-sast""#, r#""id":"cx sast/../x""#, "`id`"),
            (r#""name":"Checkmarx SAST""#, r#""name":" ""#, "`name`"),
            (r#""region":"EU""#, r#""region":"Mars""#, "`vendor.region`"),
            (
                r#""secret":"env:CX_KEY""#,
                r#""secret":"hunter2""#,
                "`secret`",
            ),
            (
                r#""kind":"sast""#,
                r#""kind":"sast","item_concurrency":0"#,
                "`item_concurrency`",
            ),
            (
                r#""kind":"sast""#,
                r#""kind":"sast","split_scans_above":999"#,
                "`split_scans_above`",
            ),
            (
                r#""kind":"sast""#,
                r#""kind":"sast","deletion_limit":{"percent":101}"#,
                "`deletion_limit.percent`: 101 is not a percentage; use 0 to 100",
            ),
            (
                r#""kind":"sast""#,
                r#""kind":"sast","deletion_limit":{"share":5}"#,
                "`deletion_limit.share`: unknown field `share`, expected `assets` or `percent`",
            ),
            (
                r#""kind":"sast""#,
                r#""kind":"sast","filters":{"asset_types":{"generic_application":false,"code_repository":false}}"#,
                "`filters.asset_types`",
            ),
            (
                r#""kind":"sast""#,
                r#""kind":"sast","schedule":{"expression":"daily","timezone":"Mars/Base","start_date":"2026-13-01"}"#,
                "`schedule.expression`",
            ),
            (
                r#""kind":"sast""#,
                r#""kind":"sast","schedule":{"expression":"rate(1 day)","timezone":"Berlin","start_date":"2026-01-01"}"#,
                "`schedule.timezone`",
            ),
            (
                r#""kind":"sast""#,
                r#""kind":"sast","schedule":{"expression":"rate(1 day)","timezone":"UTC","start_date":"2026-13-01"}"#,
                "`schedule.start_date`",
            ),
            (
                r#""kind":"sast""#,
                r#""kind":"sast","scoring":{"version":1,"rows":[],"defaultSeverity":"HIGH"}"#,
                "`scoring.rows`: no row for CRITICAL",
            ),
            (
                r#""kind":"sast""#,
                r#""kind":"sast","transform_map":{"version":1,"name":"s","kind":"sast","entries":[{"source":"name","target":"asset.assetDetail.name"},{"source":"findings[].nope","target":"findingGroup.findings[].name"}]}"#,
                "`transform_map.entries[1]`: `findings[].nope` → `findingGroup.findings[].name`: unknown source path",
            ),
            (
                r#""kind":"sast""#,
                r#""kind":"sast","filters":{"project_names":["web-*","web-[a"]}"#,
                "`filters.project_names[1]`: 'web-[a' is not a name pattern",
            ),
            (
                r#""kind":"sast""#,
                r#""kind":"sast","transform_map":{"version":1,"name":"d","kind":"dast","entries":[{"source":"url","target":"asset.webAppUrl"},{"source":"scanResults[].id","target":"findingGroup.findings[].externalFindingId"}]}"#,
                "the map is for dast, which this connection does not deliver (it delivers sast)",
            ),
            (
                r#""kind":"sast""#,
                r#""kind":"sast","api_key":"x""#,
                "unknown field `api_key`",
            ),
            // Filters that would filter nothing, or leave everything out (before, accepted).
            (
                r#""kind":"sast""#,
                r#""kind":"dast","filters":{"project_names":["web-*"]}"#,
                "`filters.project_names`: this connection never reads it (it takes DAST environments: use environment_tags or scan_types)",
            ),
            (
                r#""kind":"sast""#,
                r#""kind":"sast","filters":{"scan_types":["DAST"]}"#,
                "`filters.scan_types`: this connection never reads it (it takes projects",
            ),
            (
                r#""kind":"sast""#,
                r#""kind":"dast","filters":{"scan_types":[""]}"#,
                "`filters.scan_types`: an empty entry matches no environment",
            ),
            (
                r#""kind":"sast""#,
                r#""kind":"sast","filters":{"project_tags":[" "]}"#,
                "`filters.project_tags`: an empty entry matches no project",
            ),
            (
                r#""kind":"sast""#,
                r#""kind":"sast","filters":{"project_tags":["pci:",":prod"]}"#,
                "`filters.project_tags`: an empty entry matches no project",
            ),
            (
                r#""kind":"sast""#,
                r#""kind":"dast","filters":{"asset_types":{"generic_application":false,"code_repository":true}}"#,
                "`filters.asset_types`: this connection never reads it",
            ),
            (
                r#""kind":"sast""#,
                r#""kind":"sast","engines":[]"#,
                "`engines`: the list is empty",
            ),
            (
                r#""kind":"sast""#,
                r#""kind":"sast","engines":["sca","sca"]"#,
                "`engines`: `sca` is listed twice",
            ),
            (
                r#""kind":"sast""#,
                r#""kind":"sast","engines":["sast","dast"]"#,
                "`engines`: `dast` is not an engine of a project's scans",
            ),
            (
                r#""kind":"sast""#,
                r#""kind":"sast","engines":["sast","secrets"]"#,
                "`engines[1]`: unknown variant `secrets`",
            ),
            (
                r#""kind":"sast""#,
                r#""kind":"dast","engines":["sast"]"#,
                "a DAST connection delivers `dast` only",
            ),
            (
                r#""kind":"sast""#,
                r#""kind":"sast","transform_maps":[{"version":1,"name":"k","kind":"kics","entries":[]}]"#,
                "`transform_maps[0]`: the map is for kics, which this connection does not deliver (it delivers sast)",
            ),
            (
                r#""kind":"sast""#,
                r#""kind":"sast","engines":["sast","kics"],"transform_maps":[{"version":1,"name":"k","kind":"kics","entries":[{"source":"findings[].data.platform","target":"findingGroup.findings[].platform"}]}]"#,
                "`transform_maps[0].entries`: required target `findingGroup.findings[].externalFindingId`",
            ),
        ];
        for (from, to, expected) in cases {
            let text = MINIMAL.replace(from, to);
            let errors = ConnectionConfig::load(&text)
                .err()
                .unwrap_or_else(|| panic!("{text} should fail"))
                .described("\n");
            assert!(errors.contains(expected), "{to}: {errors}");
            assert!(
                !errors.contains("hunter2"),
                "the secret field's value is not echoed: {errors}"
            );
        }
    }

    #[test]
    fn yaml_documents_load_like_json_ones() {
        let yaml = "id: cx-dast\nname: Checkmarx DAST\nkind: dast\nvendor:\n  region: DEU\n  tenant: acme\nsecret: env:CX_CLIENT\nschedule:\n  expression: cron(0 2 * * ? *)\n  timezone: Europe/Berlin\n  start_date: \"2026-12-01\"\n";
        let c = ConnectionConfig::load(yaml).unwrap();
        assert_eq!(c.config.kind, ConnectorKind::Dast);
        assert_eq!(c.vendor.endpoints.region, Some("DEU"));
        assert_eq!(
            c.config
                .schedule
                .unwrap()
                .parse()
                .map(|s| s.end_date().to_string())
                .ok()
                .as_deref(),
            Some("2031-12-01")
        );
        let errors =
            ConnectionConfig::load(&yaml.replace("region: DEU", "region: DEU\n  colour: blue"))
                .err()
                .unwrap()
                .described("\n");
        assert!(
            errors.contains("YAML") && errors.contains("unknown field `colour`"),
            "{errors}"
        );
        let json = serde_json::to_string(&ConnectionConfig::load(yaml).unwrap().config).unwrap();
        let errors = ConnectionConfig::load(&format!("{json}\n{json}"))
            .err()
            .unwrap()
            .described("\n");
        assert!(
            errors.contains("text follows the JSON document"),
            "{errors}"
        );
        let errors = ConnectionConfig::load(&yaml.replace("region: DEU", "region: Mars"))
            .err()
            .unwrap()
            .described("\n");
        assert!(errors.contains("`vendor.region`"), "{errors}");
    }
}
