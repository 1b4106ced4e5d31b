//! People: users, console sessions (cookie, CSRF), the login throttle and roles, in-process
//! (`Router::oneshot`) on real stores in a temporary directory.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::connect_info::ConnectInfo;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;
use wulian_api::routes::session::{SessionConfig, with_sessions};

const PASSWORD: &str = "correct horse battery";

struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// Asserts a problem document with this status and code.
    #[track_caller]
    fn problem(&self, status: StatusCode, code: &str) {
        assert_eq!(self.status, status, "{}", self.body);
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json")
        );
        assert_eq!(self.body["code"], code, "{}", self.body);
    }
}

/// A logged-in person: the cookie's value and the CSRF token.
struct Person {
    token: String,
    csrf: String,
}

struct Call {
    req: axum::http::request::Builder,
    body: Option<Value>,
    peer: Option<SocketAddr>,
}

fn call(method: &str, uri: &str) -> Call {
    Call {
        req: Request::builder().method(method).uri(uri),
        body: None,
        peer: None,
    }
}

impl Call {
    fn key(mut self, key: &str) -> Call {
        self.req = self.req.header("authorization", format!("Bearer {key}"));
        self
    }

    fn cookie(mut self, token: &str) -> Call {
        self.req = self
            .req
            .header("cookie", format!("theme=dark; wulian_session={token}"));
        self
    }

    fn csrf(mut self, token: &str) -> Call {
        self.req = self.req.header("x-csrf-token", token);
        self
    }

    /// The person's cookie and CSRF token.
    fn by(self, person: &Person) -> Call {
        self.cookie(&person.token).csrf(&person.csrf)
    }

    fn header(mut self, name: &str, value: &str) -> Call {
        self.req = self.req.header(name, value);
        self
    }

    fn json(mut self, body: Value) -> Call {
        self.body = Some(body);
        self
    }

    /// As if the TCP peer were `ip` (what `wulian_api::serve` records).
    fn from(mut self, ip: &str) -> Call {
        self.peer = Some(SocketAddr::new(ip.parse().unwrap(), 40_000));
        self
    }

    async fn send(self, router: &Router) -> Resp {
        let mut req = self.req;
        let body = match self.body {
            Some(body) => {
                req = req.header("content-type", "application/json");
                Body::from(body.to_string())
            }
            None => Body::empty(),
        };
        let mut req = req.body(body).unwrap();
        if let Some(peer) = self.peer {
            req.extensions_mut().insert(ConnectInfo(peer));
        }
        let resp = tokio::time::timeout(Duration::from_secs(60), router.clone().oneshot(req))
            .await
            .expect("no response within 60 s")
            .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        Resp {
            status,
            headers,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }
}

struct Api {
    router: Router,
    admin: String,
    _dir: tempfile::TempDir,
}

fn start() -> Api {
    let p = support::platform();
    Api {
        router: p.router,
        admin: p.admin,
        _dir: p.dir,
    }
}

/// The platform with session settings of its own (as `wulian serve` applies its config).
fn start_with(config: SessionConfig) -> Api {
    let api = start();
    Api {
        router: with_sessions(api.router, config),
        ..api
    }
}

impl Api {
    /// A user of the default tenant, made with the installation admin key.
    async fn user(&self, username: &str, role: &str) {
        let r = call("POST", "/api/v1/users")
            .key(&self.admin)
            .json(json!({"username": username, "role": role, "password": PASSWORD}))
            .send(&self.router)
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        assert!(
            r.body.get("password").is_none(),
            "a chosen password is not echoed"
        );
    }

    async fn try_login(&self, username: &str, password: &str) -> Resp {
        call("POST", "/api/v1/session")
            .json(json!({"tenant": "default", "username": username, "password": password}))
            .send(&self.router)
            .await
    }

    async fn login(&self, username: &str) -> Person {
        let r = self.try_login(username, PASSWORD).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        person(&r)
    }

