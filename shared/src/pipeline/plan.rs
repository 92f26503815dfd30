//! Plan: list the projects (SAST, SCA) or environments (DAST), find each project's latest
//! completed scans under the branch policy (many projects per call), and write the work list.
//!
//! A connection that delivers several engines asks for each project's latest completed scan of
//! any engine; an engine that scan did not run is looked up on its own, for the projects that
//! need it. Where the latest scan ran every engine, that is one call, as for one engine.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::access::{VendorAccess, with_renewal};
use super::config::{BranchPolicy, Connection};
use super::documents::{DeletedItem, EngineScan, FilteredItem, ItemDeadlines, WorkGroup, WorkItem};
use super::error::StepError;
use super::objects::{Once, get_gzip_json, get_json, put_json_once, readable};
use super::run::{
    PlanStart, RunRecord, VendorScope, ensure_holds_lock, record_plan, start_processing,
};
use super::split::split_large_scans;
use crate::cxone::{
    BranchListing, Completeness, LastScan, LastScanQuery, LastScans, Listing, VendorError,
};
use crate::field_error::FieldError;
use crate::layout::{RunRef, item_key, vendor_id_of_key};
use crate::mapping::{Ledger, OpenFindings};
use crate::store::ObjectStore;
use crate::{ConnectorKind, Engine};

/// At most this many items per child execution. A child is billed three state transitions (its
/// start, collect, transform) whatever it carries: 25 items bring an item's share from 3 to 0.12.
pub const MAX_ITEMS_PER_GROUP: usize = 25;
/// A child's input stays far below Step Functions' 256 KiB payload limit.
const MAX_GROUP_BYTES: usize = 96 * 1024;
/// A vendor record larger than this is stored beside the work list, not carried in it.
const MAX_CARRIED_RECORD_BYTES: usize = 16 * 1024;
/// An item's name is cut to this many bytes in the work list (and so in the manifest).
const MAX_NAME_BYTES: usize = 1024;

/// Lists the items, finds each SAST project's latest completed SAST scan (many projects per call)
/// and writes the work list: the items in groups, one group per child execution, as many groups
/// as keep `children_at_once` children busy (see [`group_items`]). Moves the run to Processing; an
/// attempt after one whose plan stands goes on with that plan (see [`write_plan`]). Refuses a run
/// that does not hold its connection's lock (`LostLock`).
pub async fn plan(
    store: &impl ObjectStore,
    vendor: &VendorAccess,
    connection: &Connection,
    run: &RunRef,
    children_at_once: usize,
) -> Result<Vec<WorkGroup>, StepError> {
    // An execution whose start the trigger saw fail (an answer lost, the run failed and the lock
    // released) may still run: it must not move a run that lost its lock, nor the connection.
    ensure_holds_lock(store, run).await?;
    // An attempt after one whose plan stands (Step Functions retried it on a lost answer, or
    // after a crash past that write) goes on with that plan without listing the tenant again.
    let standing = match read_standing(store, run).await? {
        Some(earlier) => go_on_with(store, run, earlier).await?,
        None => list_and_write_plan(store, vendor, connection, run, children_at_once).await?,
    };
    // The listing may have taken long, or this attempt outlived the others: a run that lost its
    // lock meanwhile (another run took it over) is left as it stands.
    ensure_holds_lock(store, run).await?;
    record_plan(
        store,
        run,
        standing.items(),
        standing.previous_run.clone(),
        VendorScope::of(connection),
    )
    .await?;
    Ok(standing.groups)
}

