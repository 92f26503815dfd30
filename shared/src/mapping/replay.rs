//! Re-running a transform over stored raw pages with another map or scoring table, without pulling
//! from the vendor again. Reads the raw layout the collect step writes (`<raw>/<item>/collect.json`
//! with the project or environment record, `<raw>/<item>/<page>.json.zst` and, for SAST,
//! `original-<page>.json.zst`; `.json.gz` as runs before zstd wrote them, or unpacked `.json`), so a run's `raw/` folder replays as it is, and writes
//! `<out>/<item>/<page>.ndjson.gz`. The record may also be its own file, `item.json`, as runs before
//! it moved into `collect.json` wrote it and as a folder put together by hand holds it. Where a run
//! pulled more than one scan of an item (engines whose latest scans differ), its `collect.json` says
//! which pages are which scan's: the map's engine is replayed from its own scan's pages only.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::batch::TransformContext;
use super::engine::{Figures, ItemOutcome, ItemTransformer, TransformError, TransformOptions};
use super::map::Plan;
use super::scoring::CompiledScoring;
use crate::Engine;
use crate::layout::{RawFile, etm_page_file};
use crate::packing::PAGE_SUFFIX;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {problem}")]
    Layout { path: PathBuf, problem: String },
    #[error("item {item}: {source}")]
    Transform {
        item: String,
        source: TransformError,
    },
}

#[derive(Debug, Serialize)]
pub struct ItemReplay {
    pub item: String,
    pub pages: usize,
    pub files: Vec<PathBuf>,
    pub outcome: ItemOutcome,
}

#[derive(Debug, Default, Serialize)]
pub struct ReplaySummary {
    pub items: Vec<ItemReplay>,
    pub figures: Figures,
    /// Item folders with pages but neither a record nor `collect.json`: a collect cut off before
    /// it finished (its run did not transform them either), or a folder missing its `item.json`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unfinished: Vec<String>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ReplayError + '_ {
    move |source| ReplayError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads a raw file, unpacking `.zst` and `.gz` ones; a page whose outcome lists its checksum
/// (`listed`) is refused unless its content carries it (a page unpacked by hand, or gzip'd, is
/// packed again for it: the checksum is the content's).
fn read_raw(path: &Path, listed: Option<u32>) -> Result<Vec<u8>, ReplayError> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    let unpacked = crate::packing::unpack(&path.to_string_lossy(), &bytes).map_err(|problem| {
        io(path)(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            problem,
        ))
    })?;
    if let Some(listed) = listed {
        let found = crate::packing::page_checksum(&bytes)
            .or_else(|| crate::packing::page_checksum(&crate::packing::pack_page(&unpacked)));
        crate::packing::ensure_counted(found, listed, "collect.json").map_err(|problem| {
            ReplayError::Layout {
                path: path.to_path_buf(),
                problem,
            }
        })?;
    }
    Ok(unpacked)
}

/// Reads a results page, refused unless it is JSON throughout: the transform's walk skips what it
/// does not read with fewer checks, and a replayed file, unlike a collected page, has not been
/// checked before.
fn read_page(path: &Path, listed: Option<u32>) -> Result<Vec<u8>, ReplayError> {
    let page = read_raw(path, listed)?;
    serde_json::from_slice::<serde::de::IgnoredAny>(&page).map_err(|e| ReplayError::Layout {
        path: path.to_path_buf(),
        problem: format!("not JSON (line {} column {})", e.line(), e.column()),
    })?;
    Ok(page)
}

/// The files of one item directory as the collect step writes them (see [`crate::layout`]): the
/// project or environment record, results pages and pages of severities before triage, each in
/// page order, and collect's outcome when it is there. Any other JSON name is a layout error.
#[derive(Default)]
struct ItemFiles {
    record: Option<PathBuf>,
    pages: Vec<(u32, PathBuf)>,
    original: Vec<(u32, PathBuf)>,
    collected: Option<PathBuf>,
}

