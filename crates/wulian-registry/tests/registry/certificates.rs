//! CA certificates and revoked device certificates: tenant scoping, uniqueness, the login
//! view, cascades.

use wulian_registry::test_support::{new_device, new_tenant, registry_with_tenant};
use wulian_registry::{Error, certificate_fingerprint};

/// Not a real certificate: the registry stores DER as given (TLS checks it before).
const CA_A: &[u8] = b"\x30\x03\x02\x01\x01 pretend CA a";
const CA_B: &[u8] = b"\x30\x03\x02\x01\x02 pretend CA b";

#[test]
fn cas_are_tenant_scoped_and_unique() {
    let (registry, _) = registry_with_tenant("acme").unwrap();
    registry.create_tenant(&new_tenant("zeta")).unwrap();
    let before = registry.ca_generation();
    let ca = registry
        .add_ca_certificate("acme", "fleet", "Acme CA", CA_A)
        .unwrap();
    assert_eq!(ca.fingerprint, certificate_fingerprint(CA_A));
    assert!(registry.ca_generation() > before);
    // The same certificate cannot be registered twice, by anyone.
    assert!(matches!(
        registry.add_ca_certificate("zeta", "copy", "Acme CA", CA_A),
        Err(Error::AlreadyExists { .. })
    ));
    registry
        .add_ca_certificate("zeta", "own", "Zeta CA", CA_B)
        .unwrap();
    assert_eq!(registry.list_ca_certificates("acme").unwrap().len(), 1);
    assert_eq!(registry.all_ca_certificates().unwrap().len(), 2);
    // Another tenant's CA is not found.
    assert!(matches!(
        registry.delete_ca_certificate("zeta", &ca.id),
        Err(Error::NotFound { .. })
    ));
    registry.delete_ca_certificate("acme", &ca.id).unwrap();
    assert!(registry.list_ca_certificates("acme").unwrap().is_empty());

    // Deleting a tenant deletes its CAs.
    registry.delete_tenant("zeta").unwrap();
    assert!(registry.all_ca_certificates().unwrap().is_empty());
}

#[test]
fn revocations_and_the_login_view() {
    let (registry, _) = registry_with_tenant("acme").unwrap();
    registry
        .create_device("acme", &new_device("bike-1"))
        .unwrap();
    registry
        .add_ca_certificate("acme", "fleet", "Acme CA", CA_A)
        .unwrap();
    let revoked = registry
        .revoke_device_certificate("acme", "bike-1", Some("00:0A:1B"), None)
        .unwrap();
    assert_eq!(revoked.serial.as_deref(), Some("0a1b"));
    registry
        .revoke_device_certificate("acme", "bike-1", None, Some("AB:CD"))
        .unwrap();
    assert!(matches!(
        registry.revoke_device_certificate("acme", "bike-1", None, None),
        Err(Error::Invalid { .. })
    ));
    assert!(matches!(
        registry.revoke_device_certificate("acme", "bike-1", Some("xyz"), None),
        Err(Error::Invalid { .. })
    ));
    assert!(matches!(
        registry.revoke_device_certificate("acme", "ghost", Some("01"), None),
        Err(Error::NotFound { .. })
    ));

    let login = registry.certificate_login("bike-1").unwrap().unwrap();
    assert_eq!(login.tenant, "acme");
    assert!(!login.disabled);
    assert_eq!(login.cas, vec![CA_A.to_vec()]);
    assert_eq!(login.revoked_serials, vec!["0a1b"]);
    assert_eq!(login.revoked_fingerprints, vec!["abcd"]);
    assert_eq!(registry.certificate_login("ghost").unwrap(), None);
    assert_eq!(registry.certificate_login("bad id!").unwrap(), None);

    // Revocations go with the device.
    registry.delete_device("acme", "bike-1").unwrap();
    assert!(
        registry
            .list_revoked_certificates("acme", "bike-1")
            .unwrap()
            .is_empty()
    );
}
