//! A run's report for people: Markdown and a self-contained HTML page (inline CSS and SVG, no
//! script, every vendor text escaped) from the manifest and the run record. Counts by severity and
//! lifecycle status, a chart of findings by severity, each item's outcome, rejected records,
//! retries and 429s, the slowest items, and deleted projects or environments.

use std::fmt::Write as _;

use maud::{DOCTYPE, Markup, PreEscaped, html};

use cxone_etm::cxone::Severity;
use cxone_etm::mapping::{Figures, Lifecycle};
use cxone_etm::pipeline::{ItemStatus, Manifest, ManifestItem, RunRecord, RunState};

/// How many rejected records and slow items the report lists.
const LISTED: usize = 50;
const SLOWEST: usize = 10;
/// Severity order and bar colours of the chart (the test reads the colours back from a screenshot).
pub const SEVERITY_COLOURS: [(&str, &str); 5] = [
    ("CRITICAL", "#7b1fa2"),
    ("HIGH", "#d32f2f"),
    ("MEDIUM", "#f57c00"),
    ("LOW", "#1976d2"),
    ("INFO", "#388e3c"),
];

fn status_name(status: ItemStatus) -> &'static str {
    match status {
        ItemStatus::Complete => "complete",
        ItemStatus::NoScan => "no scan",
        ItemStatus::Incomplete => "incomplete",
        ItemStatus::Failed => "failed",
    }
}

/// Findings by severity, every known severity (in chart order) and then any other the run met.
fn by_severity(manifest: &Manifest) -> Vec<(String, u64)> {
    let counts = &manifest.totals.by_severity;
    let known = Severity::KNOWN.iter().map(|s| {
        let n = counts.get(&Severity::parse(s)).copied().unwrap_or(0);
        (s.to_string(), n)
    });
    let others = counts
        .iter()
        .filter(|(s, _)| !s.is_known())
        .map(|(s, n)| (s.as_str().to_string(), *n));
    known.chain(others).collect()
}

/// The run's findings by lifecycle status, and of the FIXED those ETM had closed already or never
/// had open (a fixed finding the vendor lists on every scan): not fixed since the last run.
fn lifecycle(manifest: &Manifest) -> Vec<(&'static str, u64)> {
    let t = &manifest.totals;
    Lifecycle::ALL
        .iter()
        .map(|s| (s.as_str(), t.lifecycle.get(s).copied().unwrap_or(0)))
        .chain([(
            "of the FIXED, closed before this run or never open",
            t.fixed_before,
        )])
        .collect()
}

/// An item's findings in each lifecycle status, in [`Lifecycle::ALL`]'s order.
/// One row per engine the connection delivers: records in, findings out, rejected, skipped, and
/// the lifecycle statuses.
const ENGINE_HEAD: [&str; 9] = [
    "Engine", "Records", "Findings", "Rejected", "Skipped", "New", "Active", "Reopened", "Fixed",
];

fn engine_rows(manifest: &Manifest) -> Vec<Vec<String>> {
    manifest
        .totals_by_engine
        .iter()
        .map(|(engine, f)| {
            let lifecycle = Lifecycle::ALL.map(|s| f.lifecycle.get(&s).copied().unwrap_or(0));
            let counts = [f.records_in, f.findings_out, f.rejected, f.skipped()];
            let mut row = vec![engine.as_str().to_string()];
            row.extend(counts.into_iter().chain(lifecycle).map(|n| n.to_string()));
            row
        })
        .collect()
}

fn item_lifecycle(item: &ManifestItem) -> [u64; 4] {
    Lifecycle::ALL.map(|s| item.figures.lifecycle.get(&s).copied().unwrap_or(0))
}

fn slowest(manifest: &Manifest) -> Vec<&ManifestItem> {
    let mut items: Vec<&ManifestItem> = manifest.items.iter().collect();
    items.sort_by_key(|i| std::cmp::Reverse(i.traffic.duration_ms));
    items.truncate(SLOWEST);
    items
}

fn retries(manifest: &Manifest) -> (u64, u64, u64) {
    manifest.items.iter().fold((0, 0, 0), |(r, l, q), i| {
        (
            r + i.traffic.retries,
            l + i.traffic.rate_limited,
            q + i.traffic.requests,
        )
    })
}