/// What replay reads of `collect.json`: the pages collect counted (the main scan's, each other
/// scan's after them, and those of severities before triage), the item's record, and the checksum
/// of each page.
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Pulls {
    /// The main scan's pages; none in an outcome written by hand, whose every page counts.
    #[serde(default)]
    pages: Option<u32>,
    /// The item's status (`complete`, …); none in an outcome written by hand.
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    original_pages: u32,
    #[serde(default)]
    other_pulls: Vec<OtherPull>,
    #[serde(default)]
    record: serde_json::Value,
    #[serde(default)]
    page_checksums: Vec<u32>,
    #[serde(default)]
    original_checksums: Vec<u32>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OtherPull {
    engines: Vec<Engine>,
    first_page: u32,
    pages: u32,
}

impl Pulls {
    /// Whether page `number` belongs to the scan `engine`'s findings come from.
    fn delivers(&self, engine: Engine, number: u32) -> bool {
        let pull_of = |n: u32| {
            self.other_pulls
                .iter()
                .find(|p| (p.first_page..p.first_page.saturating_add(p.pages)).contains(&n))
        };
        match pull_of(number) {
            Some(pull) => pull.engines.contains(&engine),
            None => !self.other_pulls.iter().any(|p| p.engines.contains(&engine)),
        }
    }

    /// Whether results page `number` is one collect counted: a page past them is one a pull
    /// that started over left behind.
    fn counts(&self, number: u32) -> bool {
        let Some(pages) = self.pages else {
            return true;
        };
        number < pages
            || self
                .other_pulls
                .iter()
                .any(|p| (p.first_page..p.first_page.saturating_add(p.pages)).contains(&number))
    }

    /// As [`Self::counts`], of the pages of severities before triage.
    fn counts_original(&self, number: u32) -> bool {
        self.pages.is_none() || number < self.original_pages
    }

    /// The checksum the outcome lists for page `number` of `listed`, where it lists any.
    fn listed(listed: &[u32], number: u32) -> Option<u32> {
        listed.get(number as usize).copied()
    }
}

fn item_files(dir: &Path) -> Result<ItemFiles, ReplayError> {
    let mut files = ItemFiles::default();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        match RawFile::from_name(name) {
            // What an unfinished collect left for its next attempt: nothing to replay.
            None | Some(RawFile::CollectProgress | RawFile::Part | RawFile::DastScan) => {}
            Some(RawFile::CollectOutcome) => files.collected = Some(path),
            Some(RawFile::Record) => files.record = Some(path),
            Some(RawFile::Page(number)) => files.pages.push((number, path)),
            Some(RawFile::OriginalPage(number)) => files.original.push((number, path)),
            Some(RawFile::Misnamed) => {
                return Err(ReplayError::Layout {
                    path,
                    problem: "page files are named by their page number (0.json.zst, 1.json.zst, …, or original-0.json.zst, … for severities before triage; .json.gz as older runs wrote them, or .json)".into(),
                });
            }
        }
    }
    // A collect retried across the upgrade to zstd can leave a page both ways: like the
    // transform, replay reads the `.zst` one.
    for pages in [&mut files.pages, &mut files.original] {
        pages.sort_by_key(|(number, path)| {
            (*number, !path.to_string_lossy().ends_with(PAGE_SUFFIX))
        });
        pages.dedup_by_key(|(number, _)| *number);
    }
    Ok(files)
}

/// Replay writes outside every run's folder (`…/runs/<run id>/`, committed or under way): there
/// it would replace the batches the run committed, or is about to, with lines no reconciliation
/// made. The folder is judged where it really is (links followed).
fn refuse_out(out: &Path) -> Result<(), ReplayError> {
    let absolute = std::path::absolute(out).map_err(io(out))?;
    let existing = absolute
        .ancestors()
        .find(|dir| dir.exists())
        .unwrap_or(&absolute);
    let real = std::fs::canonicalize(existing)
        .map_err(io(existing))?
        .join(absolute.strip_prefix(existing).unwrap_or(Path::new("")));
    let is_run = |dir: &Path| {
        dir.file_name()
            .and_then(|name| name.to_str())
            .is_some_and(crate::layout::is_run_id)
            && dir
                .parent()
                .and_then(|runs| runs.file_name())
                .is_some_and(|name| name == "runs")
    };
    match real.ancestors().find(|dir| is_run(dir)) {
        Some(run) => Err(ReplayError::Layout {
            path: out.to_path_buf(),
            problem: format!(
                "is inside the run folder {}: a replay there would replace the batches the run committed (or is about to); write it to a folder outside the store",
                run.display()
            ),
        }),
        None => Ok(()),
    }
}