    async fn audit(&self) -> Vec<Value> {
        let r = call("GET", "/api/v1/audit")
            .key(&self.admin)
            .send(&self.router)
            .await;
        assert_eq!(r.status, StatusCode::OK);
        r.body.as_array().unwrap().clone()
    }
}

/// The session a login response carries.
fn person(r: &Resp) -> Person {
    let cookie = r.header("set-cookie").unwrap();
    let token = cookie
        .strip_prefix("wulian_session=")
        .and_then(|rest| rest.split(';').next())
        .unwrap()
        .to_string();
    Person {
        token,
        csrf: r.body["csrf_token"].as_str().unwrap().to_string(),
    }
}

#[tokio::test]
async fn login_sets_a_strict_http_only_cookie_and_tells_who_is_logged_in() {
    let api = start();
    api.user("ann", "operator").await;
    let r = call("POST", "/api/v1/session")
        .json(json!({"tenant": "default", "username": " Ann ", "password": PASSWORD}))
        .send(&api.router)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let cookie = r.header("set-cookie").unwrap();
    assert!(cookie.starts_with("wulian_session=wls_"), "{cookie}");
    let attributes: Vec<&str> = cookie.split("; ").skip(1).collect();
    assert_eq!(
        attributes,
        ["Path=/", "HttpOnly", "SameSite=Strict", "Max-Age=604800"],
        "no Secure over plain HTTP by default"
    );
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.body["tenant"], "default");
    assert_eq!(r.body["username"], "ann");
    assert_eq!(r.body["role"], "operator");
    assert_eq!(r.body["idle_timeout_secs"], 8 * 3600);
    let csrf = r.body["csrf_token"].as_str().unwrap();
    assert_eq!(csrf.len(), 64);
    let me = person(&r);
    assert!(
        !r.body.to_string().contains(&me.token),
        "the token is only in the cookie"
    );

    let who = call("GET", "/api/v1/session")
        .cookie(&me.token)
        .send(&api.router)
        .await;
    assert_eq!(who.status, StatusCode::OK, "{}", who.body);
    assert_eq!(who.body["username"], "ann");
    assert_eq!(who.body["role"], "operator");
    assert_eq!(who.body["csrf_token"], csrf);
    assert_eq!(who.header("cache-control"), Some("no-store"));

    // Behind a TLS-terminating proxy, or with secure_cookies, the cookie is Secure.
    for (name, value) in [
        ("x-forwarded-proto", "https"),
        ("forwarded", "for=192.0.2.60;proto=https;by=203.0.113.43"),
    ] {
        let r = call("POST", "/api/v1/session")
            .header(name, value)
            .json(json!({"tenant": "default", "username": "ann", "password": PASSWORD}))
            .send(&api.router)
            .await;
        assert!(
            r.header("set-cookie").unwrap().ends_with("; Secure"),
            "{name}"
        );
    }
    let secure = start_with(SessionConfig {
        secure_cookies: true,
        idle_timeout: Duration::from_secs(600),
        ..SessionConfig::default()
    });
    secure.user("ann", "viewer").await;
    let r = secure.try_login("ann", PASSWORD).await;
    assert!(r.header("set-cookie").unwrap().ends_with("; Secure"));
    assert_eq!(r.body["idle_timeout_secs"], 600);

    // API keys have no session.
    call("GET", "/api/v1/session")
        .key(&api.admin)
        .send(&api.router)
        .await
        .problem(StatusCode::FORBIDDEN, "session_required");
    call("GET", "/api/v1/session")
        .send(&api.router)
        .await
        .problem(StatusCode::UNAUTHORIZED, "missing_credentials");
    call("GET", "/api/v1/devices")
        .cookie("wls_0000")
        .send(&api.router)
        .await
        .problem(StatusCode::UNAUTHORIZED, "session_expired");
}

