use std::time::Duration;

use super::*;
use crate::test_support::registry_with_tenant;

const MIN: i64 = 60_000;

fn registry_with_user(role: Role) -> Registry {
    let (registry, _) = registry_with_tenant("acme").unwrap();
    registry
        .create_user("acme", "ann", role, Some("correct horse battery"))
        .unwrap();
    registry
}

fn timeouts(idle_min: u64, lifetime_min: u64) -> SessionTimeouts {
    SessionTimeouts {
        idle: Duration::from_secs(idle_min * 60),
        lifetime: Duration::from_secs(lifetime_min * 60),
    }
}

#[test]
fn sessions_authenticate_by_token_only() {
    let registry = registry_with_user(Role::Operator);
    let new = registry
        .create_session("acme", "ann", &timeouts(60, 600))
        .unwrap();
    assert!(new.token.starts_with(SESSION_TOKEN_PREFIX));
    assert_eq!(new.token.len(), SESSION_TOKEN_PREFIX.len() + 64);
    assert_eq!(new.session.csrf_token.len(), 64);
    assert!(!format!("{new:?}").contains(&new.token));
    assert!(!format!("{new:?}").contains(&new.session.csrf_token));

    let found = registry.authenticate_session(&new.token).unwrap().unwrap();
    assert_eq!(found, new.session);
    assert_eq!(found.role, Role::Operator);
    assert!(registry.authenticate_session("wls_nope").unwrap().is_none());
    assert!(
        registry
            .authenticate_session(&new.session.csrf_token)
            .unwrap()
            .is_none()
    );
    assert!(registry.authenticate_session("").unwrap().is_none());

    let stored: String = registry
        .conn()
        .query_row("SELECT token_hash FROM sessions", [], |r| r.get(0))
        .unwrap();
    assert_eq!(stored, secret::hash(&new.token), "only the hash is stored");

    assert!(registry.delete_session(&new.token).unwrap());
    assert!(!registry.delete_session(&new.token).unwrap());
    assert!(registry.authenticate_session(&new.token).unwrap().is_none());
}

#[test]
fn idle_sessions_expire_and_use_keeps_them_alive() {
    let registry = registry_with_user(Role::Viewer);
    let t0 = 1_000_000_000;
    let new = registry
        .create_session_at("acme", "ann", &timeouts(10, 600), t0)
        .unwrap();
    let at = |t: i64| registry.authenticate_session_at(&new.token, t).unwrap();
    assert!(at(t0 + 9 * MIN).is_some());
    // Seen at t0 + 9 min: alive until t0 + 19 min.
    let seen = at(t0 + 18 * MIN).unwrap();
    assert_eq!(seen.last_seen_at, t0 + 18 * MIN);
    assert_eq!(seen.idle_expires_at(), t0 + 28 * MIN);
    assert!(at(t0 + 28 * MIN).is_none(), "idle for the whole timeout");
    assert!(at(t0 + 18 * MIN).is_none(), "an expired session is deleted");
}

#[test]
fn sessions_end_at_their_lifetime_however_active() {
    let registry = registry_with_user(Role::Viewer);
    let t0 = 1_000_000_000;
    let new = registry
        .create_session_at("acme", "ann", &timeouts(30, 60), t0)
        .unwrap();
    assert_eq!(new.session.expires_at, t0 + 60 * MIN);
    for minutes in [20, 40, 59] {
        assert!(
            registry
                .authenticate_session_at(&new.token, t0 + minutes * MIN)
                .unwrap()
                .is_some()
        );
    }
    assert!(
        registry
            .authenticate_session_at(&new.token, t0 + 60 * MIN)
            .unwrap()
            .is_none()
    );
}