pub fn replay_dir(
    raw: &Path,
    out: &Path,
    plan: &Plan,
    scoring: &CompiledScoring,
    context: &TransformContext,
    options: &TransformOptions,
) -> Result<ReplaySummary, ReplayError> {
    refuse_out(out)?;
    let entries: Vec<PathBuf> = std::fs::read_dir(raw)
        .map_err(io(raw))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    let is_page = |path: &PathBuf| {
        path.file_name()
            .and_then(|n| n.to_str())
            .and_then(RawFile::from_name)
            .is_some_and(|file| matches!(file, RawFile::Page(_)))
    };
    if entries.iter().any(is_page) {
        return Err(ReplayError::Layout {
            path: raw.to_path_buf(),
            problem: "is one item's folder (it holds pages): give the run's raw folder above it (…/runs/<run>/raw), whose folders are its items".into(),
        });
    }
    let mut item_dirs: Vec<PathBuf> = entries.into_iter().filter(|p| p.is_dir()).collect();
    item_dirs.sort();
    let mut summary = ReplaySummary::default();
    for dir in item_dirs {
        let item = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let ItemFiles {
            record,
            mut pages,
            mut original,
            collected,
        } = item_files(&dir)?;
        let mut pulls = Pulls::default();
        if let Some(path) = &collected {
            pulls = serde_json::from_slice(&read_raw(path, None)?).map_err(|e| {
                ReplayError::Layout {
                    path: path.clone(),
                    problem: format!("not collect's outcome: {e}"),
                }
            })?;
            pages.retain(|(number, _)| pulls.counts(*number) && pulls.delivers(plan.kind, *number));
            original.retain(|(number, _)| pulls.counts_original(*number));
        }
        // The record collect wrote first: an `item.json` beside it is a record the plan stored
        // (collect's is null then), or one of runs before collect wrote it.
        let record = match record {
            _ if !pulls.record.is_null() => {
                serde_json::to_vec(&pulls.record).expect("a JSON value serializes")
            }
            Some(path) => read_raw(&path, None)?,
            None if collected.is_none() => {
                summary.unfinished.push(item);
                continue;
            }
            None => {
                return Err(ReplayError::Layout {
                    path: dir.clone(),
                    problem: "no project or environment record: neither item.json nor a `record` in collect.json".into(),
                });
            }
        };
        let transform_error = |source| ReplayError::Transform {
            item: item.clone(),
            source,
        };
        let mut transformer =
            ItemTransformer::new(plan, scoring, context, options.clone(), &record)
                .map_err(transform_error)?;
        // Which ids repeat is known before the first finding is written, as in a pipeline run.
        let mut ids = super::IdTally::new(&[plan]);
        let page = |number: u32, path: &Path| {
            read_page(path, Pulls::listed(&pulls.page_checksums, number))
        };
        for (number, path) in &pages {
            ids.add_page(&page(*number, path)?, &[plan.kind]);
        }
        if ids.needs_identities() {
            for (number, path) in &pages {
                ids.add_identities(&page(*number, path)?, &[plan.kind]);
            }
        }
        transformer.expect_repeats(std::sync::Arc::new(ids.repeats().into()));
        for (number, path) in &original {
            let listed = Pulls::listed(&pulls.original_checksums, *number);
            transformer
                .add_original_severities(&read_raw(path, listed)?)
                .map_err(transform_error)?;
        }
        let target = out.join(&item);
        std::fs::create_dir_all(&target).map_err(io(&target))?;
        // An earlier replay's pages of the item go: a page that now makes no line would keep its
        // old one beside these.
        for entry in std::fs::read_dir(&target).map_err(io(&target))? {
            let old = entry.map_err(io(&target))?.path();
            let page = old
                .file_name()
                .and_then(|name| name.to_str()?.strip_suffix(".ndjson.gz"))
                .is_some_and(|number| number.parse::<u32>().is_ok());
            if page {
                std::fs::remove_file(&old).map_err(io(&old))?;
            }
        }
        let mut files = Vec::new();
        for (number, path) in &pages {
            let lines = transformer
                .push_page(&page(*number, path)?, *number)
                .map_err(|source| ReplayError::Transform {
                    item: item.clone(),
                    source,
                })?;
            if lines.is_empty() {
                continue;
            }
            let file = target.join(etm_page_file(*number));
            std::fs::write(&file, crate::packing::gzip(&lines)).map_err(io(&file))?;
            files.push(file);
        }
        // As the transform step: an asset of a complete pull with no finding goes out alone.
        let complete = collected.is_none() || pulls.status.as_deref() == Some("complete");
        if let (true, Some(line)) = (files.is_empty() && complete, transformer.asset_line()) {
            let file = target.join(etm_page_file(0));
            std::fs::write(&file, crate::packing::gzip(&[line])).map_err(io(&file))?;
            files.push(file);
        }
        let outcome = transformer
            .finish()
            .map_err(|source| ReplayError::Transform {
                item: item.clone(),
                source,
            })?;
        summary.figures.add(&outcome.figures);
        summary.items.push(ItemReplay {
            item,
            pages: pages.len(),
            files,
            outcome,
        });
    }
    Ok(summary)
}
