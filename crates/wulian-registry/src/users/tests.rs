use super::*;
use crate::test_support::registry_with_tenant;
use crate::{SessionTimeouts, test_support::new_tenant};

const GOOD: &str = "correct horse battery";

fn registry() -> Registry {
    registry_with_tenant("acme").unwrap().0
}

fn timeouts() -> SessionTimeouts {
    SessionTimeouts {
        idle: std::time::Duration::from_secs(3600),
        lifetime: std::time::Duration::from_secs(86_400),
    }
}

fn stored_hash(registry: &Registry, tenant: &str, username: &str) -> String {
    registry
        .conn()
        .query_row(
            "SELECT password_hash FROM users WHERE tenant = ?1 AND username = ?2",
            [tenant, username],
            |r| r.get(0),
        )
        .unwrap()
}

#[test]
fn passwords_are_argon2id_phc_strings_with_fresh_salts() {
    let a = hash_password(GOOD).unwrap();
    let b = hash_password(GOOD).unwrap();
    assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{a}");
    assert_ne!(a, b, "every hash has its own salt");
    assert!(!a.contains(GOOD));
    assert!(verify_password(&a, GOOD));
    assert!(verify_password(&b, GOOD));
    assert!(!verify_password(&a, "correct horse battery!"));
    assert!(!verify_password(&a, ""));
    assert!(!verify_password("not a phc string", GOOD));
    assert!(!verify_password("", GOOD));
}

#[test]
fn password_rules() {
    let refused = |username: &str, password: &str| match check_password(username, password) {
        Err(Error::Invalid { field, reason }) => {
            assert_eq!(field, "password");
            reason
        }
        other => panic!("{password:?} should be refused, got {other:?}"),
    };
    assert!(refused("ann", "short").contains("at least 10"));
    assert!(refused("ann", "123456789").contains("at least 10"));
    assert!(refused("ann", &"ab".repeat(129)).contains("at most 256"));
    assert!(refused("ann", "line\nbreak-pass").contains("control"));
    assert!(refused("ann.operator", "Ann.Operator").contains("user name"));
    assert!(refused("ann", "Password123").contains("common"));
    assert!(refused("ann", "QWERTYUIOP").contains("common"));
    assert!(refused("ann", "1234567890").contains("common"));
    assert!(refused("ann", "zzzzzzzzzzzz").contains("repeated"));
    check_password("ann", GOOD).unwrap();
    check_password("ann", "ten chars!").unwrap();
    check_password("ann", "密码密码密码密码密码!").unwrap();
    for common in COMMON_PASSWORDS {
        assert!(common.chars().count() >= MIN_PASSWORD_LEN, "{common}");
        assert_eq!(*common, common.to_lowercase(), "{common}");
    }
}

#[test]
fn generated_passwords_are_long_random_and_pass_the_rules() {
    let a = generate_password().unwrap();
    let b = generate_password().unwrap();
    assert_ne!(a, b);
    assert_eq!(a.len(), 23);
    assert_eq!(a.matches('-').count(), 3);
    check_password("ann", &a).unwrap();
}

#[test]
fn usernames_are_lowercase_slugs() {
    for ok in ["ann", "ann.lee@example.com", "op-7", "0x_1"] {
        validate_username(ok).unwrap();
    }
    let long = "a".repeat(MAX_USERNAME_LEN + 1);
    for bad in [
        "",
        "Ann",
        "-ann",
        ".ann",
        "ann lee",
        "ann/lee",
        long.as_str(),
    ] {
        assert!(
            matches!(
                validate_username(bad),
                Err(Error::Invalid {
                    field: "username",
                    ..
                })
            ),
            "{bad:?}"
        );
    }
}

#[test]
fn roles_map_onto_scopes_and_round_trip() {
    assert_eq!(Role::Admin.scope(), Scope::Admin);
    assert_eq!(Role::Operator.scope(), Scope::ReadWrite);
    assert_eq!(Role::Viewer.scope(), Scope::ReadOnly);
    assert_eq!(Role::CityRegulator.scope(), Scope::ReadOnly);
    for role in Role::ALL {
        assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
        assert_eq!(
            serde_json::to_value(role).unwrap(),
            serde_json::Value::from(role.as_str())
        );
    }
    assert!("superuser".parse::<Role>().is_err());

    let registry = registry();
    registry
        .create_user("acme", "reg", Role::CityRegulator, Some(GOOD))
        .unwrap();
    assert_eq!(
        registry.get_user("acme", "reg").unwrap().role,
        Role::CityRegulator
    );
    let changed = registry
        .update_user(
            "acme",
            "reg",
            &UserPatch {
                role: Some(Role::Operator),
                disabled: None,
            },
        )
        .unwrap();
    assert_eq!(changed.role, Role::Operator);
    assert_eq!(
        registry.get_user("acme", "reg").unwrap().role,
        Role::Operator
    );
}

