//! Projects (item offset, filters, totals), last scans (many ids per call), and scans.

use std::collections::HashSet;

use crate::common::*;
use cxone_emulator::TenantShape;
use reqwest::StatusCode;
use serde_json::Value;

fn ids(page: &Value, key: &str) -> Vec<String> {
    page[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn projects_page_by_item_offset_with_both_totals() {
    let emulator = start(TenantShape {
        projects: 45,
        ..TenantShape::default()
    })
    .await;
    let token = full_token(&emulator).await;
    let default = get_ok(&emulator, &token, "/api/projects").await;
    assert_eq!(
        default["projects"].as_array().unwrap().len(),
        20,
        "default limit is 20"
    );
    let mut seen = Vec::new();
    for offset in (0..45).step_by(20) {
        let page = get_ok(
            &emulator,
            &token,
            &format!("/api/projects/?limit=20&offset={offset}"),
        )
        .await;
        assert_eq!(page["totalCount"], 45);
        assert_eq!(page["filteredTotalCount"], 45);
        seen.extend(ids(&page, "projects"));
    }
    assert_eq!(seen.len(), 45);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 45);
    assert_eq!(seen, emulator.expected().project_ids());
    let everything = get_ok(&emulator, &token, "/api/projects?limit=0&offset=0").await;
    assert_eq!(
        everything["projects"].as_array().unwrap().len(),
        45,
        "limit=0 means all"
    );
    let past_end = get_ok(&emulator, &token, "/api/projects?limit=20&offset=100").await;
    assert!(past_end["projects"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn project_fields_have_the_real_shapes() {
    let emulator = start(TenantShape {
        projects: 8,
        ..TenantShape::default()
    })
    .await;
    let token = full_token(&emulator).await;
    let page = get_ok(&emulator, &token, "/api/projects?limit=8").await;
    let projects = page["projects"].as_array().unwrap();
    for p in projects {
        assert!(
            p["createdAt"].as_str().unwrap().len() == "2025-09-08T10:56:35.671243Z".len(),
            "microseconds: {p}"
        );
        assert!(
            p["tags"].is_object() && p["groups"].is_array() && p["imported_proj_name"].is_string()
        );
    }
    assert!(
        projects.iter().any(|p| p["repoUrl"] == ""),
        "some projects have no repository"
    );
    assert!(
        projects.iter().any(|p| p["mainBranch"] == ""),
        "some projects have no main branch"
    );
    assert!(
        projects.iter().any(|p| p["tags"]["pci"] == ""),
        "tags without a value are empty strings"
    );
}

#[tokio::test]
async fn project_filters_accept_repeated_and_comma_joined_arrays() {
    let emulator = start(TenantShape {
        projects: 30,
        ..TenantShape::default()
    })
    .await;
    let token = full_token(&emulator).await;
    let expected = emulator.expected().projects;
    let (a, b) = (&expected[3], &expected[17]);
    for query in [
        format!("ids={}&ids={}", a.id, b.id),
        format!("ids={},{}", a.id, b.id),
    ] {
        let page = get_ok(&emulator, &token, &format!("/api/projects?{query}")).await;
        assert_eq!(ids(&page, "projects"), vec![a.id.clone(), b.id.clone()]);
        assert_eq!(page["filteredTotalCount"], 2);
        assert_eq!(page["totalCount"], 30);
    }
    let by_name = get_ok(
        &emulator,
        &token,
        &format!("/api/projects?names={}", a.name),
    )
    .await;
    assert_eq!(ids(&by_name, "projects"), vec![a.id.clone()]);
    let substring = get_ok(&emulator, &token, "/api/projects?name=-1&limit=100").await;
    assert!(
        substring["projects"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["name"].as_str().unwrap().contains("-1"))
    );
    assert_eq!(substring["filteredTotalCount"], 11, "-1 and -10 .. -19");
    let regex = get_ok(
        &emulator,
        &token,
        "/api/projects?name-regex=-2%5B0-9%5D%24&limit=100",
    )
    .await;
    assert_eq!(regex["filteredTotalCount"], 10);
    let tagged = get_ok(&emulator, &token, "/api/projects?tags-keys=pci&limit=100").await;
    assert_eq!(tagged["filteredTotalCount"], 15);
    let no_repo = get_ok(&emulator, &token, "/api/projects?repo-url=&limit=100").await;
    assert_eq!(
        no_repo["filteredTotalCount"], 30,
        "an empty filter value filters nothing"
    );

    let (status, body) = get(&emulator, &token, "/api/projects?name-regex=%5B").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["message"].as_str().unwrap().contains("name-regex"),
        "{body}"
    );
    let (status, body) = get(&emulator, &token, "/api/projects?limit=ten").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["code"], 400);
    assert!(body["type"].is_string());
}

#[tokio::test]
async fn one_project_by_id_and_unknown_id_is_404() {
    let emulator = start(TenantShape::default()).await;
    let token = full_token(&emulator).await;
    let first = &emulator.expected().projects[0];
    let one = get_ok(&emulator, &token, &format!("/api/projects/{}", first.id)).await;
    assert_eq!(one["name"], first.name.as_str());
    let (status, _) = get(
        &emulator,
        &token,
        "/api/projects/00000000-0000-0000-0000-000000000000",
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn last_scan_answers_an_object_keyed_by_project_for_many_ids() {
    let emulator = start(TenantShape {
        projects: 25,
        scans_per_project: 4,
        ..TenantShape::default()
    })
    .await;
    let token = full_token(&emulator).await;
    let expected = emulator.expected().projects;
    let all_ids: Vec<&str> = expected.iter().map(|p| p.id.as_str()).collect();

    let query = format!(
        "/api/projects/last-scan?scan-status=Completed&engine=sast&limit=25&project-ids={}",
        all_ids.join(",")
    );
    let answer = get_ok(&emulator, &token, &query).await;
    let map = answer.as_object().unwrap();
    for p in &expected {
        match &p.latest_completed_sast_scan {
            Some(scan) => assert_eq!(map[&p.id]["id"], scan.as_str(), "project {}", p.name),
            None => assert!(
                !map.contains_key(&p.id),
                "no completed SAST scan for {}",
                p.name
            ),
        }
    }
    assert!(
        expected.iter().any(|p| !p.has_sast),
        "the tenant has projects without SAST"
    );
    assert!(map.values().all(|s| s["status"] == "Completed"));

    let repeated: String = all_ids
        .iter()
        .map(|id| format!("&project-ids={id}"))
        .collect();
    let default_limit = get_ok(
        &emulator,
        &token,
        &format!("/api/projects/last-scan?scan-status=Completed{repeated}"),
    )
    .await;
    assert_eq!(
        default_limit.as_object().unwrap().len(),
        20,
        "limit defaults to 20 projects"
    );

    let latest_any = get_ok(
        &emulator,
        &token,
        &format!("/api/projects/last-scan?project-ids={}", expected[4].id),
    )
    .await;
    assert_eq!(
        latest_any[&expected[4].id]["status"], "Running",
        "without scan-status the running scan is the latest"
    );
    let develop = get_ok(
        &emulator,
        &token,
        &format!(
            "/api/projects/last-scan?project-ids={}&branch=develop",
            expected[0].id
        ),
    )
    .await;
    assert_eq!(develop[&expected[0].id]["branch"], "develop");
    let none = get_ok(
        &emulator,
        &token,
        "/api/projects/last-scan?project-ids=00000000-0000-0000-0000-000000000000",
    )
    .await;
    assert_eq!(none, serde_json::json!({}));
}

#[tokio::test]
async fn scans_list_filters_and_sorts() {
    let emulator = start(TenantShape {
        projects: 6,
        scans_per_project: 3,
        ..TenantShape::default()
    })
    .await;
    let token = full_token(&emulator).await;
    let project = &emulator.expected().projects[4];
    let scans = get_ok(
        &emulator,
        &token,
        &format!("/api/scans?project-id={}", project.id),
    )
    .await;
    assert_eq!(scans["filteredTotalCount"], 3);
    assert_eq!(scans["totalCount"], 18);
    let listed = ids(&scans, "scans");
    let oldest_first: Vec<String> = project.scans.iter().map(|s| s.id.clone()).collect();
    assert_eq!(
        listed,
        oldest_first.iter().rev().cloned().collect::<Vec<_>>(),
        "newest first by default"
    );
    let ascending = get_ok(
        &emulator,
        &token,
        &format!("/api/scans?project-id={}&sort=%2Bcreated_at", project.id),
    )
    .await;
    assert_eq!(ids(&ascending, "scans"), oldest_first);
    let completed = get_ok(
        &emulator,
        &token,
        &format!("/api/scans?project-ids={}&statuses=completed", project.id),
    )
    .await;
    assert_eq!(
        completed["filteredTotalCount"], 2,
        "the newest scan of this project is still running"
    );
    let one = get_ok(&emulator, &token, &format!("/api/scans/{}", listed[0])).await;
    assert_eq!(one["projectId"], project.id.as_str());
    assert!(
        one["statusDetails"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["name"] == "sast" && d["loc"].is_u64())
    );
    let (status, _) = get(
        &emulator,
        &token,
        "/api/scans/00000000-0000-0000-0000-000000000000",
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn branches_list_names_newest_first_paged_and_null_without_scans() {
    let emulator = start(TenantShape {
        projects: 8,
        branches_per_project: 3,
        scans_per_project: 4,
        ..TenantShape::default()
    })
    .await;
    let token = full_token(&emulator).await;
    let expected = emulator.expected();
    let project = &expected.projects[0];
    let mut newest_first: Vec<String> = Vec::new();
    for s in project.scans.iter().rev() {
        if !newest_first.contains(&s.branch) {
            newest_first.push(s.branch.clone());
        }
    }
    let path = |q: &str| format!("/api/projects/branches?project-id={}{q}", project.id);
    let all = get_ok(&emulator, &token, &path("")).await;
    let names: Vec<String> = serde_json::from_value(all).unwrap();
    assert_eq!(names, newest_first);
    assert_eq!(names[0], project.main_branch, "the newest scan is on main");
    let second: Vec<String> =
        serde_json::from_value(get_ok(&emulator, &token, &path("&offset=1&limit=1")).await)
            .unwrap();
    assert_eq!(second, vec![newest_first[1].clone()]);
    let feature = &newest_first[1];
    let filtered: Vec<String> = serde_json::from_value(
        get_ok(&emulator, &token, &path(&format!("&branch-name={feature}"))).await,
    )
    .unwrap();
    assert_eq!(filtered, vec![feature.clone()]);
    let (status, _) = get(&emulator, &token, "/api/projects/branches").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "project-id is required");

    let empty = start(TenantShape {
        projects: 1,
        scans_per_project: 0,
        ..TenantShape::default()
    })
    .await;
    let token = full_token(&empty).await;
    let id = &empty.expected().projects[0].id;
    let answer = get_ok(
        &empty,
        &token,
        &format!("/api/projects/branches?project-id={id}"),
    )
    .await;
    assert_eq!(answer, Value::Null, "a project with no scans answers null");
}