/// Lists the tenant, finds each item's scans, and writes the plan: this attempt's, or the one
/// another attempt wrote meanwhile.
async fn list_and_write_plan(
    store: &impl ObjectStore,
    vendor: &VendorAccess,
    connection: &Connection,
    run: &RunRef,
    children_at_once: usize,
) -> Result<StandingGroups, StepError> {
    let PlanStart {
        previous_run,
        started_at,
    } = start_processing(store, run).await?;
    if let Some(previous_run) = &previous_run {
        ensure_same_scope(store, connection, &run.sibling(previous_run)).await?;
    }
    let kind = connection.config.kind;
    let filters = &connection.config.filters;
    // Each project's main branch, as its record names it: what `use-main-branch` must answer.
    let mut main_branches = HashMap::new();
    let listed = match kind {
        ConnectorKind::Sast | ConnectorKind::Sca => {
            let listing = with_renewal(vendor, |c| async move { c.projects().await })
                .await
                .map_err(StepError::from)?;
            main_branches.extend(listing.items.iter().filter_map(|p| {
                let main = p.main_branch.clone().filter(|b| !b.is_empty())?;
                Some((p.id.clone(), main))
            }));
            Listed::from(listing, |p| {
                (p.id.clone(), p.name.clone(), filters.project_excluded(p))
            })
        }
        ConnectorKind::Dast => {
            let listing = with_renewal(vendor, |c| async move { c.dast_environments().await })
                .await
                .map_err(StepError::from)?;
            Listed::from(listing, |e| {
                let name = e.domain.clone().or(e.url.clone()).unwrap_or_default();
                (
                    e.environment_id.clone(),
                    name,
                    filters.environment_excluded(e),
                )
            })
        }
    };
    let listing_problem = listed.problem();
    let Listed {
        raw,
        malformed,
        ids,
        names,
        excluded,
        ..
    } = listed;
    let selected: Vec<String> = ids
        .iter()
        .zip(&excluded)
        .filter(|(_, reason)| reason.is_none())
        .map(|(id, _)| id.clone())
        .collect();
    let engines: Vec<Engine> = connection.engines().collect();
    let (scans, branch_doubts) = if kind.on_projects() {
        let policy = &connection.config.branches;
        scans_per_engine(vendor, &selected, policy, &main_branches, &engines).await?
    } else {
        Default::default()
    };
    let each_branch = connection.config.branches == BranchPolicy::EachBranch;
    let mut items = Vec::with_capacity(selected.len());
    let mut filtered = Vec::new();
    for (((id, name), record), reason) in ids.iter().zip(names).zip(raw).zip(excluded) {
        if let Some(reason) = reason {
            filtered.push(FilteredItem {
                item: item_key(id),
                vendor_id: id.clone(),
                name,
                reason,
            });
            continue;
        }
        let record: Value = serde_json::from_str(&record).unwrap_or(Value::Null);
        let item = |key: String, name: String, record: Value, scan: Option<&AssetScans>| WorkItem {
            run: run.clone(),
            item: key,
            vendor_id: id.clone(),
            name,
            kind,
            scan_id: scan.map(|s| s.main.id.clone()),
            engines: scan.map(|s| s.main_engines.clone()).unwrap_or_default(),
            other_scans: scan
                .map(|s| {
                    s.others
                        .iter()
                        .map(|(scan, engines)| EngineScan {
                            scan_id: scan.id.clone(),
                            engines: engines.clone(),
                            created: scan.created_at.clone(),
                            branch: scan.branch.clone(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            scan_created: scan.and_then(|s| s.main.created_at.clone()),
            scan_branch: scan.and_then(|s| s.main.branch.clone()),
            original_severity: connection.delivers(Engine::Sast)
                && connection.config.original_severity,
            record,
            record_stored: false,
            previous_run: previous_run.clone(),
            part: None,
        };
        match scans.get(id).map(Vec::as_slice).unwrap_or_default() {
            branch_scans if each_branch && !branch_scans.is_empty() => {
                for scan in branch_scans {
                    let branch = scan.main.branch.clone().unwrap_or_default();
                    let (key, name, record) = branch_asset(id, &name, &record, &branch);
                    items.push(item(key, name, record, Some(scan)));
                }
            }
            scans => items.push(item(item_key(id), name, record, scans.first())),
        }
    }
    let mut problems = malformed;
    problems.extend(leave_out_shared_keys(&mut items));
    if let Some(problem) = listing_problem {
        problems.push(format!("the item list is incomplete: {problem}"));
    }
    problems.extend(branch_doubts);
    // A listing that sends nothing is not taken for every asset deleted (see `nothing_listed`),
    // branch assets included; the questions below are then not asked.
    if let (true, true, true, Some(previous_run)) = (
        ids.is_empty(),
        connection.config.close_deleted_items,
        problems.is_empty(),
        &previous_run,
    ) && any_asset_with_findings_open(store, &run.sibling(previous_run)).await?
    {
        problems.push(nothing_listed(kind, previous_run));
    }
    // Under `each_branch`, before finalize may close branch assets this run did not plan: a
    // complete listing can still be short without a sign (see `a_branch_still_scanned`).
    if let (true, true, true, Some(previous_run)) = (
        each_branch,
        connection.config.close_deleted_items,
        problems.is_empty(),
        &previous_run,
    ) {
        let previous = run.sibling(previous_run);
        let unplanned = branches_not_planned(store, &previous, &items, &selected).await?;
        problems.extend(a_branch_still_scanned(vendor, &engines, unplanned).await);
    }
    // Likewise for projects and DAST environments: a listing that reads complete can still have
    // skipped one (one deleted and another created while it was paged shifts the rest by one
    // place, the count unchanged), and finalize would close it as deleted.
    if let (false, true, true, Some(previous_run)) = (
        kind.on_projects() && each_branch,
        connection.config.close_deleted_items,
        problems.is_empty(),
        &previous_run,
    ) {
        let listed: HashSet<String> = ids.iter().map(|id| item_key(id)).collect();
        let unlisted = assets_not_listed(store, &run.sibling(previous_run), &listed).await?;
        problems.extend(if kind.on_projects() {
            a_project_still_scanned(vendor, unlisted).await
        } else {
            an_environment_still_scanned(vendor, unlisted).await
        });
    }
    keep_items_small(store, run, &mut items).await?;
    let items = split_large_scans(store, vendor, connection, run, items).await?;
    let deadlines = Some(ItemDeadlines::from_run_start(started_at));
    let groups = group_items(items, children_at_once, deadlines);
    write_plan(store, run, groups, &filtered, previous_run, problems).await
}

/// Keeps every item small in the work list whatever the vendor sent: a group is a child's input,
/// which Step Functions limits to 256 KiB, and a group over it would fail on every run. A record
/// over [`MAX_CARRIED_RECORD_BYTES`] is stored at the item's `raw/<item>/item.json` (the
/// transform reads it there), and a name is cut at [`MAX_NAME_BYTES`].
async fn keep_items_small(
    store: &impl ObjectStore,
    run: &RunRef,
    items: &mut [WorkItem],
) -> Result<(), StepError> {
    for item in items {
        if item.name.len() > MAX_NAME_BYTES {
            let cut = (0..=MAX_NAME_BYTES)
                .rev()
                .find(|at| item.name.is_char_boundary(*at))
                .unwrap_or(0);
            item.name = format!("{}… ({} bytes)", &item.name[..cut], item.name.len());
        }
        let record = serde_json::to_vec(&item.record).expect("a JSON value serializes");
        if record.len() > MAX_CARRIED_RECORD_BYTES {
            // Written once: an overlapping plan attempt's record of the item (the same project
            // listed a moment apart) stands, so the transform's every attempt, and replay, read
            // the same bytes.
            put_json_once(store, &run.item_record(&item.item), &item.record).await?;
            item.record = Value::Null;
            item.record_stored = true;
        }
    }
    Ok(())
}

/// Groups the items for the state machine's children: as many items per group as leave every
/// one of `children_at_once` children a group (a small run keeps its parallelism), at most
/// [`MAX_ITEMS_PER_GROUP`] and [`MAX_GROUP_BYTES`] of input (an item larger than that goes alone).
/// Each part of a split scan goes alone, for the parts to be collected at once.
/// Every group carries the run's `deadlines`.
pub fn group_items(
    items: Vec<WorkItem>,
    children_at_once: usize,
    deadlines: Option<ItemDeadlines>,
) -> Vec<WorkGroup> {
    let per_group = items
        .len()
        .div_ceil(children_at_once.max(1))
        .clamp(1, MAX_ITEMS_PER_GROUP);
    let mut groups = Vec::new();
    let (mut current, mut bytes) = (Vec::new(), 0);
    for item in items {
        let size = serde_json::to_vec(&item).map_or(0, |b| b.len());
        let alone = item.part.is_some();
        if !current.is_empty()
            && (alone || current.len() == per_group || bytes + size > MAX_GROUP_BYTES)
        {
            groups.push(WorkGroup::new(std::mem::take(&mut current), deadlines));
            bytes = 0;
        }
        bytes += size;
        current.push(item);
        if alone {
            groups.push(WorkGroup::new(std::mem::take(&mut current), deadlines));
            bytes = 0;
        }
    }
    if !current.is_empty() {
        groups.push(WorkGroup::new(current, deadlines));
    }
    groups
}

/// A project or environment listing reduced to what the plan needs: id, name and why the
/// filters leave it out, beside the raw records.
struct Listed {
    raw: Vec<String>,
    malformed: Vec<String>,
    completeness: Completeness,
    ids: Vec<String>,
    names: Vec<String>,
    excluded: Vec<Option<String>>,
    /// Ids listed twice, each time with other contents (the pager drops only repeats alike in
    /// every byte): an item that changed while the list was paged and moved to a later page, so
    /// one after it may have been moved past a page's edge and skipped, the count still right.
    listed_twice: Vec<(String, String)>,
}

impl Listed {
    /// The listing's items by id, each once: an id listed again keeps its place with the later
    /// record (the list as it stands now) and is noted in [`Self::listed_twice`].
    fn from<T>(
        listing: Listing<T>,
        describe: impl Fn(&T) -> (String, String, Option<String>),
    ) -> Self {
        let (mut ids, mut names, mut excluded, mut raw) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut places = HashMap::<String, usize>::new();
        let mut listed_twice = Vec::new();
        for (item, record) in listing.items.iter().zip(listing.raw) {
            let (id, name, reason) = describe(item);
            if let Some(&place) = places.get(&id) {
                listed_twice.push((id, name.clone()));
                (names[place], excluded[place], raw[place]) = (name, reason, record);
                continue;
            }
            places.insert(id.clone(), ids.len());
            ids.push(id);
            names.push(name);
            excluded.push(reason);
            raw.push(record);
        }
        Self {
            raw,
            malformed: listing.malformed,
            completeness: listing.completeness,
            ids,
            names,
            excluded,
            listed_twice,
        }
    }

    /// Why the listing cannot be trusted to hold every item, if it cannot.
    fn problem(&self) -> Option<String> {
        let moved = self.listed_twice.first().map(|(id, name)| {
            format!(
                "{} item(s) were listed twice with other contents (the first: {id}, \"{name}\"): \
                 they changed while the list was paged and moved, which shifts the items after \
                 them, so others may have been skipped; every item not listed is carried, and the \
                 next run lists them again",
                self.listed_twice.len()
            )
        });
        let problems: Vec<String> = moved
            .into_iter()
            .chain(self.completeness.problem())
            .collect();
        (!problems.is_empty()).then(|| problems.join("; "))
    }
}

/// Refuses a run whose tenant, or sort of asset (projects or DAST environments), is not that of
/// the last committed run: every asset of that run would be unlisted here, reported deleted, and
/// under `close_deleted_items` its open findings closed while the other tenant still has them.
/// A run planned before scopes were recorded, or whose record cannot be read, is not compared.
async fn ensure_same_scope(
    store: &impl ObjectStore,
    connection: &Connection,
    previous: &RunRef,
) -> Result<(), StepError> {
    let record = readable(get_json::<RunRecord>(store, &previous.run_record()).await)?;
    let Some(was) = record.and_then(|r| r.scope) else {
        return Ok(());
    };
    let now = VendorScope::of(connection);
    if now.reconciles_with(&was) {
        return Ok(());
    }
    let field = if now.tenant != was.tenant {
        "vendor.tenant"
    } else if now.kind.on_projects() != was.kind.on_projects() {
        "kind"
    } else {
        "vendor.region"
    };
    let id = &connection.config.id;
    Err(StepError::BadConfig {
        source_name: format!("connection '{id}'"),
        errors: vec![FieldError::new(
            field,
            format!(
                "connection '{id}' last committed run {} with the {} of tenant {}; this config pulls the {} of tenant {}. Reconciled against the other's, every asset of run {} would be reported deleted, and closed under close_deleted_items, while its findings stand. Give this tenant or kind a connection of its own (another id), or put back the config run {} had",
                previous.run_id,
                was.assets(),
                was.tenant_named(),
                now.assets(),
                now.tenant_named(),
                previous.run_id,
                previous.run_id,
            ),
        )],
    })
}

/// An asset of its own for one branch of a project: the item key (readable, and unique even where
/// two branch names sanitize alike), its name, and the project record with `id` and `name` made the
/// branch asset's, so any transform map gives each branch its own asset; `projectId` and `branch`
/// keep where it came from.
fn branch_asset(
    project_id: &str,
    name: &str,
    record: &Value,
    branch: &str,
) -> (String, String, Value) {
    let asset_id = branch_asset_id(project_id, branch);
    let key = branch_asset_key(project_id, branch);
    let asset_name = format!("{name} @ {branch}");
    let mut record = record.clone();
    if let Some(fields) = record.as_object_mut() {
        fields.insert("projectId".into(), Value::from(project_id));
        fields.insert("branch".into(), Value::from(branch));
        fields.insert("id".into(), Value::from(asset_id));
        fields.insert("name".into(), Value::from(asset_name.clone()));
    }
    (key, asset_name, record)
}

/// Items whose keys coincide would share one folder and one ledger, and finalize would keep one of
/// them unsaid. Ids are the vendor's, so a project's id can be crafted as another project's branch
/// asset key (`p@main-0d6e4079` is `p`'s branch `main` under `each_branch`, where a project
/// without a scan keeps its id's key). The first item with a scan stands; each other is left out
/// and named in a problem (the listing then reads incomplete: nothing closes as deleted).
fn leave_out_shared_keys(items: &mut Vec<WorkItem>) -> Vec<String> {
    let mut standing: HashMap<String, usize> = HashMap::new();
    let mut left_out = Vec::new();
    for (at, item) in items.iter().enumerate() {
        match standing.get(&item.item).copied() {
            None => {
                standing.insert(item.item.clone(), at);
            }
            Some(first) if items[first].scan_id.is_none() && item.scan_id.is_some() => {
                standing.insert(item.item.clone(), at);
                left_out.push(first);
            }
            Some(_) => left_out.push(at),
        }
    }
    left_out.sort_unstable();
    let problems = left_out
        .iter()
        .map(|&at| {
            let (out, kept) = (&items[at], &items[standing[&items[at].item]]);
            format!(
                "project {} ({:?}) has the storage key {} of project {} ({:?}): it is left out of this run; a tenant's ids are its own, so one was made to match the other's (report it)",
                out.vendor_id,
                out.name,
                out.item,
                kept.vendor_id,
                kept.name
            )
        })
        .collect();
    for at in left_out.into_iter().rev() {
        items.remove(at);
    }
    problems
}

/// The key of a project's branch asset: its id's [`item_key`] and 8 hex digits of the branch's
/// SHA-256.
fn branch_asset_key(project_id: &str, branch: &str) -> String {
    let digest = hex::encode(&Sha256::digest(branch.as_bytes())[..4]);
    format!(
        "{}-{digest}",
        item_key(&branch_asset_id(project_id, branch))
    )
}

/// What every key of a branch of `project` starts with, cut at 80 characters as a long key is: the
/// key's as written now, and as written before `%` and `@` in a project's id were escaped (the
/// same for a UUID). Empty where the project's own encoding is cut: any key could be its.
fn branch_key_starts(project: &str) -> Vec<String> {
    let mut starts: Vec<String> = [branch_asset_id(project, ""), format!("{project}@")]
        .iter()
        .map(|id| {
            let start = item_key(id);
            if start.contains("~~") {
                String::new()
            } else {
                start.chars().take(80).collect()
            }
        })
        .collect();
    starts.dedup();
    starts
}

/// The project and branch a branch asset's key names (the inverse of [`branch_asset_key`]);
/// `None` for any other key, and for one whose encoding is too long to be held whole.
fn branch_of_asset_key(key: &str) -> Option<(String, String)> {
    let (encoded, digest) = key.rsplit_once('-')?;
    let id = vendor_id_of_key(encoded)?;
    // The branch is what follows the `@` whose SHA-256 the key ends with: the first `@` in a key
    // written now, maybe a later one in a key written before the project's `@` were escaped.
    let (project, branch) = id.match_indices('@').find_map(|(at, _)| {
        let branch = &id[at + 1..];
        let named = hex::encode(&Sha256::digest(branch.as_bytes())[..4]) == digest;
        named.then(|| project_of_branch_asset(&id, branch).map(|p| (p.into_owned(), branch)))?
    })?;
    Some((project, branch.to_string()))
}

/// The vendor id of a project's branch asset under `each_branch`: `<project id>@<branch>`, with
/// `%` and `@` in the project's id written `%25` and `%40`, so that the first `@` ends it: project
/// `p@q`'s branch `r` and project `p`'s branch `q@r` are two assets, not one. (Checkmarx One's
/// project ids are UUIDs, written as they are.)
fn branch_asset_id(project_id: &str, branch: &str) -> String {
    let project = project_id.replace('%', "%25").replace('@', "%40");
    format!("{project}@{branch}")
}

/// The project whose branch `branch` the asset of vendor id `asset_id` is (the inverse of
/// [`branch_asset_id`]); `None` for an id not of that branch.
pub(crate) fn project_of_branch_asset<'a>(asset_id: &'a str, branch: &str) -> Option<Cow<'a, str>> {
    let written = asset_id.strip_suffix(branch)?.strip_suffix('@')?;
    // Each `%` starts one of the two escapes, so `%40` is only ever an escaped `@`.
    let unescaped = if written.contains('%') {
        Cow::Owned(written.replace("%40", "@").replace("%25", "%"))
    } else {
        Cow::Borrowed(written)
    };
    // An id that is not written so was written before the escapes (a ledger of an older
    // release): its project's id as it stands.
    if branch_asset_id(&unescaped, branch) == asset_id {
        Some(unescaped)
    } else {
        Some(Cow::Borrowed(written))
    }
}

/// The scans one asset (a project, or a branch of one) takes its findings from: the main scan
/// and the engines it delivers, and a scan for each engine whose latest scan is another.
struct AssetScans {
    main: LastScan,
    main_engines: Vec<Engine>,
    others: Vec<(LastScan, Vec<Engine>)>,
}

/// Each project's scans per engine under the branch policy. With one engine, its latest
/// completed scan. With several, the latest completed scan of any engine (one batched call, as
/// for one engine) delivers the engines it ran; each engine it did not run is asked for on its
/// own, for the projects (or branches) that lack it. An engine with no completed scan delivers
/// nothing this run: its findings are carried as they were.
async fn scans_per_engine(
    vendor: &VendorAccess,
    ids: &[String],
    policy: &BranchPolicy,
    main_branches: &HashMap<String, String>,
    engines: &[Engine],
) -> Result<(HashMap<String, Vec<AssetScans>>, Vec<String>), StepError> {
    let single = (engines.len() == 1).then(|| engines[0]);
    // Under `each_branch`, each project's branches, listed once for every engine's look-up.
    let (listed, mut doubts) = match policy {
        BranchPolicy::EachBranch => {
            let (by_branch, doubts) = branches_of(vendor, ids).await?;
            (Some(by_branch), doubts)
        }
        _ => (None, Vec::new()),
    };
    let latest = latest_scans(
        vendor,
        ids,
        policy,
        main_branches,
        single,
        listed,
        &mut doubts,
    )
    .await?;
    // A scan that does not list its engines is asked about each engine: taking it for one that
    // ran them all would close, as absent, every finding of an engine it never ran.
    let ran = |scan: &LastScan, engine: Engine| {
        single.is_some()
            || scan
                .engines
                .iter()
                .any(|e| e.eq_ignore_ascii_case(engine.as_str()))
    };
    let mut assets: HashMap<String, Vec<AssetScans>> = latest
        .into_iter()
        .map(|(id, scans)| {
            let assets = scans
                .into_iter()
                .map(|main| AssetScans {
                    main_engines: engines.iter().copied().filter(|e| ran(&main, *e)).collect(),
                    main,
                    others: Vec::new(),
                })
                .collect();
            (id, assets)
        })
        .collect();
    for &engine in engines {
        let lacking: Vec<String> = assets
            .iter()
            .filter(|(_, scans)| scans.iter().any(|s| !s.main_engines.contains(&engine)))
            .map(|(id, _)| id.clone())
            .collect();
        if lacking.is_empty() {
            continue;
        }
        // Under `each_branch`, the branches whose scan lacks the engine, as listed already.
        let listed = (*policy == BranchPolicy::EachBranch).then(|| {
            let mut by_branch: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (id, scans) in &assets {
                for scan in scans.iter().filter(|s| !s.main_engines.contains(&engine)) {
                    let branch = scan.main.branch.clone().unwrap_or_default();
                    by_branch.entry(branch).or_default().push(id.clone());
                }
            }
            by_branch
        });
        let found = latest_scans(
            vendor,
            &lacking,
            policy,
            main_branches,
            Some(engine),
            listed,
            &mut doubts,
        )
        .await?;
        for (id, scans) in found {
            let Some(project) = assets.get_mut(&id) else {
                continue;
            };
            for scan in scans {
                let asset = project.iter_mut().find(|a| {
                    !a.main_engines.contains(&engine)
                        && (*policy != BranchPolicy::EachBranch || a.main.branch == scan.branch)
                });
                let Some(asset) = asset else { continue };
                if scan.id == asset.main.id {
                    asset.main_engines.push(engine);
                    continue;
                }
                match asset.others.iter_mut().find(|(o, _)| o.id == scan.id) {
                    Some((_, engines)) => engines.push(engine),
                    None => asset.others.push((scan, vec![engine])),
                }
            }
        }
    }
    // A latest scan that ran none of the engines (an API security scan, say) is not pulled: the
    // first other scan becomes the main one; an asset with no scan of any engine has none.
    for scans in assets.values_mut() {
        scans.retain_mut(|asset| {
            if asset.main_engines.is_empty() && !asset.others.is_empty() {
                (asset.main, asset.main_engines) = asset.others.remove(0);
            }
            !asset.main_engines.is_empty()
        });
    }
    Ok((assets, doubts))
}

/// Each project's latest completed scans (of `engine`, or of any engine) under the branch
/// policy, in batched `last-scan` calls: one scan per project, or under `each_branch` one per
/// branch (one batched call per branch name across the projects that have it).
///
/// `listed`: under `each_branch`, the projects on each branch ([`branches_of`], or, asking again
/// for another engine, the branches whose scan lacked it). `doubts`: where an answer is not what
/// was asked (see [`off_the_main_branch`]).
async fn latest_scans(
    vendor: &VendorAccess,
    ids: &[String],
    policy: &BranchPolicy,
    main_branches: &HashMap<String, String>,
    engine: Option<Engine>,
    listed: Option<BTreeMap<String, Vec<String>>>,
    doubts: &mut Vec<String>,
) -> Result<HashMap<String, Vec<LastScan>>, StepError> {
    let one_each = |scans: HashMap<String, LastScan>| {
        scans
            .into_iter()
            .map(|(id, scan)| (id, vec![scan]))
            .collect()
    };
    let query = |branch: Option<String>, use_main_branch: bool| LastScanQuery {
        branch,
        use_main_branch,
        ..LastScanQuery::completed(engine)
    };
    let ask = |ids: Vec<String>, query: LastScanQuery| async move {
        with_renewal(vendor, |c| {
            let (ids, query) = (ids.clone(), query.clone());
            async move { c.last_scans(&ids, &query).await }
        })
        .await
        .map_err(StepError::from)
    };
    match policy {
        BranchPolicy::Any => {
            let found = ask(ids.to_vec(), query(None, false)).await?;
            Ok(one_each(readable_scans(found, engine, None, doubts)))
        }
        BranchPolicy::Pinned { branch } => {
            let found = ask(ids.to_vec(), query(Some(branch.clone()), false)).await?;
            Ok(one_each(readable_scans(
                found,
                engine,
                Some(branch),
                doubts,
            )))
        }
        BranchPolicy::Main { fallback_to_any } => {
            let found = ask(ids.to_vec(), query(None, true)).await?;
            let unreadable: Vec<String> =
                found.unreadable.iter().map(|(id, _)| id.clone()).collect();
            let mut scans = readable_scans(found, engine, None, doubts);
            // A scan of another branch is not the main branch's: the project goes on without it,
            // and the run says so. Not asked about any branch under `fallback_to_any` either: a
            // server that ignored the filter would answer the same scan, and whether the main
            // branch has none is not known.
            let off = off_the_main_branch(&scans, main_branches, engine);
            for (id, problem) in &off {
                scans.remove(id);
                doubts.push(problem.clone());
            }
            let missing: Vec<String> = ids
                .iter()
                .filter(|id| {
                    !scans.contains_key(*id)
                        && !off.iter().any(|(off, _)| off == *id)
                        && !unreadable.contains(id)
                })
                .cloned()
                .collect();
            if *fallback_to_any && !missing.is_empty() {
                let found = ask(missing, query(None, false)).await?;
                scans.extend(readable_scans(found, engine, None, doubts));
            }
            Ok(one_each(scans))
        }
        BranchPolicy::EachBranch => {
            let by_branch = listed.unwrap_or_default();
            let answers = futures_util::stream::iter(by_branch)
                .map(|(branch, projects)| async move {
                    let found = ask(projects, query(Some(branch.clone()), false)).await?;
                    Ok::<_, StepError>((branch, found))
                })
                .buffer_unordered(vendor.concurrency())
                .try_collect::<Vec<_>>()
                .await?;
            let mut scans: HashMap<String, Vec<LastScan>> = HashMap::new();
            for (branch, found) in answers {
                for (id, mut scan) in readable_scans(found, engine, Some(&branch), doubts) {
                    scan.branch.get_or_insert(branch.clone());
                    scans.entry(id).or_default().push(scan);
                }
            }
            // The same order every run, whatever order the answers came in.
            for branch_scans in scans.values_mut() {
                branch_scans.sort_by(|a, b| a.branch.cmp(&b.branch));
            }
            Ok(scans)
        }
    }
}

/// The scans of a `last-scan` answer. Each project whose entry cannot be read is named in
/// `doubts` and has no scan taken: its findings are carried, none closed, and the run is partial
/// (read as a project without a scan, its branch assets could close as deleted; one bad entry
/// failing the whole answer would fail every run until the vendor's data changed).
fn readable_scans(
    found: LastScans,
    engine: Option<Engine>,
    branch: Option<&str>,
    doubts: &mut Vec<String>,
) -> HashMap<String, LastScan> {
    let mut unreadable = found.unreadable;
    unreadable.sort();
    for (id, why) in unreadable {
        let of_engine = engine
            .map(|e| format!(" of the {} engine", e.as_str()))
            .unwrap_or_default();
        let on_branch = branch
            .map(|b| format!(" on branch {b}"))
            .unwrap_or_default();
        doubts.push(format!(
            "project {id}: the tenant's answer for its latest scan{of_engine}{on_branch} cannot be read ({why}); no scan is taken for it: what it would hold is carried, none closed"
        ));
    }
    found.scans
}

/// The projects whose `use-main-branch` answer is a scan of another branch than the project's
/// record names as its main one (a server ignoring the filter), each with the problem: taken for
/// the main branch's, it would close as absent every finding of the main branch it does not
/// hold. Branch names are compared exactly, as git names them (`Main` is another branch than
/// `main`: taking its scan would close what it does not hold); a project or scan naming no
/// branch passes.
fn off_the_main_branch(
    scans: &HashMap<String, LastScan>,
    main_branches: &HashMap<String, String>,
    engine: Option<Engine>,
) -> Vec<(String, String)> {
    let mut off: Vec<(String, String)> = scans
        .iter()
        .filter_map(|(id, scan)| {
            let main = main_branches.get(id)?;
            let branch = scan.branch.as_deref().filter(|b| !b.is_empty())?;
            (branch != main).then(|| {
                let of_engine = engine
                    .map(|e| format!(" of the {} engine", e.as_str()))
                    .unwrap_or_default();
                let problem = format!(
                    "project {id}: asked for the latest scan{of_engine} of its main branch {main} (`use-main-branch`), the tenant answered scan {} of branch {branch}, as if it ignored the filter; no scan is taken for it (nor any branch's, under `fallback_to_any`): what it would hold is carried, none closed",
                    scan.id
                );
                (id.clone(), problem)
            })
        })
        .collect();
    off.sort();
    off
}

/// The projects on each branch: each project's branches, listed; and, for each project whose
/// list may be short, why (see [`BranchListing`]). Every project's first page, then the projects
/// whose first page was as long as the longest any project got (the server may cap its pages
/// there) are listed again from the start, page after page (their pages close together, so a
/// list that moves meanwhile shows as a repeated name): one call per project where the projects
/// have fewer branches than the documented default page (20).
async fn branches_of(
    vendor: &VendorAccess,
    ids: &[String],
) -> Result<(BTreeMap<String, Vec<String>>, Vec<String>), StepError> {
    let page = |id: String, offset: usize| async move {
        with_renewal(vendor, |c| {
            let id = id.clone();
            async move { c.project_branches_page(&id, offset).await }
        })
        .await
        .map_err(StepError::from)
    };
    // A project deleted between the project list and its branch list is answered 404: its list
    // ends in doubt (the run is partial, nothing of it closes), not the run's plan.
    let add = |listing: &mut BranchListing, page: Result<Vec<String>, StepError>| {
        match page {
            Ok(names) => listing.add(names),
            Err(StepError::Vendor(VendorError::NotFound { .. })) => listing.project_not_found(),
            Err(error) => return Err(error),
        }
        Ok(())
    };
    let first_pages = futures_util::stream::iter(ids.iter().cloned())
        .map(|id| async move {
            let mut listing = BranchListing::default();
            add(&mut listing, page(id.clone(), 0).await)?;
            Ok::<_, StepError>((id, listing))
        })
        .buffer_unordered(vendor.concurrency())
        .try_collect::<Vec<_>>()
        .await?;
    let longest = first_pages
        .iter()
        .map(|(_, listing)| listing.last_page())
        .max()
        .unwrap_or_default();
    let listed = futures_util::stream::iter(first_pages)
        .map(|(id, mut listing)| async move {
            let mut longest = longest;
            if listing.may_continue(longest) {
                listing = BranchListing::default();
                loop {
                    let next = page(id.clone(), listing.offset()).await;
                    if let Ok(names) = &next {
                        longest = longest.max(names.len());
                    }
                    add(&mut listing, next)?;
                    if !listing.may_continue(longest) {
                        break;
                    }
                }
            }
            Ok::<_, StepError>((id, listing.into_names()))
        })
        .buffer_unordered(vendor.concurrency())
        .try_collect::<Vec<_>>()
        .await?;
    let mut by_branch: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut doubts = Vec::new();
    for (id, (branches, doubt)) in listed {
        if let Some(doubt) = doubt {
            doubts.push(format!(
                "the branch list of project {id} may be short: {doubt}; the branches it did not list are carried, not closed"
            ));
        }
        for branch in branches {
            by_branch.entry(branch).or_default().push(id.clone());
        }
    }
    doubts.sort();
    Ok((by_branch, doubts))
}

/// Under `each_branch`, the previous run's branch assets of projects listed now that this run
/// plans no item for, where finalize would close open findings as deleted: `(project, branch)`,
/// sorted. Each asset's project and branch are read from its key, or from its ledger where the
/// key holds only a hash (an encoding over 100 characters). Assets the previous run reported
/// deleted and closed, or with nothing open, are left out: nothing of theirs can close again.
async fn branches_not_planned(
    store: &impl ObjectStore,
    previous: &RunRef,
    items: &[WorkItem],
    projects: &[String],
) -> Result<Vec<(String, String)>, StepError> {
    let planned: HashSet<&str> = items.iter().map(|item| item.item.as_str()).collect();
    let mut unplanned = Vec::new();
    for key in store.list(&previous.ledger_prefix()).await? {
        if let Some(item) = previous.ledger_item(&key).filter(|i| !planned.contains(i)) {
            unplanned.push((item.to_string(), key));
        }
    }
    if unplanned.is_empty() {
        return Ok(Vec::new());
    }
    let nothing_open = closed_as_deleted(store, previous).await?;
    let projects: HashSet<&str> = projects.iter().map(String::as_str).collect();
    // A key cut to its first 80 characters and a hash starts as its project's branch keys do:
    // only those ledgers are read.
    let starts: Vec<String> = projects
        .iter()
        .flat_map(|project| branch_key_starts(project))
        .collect();
    let mut branches = Vec::new();
    for (item, key) in unplanned {
        if nothing_open.contains(&item) {
            continue;
        }
        let asset = match branch_of_asset_key(&item) {
            Some(asset) => Some(asset),
            // A ledger that cannot be read names no branch to ask about: finalize carries it as
            // stored, neither deleted nor closed.
            None if item.contains("~~") && starts.iter().any(|s| item.starts_with(s)) => {
                readable(get_gzip_json::<Ledger>(store, &key).await)?.and_then(|ledger| {
                    let branch = ledger.branch?;
                    let project = project_of_branch_asset(&ledger.vendor_item_id, &branch)?;
                    Some((project.into_owned(), branch))
                })
            }
            None => None,
        };
        branches.extend(asset.filter(|(project, _)| projects.contains(project.as_str())));
    }
    branches.sort();
    Ok(branches)
}

/// The items a previous run reported deleted with nothing left open, not asked about again. A
/// manifest that cannot be read names none: every unplanned item is asked about.
pub(super) async fn closed_as_deleted(
    store: &impl ObjectStore,
    previous: &RunRef,
) -> Result<HashSet<String>, StepError> {
    Ok(
        readable(get_json::<DeletedItems>(store, &previous.manifest()).await)?
            .map(|manifest| {
                let deleted = manifest.deleted_items.into_iter();
                deleted
                    .filter(|d| d.left_open() == 0)
                    .map(|d| d.item)
                    .collect()
            })
            .unwrap_or_default(),
    )
}

/// Ledgers read at once when the plan counts the open findings of unlisted assets.
const LEDGERS_READ_AT_ONCE: usize = 16;

/// The vendor ids of the projects or DAST environments whose ledger the `previous` run has with
/// findings open and this run's listing did not send (`listed`: their item keys): what finalize
/// would close as deleted. Those with none open are not asked about (finalize closes nothing of
/// them), so the deleted assets a connection gathers over the years cost no question; a ledger
/// that cannot be read may hold open findings and is asked about. A key that holds only its id's
/// start and a hash, or a branch asset's, names no project to ask about: finalize reports it
/// deleted as before.
async fn assets_not_listed(
    store: &impl ObjectStore,
    previous: &RunRef,
    listed: &HashSet<String>,
) -> Result<Vec<String>, StepError> {
    let mut unlisted = Vec::new();
    let keys = store.list(&previous.ledger_prefix()).await?;
    let mut nothing_open = None;
    for key in keys {
        let Some(item) = previous.ledger_item(&key).filter(|i| !listed.contains(*i)) else {
            continue;
        };
        // A branch asset's key (a connection that took each branch before) names no project id.
        if branch_of_asset_key(item).is_some() {
            continue;
        }
        // Those the previous run closed as deleted, read from its manifest, need no ledger read.
        if nothing_open.is_none() {
            nothing_open = Some(closed_as_deleted(store, previous).await?);
        }
        if nothing_open.as_ref().is_some_and(|n| n.contains(item)) {
            continue;
        }
        if let Some(id) = vendor_id_of_key(item) {
            unlisted.push((id, key));
        }
    }
    futures_util::stream::iter(unlisted)
        .map(|(id, key)| async move { Ok(holds_findings_open(store, &key).await?.then_some(id)) })
        .buffered(LEDGERS_READ_AT_ONCE)
        .try_filter_map(|id| async move { Ok(id) })
        .try_collect()
        .await
}

/// Whether any asset of the `previous` run, branch assets included, holds findings open: its
/// ledgers read until one does.
async fn any_asset_with_findings_open(
    store: &impl ObjectStore,
    previous: &RunRef,
) -> Result<bool, StepError> {
    let keys = store.list(&previous.ledger_prefix()).await?;
    let mut open = futures_util::stream::iter(keys)
        .map(|key| async move { holds_findings_open(store, &key).await })
        .buffered(LEDGERS_READ_AT_ONCE)
        .try_filter(|open| std::future::ready(*open));
    Ok(open.try_next().await?.is_some())
}

/// Whether the ledger at `key` holds findings open; one that cannot be read may.
async fn holds_findings_open(store: &impl ObjectStore, key: &str) -> Result<bool, StepError> {
    match get_gzip_json::<OpenFindings>(store, key).await {
        Ok(ledger) => Ok(ledger.is_some_and(|l| l.count > 0)),
        Err(StepError::BadObject { .. }) => Ok(true),
        Err(error) => Err(error),
    }
}

/// A listing that sends nothing, where the last committed run delivered assets with findings
/// open, reads as a tenant whose every project (environment) was deleted. A credential that lost
/// its access to them (removed from their groups, say) is answered the same way as far as the
/// API tells, and the questions asked of each unlisted asset would find no scan either: closing
/// every finding of the tenant on that word is the worst mistake the connector could make. A
/// problem: the run is partial and nothing is closed.
fn nothing_listed(kind: ConnectorKind, previous_run: &str) -> String {
    let what = if kind.on_projects() {
        "projects"
    } else {
        "DAST environments"
    };
    format!(
        "the tenant lists no {what}, yet run {previous_run} left assets with findings open: the credential may have lost its access to them (its user or client removed from their groups), which the API answers as it answers their deletion; they are carried, not closed. Give the credential back its access; if the tenant's {what} were all deleted, the connection has nothing left to pull"
    )
}

/// Asks for the last scan, of any status and engine, of each project the listing did not send
/// ([`assets_not_listed`]). A scan found means the listing was short without a sign: the answer
/// is a problem, so the run is partial and finalize closes nothing it did not plan. None found:
/// those projects are gone (or hold no scan), as the listing said. An answer refused is a problem
/// too, not the plan's failure: the assets listed are still delivered.
async fn a_project_still_scanned(vendor: &VendorAccess, unlisted: Vec<String>) -> Option<String> {
    if unlisted.is_empty() {
        return None;
    }
    let query = LastScanQuery {
        scan_status: None,
        ..LastScanQuery::completed(None)
    };
    let asked = with_renewal(vendor, |c| {
        let (ids, query) = (unlisted.clone(), query.clone());
        async move { c.last_scans(&ids, &query).await }
    })
    .await;
    let found = match asked {
        Ok(found) => found,
        Err(error) => return Some(not_asked(&unlisted, "project(s)", &error)),
    };
    let mut still = unlisted.iter().filter(|id| found.has(id));
    still.next().map(|project| {
        format!(
            "project {project} is not in the tenant's project list, yet asked for alone the tenant has a scan of it: the list may have skipped it (a project deleted and another created while it was paged); the {} projects the list did not send are carried, not closed",
            unlisted.len()
        )
    })
}

/// Asks for the scans of each DAST environment the listing did not send ([`assets_not_listed`]),
/// as many at once as the connection's concurrency, until one has a scan: then the listing was
/// short without a sign, as for projects ([`a_project_still_scanned`]). None has: those
/// environments are gone, as the listing said (a deleted environment's scans go with it; an id
/// the tenant does not know is answered 404). An answer refused is a problem, as for projects.
async fn an_environment_still_scanned(
    vendor: &VendorAccess,
    unlisted: Vec<String>,
) -> Option<String> {
    let mut asked = futures_util::stream::iter(&unlisted)
        .map(|environment| async move {
            let scanned = with_renewal(vendor, |c| async move {
                c.dast_environment_scanned(environment).await
            })
            .await?;
            Ok::<_, crate::cxone::VendorError>(scanned.then_some(environment))
        })
        .buffer_unordered(vendor.concurrency());
    loop {
        match asked.next().await? {
            Ok(Some(environment)) => {
                return Some(format!(
                    "DAST environment {environment} is not in the tenant's environment list, yet asked for alone the tenant has a scan of it: the list may have skipped it (an environment deleted and another created while it was paged); the {} environments the list did not send are carried, not closed",
                    unlisted.len()
                ));
            }
            Ok(None) => {}
            Err(error) => return Some(not_asked(&unlisted, "DAST environment(s)", &error)),
        }
    }
}

/// The problem of a question about unlisted assets the tenant did not answer.
fn not_asked(unlisted: &[String], assets: &str, error: &impl std::fmt::Display) -> String {
    let named: Vec<String> = unlisted
        .iter()
        .take(5)
        .map(|id| format!("{id}: ledger/{}.json.gz", item_key(id)))
        .collect();
    format!(
        "the tenant's list did not send {} {assets} of the last committed run ({}{}), and asking whether they are still there failed ({error}): they are carried, not closed, and the next run asks again. If the tenant answers so for assets it deleted, every run stays partial: let them go by setting close_deleted_items to false, or close their findings in ETM and delete those ledgers from the last committed run",
        unlisted.len(),
        named.join(", "),
        if unlisted.len() > named.len() {
            ", …"
        } else {
            ""
        },
    )
}

/// Of a previous run's manifest, what [`closed_as_deleted`] reads: the items it reported
/// deleted (the rest of the manifest, one line per asset, is parsed past, not kept).
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeletedItems {
    #[serde(default)]
    deleted_items: Vec<DeletedItem>,
}

/// Asks, for each branch asset the plan found no scan for, its project's latest completed scan
/// on that branch alone of each engine the connection delivers (`last-scan` for one project, one
/// branch and one engine: an exact match, as the plan keeps a branch only for a scan of an engine
/// it delivers). A scan found means the plan's lists were short without a sign (a server capping branch pages below
/// the documented default of 20, pages that shrink, a branch list that moved while it was read,
/// a `last-scan` answer cut short): the answer is a problem, so the run is partial and finalize
/// closes nothing it did not plan. The first scan found ends the asking: one carries them all.
/// None found: those branches are gone, or have no completed scan, as the plan found.
async fn a_branch_still_scanned(
    vendor: &VendorAccess,
    engines: &[Engine],
    branches: Vec<(String, String)>,
) -> Option<String> {
    let unplanned = branches.len();
    let questions = branches.into_iter().flat_map(|(project, branch)| {
        engines
            .iter()
            .map(move |&engine| (project.clone(), branch.clone(), engine))
    });
    let mut asked = futures_util::stream::iter(questions)
        .map(|(project, branch, engine)| async move {
            let query = LastScanQuery {
                branch: Some(branch.clone()),
                ..LastScanQuery::completed(Some(engine))
            };
            let found = with_renewal(vendor, |c| {
                let (ids, query) = (vec![project.clone()], query.clone());
                async move { c.last_scans(&ids, &query).await }
            })
            .await;
            match found {
                Ok(found) => Ok(found.has(&project).then_some((project, branch))),
                Err(error) => Err((project, branch, error)),
            }
        })
        .buffer_unordered(vendor.concurrency());
    // A question refused is a problem, as for projects (`not_asked`): the run is partial.
    loop {
        match asked.next().await? {
            Ok(None) => {}
            Ok(Some((project, branch))) => {
                return Some(format!(
                    "the plan found no completed scan on branch {branch} of project {project}, yet asked for that branch alone the tenant has one: its lists of branches or of their scans may be short; the {unplanned} branch assets of listed projects it did not plan, and every other item it did not list, are carried, not closed"
                ));
            }
            Err((project, branch, error)) => {
                return Some(format!(
                    "the plan found no completed scan on branch {branch} of project {project}, and asking for that branch alone failed ({error}): the {unplanned} branch assets of listed projects it did not plan, and every other item it did not list, are carried, not closed; the next run asks again"
                ));
            }
        }
    }
}

/// The plan that stands (`plan.json`), written only where none is, after the attempt's own
/// objects: every plan attempt of a run, the map and finalize then go on with the same one. Step
/// Functions retries a plan whose answer it lost while it still runs, and the two attempts list
/// the tenant at different moments: one attempt's work list read beside the other's problems or
/// filtered list, or a map run over one list and a finalize over the other, could close what
/// neither listed.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct StandingPlan {
    /// Names the attempt's folder (`plan/<attempt>/`): 16 hex digits.
    attempt: String,
    /// The run the plan reconciles against.
    previous_run: Option<String>,
    /// What the listing found wrong (malformed or incomplete listings, a list that skipped an
    /// asset, a question about one refused).
    problems: Vec<String>,
}

impl StandingPlan {
    fn new(previous_run: Option<String>, problems: Vec<String>) -> Self {
        Self {
            attempt: format!("{:016x}", rand::random::<u64>()),
            previous_run,
            problems,
        }
    }

    /// The attempt, where it can name a folder of the run.
    fn attempt(&self, run: &RunRef) -> Result<&str, StepError> {
        let attempt = self.attempt.as_str();
        if attempt.len() == 16 && attempt.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(attempt)
        } else {
            Err(StepError::bad_object(
                &run.plan(),
                format!(
                    "attempt {attempt:?} is not 16 hex digits, as the plan writes it; the run cannot go on, the next run plans afresh"
                ),
            ))
        }
    }
}

/// The plan a run goes on with: the one that stands, this attempt's or an earlier one's.
pub struct StandingGroups {
    pub groups: Vec<WorkGroup>,
    /// The run the plan reconciles against.
    pub previous_run: Option<String>,
}

impl StandingGroups {
    /// The items planned: the parts of a split scan are one.
    fn items(&self) -> u64 {
        let keys: HashSet<&str> = self
            .groups
            .iter()
            .flat_map(|g| &g.items)
            .map(|i| i.item.as_str())
            .collect();
        keys.len() as u64
    }
}

/// Writes this attempt's work list (one group per line, the state machine's item reader's JSONL)
/// and filtered list in its own folder, then the plan that stands, unless another attempt's
/// stands already: the run then goes on with that one, whatever this attempt listed. Either way
/// the standing work list is put where the map reads it; an attempt cut off before that leaves
/// it to the next, which finds the plan standing.
pub async fn write_plan(
    store: &impl ObjectStore,
    run: &RunRef,
    groups: Vec<WorkGroup>,
    filtered: &[FilteredItem],
    previous_run: Option<String>,
    problems: Vec<String>,
) -> Result<StandingGroups, StepError> {
    let ours = StandingPlan::new(previous_run, problems);
    let mut work_list = Vec::new();
    for group in &groups {
        serde_json::to_writer(&mut work_list, group).expect("serializes");
        work_list.push(b'\n');
    }
    let work_list = Bytes::from(work_list);
    store
        .put(
            &run.attempt_filtered_list(&ours.attempt),
            Bytes::from(serde_json::to_vec(filtered).expect("serializes")),
        )
        .await?;
    store
        .put(&run.attempt_work_list(&ours.attempt), work_list.clone())
        .await?;
    match put_json_once(store, &run.plan(), &ours).await? {
        Once::Written => {
            store.put(&run.work_list(), work_list).await?;
            Ok(StandingGroups {
                groups,
                previous_run: ours.previous_run,
            })
        }
        Once::Standing(earlier) => {
            let standing = go_on_with(store, run, earlier).await?;
            // What this attempt listed is read by no one.
            store
                .delete(&run.attempt_filtered_list(&ours.attempt))
                .await?;
            store.delete(&run.attempt_work_list(&ours.attempt)).await?;
            Ok(standing)
        }
    }
}

/// Goes on with the plan another attempt wrote: puts its work list where the map reads it (that
/// attempt may have been cut off before) and answers its groups.
async fn go_on_with(
    store: &impl ObjectStore,
    run: &RunRef,
    standing: StandingPlan,
) -> Result<StandingGroups, StepError> {
    tracing::info!(
        run = %run.run_id,
        attempt = %standing.attempt,
        "a plan attempt's plan stands: the run goes on with it"
    );
    let key = run.attempt_work_list(standing.attempt(run)?);
    let body = read_work_list_object(store, &key).await?;
    let groups = parse_work_list(&key, &body)?;
    store.put(&run.work_list(), body).await?;
    Ok(StandingGroups {
        groups,
        previous_run: standing.previous_run,
    })
}

async fn read_work_list_object(store: &impl ObjectStore, key: &str) -> Result<Bytes, StepError> {
    store.get(key).await?.ok_or_else(|| {
        StepError::bad_object(
            key,
            "the work list the run's plan names is missing; the next run plans afresh",
        )
    })
}

/// A work list's groups, in order. A line is a group, or, in a run planned before items were
/// grouped, one item.
fn parse_work_list(key: &str, body: &[u8]) -> Result<Vec<WorkGroup>, StepError> {
    body.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .enumerate()
        .map(|(n, line)| {
            serde_json::from_slice(line).map_err(|e| {
                StepError::bad_object(
                    key,
                    format!(
                        "line {}: {e}; the run cannot go on, the next run plans afresh",
                        n + 1
                    ),
                )
            })
        })
        .collect()
}

/// The plan that stands, if one does.
async fn read_standing(
    store: &impl ObjectStore,
    run: &RunRef,
) -> Result<Option<StandingPlan>, StepError> {
    let Some(body) = store.get(&run.plan()).await? else {
        return Ok(None);
    };
    serde_json::from_slice(&body).map(Some).map_err(|e| {
        StepError::bad_object(
            &run.plan(),
            format!("unreadable ({e}); the run cannot go on, the next run plans afresh"),
        )
    })
}

/// A run's plan as finalize reads it back: the one that stands.
pub(crate) struct Planned {
    pub items: Vec<WorkItem>,
    pub filtered: Vec<FilteredItem>,
    /// The listing's problems.
    pub problems: Vec<String>,
    /// The run the plan reconciles against.
    pub previous_run: Option<String>,
}

/// Reads the items of the plan that stands back, in order, with its problems (the state
/// machine's item reader reads its groups on AWS).
pub async fn read_work_list(
    store: &impl ObjectStore,
    run: &RunRef,
) -> Result<(Vec<WorkItem>, Vec<String>), StepError> {
    let planned = read_plan(store, run).await?;
    Ok((planned.items, planned.problems))
}

/// [`read_work_list`], with the filtered list and the run the plan reconciles against, all of the
/// plan that stands.
pub(crate) async fn read_plan(
    store: &impl ObjectStore,
    run: &RunRef,
) -> Result<Planned, StepError> {
    let standing = read_standing(store, run).await?.ok_or_else(|| {
        StepError::bad_object(
            &run.plan(),
            "the run's plan is missing: its plan never finished, or an earlier version of the connector planned it (one that wrote no plan.json); nothing of the run can be committed, the next run plans afresh",
        )
    })?;
    let attempt = standing.attempt(run)?;
    let key = run.attempt_work_list(attempt);
    let body = read_work_list_object(store, &key).await?;
    let items = parse_work_list(&key, &body)?
        .into_iter()
        .flat_map(|g| g.items)
        .collect();
    let filtered_key = run.attempt_filtered_list(attempt);
    let filtered = get_json(store, &filtered_key).await?.ok_or_else(|| {
        StepError::bad_object(
            &filtered_key,
            "the filtered list the run's plan names is missing; the next run plans afresh",
        )
    })?;
    Ok(Planned {
        items,
        filtered,
        problems: standing.problems,
        previous_run: standing.previous_run,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A `use-main-branch` answer whose scan is of another branch than the project's record
    /// names as its main one is named, the main one in another case too (git's names are
    /// case-sensitive); one naming no branch, or of a project naming none, passes.
    #[test]
    fn a_main_branch_answer_of_another_branch_is_named() {
        let answer = |branch: Option<&str>| {
            let scan: LastScan =
                serde_json::from_value(serde_json::json!({"id": "s1", "branch": branch})).unwrap();
            HashMap::from([("p".to_string(), scan)])
        };
        let mains = HashMap::from([("p".to_string(), "main".to_string())]);
        for fine in [Some("main"), None, Some("")] {
            assert!(
                off_the_main_branch(&answer(fine), &mains, None).is_empty(),
                "{fine:?}"
            );
        }
        for (engine, asked, branch) in [
            (None, "scan of its", "feature/x"),
            (
                Some(Engine::Kics),
                "scan of the kics engine of its",
                "feature/x",
            ),
            (None, "scan of its", "Main"),
        ] {
            let off = off_the_main_branch(&answer(Some(branch)), &mains, engine);
            assert!(
                off.len() == 1
                    && off[0].0 == "p"
                    && off[0].1.contains(&format!(
                        "asked for the latest {asked} main branch main (`use-main-branch`), the tenant answered scan s1 of branch {branch}"
                    )),
                "{off:?}"
            );
        }
        assert!(off_the_main_branch(&answer(Some("feature/x")), &HashMap::new(), None).is_empty());
    }

    #[test]
    fn a_branch_assets_key_gives_back_its_project_and_branch() {
        let uuid = "520b4930-0200-0000-0200-000000be5614";
        for (project, branch) in [
            (uuid, "main"),
            (uuid, "feature/topic-7"),
            (uuid, "a@b"),
            (uuid, ""),
            (uuid, "ends-"),
            ("p@q", "release/2.0"),
            ("p%40q", "r"),
            ("%", "%40"),
        ] {
            let key = branch_asset_key(project, branch);
            assert_eq!(
                branch_of_asset_key(&key),
                Some((project.to_string(), branch.to_string())),
                "{key}"
            );
        }
        // Not a branch asset's key: a project's, a key with another digest, a cut one.
        assert_eq!(branch_of_asset_key(uuid), None);
        let key = branch_asset_key(uuid, "main");
        assert_eq!(branch_of_asset_key(&key.replace("main", "mainx")), None);
        let long = branch_asset_key(uuid, &"feature/".repeat(20));
        assert!(long.contains("~~"), "{long}");
        assert_eq!(branch_of_asset_key(&long), None, "read from its ledger");
    }

    /// An `@` in a project's id does not let two branches of two projects share an asset: the
    /// project's `@` (and `%`) are escaped, so the first `@` of an asset's id ends the project's.
    /// Before, project `p@q`'s branch `r` and project `p`'s branch `q@r` were both asset `p@q@r`.
    #[test]
    fn two_projects_branches_never_share_an_asset_id() {
        let uuid = "520b4930-0200-0000-0200-000000be5614";
        assert_eq!(branch_asset_id(uuid, "a@b"), format!("{uuid}@a@b"));
        for [(p1, b1), (p2, b2)] in [
            [("p@q", "r"), ("p", "q@r")],
            [("p%40q", "r"), ("p@q", "r")],
            [("p%", "40@r"), ("p", "%40@r")],
        ] {
            let (one, other) = (branch_asset_id(p1, b1), branch_asset_id(p2, b2));
            assert_ne!(one, other);
            assert_eq!(project_of_branch_asset(&one, b1).as_deref(), Some(p1));
            assert_eq!(project_of_branch_asset(&other, b2).as_deref(), Some(p2));
            assert_ne!(branch_asset_key(p1, b1), branch_asset_key(p2, b2));
        }
        // An id written before the escapes names its project as it stands, and its key reads
        // back; each long key starts as its project's branch keys do, then and now.
        assert_eq!(
            project_of_branch_asset("p@q@r", "r").as_deref(),
            Some("p@q")
        );
        assert_eq!(
            project_of_branch_asset("p%41@r", "r").as_deref(),
            Some("p%41")
        );
        assert_eq!(project_of_branch_asset("p@q@r", "s"), None);
        let before = |project: &str, branch: &str| {
            let digest = hex::encode(&Sha256::digest(branch.as_bytes())[..4]);
            format!("{}-{digest}", item_key(&format!("{project}@{branch}")))
        };
        assert_eq!(
            branch_of_asset_key(&before("p@q", "r")),
            Some(("p@q".to_string(), "r".to_string()))
        );
        let long = "feature/".repeat(20);
        for key in [branch_asset_key("p@q", &long), before("p@q", &long)] {
            assert!(key.contains("~~"), "{key}");
            let starts = branch_key_starts("p@q");
            assert!(
                starts.iter().any(|s| key.starts_with(s)),
                "{key} {starts:?}"
            );
        }
        assert_eq!(branch_key_starts(uuid), [format!("{uuid}~40")]);
    }

    proptest! {
        #[test]
        fn every_branch_assets_key_held_whole_gives_back_its_project_and_branch(
            project in "[a-zA-Z0-9@%/_~.-]{1,40}",
            branch in "[a-zA-Z0-9@%/_~. -]{0,40}",
        ) {
            let key = branch_asset_key(&project, &branch);
            let back = branch_of_asset_key(&key);
            if key.contains("~~") {
                prop_assert_eq!(back, None);
            } else {
                prop_assert_eq!(back, Some((project.clone(), branch.clone())));
            }
            let id = branch_asset_id(&project, &branch);
            let back = project_of_branch_asset(&id, &branch);
            prop_assert_eq!(back.as_deref(), Some(project.as_str()));
        }

        #[test]
        fn no_other_split_of_a_project_and_branch_shares_their_asset_id(
            project in "[pq@%]{1,6}",
            branch in "[pq@%]{0,6}",
        ) {
            let id = branch_asset_id(&project, &branch);
            let joined = format!("{project}@{branch}");
            for (at, _) in joined.match_indices('@') {
                let (p, b) = (&joined[..at], &joined[at + 1..]);
                if (p, b) != (project.as_str(), branch.as_str()) {
                    prop_assert_ne!(branch_asset_id(p, b), id.clone(), "{} {}", p, b);
                }
            }
        }
    }

    fn item(n: usize, record_bytes: usize) -> WorkItem {
        WorkItem {
            run: RunRef {
                connection_id: "c".into(),
                run_id: "r".into(),
            },
            item: format!("item-{n}"),
            vendor_id: format!("p{n}"),
            name: format!("project {n}"),
            kind: ConnectorKind::Sast,
            scan_id: None,
            engines: Vec::new(),
            other_scans: Vec::new(),
            scan_branch: None,
            original_severity: false,
            scan_created: None,
            record: Value::String("x".repeat(record_bytes)),
            record_stored: false,
            previous_run: None,
            part: None,
        }
    }

    /// Two items with one key: the first with a scan stands, whichever order they are listed in
    /// (a scanless project listed before the branch it was crafted to match does not push the
    /// branch out), and each one left out is named beside the one that stands.
    #[test]
    fn of_items_sharing_a_key_the_first_with_a_scan_stands_in_either_order() {
        let keyed = |n: usize, key: &str, scan: Option<&str>| WorkItem {
            item: key.to_string(),
            scan_id: scan.map(str::to_string),
            ..item(n, 1)
        };
        let orders = [
            vec![keyed(1, "k", Some("s1")), keyed(2, "k", None)],
            vec![keyed(2, "k", None), keyed(1, "k", Some("s1"))],
            vec![
                keyed(2, "k", None),
                keyed(3, "k", None),
                keyed(1, "k", Some("s1")),
                keyed(4, "k", Some("s4")),
                keyed(5, "other", None),
            ],
        ];
        for (case, listed) in orders.into_iter().enumerate() {
            let mut items = listed.clone();
            let problems = leave_out_shared_keys(&mut items);
            let ids: Vec<&str> = items.iter().map(|i| i.vendor_id.as_str()).collect();
            let others: Vec<&str> = listed
                .iter()
                .filter(|i| i.item == "other")
                .map(|i| i.vendor_id.as_str())
                .collect();
            assert_eq!(ids, [vec!["p1"], others].concat(), "case {case}");
            assert_eq!(problems.len(), listed.len() - items.len(), "case {case}");
            for problem in &problems {
                assert!(
                    problem.contains("has the storage key k of project p1 "),
                    "case {case}: {problem}"
                );
            }
        }
    }

    fn sizes(groups: &[WorkGroup]) -> Vec<usize> {
        groups.iter().map(|g| g.items.len()).collect()
    }

    #[test]
    fn groups_keep_every_child_busy_and_hold_at_most_25_items() {
        let items = |n| (0..n).map(|i| item(i, 10)).collect::<Vec<_>>();
        assert_eq!(sizes(&group_items(items(10), 10, None)), vec![1; 10]);
        assert_eq!(
            sizes(&group_items(items(95), 10, None)),
            [vec![10; 9], vec![5]].concat()
        );
        assert_eq!(sizes(&group_items(items(1_000), 10, None)), vec![25; 40]);
        assert_eq!(sizes(&group_items(items(3), 0, None)), vec![3]);
        assert!(group_items(Vec::new(), 10, None).is_empty());
        // Every item once, in order.
        let grouped: Vec<String> = group_items(items(1_000), 7, None)
            .into_iter()
            .flat_map(|g| g.items)
            .map(|i| i.item)
            .collect();
        assert_eq!(
            grouped,
            (0..1_000).map(|i| format!("item-{i}")).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_group_stays_under_its_byte_budget_and_a_larger_item_goes_alone() {
        let items = vec![
            item(0, 40_000),
            item(1, 40_000),
            item(2, 40_000),
            item(3, 200_000),
            item(4, 10),
        ];
        let groups = group_items(items, 1, None);
        assert_eq!(sizes(&groups), vec![2, 1, 1, 1]);
        for group in &groups[..2] {
            assert!(serde_json::to_vec(group).unwrap().len() <= MAX_GROUP_BYTES + 100);
        }
    }

    #[tokio::test]
    async fn a_large_record_is_stored_beside_the_work_list_and_a_long_name_cut() {
        let store = crate::store::MemoryStore::default();
        // A JSON string's record is its text and two quotes: item 2's is the most carried.
        let mut items = vec![
            item(0, 100),
            item(1, MAX_CARRIED_RECORD_BYTES),
            item(2, MAX_CARRIED_RECORD_BYTES - 2),
        ];
        items[0].name = "é".repeat(MAX_NAME_BYTES);
        let run = items[0].run.clone();
        keep_items_small(&store, &run, &mut items).await.unwrap();

        // Cut at a character's edge, saying how long the name was.
        let cut = format!(
            "{}… ({} bytes)",
            "é".repeat(MAX_NAME_BYTES / 2),
            2 * MAX_NAME_BYTES
        );
        assert_eq!(items[0].name, cut);
        assert!(!items[0].record_stored && items[0].record.is_string());
        assert_eq!(items[1].name, "project 1");
        assert!(items[1].record_stored && items[1].record.is_null());
        let stored = store
            .get(&run.item_record("item-1"))
            .await
            .unwrap()
            .unwrap();
        let stored: Value = serde_json::from_slice(&stored).unwrap();
        assert_eq!(stored, Value::String("x".repeat(MAX_CARRIED_RECORD_BYTES)));
        // Another plan attempt's listing of the item, a moment later, leaves the stored one.
        let mut again = vec![item(1, MAX_CARRIED_RECORD_BYTES + 1)];
        keep_items_small(&store, &run, &mut again).await.unwrap();
        assert!(again[0].record_stored);
        let kept: Value = serde_json::from_slice(
            &store
                .get(&run.item_record("item-1"))
                .await
                .unwrap()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(kept, stored);
        assert_eq!(store.get(&run.item_record("item-0")).await.unwrap(), None);
        assert!(!items[2].record_stored && items[2].record.is_string());
        assert_eq!(store.get(&run.item_record("item-2")).await.unwrap(), None);
    }

    #[test]
    fn each_part_of_a_split_scan_goes_alone() {
        let mut items: Vec<WorkItem> = (0..6).map(|i| item(i, 10)).collect();
        for (index, part) in items[2..4].iter_mut().enumerate() {
            part.part = Some(crate::pipeline::ScanPart {
                index: index as u32,
                of: 2,
                first_page: index as u32 * 100,
                pages: (index == 0).then_some(100),
                semantics: crate::cxone::OffsetSemantics::PageIndex,
                planned_total: 2_000_000,
                fingerprint_key: 7,
            });
        }
        let groups = group_items(items, 1, None);
        assert_eq!(sizes(&groups), vec![2, 1, 1, 2]);
        assert!(groups[1].items[0].part.is_some() && groups[2].items[0].part.is_some());
    }

    fn group(items: Vec<WorkItem>) -> WorkGroup {
        WorkGroup::new(items, None)
    }

    /// A plan of these items in one group, nothing filtered, against no run, with no problem.
    async fn plain_plan(
        store: &crate::store::MemoryStore,
        run: &RunRef,
        items: Vec<WorkItem>,
    ) -> StandingGroups {
        let groups = if items.is_empty() {
            Vec::new()
        } else {
            vec![group(items)]
        };
        write_plan(store, run, groups, &[], None, Vec::new())
            .await
            .unwrap()
    }

    async fn standing(store: &crate::store::MemoryStore, run: &RunRef) -> StandingPlan {
        get_json(store, &run.plan()).await.unwrap().unwrap()
    }

    #[tokio::test]
    async fn the_work_list_reads_groups_and_the_single_items_of_older_runs() {
        let store = crate::store::MemoryStore::default();
        let run = item(0, 1).run;
        plain_plan(&store, &run, Vec::new()).await;
        let key = run.attempt_work_list(&standing(&store, &run).await.attempt);
        let mut body = serde_json::to_vec(&group(vec![item(0, 1), item(1, 1)])).unwrap();
        body.push(b'\n');
        body.extend(serde_json::to_vec(&item(2, 1)).unwrap());
        body.push(b'\n');
        store.put(&key, body.into()).await.unwrap();
        let (items, _) = read_work_list(&store, &run).await.unwrap();
        let keys: Vec<&str> = items.iter().map(|i| i.item.as_str()).collect();
        assert_eq!(keys, ["item-0", "item-1", "item-2"]);

        store
            .put(&key, br#"{"items": [{"run": 1}]}"#.to_vec().into())
            .await
            .unwrap();
        let error = read_work_list(&store, &run).await.unwrap_err().to_string();
        assert!(
            error.contains("work.jsonl: line 1: invalid type"),
            "{error}"
        );
    }

    /// Two plan attempts of one run (Step Functions retried the plan on a lost answer while it
    /// still ran), each listing the tenant at its own moment: the first's listing missed a
    /// project, which its problems say; the second's found two items, none filtered, nothing
    /// wrong, against another run. The second goes on with the first's plan: it answers the
    /// first's groups, puts the first's work list where the map reads it and records the first's
    /// run to reconcile against, and finalize reads the first's items, problems and filtered list.
    #[tokio::test]
    async fn a_second_plan_attempt_goes_on_with_the_plan_that_stands() {
        let store = crate::store::MemoryStore::default();
        let run = item(0, 1).run;
        let missed = vec!["the item list is incomplete: page 2 was refused".to_string()];
        let first = write_plan(
            &store,
            &run,
            vec![group(vec![item(0, 1)])],
            &[],
            Some("r0".into()),
            missed.clone(),
        )
        .await
        .unwrap();
        let first_list = store.get(&run.work_list()).await.unwrap().unwrap();
        let filtered = FilteredItem {
            item: "p".into(),
            vendor_id: "p".into(),
            name: "p".into(),
            reason: "excluded by name".into(),
        };
        let second = write_plan(
            &store,
            &run,
            vec![group(vec![item(0, 1), item(1, 1)])],
            &[filtered],
            Some("r1".into()),
            Vec::new(),
        )
        .await
        .unwrap();
        assert_eq!(second.groups, first.groups);
        assert_eq!(
            (second.items(), second.previous_run.as_deref()),
            (1, Some("r0"))
        );
        let first_attempt = standing(&store, &run).await.attempt;
        let plan_folder = run.work_list().replace("work.jsonl", "");
        assert_eq!(
            store.list(&plan_folder).await.unwrap(),
            [
                run.attempt_filtered_list(&first_attempt),
                run.attempt_work_list(&first_attempt),
                run.work_list(),
            ],
            "the second attempt's own objects are deleted"
        );
        assert_eq!(
            store.get(&run.work_list()).await.unwrap().unwrap(),
            first_list
        );
        let planned = read_plan(&store, &run).await.unwrap();
        assert_eq!(planned.items.len(), 1);
        assert_eq!(planned.problems, missed);
        assert!(planned.filtered.is_empty());
        assert_eq!(planned.previous_run.as_deref(), Some("r0"));
    }

    /// An attempt cut off once its plan stands, before it put the work list where the map reads
    /// it: the next attempt, whatever it listed, puts that plan's work list there.
    #[tokio::test]
    async fn a_plan_cut_off_once_it_stands_is_finished_by_the_next_attempt() {
        let store = crate::store::MemoryStore::default();
        let run = item(0, 1).run;
        let first = plain_plan(&store, &run, vec![item(0, 1)]).await;
        let first_list = store.get(&run.work_list()).await.unwrap().unwrap();
        store.delete(&run.work_list()).await.unwrap();
        let next = plain_plan(&store, &run, vec![item(1, 1)]).await;
        assert_eq!(next.groups, first.groups);
        assert_eq!(
            store.get(&run.work_list()).await.unwrap().unwrap(),
            first_list
        );
    }

    /// A plan missing (never finished, or written by an earlier version), one naming an attempt
    /// that is not one (a damaged or hostile object: `../` would reach outside the run), one cut
    /// short, and one whose filtered list is gone: finalize fails naming the object, reading
    /// nothing else.
    #[tokio::test]
    async fn a_plan_missing_or_damaged_is_named() {
        let store = crate::store::MemoryStore::default();
        let run = item(0, 1).run;
        let error = read_plan(&store, &run).await.err().unwrap().to_string();
        assert!(
            error.contains("plan.json") && error.contains("the run's plan is missing"),
            "{error}"
        );
        plain_plan(&store, &run, vec![item(0, 1)]).await;
        let attempt = standing(&store, &run).await.attempt;
        store
            .delete(&run.attempt_filtered_list(&attempt))
            .await
            .unwrap();
        let error = read_plan(&store, &run).await.err().unwrap().to_string();
        assert!(
            error.contains(&format!("plan/{attempt}/filtered.json")),
            "{error}"
        );
        for hostile in ["../../r2/plan/0123456789abcdef", "0123456789abcdeg", ""] {
            let plan = StandingPlan {
                attempt: hostile.into(),
                previous_run: None,
                problems: Vec::new(),
            };
            store.delete(&run.plan()).await.unwrap();
            put_json_once(&store, &run.plan(), &plan).await.unwrap();
            let error = read_plan(&store, &run).await.err().unwrap().to_string();
            assert!(error.contains("is not 16 hex digits"), "{hostile}: {error}");
        }
        // A plan cut short at rest: named, and so is the way on.
        store
            .put(&run.plan(), Bytes::from_static(br#"{"attempt": "01"#))
            .await
            .unwrap();
        let error = read_plan(&store, &run).await.err().unwrap().to_string();
        assert!(
            error.contains("plan.json")
                && error.contains("unreadable (")
                && error.contains("the next run plans afresh"),
            "{error}"
        );
    }
}
