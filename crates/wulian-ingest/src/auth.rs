//! Who an MQTT client is. One authenticator tries, in order:
//!
//! 1. **API key** — the password is an API key secret (`wlk_…`; the username is ignored, by
//!    convention `apikey` or the key id): an application, with the key's MQTT topic policy
//!    (`${tenant}` and `${key_id}` replaced) and `$SYS` access for the installation admin key.
//! 2. **Device certificate** — the TLS handshake verified a client certificate against the
//!    registered CAs: the device named by its common name, if the certificate chains to a CA
//!    of *that device's* tenant, is not revoked and the device is enabled (else `0x87`).
//! 3. **Device token** — username = device id, password = the device's token, client id = the
//!    device id or empty (docs/device-contract.md). The registry compares token hashes in
//!    constant time and never says whether the device or the token was wrong.
//! 4. **Anonymous** — no credentials at all, on a listener that allows it (development only):
//!    the default tenant, every topic but `$SYS`.
//!
//! Applications and anonymous clients may not use a device's id as their client id: sessions
//! are keyed by client id, so that would take over the device's connection.

use std::sync::Arc;

use wulian_broker::{
    Authenticator, ConnectRequest, Identity, Principal, TopicPolicy, chain_verifies, x509,
};
use wulian_common::blocking::run_blocking;
use wulian_mqtt::ReasonCode;
use wulian_registry::{
    API_KEY_PREFIX, ApiKey, DEFAULT_TENANT_ID, Error as RegistryError, MqttPolicy, Registry, Scope,
    certificate_fingerprint,
};

/// The broker's [`Authenticator`] for wulian: devices, applications and anonymous clients.
pub struct DeviceAuthenticator {
    registry: Arc<Registry>,
}

impl DeviceAuthenticator {
    pub fn new(registry: Arc<Registry>) -> Arc<DeviceAuthenticator> {
        Arc::new(DeviceAuthenticator { registry })
    }

    async fn device(&self, req: &ConnectRequest) -> Result<Identity, ReasonCode> {
        let (Some(username), Some(password)) = (&req.username, &req.password) else {
            return Err(ReasonCode::BadUserNameOrPassword);
        };
        if !req.client_id.is_empty() && req.client_id != *username {
            return Err(ReasonCode::ClientIdentifierNotValid);
        }
        let Ok(token) = std::str::from_utf8(password) else {
            return Err(ReasonCode::BadUserNameOrPassword);
        };
        let (device_id, token) = (username.clone(), token.to_string());
        let found = run_blocking(&self.registry, move |r| {
            r.authenticate_device(&device_id, &token)
        })
        .await;
        match found {
            Ok(Some(identity)) => Ok(Identity {
                policy: TopicPolicy::own_device(),
                sys_access: false,
                tenant: identity.tenant,
                principal: Principal::Device {
                    device_id: identity.device_id,
                },
            }),
            Ok(None) => Err(ReasonCode::BadUserNameOrPassword),
            Err(error) => Err(registry_failed(&error)),
        }
    }

    async fn application(
        &self,
        req: &ConnectRequest,
        secret: String,
    ) -> Result<Identity, ReasonCode> {
        let client_id = req.client_id.clone();
        let found = run_blocking(&self.registry, move |r| {
            let Some(key) = r.authenticate_api_key(&secret)? else {
                return Ok(None);
            };
            let taken = device_id_taken(r, &key.tenant, &client_id)?;
            Ok::<_, RegistryError>(Some((key, taken)))
        })
        .await;
        match found {
            Ok(Some((_, true))) => Err(ReasonCode::ClientIdentifierNotValid),
            Ok(Some((key, false))) => {
                tracing::debug!(tenant = %key.tenant, key_id = %key.id, "MQTT application authenticated.");
                Ok(application_identity(&key))
            }
            Ok(None) => Err(ReasonCode::BadUserNameOrPassword),
            Err(error) => Err(registry_failed(&error)),
        }
    }

    async fn certificate(
        &self,
        req: &ConnectRequest,
        chain: &[Vec<u8>],
    ) -> Result<Identity, ReasonCode> {
        let refuse = |why: &str| {
            tracing::info!(reason = why, "Device certificate refused.");
            Err(ReasonCode::NotAuthorized)
        };
        let Some(leaf) = chain.first() else {
            return refuse("empty certificate chain");
        };
        let Ok(facts) = x509::parse(leaf) else {
            return refuse("unreadable certificate");
        };
        let Some(device_id) = facts.subject_cn else {
            return refuse("certificate has no common name");
        };
        if (!req.client_id.is_empty() && req.client_id != device_id)
            || req.username.as_ref().is_some_and(|u| *u != device_id)
        {
            return Err(ReasonCode::ClientIdentifierNotValid);
        }
        let fingerprint = certificate_fingerprint(leaf);
        let lookup = device_id.clone();
        let login = run_blocking(&self.registry, move |r| r.certificate_login(&lookup)).await;
        let login = match login {
            Ok(Some(login)) => login,
            Ok(None) => return refuse("no such device"),
            Err(error) => return Err(registry_failed(&error)),
        };
        if login.disabled {
            return refuse("device disabled");
        }
        if !login.cas.iter().any(|ca| chain_verifies(ca, chain)) {
            return refuse("not issued by a CA of the device's tenant");
        }
        if login.revoked_serials.contains(&facts.serial)
            || login.revoked_fingerprints.contains(&fingerprint)
        {
            return refuse("certificate revoked");
        }
        tracing::debug!(tenant = %login.tenant, device_id = %device_id, "Device authenticated by certificate.");
        Ok(Identity {
            policy: TopicPolicy::own_device(),
            sys_access: false,
            tenant: login.tenant,
            principal: Principal::Device { device_id },
        })
    }