#[tokio::test]
async fn failed_logins_look_alike_and_are_audited_without_secrets() {
    let api = start();
    api.user("ann", "viewer").await;
    api.user("bob", "viewer").await;
    let r = call("PATCH", "/api/v1/users/bob")
        .key(&api.admin)
        .json(json!({"disabled": true}))
        .send(&api.router)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    let wrong = api.try_login("ann", "wrong-password-1").await;
    wrong.problem(StatusCode::UNAUTHORIZED, "invalid_credentials");
    assert!(wrong.header("set-cookie").is_none());
    let unknown = api
        .try_login("typed-my-secret-here", "wrong-password-2")
        .await;
    unknown.problem(StatusCode::UNAUTHORIZED, "invalid_credentials");
    assert_eq!(wrong.body["detail"], unknown.body["detail"]);
    api.try_login("bob", PASSWORD)
        .await
        .problem(StatusCode::UNAUTHORIZED, "invalid_credentials");
    call("POST", "/api/v1/session")
        .json(json!({"tenant": "nope", "username": "ann", "password": PASSWORD}))
        .send(&api.router)
        .await
        .problem(StatusCode::UNAUTHORIZED, "invalid_credentials");
    call("POST", "/api/v1/session")
        .json(json!({"tenant": "default", "username": "ann"}))
        .send(&api.router)
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
    api.login("ann").await;

    let audit = api.audit().await;
    let logins: Vec<(&str, &str)> = audit
        .iter()
        .filter(|e| e["action"] == "session.login")
        .map(|e| {
            assert_eq!(e["actor"], "client:unknown");
            (
                e["target"].as_str().unwrap(),
                e["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        logins,
        [
            ("ann", "ok"),
            ("bob", "user_disabled"),
            ("(unknown user)", "unknown_user"),
            ("ann", "wrong_password"),
        ]
    );
    let text = serde_json::to_string(&audit).unwrap();
    for secret in [
        PASSWORD,
        "wrong-password-1",
        "wrong-password-2",
        "typed-my-secret-here",
    ] {
        assert!(!text.contains(secret), "{secret} in the audit log");
    }
}

#[tokio::test]
async fn cookie_writes_need_the_csrf_token_and_api_keys_do_not() {
    let api = start();
    api.user("ann", "operator").await;
    let me = api.login("ann").await;
    let device = |id: &str| json!({"id": id});

    call("POST", "/api/v1/devices")
        .cookie(&me.token)
        .json(device("d-1"))
        .send(&api.router)
        .await
        .problem(StatusCode::FORBIDDEN, "csrf_token_missing");
    call("POST", "/api/v1/devices")
        .cookie(&me.token)
        .csrf(&"0".repeat(64))
        .json(device("d-1"))
        .send(&api.router)
        .await
        .problem(StatusCode::FORBIDDEN, "csrf_token_invalid");
    call("DELETE", "/api/v1/devices/d-1")
        .cookie(&me.token)
        .send(&api.router)
        .await
        .problem(StatusCode::FORBIDDEN, "csrf_token_missing");
    // Another session's token is not this one's.
    let other = api.login("ann").await;
    call("POST", "/api/v1/devices")
        .cookie(&me.token)
        .csrf(&other.csrf)
        .json(device("d-1"))
        .send(&api.router)
        .await
        .problem(StatusCode::FORBIDDEN, "csrf_token_invalid");

    let r = call("POST", "/api/v1/devices")
        .by(&me)
        .json(device("d-1"))
        .send(&api.router)
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let r = call("GET", "/api/v1/devices/d-1")
        .cookie(&me.token)
        .send(&api.router)
        .await;
    assert_eq!(r.status, StatusCode::OK, "reads need no token");
    let r = call("POST", "/api/v1/devices")
        .key(&api.admin)
        .json(device("d-2"))
        .send(&api.router)
        .await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "bearer keys are not subject to CSRF"
    );
    // A bearer header wins over a cookie; a bad one is refused, not ignored for the cookie.
    call("POST", "/api/v1/devices")
        .key("wlk_not-a-key")
        .by(&me)
        .json(device("d-3"))
        .send(&api.router)
        .await
        .problem(StatusCode::UNAUTHORIZED, "invalid_credentials");
}

#[tokio::test]
async fn roles_map_onto_scopes() {
    let api = start();
    for (name, role) in [
        ("ada", "admin"),
        ("oz", "operator"),
        ("vi", "viewer"),
        ("reg", "city_regulator"),
    ] {
        api.user(name, role).await;
    }
    let admin = api.login("ada").await;
    let operator = api.login("oz").await;
    let viewer = api.login("vi").await;
    let regulator = api.login("reg").await;

    let write = |who: &Person, id: &str| {
        call("POST", "/api/v1/devices")
            .by(who)
            .json(json!({"id": id}))
    };
    let r = write(&operator, "op-1").send(&api.router).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let r = write(&admin, "ad-1").send(&api.router).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    for who in [&viewer, &regulator] {
        write(who, "x-1")
            .send(&api.router)
            .await
            .problem(StatusCode::FORBIDDEN, "forbidden");
        let r = call("GET", "/api/v1/devices/op-1")
            .cookie(&who.token)
            .send(&api.router)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    let r = call("GET", "/api/v1/session")
        .cookie(&regulator.token)
        .send(&api.router)
        .await;
    assert_eq!(r.body["role"], "city_regulator");

    // Users and API keys are the admin role's; tenants stay the installation admin key's.
    for who in [&operator, &viewer, &regulator] {
        call("GET", "/api/v1/users")
            .cookie(&who.token)
            .send(&api.router)
            .await
            .problem(StatusCode::FORBIDDEN, "forbidden");
        call("GET", "/api/v1/api-keys")
            .cookie(&who.token)
            .send(&api.router)
            .await
            .problem(StatusCode::FORBIDDEN, "forbidden");
    }
    let r = call("GET", "/api/v1/users")
        .cookie(&admin.token)
        .send(&api.router)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body.as_array().unwrap().len(), 4);
    call("GET", "/api/v1/tenants")
        .cookie(&admin.token)
        .send(&api.router)
        .await
        .problem(StatusCode::FORBIDDEN, "forbidden");
    call("POST", "/api/v1/users")
        .by(&admin)
        .json(json!({"username": "x", "role": "viewer", "tenant": "other"}))
        .send(&api.router)
        .await
        .problem(StatusCode::FORBIDDEN, "forbidden");

    // A role change applies to live sessions at once.
    let r = call("PATCH", "/api/v1/users/vi")
        .by(&admin)
        .json(json!({"role": "operator"}))
        .send(&api.router)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = write(&viewer, "vi-1").send(&api.router).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);

    // Admins cannot lock themselves out.
    call("PATCH", "/api/v1/users/ada")
        .by(&admin)
        .json(json!({"disabled": true}))
        .send(&api.router)
        .await
        .problem(StatusCode::CONFLICT, "conflict");
    call("PATCH", "/api/v1/users/ada")
        .by(&admin)
        .json(json!({"role": "viewer"}))
        .send(&api.router)
        .await
        .problem(StatusCode::CONFLICT, "conflict");
    call("DELETE", "/api/v1/users/ada")
        .by(&admin)
        .send(&api.router)
        .await
        .problem(StatusCode::CONFLICT, "conflict");

    // Audit entries name the person.
    let audit = api.audit().await;
    assert!(
        audit.iter().any(|e| e["action"] == "user.update"
            && e["actor"] == "user:ada"
            && e["target"] == "vi")
    );
}

#[tokio::test]
async fn failed_logins_are_throttled_per_user_and_per_address() {
    let api = start_with(SessionConfig {
        max_failures_per_user: 3,
        max_failures_per_client: 5,
        ..SessionConfig::default()
    });
    api.user("ann", "viewer").await;
    let login = |user: &str, password: &str, ip: &str| {
        call("POST", "/api/v1/session")
            .from(ip)
            .json(json!({"tenant": "default", "username": user, "password": password}))
    };
    for _ in 0..3 {
        login("ann", "wrong password", "10.0.0.1")
            .send(&api.router)
            .await
            .problem(StatusCode::UNAUTHORIZED, "invalid_credentials");
    }
    // Locked for a while, from any address, even with the right password.
    let r = login("ann", PASSWORD, "10.0.0.2").send(&api.router).await;
    r.problem(StatusCode::TOO_MANY_REQUESTS, "too_many_attempts");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((890..=900).contains(&retry), "{retry}");

    // Per address: 5 failures from 10.0.0.3, whatever the user names.
    for user in ["u1", "u2", "u3", "u4", "u5"] {
        login(user, "wrong password", "10.0.0.3")
            .send(&api.router)
            .await
            .problem(StatusCode::UNAUTHORIZED, "invalid_credentials");
    }
    login("u6", "wrong password", "10.0.0.3")
        .send(&api.router)
        .await
        .problem(StatusCode::TOO_MANY_REQUESTS, "too_many_attempts");
    login("u6", "wrong password", "10.0.0.4")
        .send(&api.router)
        .await
        .problem(StatusCode::UNAUTHORIZED, "invalid_credentials");
    let audit = api.audit().await;
    assert!(audit.iter().any(|e| e["actor"] == "client:10.0.0.3"));

    // Changing one's password with a wrong old one counts too.
    api.user("bob", "viewer").await;
    let bob = api.login("bob").await;
    for _ in 0..3 {
        call("POST", "/api/v1/session/password")
            .by(&bob)
            .json(json!({"old_password": "not it at all", "new_password": "a brand new one"}))
            .send(&api.router)
            .await
            .problem(StatusCode::FORBIDDEN, "wrong_password");
    }
    call("POST", "/api/v1/session/password")
        .by(&bob)
        .json(json!({"old_password": PASSWORD, "new_password": "a brand new one"}))
        .send(&api.router)
        .await
        .problem(StatusCode::TOO_MANY_REQUESTS, "too_many_attempts");
}

#[tokio::test]
async fn the_default_throttle_is_ten_failures() {
    let api = start();
    api.user("ann", "viewer").await;
    for _ in 0..10 {
        api.try_login("ann", "wrong password")
            .await
            .problem(StatusCode::UNAUTHORIZED, "invalid_credentials");
    }
    let r = api.try_login("ann", PASSWORD).await;
    r.problem(StatusCode::TOO_MANY_REQUESTS, "too_many_attempts");
    assert!(r.header("retry-after").is_some());
}

#[tokio::test]
async fn logout_ends_the_session_and_clears_the_cookie() {
    let api = start();
    api.user("ann", "viewer").await;
    let me = api.login("ann").await;
    let other = api.login("ann").await;
    call("DELETE", "/api/v1/session")
        .cookie(&me.token)
        .send(&api.router)
        .await
        .problem(StatusCode::FORBIDDEN, "csrf_token_missing");
    let r = call("DELETE", "/api/v1/session")
        .by(&me)
        .send(&api.router)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        r.header("set-cookie"),
        Some("wulian_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
    );
    call("GET", "/api/v1/session")
        .cookie(&me.token)
        .send(&api.router)
        .await
        .problem(StatusCode::UNAUTHORIZED, "session_expired");
    // Logging out of an ended session still clears the cookie; other sessions live on.
    let r = call("DELETE", "/api/v1/session")
        .cookie(&me.token)
        .send(&api.router)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(r.header("set-cookie").unwrap().contains("Max-Age=0"));
    let r = call("GET", "/api/v1/session")
        .cookie(&other.token)
        .send(&api.router)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    // Logging in again with a live session's cookie replaces that session.
    let r = call("POST", "/api/v1/session")
        .cookie(&other.token)
        .json(json!({"tenant": "default", "username": "ann", "password": PASSWORD}))
        .send(&api.router)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    call("GET", "/api/v1/session")
        .cookie(&other.token)
        .send(&api.router)
        .await
        .problem(StatusCode::UNAUTHORIZED, "session_expired");
    assert!(
        api.audit()
            .await
            .iter()
            .any(|e| e["action"] == "session.logout" && e["actor"] == "user:ann")
    );
}

#[tokio::test]
async fn admins_manage_users_and_passwords() {
    let api = start();
    // A generated password is shown once.
    let r = call("POST", "/api/v1/users")
        .key(&api.admin)
        .json(json!({"username": "ann", "role": "operator"}))
        .send(&api.router)
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let generated = r.body["password"].as_str().unwrap().to_string();
    assert_eq!(generated.len(), 23);
    assert_eq!(r.body["role"], "operator");
    assert_eq!(r.body["disabled"], false);
    let r = call("GET", "/api/v1/users/ann")
        .key(&api.admin)
        .send(&api.router)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.get("password").is_none());
    assert!(r.body["last_login_at"].is_null());
    let ann = {
        let r = api.try_login("ann", &generated).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        person(&r)
    };
    let r = call("GET", "/api/v1/users")
        .key(&api.admin)
        .send(&api.router)
        .await;
    assert_eq!(r.body[0]["username"], "ann");
    assert!(r.body[0]["last_login_at"].is_i64());

    // Password and name rules.
    for (body, code) in [
        (
            json!({"username": "bob", "role": "viewer", "password": "short"}),
            "weak_password",
        ),
        (
            json!({"username": "bob", "role": "viewer", "password": "Password123"}),
            "weak_password",
        ),
        (
            json!({"username": "bob.builder", "role": "viewer", "password": "Bob.Builder"}),
            "weak_password",
        ),
        (
            json!({"username": "Bob", "role": "viewer", "password": PASSWORD}),
            "invalid_field",
        ),
        (
            json!({"username": "bob", "role": "root", "password": PASSWORD}),
            "invalid_field",
        ),
    ] {
        call("POST", "/api/v1/users")
            .key(&api.admin)
            .json(body)
            .send(&api.router)
            .await
            .problem(StatusCode::UNPROCESSABLE_ENTITY, code);
    }
    call("POST", "/api/v1/users")
        .key(&api.admin)
        .json(json!({"username": "ann", "role": "viewer", "password": PASSWORD}))
        .send(&api.router)
        .await
        .problem(StatusCode::CONFLICT, "already_exists");
    call("GET", "/api/v1/users/nobody")
        .key(&api.admin)
        .send(&api.router)
        .await
        .problem(StatusCode::NOT_FOUND, "user_not_found");

    // Only admins, and only in their tenant unless installation admin.
    let rw = call("POST", "/api/v1/api-keys")
        .key(&api.admin)
        .json(json!({"name": "rw", "scope": "read_write"}))
        .send(&api.router)
        .await;
    let rw = rw.body["secret"].as_str().unwrap().to_string();
    call("GET", "/api/v1/users")
        .key(&rw)
        .send(&api.router)
        .await
        .problem(StatusCode::FORBIDDEN, "forbidden");
    let r = call("POST", "/api/v1/tenants")
        .key(&api.admin)
        .json(json!({"id": "acme", "name": "Acme"}))
        .send(&api.router)
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = call("POST", "/api/v1/users")
        .key(&api.admin)
        .json(json!({"username": "ann", "role": "admin", "password": PASSWORD, "tenant": "acme"}))
        .send(&api.router)
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["tenant"], "acme");
    let r = call("GET", "/api/v1/users?tenant=acme")
        .key(&api.admin)
        .send(&api.router)
        .await;
    assert_eq!(r.body.as_array().unwrap().len(), 1);
    assert_eq!(r.body[0]["role"], "admin");
    let acme_admin = {
        let r = call("POST", "/api/v1/session")
            .json(json!({"tenant": "acme", "username": "ann", "password": PASSWORD}))
            .send(&api.router)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        person(&r)
    };
    let r = call("GET", "/api/v1/users")
        .cookie(&acme_admin.token)
        .send(&api.router)
        .await;
    assert_eq!(
        r.body.as_array().unwrap().len(),
        1,
        "acme sees only its own"
    );
    call("GET", "/api/v1/users?tenant=default")
        .cookie(&acme_admin.token)
        .send(&api.router)
        .await
        .problem(StatusCode::FORBIDDEN, "forbidden");

    // Disabling ends sessions and refuses logins; enabling lets the user log in again.
    let r = call("PATCH", "/api/v1/users/ann")
        .key(&api.admin)
        .json(json!({"disabled": true}))
        .send(&api.router)
        .await;
    assert_eq!(r.body["disabled"], true);
    call("GET", "/api/v1/session")
        .cookie(&ann.token)
        .send(&api.router)
        .await
        .problem(StatusCode::UNAUTHORIZED, "session_expired");
    api.try_login("ann", &generated)
        .await
        .problem(StatusCode::UNAUTHORIZED, "invalid_credentials");
    call("PATCH", "/api/v1/users/ann")
        .key(&api.admin)
        .json(json!({"disabled": false}))
        .send(&api.router)
        .await;

    // A reset ends every session; the old password stops working.
    let ann = {
        let r = api.try_login("ann", &generated).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        person(&r)
    };
    call("POST", "/api/v1/users/ann/password")
        .key(&api.admin)
        .json(json!({"password": "ann"}))
        .send(&api.router)
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY, "weak_password");
    let r = call("POST", "/api/v1/users/ann/password")
        .key(&api.admin)
        .json(json!({}))
        .send(&api.router)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let reset = r.body["password"].as_str().unwrap().to_string();
    call("GET", "/api/v1/session")
        .cookie(&ann.token)
        .send(&api.router)
        .await
        .problem(StatusCode::UNAUTHORIZED, "session_expired");
    api.try_login("ann", &generated)
        .await
        .problem(StatusCode::UNAUTHORIZED, "invalid_credentials");
    assert_eq!(api.try_login("ann", &reset).await.status, StatusCode::OK);

    // Deleting ends the user.
    let r = call("DELETE", "/api/v1/users/ann")
        .key(&api.admin)
        .send(&api.router)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    api.try_login("ann", &reset)
        .await
        .problem(StatusCode::UNAUTHORIZED, "invalid_credentials");
    let actions: Vec<String> = api
        .audit()
        .await
        .iter()
        .filter(|e| e["actor"].as_str().unwrap().starts_with("api_key:"))
        .map(|e| {
            format!(
                "{} {}",
                e["action"].as_str().unwrap(),
                e["outcome"].as_str().unwrap()
            )
        })
        .collect();
    for action in [
        "user.create ok",
        "user.update ok",
        "user.password_reset ok",
        "user.delete ok",
    ] {
        assert!(actions.iter().any(|a| a == action), "{action}: {actions:?}");
    }
}