#[test]
fn create_and_verify_logins() {
    let registry = registry();
    let created = registry
        .create_user("acme", "ann", Role::Operator, Some(GOOD))
        .unwrap();
    assert!(created.generated_password.is_none());
    assert_eq!(created.user.role, Role::Operator);
    assert!(created.user.last_login_at.is_none());
    assert!(!stored_hash(&registry, "acme", "ann").contains(GOOD));

    match registry.verify_login("acme", "ann", GOOD).unwrap() {
        LoginCheck::Valid(user) => {
            assert_eq!(user.username, "ann");
            assert!(user.last_login_at.is_some());
        }
        other => panic!("{other:?}"),
    }
    assert!(
        registry
            .get_user("acme", "ann")
            .unwrap()
            .last_login_at
            .is_some()
    );
    assert_eq!(
        registry
            .verify_login("acme", "ann", "wrong password")
            .unwrap(),
        LoginCheck::WrongPassword
    );
    assert_eq!(
        registry.verify_login("acme", "nobody", GOOD).unwrap(),
        LoginCheck::UnknownUser
    );
    assert_eq!(
        registry.verify_login("other", "ann", GOOD).unwrap(),
        LoginCheck::UnknownUser,
        "users are per tenant"
    );
    assert_eq!(
        registry.verify_login("acme", "Not A User!", GOOD).unwrap(),
        LoginCheck::UnknownUser
    );
    assert_eq!(
        registry
            .verify_login("acme", "ann", &"x".repeat(MAX_PASSWORD_LEN + 1))
            .unwrap(),
        LoginCheck::WrongPassword
    );

    assert!(matches!(
        registry.create_user("acme", "ann", Role::Viewer, Some(GOOD)),
        Err(Error::AlreadyExists { kind: "user", .. })
    ));
    assert!(matches!(
        registry.create_user("nope", "ann", Role::Viewer, Some(GOOD)),
        Err(Error::NotFound { kind: "tenant", .. })
    ));
    assert!(matches!(
        registry.create_user("acme", "bob", Role::Viewer, Some("bob")),
        Err(Error::Invalid {
            field: "password",
            ..
        })
    ));

    // Another tenant may have its own "ann".
    registry.create_tenant(&new_tenant("beta")).unwrap();
    registry
        .create_user("beta", "ann", Role::Viewer, Some("another good one"))
        .unwrap();
    assert_eq!(
        registry.verify_login("beta", "ann", GOOD).unwrap(),
        LoginCheck::WrongPassword
    );
    assert_eq!(registry.list_users("acme").unwrap().len(), 1);
    assert_eq!(registry.list_users("beta").unwrap()[0].role, Role::Viewer);
}

#[test]
fn generated_passwords_are_returned_once_and_work() {
    let registry = registry();
    let created = registry
        .create_user("acme", "gen", Role::Viewer, None)
        .unwrap();
    let password = created.generated_password.clone().unwrap();
    assert!(!format!("{created:?}").contains(&password), "Debug redacts");
    assert!(matches!(
        registry.verify_login("acme", "gen", &password).unwrap(),
        LoginCheck::Valid(_)
    ));
}

#[test]
fn disabling_refuses_logins_and_ends_sessions() {
    let registry = registry();
    registry
        .create_user("acme", "ann", Role::Admin, Some(GOOD))
        .unwrap();
    let session = registry.create_session("acme", "ann", &timeouts()).unwrap();
    let disabled = registry
        .update_user(
            "acme",
            "ann",
            &UserPatch {
                role: None,
                disabled: Some(true),
            },
        )
        .unwrap();
    assert!(disabled.disabled);
    assert_eq!(
        registry.verify_login("acme", "ann", GOOD).unwrap(),
        LoginCheck::Disabled
    );
    assert_eq!(
        registry
            .verify_login("acme", "ann", "wrong password")
            .unwrap(),
        LoginCheck::WrongPassword
    );
    assert!(
        registry
            .authenticate_session(&session.token)
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        registry.create_session("acme", "ann", &timeouts()),
        Err(Error::NotFound { kind: "user", .. })
    ));

    registry
        .update_user(
            "acme",
            "ann",
            &UserPatch {
                role: None,
                disabled: Some(false),
            },
        )
        .unwrap();
    assert!(matches!(
        registry.verify_login("acme", "ann", GOOD).unwrap(),
        LoginCheck::Valid(_)
    ));
    assert!(
        registry
            .authenticate_session(&session.token)
            .unwrap()
            .is_none(),
        "enabling again does not revive ended sessions"
    );
    assert!(matches!(
        registry.update_user("acme", "nobody", &UserPatch::default()),
        Err(Error::NotFound { kind: "user", .. })
    ));
}

