//! A deployment's tile server (`[map]` in the configuration): the real binary hands it to the
//! console through `GET /api/v1/bikeshare/basemap/tiles`, to callers with a credential only,
//! and refuses a configuration whose tile URLs are not tile URLs.

mod support;

use std::process::Command;

use serde_json::{Value, json};
use support::{BIN, TestServer, curl};

fn get(server: &TestServer, key: Option<&str>, path: &str) -> (u16, Value) {
    let url = format!("{}{path}", server.http);
    let auth = key.map(|k| format!("Authorization: Bearer {k}"));
    let mut args: Vec<&str> = Vec::new();
    if let Some(a) = &auth {
        args.extend(["-H", a]);
    }
    args.push(&url);
    curl(&args)
}

#[test]
fn the_configured_tile_server_reaches_the_console() {
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("wulian.toml");
    std::fs::write(
        &config,
        "[map]\ntiles = [\"https://tiles.example.com/{z}/{x}/{y}.png\"]\n\
         attribution = \"© Example tiles\"\n",
    )
    .unwrap();
    let server = TestServer::start_with_args(data.path(), &["--config", config.to_str().unwrap()]);
    let admin = server
        .admin_key
        .clone()
        .expect("first start prints the admin key");

    let (code, body) = get(&server, Some(&admin), "/api/v1/bikeshare/basemap/tiles");
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body,
        json!({
            "style_url": null,
            "tiles": ["https://tiles.example.com/{z}/{x}/{y}.png"],
            "tile_size": 256,
            "attribution": "© Example tiles",
        })
    );

    // Only with a credential, as every API route.
    let (code, body) = get(&server, None, "/api/v1/bikeshare/basemap/tiles");
    assert_eq!(code, 401, "{body}");
    let (code, _) = get(
        &server,
        Some("wlk_not-a-key"),
        "/api/v1/bikeshare/basemap/tiles",
    );
    assert_eq!(code, 401);
    let (code, _) = get(&server, Some("not-a-rider"), "/api/v1/rider/basemap/tiles");
    assert_eq!(code, 401);
}

#[test]
fn without_a_tile_server_the_maps_draw_the_geojson_basemap() {
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path());
    let admin = server.admin_key.clone().unwrap();
    let (code, body) = get(&server, Some(&admin), "/api/v1/bikeshare/basemap/tiles");
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["style_url"], Value::Null);
    assert_eq!(body["tiles"], json!([]));
}

#[test]
fn a_tile_url_without_its_placeholders_is_refused_at_start() {
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("wulian.toml");
    std::fs::write(
        &config,
        "[map]\ntiles = [\"https://tiles.example.com/tile.png\"]\nstyle_url = \"ftp://x/style.json\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args([
            "serve",
            "--http-addr",
            "127.0.0.1:0",
            "--mqtt-addr",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(data.path())
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("map.tiles"), "{err}");
    assert!(
        err.contains("map.style_url must be an http:// or https:// URL"),
        "{err}"
    );
}