#[test]
fn logins_purge_expired_sessions_and_cap_a_users_sessions() {
    let registry = registry_with_user(Role::Viewer);
    let t0 = 1_000_000_000;
    let old = registry
        .create_session_at("acme", "ann", &timeouts(10, 600), t0)
        .unwrap();
    let mut tokens = Vec::new();
    for i in 0..MAX_SESSIONS_PER_USER {
        let new = registry
            .create_session_at("acme", "ann", &timeouts(60, 600), t0 + 20 * MIN + i)
            .unwrap();
        tokens.push(new.token);
    }
    let count = || -> i64 {
        registry
            .conn()
            .query_row("SELECT count(*) FROM sessions", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(count(), MAX_SESSIONS_PER_USER, "the idle one was purged");
    assert!(
        registry
            .authenticate_session_at(&old.token, t0 + 20 * MIN)
            .unwrap()
            .is_none()
    );
    registry
        .create_session_at("acme", "ann", &timeouts(60, 600), t0 + 21 * MIN)
        .unwrap();
    assert_eq!(count(), MAX_SESSIONS_PER_USER);
    let now = t0 + 22 * MIN;
    assert!(
        registry
            .authenticate_session_at(&tokens[0], now)
            .unwrap()
            .is_none(),
        "the oldest went"
    );
    assert!(
        registry
            .authenticate_session_at(&tokens[1], now)
            .unwrap()
            .is_some()
    );
}

#[test]
fn sessions_carry_the_users_current_role() {
    let registry = registry_with_user(Role::Viewer);
    let new = registry
        .create_session("acme", "ann", &timeouts(60, 600))
        .unwrap();
    registry
        .update_user(
            "acme",
            "ann",
            &crate::UserPatch {
                role: Some(Role::Admin),
                disabled: None,
            },
        )
        .unwrap();
    let session = registry.authenticate_session(&new.token).unwrap().unwrap();
    assert_eq!(session.role, Role::Admin);
    assert!(matches!(
        registry.create_session("acme", "nobody", &timeouts(60, 600)),
        Err(Error::NotFound { kind: "user", .. })
    ));
}

#[test]
fn failed_logins_are_throttled_per_user_and_per_client() {
    let (registry, _) = registry_with_tenant("acme").unwrap();
    let throttle = LoginThrottle {
        max_failures_per_user: 3,
        max_failures_per_client: 5,
        window: Duration::from_secs(15 * 60),
    };
    let t0 = 1_000_000_000;
    let throttled = |user: &str, client: &str, t: i64| {
        registry
            .login_throttled_at("acme", user, client, &throttle, t)
            .unwrap()
    };
    let fail = |user: &str, client: &str, t: i64| {
        registry
            .record_login_failure_at("acme", user, client, &throttle, t)
            .unwrap();
    };
    for i in 0..3 {
        assert_eq!(throttled("ann", "10.0.0.1", t0 + i * MIN), None);
        fail("ann", "10.0.0.1", t0 + i * MIN);
    }
    // Three failures at t0, t0+1, t0+2 min: the limit holds until t0 leaves the window.
    assert_eq!(
        throttled("ann", "10.0.0.2", t0 + 3 * MIN),
        Some(Duration::from_secs(12 * 60)),
        "per user, from any address"
    );
    assert_eq!(throttled("bob", "10.0.0.1", t0 + 3 * MIN), None);
    fail("bob", "10.0.0.1", t0 + 3 * MIN);
    fail("cy", "10.0.0.1", t0 + 4 * MIN);
    assert_eq!(
        throttled("dee", "10.0.0.1", t0 + 5 * MIN),
        Some(Duration::from_secs(10 * 60)),
        "per address, for any user"
    );
    assert_eq!(throttled("dee", "10.0.0.3", t0 + 5 * MIN), None);
    assert_eq!(throttled("ann", "10.0.0.2", t0 + 15 * MIN + 1), None);

    // A success forgets the user's failures, not the address's.
    registry.clear_login_failures("acme", "bob").unwrap();
    fail("ann", "10.0.0.9", t0 + 16 * MIN);
    fail("ann", "10.0.0.9", t0 + 16 * MIN);
    fail("ann", "10.0.0.9", t0 + 16 * MIN);
    assert!(throttled("ann", "10.0.0.8", t0 + 16 * MIN).is_some());
    registry.clear_login_failures("acme", "ann").unwrap();
    assert_eq!(throttled("ann", "10.0.0.8", t0 + 16 * MIN), None);
    assert!(throttled("zed", "10.0.0.9", t0 + 16 * MIN).is_none());

    // Old rows are purged when failures are recorded.
    fail("eve", "10.0.0.7", t0 + 60 * MIN);
    let rows: i64 = registry
        .conn()
        .query_row("SELECT count(*) FROM login_failures", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 2, "only eve's pair is inside the window");
}