#[test]
fn admin_resets_end_every_session() {
    let registry = registry();
    registry
        .create_user("acme", "ann", Role::Operator, Some(GOOD))
        .unwrap();
    let session = registry.create_session("acme", "ann", &timeouts()).unwrap();
    assert!(
        registry
            .reset_password("acme", "ann", Some("a brand new one"))
            .unwrap()
            .is_none()
    );
    assert!(
        registry
            .authenticate_session(&session.token)
            .unwrap()
            .is_none()
    );
    assert_eq!(
        registry.verify_login("acme", "ann", GOOD).unwrap(),
        LoginCheck::WrongPassword
    );
    assert!(matches!(
        registry
            .verify_login("acme", "ann", "a brand new one")
            .unwrap(),
        LoginCheck::Valid(_)
    ));
    let generated = registry
        .reset_password("acme", "ann", None)
        .unwrap()
        .unwrap();
    assert!(matches!(
        registry.verify_login("acme", "ann", &generated).unwrap(),
        LoginCheck::Valid(_)
    ));
    assert!(matches!(
        registry.reset_password("acme", "ann", Some("ann")),
        Err(Error::Invalid { .. })
    ));
    assert!(matches!(
        registry.reset_password("acme", "nobody", Some(GOOD)),
        Err(Error::NotFound { kind: "user", .. })
    ));
}

#[test]
fn changing_ones_own_password_needs_the_old_one() {
    let registry = registry();
    registry
        .create_user("acme", "ann", Role::Viewer, Some(GOOD))
        .unwrap();
    let here = registry.create_session("acme", "ann", &timeouts()).unwrap();
    let elsewhere = registry.create_session("acme", "ann", &timeouts()).unwrap();
    let change =
        |old: &str, new: &str| registry.change_password("acme", "ann", old, new, &here.session.id);
    assert_eq!(
        change("not the old one", "a brand new one").unwrap(),
        PasswordChange::WrongPassword
    );
    assert!(matches!(
        change(GOOD, "password123"),
        Err(Error::Invalid {
            field: "password",
            ..
        })
    ));
    assert!(matches!(
        change(GOOD, GOOD),
        Err(Error::Invalid {
            field: "password",
            ..
        })
    ));
    assert!(
        registry
            .authenticate_session(&elsewhere.token)
            .unwrap()
            .is_some()
    );
    assert_eq!(
        change(GOOD, "a brand new one").unwrap(),
        PasswordChange::Changed
    );
    assert!(
        registry
            .authenticate_session(&here.token)
            .unwrap()
            .is_some()
    );
    assert!(
        registry
            .authenticate_session(&elsewhere.token)
            .unwrap()
            .is_none(),
        "other sessions end"
    );
    assert_eq!(
        registry.verify_login("acme", "ann", GOOD).unwrap(),
        LoginCheck::WrongPassword
    );
    assert!(matches!(
        registry
            .verify_login("acme", "ann", "a brand new one")
            .unwrap(),
        LoginCheck::Valid(_)
    ));
}

#[test]
fn deleting_a_user_or_tenant_deletes_their_sessions() {
    let registry = registry();
    registry
        .create_user("acme", "ann", Role::Viewer, Some(GOOD))
        .unwrap();
    let session = registry.create_session("acme", "ann", &timeouts()).unwrap();
    registry.delete_user("acme", "ann").unwrap();
    assert!(
        registry
            .authenticate_session(&session.token)
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        registry.delete_user("acme", "ann"),
        Err(Error::NotFound { kind: "user", .. })
    ));
    let sessions: i64 = registry
        .conn()
        .query_row("SELECT count(*) FROM sessions", [], |r| r.get(0))
        .unwrap();
    assert_eq!(sessions, 0);

    registry
        .create_user("acme", "bob", Role::Viewer, Some(GOOD))
        .unwrap();
    registry.create_session("acme", "bob", &timeouts()).unwrap();
    registry.delete_tenant("acme").unwrap();
    let left: i64 = registry
        .conn()
        .query_row(
            "SELECT (SELECT count(*) FROM users) + (SELECT count(*) FROM sessions)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(left, 0);
}