    async fn anonymous(&self, req: &ConnectRequest) -> Result<Identity, ReasonCode> {
        let client_id = req.client_id.clone();
        let taken = run_blocking(&self.registry, move |r| {
            device_id_taken(r, DEFAULT_TENANT_ID, &client_id)
        })
        .await;
        match taken {
            Ok(true) => Err(ReasonCode::ClientIdentifierNotValid),
            Ok(false) => Ok(Identity {
                tenant: DEFAULT_TENANT_ID.to_string(),
                principal: Principal::Anonymous,
                policy: Arc::new(TopicPolicy::anonymous()),
                sys_access: false,
            }),
            Err(error) => Err(registry_failed(&error)),
        }
    }
}

#[async_trait::async_trait]
impl Authenticator for DeviceAuthenticator {
    async fn authenticate(&self, req: &ConnectRequest) -> Result<Identity, ReasonCode> {
        if let Some(secret) = req
            .password
            .as_deref()
            .and_then(|p| std::str::from_utf8(p).ok())
            .filter(|p| p.starts_with(API_KEY_PREFIX))
        {
            return self.application(req, secret.to_string()).await;
        }
        if let Some(chain) = &req.transport.peer_certificates {
            return self.certificate(req, chain).await;
        }
        // An empty user name with no password carries no credential (many clients, gmqtt
        // among them, always send the field): on an anonymous listener it is anonymous.
        let has_username = req.username.as_deref().is_some_and(|u| !u.is_empty());
        if has_username || req.password.is_some() {
            return self.device(req).await;
        }
        if req.transport.allow_anonymous {
            return self.anonymous(req).await;
        }
        Err(ReasonCode::BadUserNameOrPassword)
    }
}

fn registry_failed(error: &RegistryError) -> ReasonCode {
    tracing::error!(error = %error, "Registry failed during MQTT authentication.");
    ReasonCode::ServerUnavailable
}

/// Is `client_id` the id of a device of `tenant`? (Empty ids are assigned by the broker.)
fn device_id_taken(
    registry: &Registry,
    tenant: &str,
    client_id: &str,
) -> Result<bool, RegistryError> {
    if client_id.is_empty() {
        return Ok(false);
    }
    match registry.get_device(tenant, client_id) {
        Ok(_) => Ok(true),
        Err(RegistryError::NotFound { .. } | RegistryError::Invalid { .. }) => Ok(false),
        Err(error) => Err(error),
    }
}

/// The identity of an application connecting with `key`.
pub fn application_identity(key: &ApiKey) -> Identity {
    let variables = [("tenant", key.tenant.as_str()), ("key_id", key.id.as_str())];
    Identity {
        tenant: key.tenant.clone(),
        principal: Principal::Application {
            key_id: key.id.clone(),
        },
        policy: Arc::new(topic_policy(&key.effective_mqtt_policy(), &variables)),
        sys_access: key.installation_admin && key.scope == Scope::Admin,
    }
}

/// The broker's form of a stored policy, with `${name}` variables replaced.
pub fn topic_policy(policy: &MqttPolicy, variables: &[(&str, &str)]) -> TopicPolicy {
    let expand = |filters: &[String]| -> Vec<String> {
        filters
            .iter()
            .map(|f| {
                variables.iter().fold(f.clone(), |acc, (name, value)| {
                    acc.replace(&format!("${{{name}}}"), value)
                })
            })
            .collect()
    };
    TopicPolicy {
        publish: expand(&policy.publish.allow),
        subscribe: expand(&policy.subscribe.allow),
        deny_publish: expand(&policy.publish.deny),
        deny_subscribe: expand(&policy.subscribe.deny),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wulian_registry::TopicRules;

    #[test]
    fn variables_are_replaced() {
        let policy = MqttPolicy {
            publish: TopicRules {
                allow: vec!["apps/${key_id}/#".into()],
                deny: vec!["apps/${key_id}/${tenant}".into()],
            },
            subscribe: TopicRules::default(),
        };
        let p = topic_policy(&policy, &[("tenant", "acme"), ("key_id", "k-1")]);
        assert_eq!(p.publish, vec!["apps/k-1/#"]);
        assert_eq!(p.deny_publish, vec!["apps/k-1/acme"]);
        assert!(p.allows_publish("apps/k-1/x"));
        assert!(!p.allows_publish("apps/k-1/acme"));
    }
}