/// Markdown table cells cannot hold `|` or line breaks.
/// Vendor text as Markdown shows it as text: every character Markdown (or the HTML a renderer
/// lets through) could read as markup backslash-escaped, which CommonMark allows for any ASCII
/// punctuation, and line breaks made spaces, so a name can neither end its table cell nor add a
/// heading, a link, an image or a tag.
fn cell(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' | '\r' => out.push(' '),
            '\\' | '|' | '<' | '>' | '[' | ']' | '(' | ')' | '!' | '`' | '*' | '_' | '#' | '~'
            | '&' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// A table cell linking `text` to `url` (angle brackets keep any `(` or `)` of the URL inside the
/// link; the url crate escapes `<`, `>` and spaces).
fn md_link(text: &str, url: Option<&str>) -> String {
    let text = cell(text);
    match url.filter(|url| web_link(url)) {
        // In `<…>` only a line break or `>` could end it; the url crate escaped both. A `|`
        // would still end the table cell.
        Some(url) => format!("[{text}](<{}>)", url.replace('|', "%7C")),
        None => text,
    }
}

/// Links go only to web pages: a manifest edited to hold `javascript:` or `file:` links is shown
/// as text.
fn web_link(url: &str) -> bool {
    url.starts_with("https://") || url.starts_with("http://")
}

/// The open findings a complete pull did not see, held open instead of closed, and why.
fn held_open(t: &Figures) -> String {
    format!(
        "{} (a rejected record in their pull: {}; a finding sent twice, its list moved while paged: {}; a branch change: {}; an id sent alone before, while it repeats: {}; no record of their engine beside records of an unknown type: {}; a DAST scan whose login failed: {}, of {} environment(s) whose last login failed)",
        t.held_open(),
        t.held_for_rejected_records,
        t.held_for_repeated_records,
        t.held_on_branch_change,
        t.held_as_id_now_repeats,
        t.held_for_unknown_record_types,
        t.held_for_failed_login,
        t.failed_logins
    )
}

pub fn markdown(manifest: &Manifest, record: &RunRecord) -> String {
    let mut md = String::new();
    let t = &manifest.totals;
    let _ = writeln!(
        md,
        "# Run {} of {} ({:?})\n",
        cell(&manifest.run_id),
        cell(&manifest.connection_id),
        manifest.kind
    );
    let _ = writeln!(
        md,
        "- Started {}, finished {}; trigger {:?}",
        manifest.started_at, manifest.finished_at, record.trigger
    );
    let _ = writeln!(
        md,
        "- **{}**: {} items; {} findings out, {} rejected, {} skipped; {} open findings carried forward",
        // A failed run's reason may quote a project's name or the vendor's message.
        cell(&verdict(manifest, record).1),
        manifest.items.len(),
        t.findings_out,
        t.rejected,
        t.skipped(),
        manifest.carried_forward
    );
    let _ = writeln!(
        md,
        "- Triage: {} findings settled by their state, {} with a severity triage changed",
        t.settled_by_triage, t.severity_changed_by_triage
    );
    let _ = writeln!(md, "- Open findings held, not closed: {}", held_open(t));
    for problem in &manifest.problems {
        let _ = writeln!(md, "- Problem: {}", cell(problem));
    }
    let (retried, limited, requests) = retries(manifest);
    let _ = writeln!(
        md,
        "- Vendor: {requests} requests, {retried} retries, {limited} answered 429\n"
    );
    md.push_str("## Findings by severity\n\n| Severity | Findings |\n|---|---|\n");
    for (severity, n) in by_severity(manifest) {
        let _ = writeln!(md, "| {} | {n} |", cell(&severity));
    }
    md.push_str("\n## Findings by lifecycle status\n\n| Status | Findings |\n|---|---|\n");
    for (status, n) in lifecycle(manifest) {
        let _ = writeln!(md, "| {status} | {n} |");
    }
    let _ = writeln!(
        md,
        "\n## Findings by engine\n\n| {} |\n|{}",
        ENGINE_HEAD.join(" | "),
        "---|".repeat(ENGINE_HEAD.len())
    );
    for row in engine_rows(manifest) {
        let _ = writeln!(md, "| {} |", row.join(" | "));
    }
    md.push_str("\n## Items\n\n| Item | Status | Findings | Rejected | New | Active | Reopened | Fixed | Carried | Seconds | Retries | 429s | Reason |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for i in &manifest.items {
        let [new, active, reopened, fixed] = item_lifecycle(i);
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {} | {} | {} |",
            cell(&i.name),
            status_name(i.status),
            i.figures.findings_out,
            i.figures.rejected,
            new,
            active,
            reopened,
            fixed,
            i.carried_forward,
            i.traffic.duration_ms as f64 / 1000.0,
            i.traffic.retries,
            i.traffic.rate_limited,
            cell(i.reason.as_deref().unwrap_or(""))
        );
    }
    md.push_str("\n## Slowest items\n\n| Item | Seconds | Requests |\n|---|---|---|\n");
    for i in slowest(manifest) {
        let _ = writeln!(
            md,
            "| {} | {:.1} | {} |",
            md_link(&i.name, i.scan_url.as_deref()),
            i.traffic.duration_ms as f64 / 1000.0,
            i.traffic.requests
        );
    }
    let rejected: Vec<_> = manifest
        .items
        .iter()
        .flat_map(|i| i.rejected.iter().map(move |r| (i, r)))
        .collect();
    let _ = writeln!(md, "\n## Rejected records ({})\n", rejected_total(manifest));
    if !rejected.is_empty() {
        md.push_str(
            "| Item | Vendor id | Where | Page | Position | Reason |\n|---|---|---|---|---|---|\n",
        );
        for (i, r) in rejected.iter().take(LISTED) {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} |",
                cell(&i.name),
                md_link(
                    r.vendor_id.as_deref().unwrap_or("(unreadable)"),
                    r.link.as_deref()
                ),
                cell(r.location.as_deref().unwrap_or("")),
                r.page,
                r.index,
                cell(&r.reason)
            );
        }
        if let Some(more) = rejected_not_shown(manifest, rejected.len().min(LISTED)) {
            let _ = writeln!(md, "\n{more}");
        }
    }
    if !manifest.deleted_items.is_empty() {
        md.push_str("\n## Deleted projects and environments\n\n| Vendor id | Open findings | Closed |\n|---|---|---|\n");
        for d in &manifest.deleted_items {
            let _ = writeln!(
                md,
                "| {} | {} | {} |",
                cell(&d.vendor_id),
                d.open_findings,
                closed_cell(d)
            );
        }
    }
    md
}