#[tokio::test]
async fn people_change_their_own_password() {
    let api = start();
    api.user("ann", "viewer").await;
    let here = api.login("ann").await;
    let elsewhere = api.login("ann").await;
    let change = |old: &str, new: &str| {
        call("POST", "/api/v1/session/password")
            .by(&here)
            .json(json!({"old_password": old, "new_password": new}))
    };
    change("not the old one", "a brand new one")
        .send(&api.router)
        .await
        .problem(StatusCode::FORBIDDEN, "wrong_password");
    change(PASSWORD, "qwertyuiop")
        .send(&api.router)
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY, "weak_password");
    call("POST", "/api/v1/session/password")
        .cookie(&here.token)
        .json(json!({"old_password": PASSWORD, "new_password": "a brand new one"}))
        .send(&api.router)
        .await
        .problem(StatusCode::FORBIDDEN, "csrf_token_missing");
    call("POST", "/api/v1/session/password")
        .key(&api.admin)
        .json(json!({"old_password": PASSWORD, "new_password": "a brand new one"}))
        .send(&api.router)
        .await
        .problem(StatusCode::FORBIDDEN, "session_required");

    let r = change(PASSWORD, "a brand new one").send(&api.router).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let r = call("GET", "/api/v1/session")
        .cookie(&here.token)
        .send(&api.router)
        .await;
    assert_eq!(r.status, StatusCode::OK, "this session stays");
    call("GET", "/api/v1/session")
        .cookie(&elsewhere.token)
        .send(&api.router)
        .await
        .problem(StatusCode::UNAUTHORIZED, "session_expired");
    api.try_login("ann", PASSWORD)
        .await
        .problem(StatusCode::UNAUTHORIZED, "invalid_credentials");
    assert_eq!(
        api.try_login("ann", "a brand new one").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_openapi_document_lists_users_and_sessions() {
    let api = start();
    let r = call("GET", "/api/v1/openapi.json").send(&api.router).await;
    let paths = &r.body["paths"];
    for path in [
        "/api/v1/users",
        "/api/v1/users/{username}",
        "/api/v1/users/{username}/password",
        "/api/v1/session",
        "/api/v1/session/password",
    ] {
        assert!(paths.get(path).is_some(), "{path}");
    }
    assert!(paths["/api/v1/session"].get("delete").is_some());
    let scheme = &r.body["components"]["securitySchemes"]["session_cookie"];
    assert_eq!(scheme["type"], "apiKey");
    assert_eq!(scheme["in"], "cookie");
    assert_eq!(scheme["name"], "wulian_session");
}
