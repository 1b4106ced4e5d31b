//! How devices prove who they are on MQTT: username = device id, password = the device's token,
//! client id = device id (docs/device-contract.md). The registry compares token hashes in
//! constant time and never says whether the device or the token was wrong.

use std::sync::Arc;

use wulian_broker::{Authenticator, ConnectRequest, Identity, Principal, TopicPolicy};
use wulian_common::blocking::run_blocking;
use wulian_mqtt::ReasonCode;
use wulian_registry::Registry;

pub struct DeviceAuthenticator {
    registry: Arc<Registry>,
}

impl DeviceAuthenticator {
    pub fn new(registry: Arc<Registry>) -> Arc<DeviceAuthenticator> {
        Arc::new(DeviceAuthenticator { registry })
    }
}

#[async_trait::async_trait]
impl Authenticator for DeviceAuthenticator {
    async fn authenticate(&self, req: &ConnectRequest) -> Result<Identity, ReasonCode> {
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
                policy: TopicPolicy::device(&identity.device_id),
                sys_access: false,
                tenant: identity.tenant,
                principal: Principal::Device {
                    device_id: identity.device_id,
                },
            }),
            Ok(None) => Err(ReasonCode::BadUserNameOrPassword),
            Err(error) => {
                tracing::error!(error = %error, "Registry failed during MQTT authentication.");
                Err(ReasonCode::ServerUnavailable)
            }
        }
    }
}