/// Whether a deleted asset's findings were closed, and what stayed open.
fn closed_cell(d: &cxone_etm::pipeline::DeletedItem) -> String {
    match (d.closed, d.carried) {
        (false, _) => "no (policy)".to_string(),
        (true, 0) => "yes".to_string(),
        (true, carried) => format!("yes, but {carried} of engines not delivered stay open"),
    }
}

/// Horizontal bars, one per severity, their length proportional to the count.
fn chart(rows: &[(String, u64)]) -> Markup {
    let max = rows.iter().map(|(_, n)| *n).max().unwrap_or(0).max(1);
    let (width, bar, gap, label) = (600.0, 28.0, 10.0, 90.0);
    let height = rows.len() as f64 * (bar + gap);
    html! {
        svg id="severity-chart" role="img" aria-label="Findings by severity" width=(width + label + 80.0)
            height=(height) xmlns="http://www.w3.org/2000/svg" {
            @for (n, (severity, count)) in rows.iter().enumerate() {
                @let colour = SEVERITY_COLOURS
                    .iter()
                    .find(|(s, _)| s == severity)
                    .map_or("#757575", |(_, c)| c);
                @let y = n as f64 * (bar + gap);
                @let length = width * (*count as f64) / (max as f64);
                text x="0" y=(y + bar * 0.7) font-size="14" { (severity) }
                // An element with an end tag: inside SVG, an unclosed rect would hold what follows.
                rect class="bar" data-severity=(severity) data-count=(count) x=(label) y=(y)
                    width=(format!("{length:.1}")) height=(bar) fill=(colour) {}
                text x=(label + length + 6.0) y=(y + bar * 0.7) font-size="14" { (count) }
            }
        }
    }
}

/// `text`, as a link to `url` when there is one.
fn linked(text: &str, url: Option<&str>) -> Markup {
    html! {
        @match url.filter(|url| web_link(url)) {
            Some(url) => a href=(url) { (text) },
            None => (text),
        }
    }
}

fn table<Cell: maud::Render>(head: &[&str], rows: &[Vec<Cell>]) -> Markup {
    html! {
        table {
            thead { tr { @for h in head { th { (h) } } } }
            tbody { @for row in rows { tr { @for c in row { td { (c) } } } } }
        }
    }
}

