//! The bike share in the platform's OpenAPI document (`GET /api/v1/openapi.json`): registered
//! and merged with the platform's, valid, complete (every route in `src/api/` is documented with
//! its methods, and nothing else), and shadowing none of the platform's names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde_json::Value;
use utoipa::OpenApi;
use wulian_api::openapi::ApiDoc;
use wulian_bikeshare::api::BikeShareApi;

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// The document as `GET /api/v1/openapi.json` serves it once the bike share's router is built.
fn served() -> Value {
    wulian_bikeshare::api::register_openapi();
    let text = serde_json::to_string(&wulian_api::openapi::document()).expect("serialise");
    serde_json::from_str(&text).expect("the document is JSON")
}

fn json<T: serde::Serialize>(x: &T) -> Value {
    serde_json::to_value(x).expect("serialise")
}

/// `(path, method)` of every `.route("…", get(…).post(…))` in `src/api/*.rs`.
fn routes_in_source() -> BTreeSet<(String, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/api");
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).expect("src/api") {
        let path = entry.expect("dir entry").path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read source");
        let mut rest = text.as_str();
        while let Some(at) = rest.find(".route(") {
            rest = &rest[at + ".route(".len()..];
            // The call's arguments: up to the parenthesis that closes `.route(`.
            let mut depth = 1;
            let end = rest
                .char_indices()
                .find(|&(_, c)| {
                    match c {
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        _ => {}
                    }
                    depth == 0
                })
                .map(|(i, _)| i)
                .expect("closed .route(");
            let args = &rest[..end];
            let route = args
                .split('"')
                .nth(1)
                .unwrap_or_else(|| panic!("a .route( without a path in {}", path.display()));
            let handlers = &args[args.find(',').expect("a handler")..];
            let mut methods = 0;
            for method in METHODS {
                let call = format!("{method}(");
                let named = handlers.match_indices(&call).any(|(i, _)| {
                    // `get(` but not `target(`: the method stands alone or after `.`/`::`.
                    let before = handlers.as_bytes()[i.saturating_sub(1)];
                    i == 0 || !(before.is_ascii_alphanumeric() || before == b'_')
                });
                if named {
                    out.insert((route.to_string(), method.to_string()));
                    methods += 1;
                }
            }
            assert!(methods > 0, "no method found for {route}");
        }
    }
    assert!(out.len() > 40, "found only {} routes in src/api", out.len());
    out
}

/// `(path, method)` of every operation of a document.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            if item.get(method).is_some() {
                out.insert((path.clone(), method.to_string()));
            }
        }
    }
    out
}