/// The run's state in a few words, and its CSS class: committed complete or partial, or failed
/// (nothing committed) with the reason.
fn verdict(manifest: &Manifest, record: &RunRecord) -> (&'static str, String) {
    match record.state {
        RunState::Failed => (
            "failed",
            format!(
                "Failed: {}",
                record.reason.as_deref().unwrap_or("no reason recorded")
            ),
        ),
        _ if manifest.complete => ("complete", "Complete".into()),
        _ => ("partial", "Partial".into()),
    }
}

/// The report as a self-contained page; maud escapes every value it interpolates.
pub fn html(manifest: &Manifest, record: &RunRecord) -> String {
    let t = &manifest.totals;
    let (retried, limited, requests) = retries(manifest);
    let (verdict_class, mut verdict) = verdict(manifest, record);
    if verdict_class == "partial" {
        verdict += ": some items are incomplete or failed; their findings are carried, not closed";
    }
    let figure = |name: &str, value: String| vec![name.to_string(), value];
    let summary = vec![
        figure("Kind", format!("{:?}", manifest.kind)),
        figure("Trigger", format!("{:?}", record.trigger)),
        figure("Started", manifest.started_at.clone()),
        figure("Finished", manifest.finished_at.clone()),
        figure("Items", manifest.items.len().to_string()),
        figure("Findings out", t.findings_out.to_string()),
        figure("Rejected records", t.rejected.to_string()),
        figure("Skipped records", t.skipped().to_string()),
        figure("Settled by triage state", t.settled_by_triage.to_string()),
        figure(
            "Severity changed by triage",
            t.severity_changed_by_triage.to_string(),
        ),
        figure(
            "Open findings carried forward",
            manifest.carried_forward.to_string(),
        ),
        figure("Open findings held, not closed", held_open(t)),
        figure("Vendor requests", requests.to_string()),
        figure("Retries", retried.to_string()),
        figure("Answered 429", limited.to_string()),
    ];
    let lifecycle_rows: Vec<Vec<String>> = lifecycle(manifest)
        .into_iter()
        .map(|(s, n)| vec![s.to_string(), n.to_string()])
        .collect();
    let seconds = |i: &ManifestItem| format!("{:.1}", i.traffic.duration_ms as f64 / 1000.0);
    let item_rows: Vec<Vec<String>> = manifest
        .items
        .iter()
        .map(|i| {
            let [new, active, reopened, fixed] = item_lifecycle(i).map(|n| n.to_string());
            vec![
                i.name.clone(),
                status_name(i.status).to_string(),
                i.figures.findings_out.to_string(),
                i.figures.rejected.to_string(),
                new,
                active,
                reopened,
                fixed,
                i.carried_forward.to_string(),
                seconds(i),
                i.traffic.retries.to_string(),
                i.traffic.rate_limited.to_string(),
                i.reason.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let slow_rows: Vec<Vec<Markup>> = slowest(manifest)
        .into_iter()
        .map(|i| {
            vec![
                linked(&i.name, i.scan_url.as_deref()),
                html! { (seconds(i)) },
                html! { (i.traffic.requests) },
            ]
        })
        .collect();
    let rejected: Vec<Vec<Markup>> = manifest
        .items
        .iter()
        .flat_map(|i| {
            i.rejected.iter().map(move |r| {
                vec![
                    html! { (i.name) },
                    linked(
                        r.vendor_id.as_deref().unwrap_or("(unreadable)"),
                        r.link.as_deref(),
                    ),
                    html! { (r.location.as_deref().unwrap_or("")) },
                    html! { (r.page) },
                    html! { (r.index) },
                    html! { (r.reason) },
                ]
            })
        })
        .collect();
    let deleted_rows: Vec<Vec<String>> = manifest
        .deleted_items
        .iter()
        .map(|d| {
            vec![
                d.vendor_id.clone(),
                d.open_findings.to_string(),
                closed_cell(d),
            ]
        })
        .collect();
    let title = format!("Run {} of {}", manifest.run_id, manifest.connection_id);
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (title) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                h1 { (title) }
                p id="verdict" class={ "verdict " (verdict_class) } { (verdict) }
                (table(&["Figure", "Value"], &summary))
                @for problem in &manifest.problems {
                    p.problem { (problem) }
                }
                h2 { "Findings by severity" }
                (chart(&by_severity(manifest)))
                h2 { "Findings by lifecycle status" }
                (table(&["Status", "Findings"], &lifecycle_rows))
                h2 { "Findings by engine" }
                (table(&ENGINE_HEAD, &engine_rows(manifest)))
                h2 { "Items" }
                (table(
                    &["Item", "Status", "Findings", "Rejected", "New", "Active", "Reopened", "Fixed",
                      "Carried", "Seconds", "Retries", "429s", "Reason"],
                    &item_rows,
                ))
                h2 { "Slowest items" }
                (table(&["Item (its scan in Checkmarx One)", "Seconds", "Requests"], &slow_rows))
                h2 { "Rejected records (" (rejected_total(manifest)) ")" }
                (table(
                    &["Item", "Vendor id (its result in Checkmarx One)", "Where", "Page", "Position", "Reason"],
                    &rejected[..rejected.len().min(LISTED)],
                ))
                @if let Some(more) = rejected_not_shown(manifest, rejected.len().min(LISTED)) {
                    p { (more) }
                }
                @if !deleted_rows.is_empty() {
                    h2 { "Deleted projects and environments" }
                    (table(&["Vendor id", "Open findings", "Closed"], &deleted_rows))
                }
            }
        }
    };
    page.into_string() + "\n"
}

/// Every rejected record of the run (the manifest lists the first of each item's).
fn rejected_total(manifest: &Manifest) -> u64 {
    manifest.items.iter().map(|i| i.figures.rejected).sum()
}

/// Where the rejected records the report leaves out are, when it shows `shown` of them: the
/// manifest's lists, and the rejected objects of items with more than their list holds.
fn rejected_not_shown(manifest: &Manifest, shown: usize) -> Option<String> {
    let more = rejected_total(manifest)
        .checked_sub(shown as u64)
        .filter(|n| *n > 0)?;
    let objects: Vec<&str> = manifest
        .items
        .iter()
        .filter_map(|i| i.rejected_object.as_ref().map(|o| o.key.as_str()))
        .collect();
    Some(if objects.is_empty() {
        format!("…and {more} more in the manifest.")
    } else {
        format!(
            "…and {more} more in the manifest and, all of each item's, in its rejected object: {}.",
            objects.join(", ")
        )
    })
}

const STYLE: &str = "body{font-family:sans-serif;margin:24px;color:#212121;background:#fff}\
table{border-collapse:collapse;margin:8px 0 16px}th,td{border:1px solid #bdbdbd;padding:4px 8px;text-align:left;font-size:13px}\
th{background:#eeeeee}.verdict{font-weight:bold;padding:6px 10px;display:inline-block}\
.verdict.complete{background:#e8f5e9}.verdict.partial{background:#fff3e0}.verdict.failed{background:#ffebee}.problem{color:#b71c1c}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendor_text_is_escaped_in_html_and_markdown_cells() {
        let hostile = "<script>alert('x')</script>&\"";
        let cells = table(&["Item"], &[vec![hostile.to_string()]]).into_string();
        assert!(
            cells.contains("<td>&lt;script&gt;alert('x')&lt;/script&gt;&amp;&quot;</td>"),
            "{cells}"
        );
        let svg = chart(&[(hostile.to_string(), 1)]).into_string();
        assert!(!svg.contains("<script>"), "{svg}");
        assert_eq!(cell("a|b\nc"), "a\\|b c");
        // Nothing of a name reads as Markdown or HTML: no heading, image, link or tag.
        assert_eq!(
            cell("x\n\n# All clear\n![](https://evil/t.png)"),
            "x  \\# All clear \\!\\[\\]\\(https://evil/t.png\\)"
        );
        assert_eq!(
            cell("<img src=x onerror=alert(1)>"),
            "\\<img src=x onerror=alert\\(1\\)\\>"
        );
        assert_eq!(cell("a_b*c`d~e&lt;"), "a\\_b\\*c\\`d\\~e\\&lt;");
    }

    /// A run that committed nothing names its first item's name and reason, vendor text both.
    #[test]
    fn a_failed_runs_reason_is_escaped_in_the_markdown_summary() {
        let hostile = "nothing was committed: 1 item failed; the first, x\n\n# All findings closed\n[Re-authenticate](https://evil.example/p) ![](https://evil.example/t.png): 400";
        let record: RunRecord = serde_json::from_value(serde_json::json!({
            "connectionId": "c", "runId": "r", "trigger": "schedule", "state": "Failed",
            "reason": hostile, "startedAt": "2026-12-07T00:00:00Z",
        }))
        .unwrap();
        let manifest: Manifest = serde_json::from_value(serde_json::json!({
            "schemaVersion": "1.0", "connectionId": "c", "runId": "r", "kind": "sast",
            "startedAt": "2026-12-07T00:00:00Z", "finishedAt": "2026-12-07T00:01:00Z",
            "complete": false, "itemsByStatus": {}, "totals": Figures::default(), "items": [],
        }))
        .unwrap();
        let md = markdown(&manifest, &record);
        let summary = md.lines().find(|l| l.contains("Failed: ")).unwrap();
        assert!(summary.contains(&cell(hostile)), "{summary}");
        assert!(
            !md.lines().any(|l| l.starts_with("# All"))
                && !md.contains("](https://evil")
                && !md.contains("![]"),
            "{md}"
        );
    }

    #[test]
    fn findings_held_open_are_counted_with_each_reason() {
        let t = Figures {
            held_for_rejected_records: 2,
            held_for_repeated_records: 5,
            held_on_branch_change: 1,
            held_as_id_now_repeats: 3,
            held_for_unknown_record_types: 7,
            held_for_failed_login: 11,
            failed_logins: 2,
            ..Figures::default()
        };
        assert_eq!(
            held_open(&t),
            "29 (a rejected record in their pull: 2; a finding sent twice, its list moved while paged: 5; a branch change: 1; an id sent alone before, while it repeats: 3; no record of their engine beside records of an unknown type: 7; a DAST scan whose login failed: 11, of 2 environment(s) whose last login failed)"
        );
    }

    #[test]
    fn rejected_records_past_the_lists_are_counted_and_their_objects_named() {
        let figures = |rejected: u64| {
            serde_json::to_value(Figures {
                rejected,
                ..Figures::default()
            })
            .unwrap()
        };
        let item = |name: &str, rejected: u64, object: Option<&str>| {
            let mut item = serde_json::json!({
                "item": name, "vendorId": name, "name": name, "status": "complete",
                "recordsExpected": rejected, "recordsFetched": rejected,
                "figures": figures(rejected), "objects": [], "collisions": [],
                "rejected": [],
            });
            if let Some(key) = object {
                item["rejectedObject"] = serde_json::json!({"key": key, "lines": rejected, "findings": 0, "bytes": 1, "sha256": "00"});
            }
            item
        };
        let manifest: Manifest = serde_json::from_value(serde_json::json!({
            "schemaVersion": "1", "connectionId": "c", "runId": "r", "kind": "sast",
            "startedAt": "2026-12-06T00:00:00Z", "finishedAt": "2026-12-06T00:01:00Z",
            "complete": true, "problems": [], "itemsByStatus": {}, "totals": figures(303),
            "items": [item("a", 300, Some("etm/a/rejected.ndjson.gz")), item("b", 3, None)],
        }))
        .unwrap();
        assert_eq!(rejected_total(&manifest), 303);
        assert_eq!(
            rejected_not_shown(&manifest, 50).unwrap(),
            "…and 253 more in the manifest and, all of each item's, in its rejected object: etm/a/rejected.ndjson.gz."
        );
        assert_eq!(rejected_not_shown(&manifest, 303), None);
    }

    #[test]
    fn bars_are_proportional_to_the_counts() {
        let svg =
            chart(&[("HIGH".into(), 50), ("LOW".into(), 100), ("INFO".into(), 0)]).into_string();
        assert!(
            svg.contains(r#"data-severity="HIGH" data-count="50" x="90" y="0" width="300.0""#),
            "{svg}"
        );
        assert!(
            svg.contains(r#"data-severity="LOW" data-count="100" x="90" y="38" width="600.0""#),
            "{svg}"
        );
        assert!(
            svg.contains(r#"data-severity="INFO" data-count="0" x="90" y="76" width="0.0""#),
            "{svg}"
        );
    }

    #[test]
    fn links_go_to_web_pages_only_and_their_text_cannot_break_out() {
        assert_eq!(
            md_link("a]b\\", Some("https://x.example/r?id=1&b=(2)")),
            "[a\\]b\\\\](<https://x.example/r?id=1&b=(2)>)"
        );
        assert_eq!(md_link("p|q", None), "p\\|q");
        assert_eq!(md_link("x", Some("javascript:alert(1)")), "x");
        assert_eq!(linked("x", Some("javascript:alert(1)")).into_string(), "x");
        assert_eq!(
            linked("<b>", Some("https://x.example/?a=\"1\"")).into_string(),
            "<a href=\"https://x.example/?a=&quot;1&quot;\">&lt;b&gt;</a>"
        );
    }
}