fn refs(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => {
                        out.insert(r.clone());
                    }
                    _ => refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[test]
fn the_served_document_includes_the_bike_share() {
    let doc = served();
    let version = doc["openapi"].as_str().expect("openapi version");
    assert!(version.starts_with("3."), "openapi {version}");
    // The platform's part is still there.
    for path in [
        "/api/v1/devices",
        "/api/v1/openapi.json",
        "/api/v1/zones/{name}",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "the platform's {path} is gone"
        );
    }
    for (path, method) in [
        ("/api/v1/bikeshare/system", "get"),
        ("/api/v1/bikeshare/system", "put"),
        ("/api/v1/bikeshare/plans/{plan_id}", "put"),
        ("/api/v1/bikeshare/riders/{rider_id}/refunds", "post"),
        ("/api/v1/bikeshare/work-orders/{order_id}", "patch"),
        (
            "/api/v1/bikeshare/city-credentials/{credential_id}",
            "delete",
        ),
        ("/api/v1/rider/{tenant}/sign-up", "post"),
        ("/api/v1/rider/trips", "post"),
        ("/api/v1/rider/wallet/top-ups", "post"),
        ("/gbfs/v3/{tenant}/{feed}", "get"),
        ("/mds/{tenant}/trips", "get"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "openapi lacks {method} {path}"
        );
    }
    let schemas = &doc["components"]["schemas"];
    for name in [
        "Problem",
        "BikeShareSettings",
        "PricingPlan",
        "PassProduct",
        "Trip",
        "TripState",
        "Fare",
        "WorkOrder",
        "WorkOrderState",
        "Rider",
        "RiderSignUp",
        "Journal",
        "FleetBike",
        "BikeSnapshot",
        "CityCredential",
    ] {
        assert!(schemas[name].is_object(), "openapi lacks schema {name}");
    }
    // Every reference resolves.
    let mut all = BTreeSet::new();
    refs(&doc, &mut all);
    for r in &all {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("unexpected reference {r}"));
        assert!(schemas[name].is_object(), "{r} does not resolve");
    }
    let tags: BTreeSet<&str> = doc["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    for tag in ["bikeshare", "rider app", "city feeds", "devices"] {
        assert!(tags.contains(tag), "openapi lacks tag {tag}");
    }
    let schemes = &doc["components"]["securitySchemes"];
    for scheme in ["api_key", "rider_token", "city_credential"] {
        assert_eq!(schemes[scheme]["scheme"], "bearer", "{scheme}");
    }
    // Each audience authenticates its own way, and errors are problem documents.
    let security = |path: &str, method: &str| doc["paths"][path][method]["security"].clone();
    assert_eq!(
        security("/api/v1/bikeshare/fleet", "get"),
        json(&[BTreeMap::from([("api_key", Vec::<String>::new())])])
    );
    assert_eq!(
        security("/api/v1/rider/me", "get"),
        json(&[BTreeMap::from([("rider_token", Vec::<String>::new())])])
    );
    assert_eq!(
        security("/mds/{tenant}/vehicles", "get"),
        json(&[BTreeMap::from([("city_credential", Vec::<String>::new())])])
    );
    assert!(security("/gbfs/v3/{tenant}/{feed}", "get").is_null());
    let rent = &doc["paths"]["/api/v1/rider/trips"]["post"];
    assert_eq!(
        rent["responses"]["409"]["content"]["application/problem+json"]["schema"]["$ref"],
        "#/components/schemas/Problem"
    );
    assert!(rent["responses"]["201"].is_object());
    assert!(rent["responses"]["401"].is_object());
    assert_eq!(rent["requestBody"]["required"], true);
    let mds = &doc["paths"]["/mds/{tenant}/vehicles"]["get"];
    assert!(mds["responses"]["200"]["content"]["application/vnd.mds+json;version=2.0"].is_object());
    assert!(mds["responses"]["406"].is_object());
    let params: BTreeSet<&str> = mds["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(
        params,
        BTreeSet::from(["tenant", "page[number]", "page[size]"])
    );

    // Building the router again (tests build many) changes nothing.
    assert_eq!(served(), doc);
}

#[test]
fn every_route_is_documented_and_every_documented_operation_routed() {
    let doc = served();
    let documented = operations(&doc);
    let routed = routes_in_source();
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "routes without #[utoipa::path] listed in BikeShareApi: {undocumented:?}"
    );
    let own = operations(&json(&BikeShareApi::openapi()));
    let unrouted: Vec<_> = own.difference(&routed).collect();
    assert!(
        unrouted.is_empty(),
        "documented but not routed (a typo in a path?): {unrouted:?}"
    );
}

#[test]
fn the_bike_share_shadows_none_of_the_platforms_names() {
    let platform = json(&ApiDoc::openapi());
    let bikes = json(&BikeShareApi::openapi());
    let platform_paths = operations(&platform);
    for op in operations(&bikes) {
        assert!(!platform_paths.contains(&op), "{op:?} is the platform's");
    }
    // On a clash the platform's schema would win the merge and the bike share's references
    // would point at it: only the shared `Problem` may appear in both.
    for (name, schema) in bikes["components"]["schemas"].as_object().expect("schemas") {
        let theirs = &platform["components"]["schemas"][name];
        assert!(
            theirs.is_null() || theirs == schema,
            "schema {name} differs from the platform's of the same name"
        );
    }
    // Operation ids are the handlers' names: unique across the served document.
    let mut ids = BTreeSet::new();
    for item in served()["paths"].as_object().expect("paths").values() {
        for method in METHODS {
            if let Some(id) = item[method]["operationId"].as_str() {
                assert!(ids.insert(id.to_string()), "operationId {id} is used twice");
            }
        }
    }
    for name in bikes["components"]["securitySchemes"]
        .as_object()
        .expect("security schemes")
        .keys()
    {
        assert!(
            platform["components"]["securitySchemes"][name].is_null(),
            "security scheme {name} is the platform's"
        );
    }
}
