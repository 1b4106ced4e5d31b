//! `/api/v1/ca-certificates` and `/api/v1/devices/{id}/certificates/revoke`: device identity by
//! X.509 certificate (mutual TLS on the MQTT listeners).
//!
//! A tenant's admin registers the CA that issues its devices' certificates; a device that
//! presents a certificate from it, with its device id as the subject common name, is that
//! device. Certificates are checked here (PEM, a single certificate usable as a trust anchor)
//! so the registry stores only what the TLS listeners can use. Listeners pick up changes within
//! a second. Revoking a certificate also closes the device's current connection.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use wulian_common::blocking::run_blocking;
use wulian_registry::{CaCertificate, RevokedCertificate};

use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{ApiJson, Caller};
use crate::state::AppState;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CaCertificateView {
    pub id: String,
    pub tenant: String,
    pub name: String,
    /// The certificate's subject common name.
    pub subject: String,
    /// SHA-256 of the certificate (DER), lowercase hex.
    pub fingerprint: String,
    pub created_at: i64,
    /// The certificate, PEM.
    pub certificate: String,
}

impl From<CaCertificate> for CaCertificateView {
    fn from(ca: CaCertificate) -> CaCertificateView {
        CaCertificateView {
            certificate: pem("CERTIFICATE", &ca.der),
            id: ca.id,
            tenant: ca.tenant,
            name: ca.name,
            subject: ca.subject,
            fingerprint: ca.fingerprint,
            created_at: ca.created_at,
        }
    }
}

/// PEM armour for DER (base64 in 64-column lines).
fn pem(label: &str, der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::with_capacity(der.len().div_ceil(3) * 4);
    for chunk in der.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddCaCertificate {
    pub name: String,
    /// The CA certificate, PEM (one certificate).
    pub certificate: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeCertificate {
    /// The certificate's serial number, hex (colons allowed).
    pub serial: Option<String>,
    /// The certificate's SHA-256 fingerprint, hex (colons allowed).
    pub fingerprint: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RevokedView {
    pub device_id: String,
    pub serial: Option<String>,
    pub fingerprint: Option<String>,
    pub revoked_at: i64,
}

impl From<RevokedCertificate> for RevokedView {
    fn from(r: RevokedCertificate) -> RevokedView {
        RevokedView {
            device_id: r.device_id,
            serial: r.serial,
            fingerprint: r.fingerprint,
            revoked_at: r.revoked_at,
        }
    }
}

fn invalid_certificate(detail: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", detail)
}

#[utoipa::path(post, path = "/api/v1/ca-certificates", tag = "certificates",
    request_body = AddCaCertificate, security(("api_key" = [])),
    responses((status = 201, body = CaCertificateView), (status = 403, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn add_ca_certificate(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<AddCaCertificate>,
) -> ApiResult<(StatusCode, Json<CaCertificateView>)> {
    caller.require_admin()?;
    let chain = wulian_broker::certificates_from_pem(body.certificate.as_bytes(), "certificate")
        .map_err(|e| invalid_certificate(format!("certificate: {e}")))?;
    let [der] = chain.as_slice() else {
        return Err(invalid_certificate(
            "certificate: give exactly one CA certificate",
        ));
    };
    let der = der.as_ref().to_vec();
    wulian_broker::check_client_ca(&der)
        .map_err(|e| invalid_certificate(format!("certificate: not usable as a CA: {e}")))?;
    let facts = wulian_broker::x509::parse(&der)
        .map_err(|e| invalid_certificate(format!("certificate: {e}")))?;
    let subject = facts.subject_cn.unwrap_or_default();
    let tenant = caller.tenant().to_string();
    let name = body.name;
    let ca = run_blocking(&state.registry, move |r| {
        r.add_ca_certificate(&tenant, &name, &subject, &der)
    })
    .await?;
    tracing::info!(tenant = %ca.tenant, ca_id = %ca.id, fingerprint = %ca.fingerprint, "CA certificate registered.");
    Ok((StatusCode::CREATED, Json(ca.into())))
}

#[utoipa::path(get, path = "/api/v1/ca-certificates", tag = "certificates",
    security(("api_key" = [])),
    responses((status = 200, body = Vec<CaCertificateView>), (status = 403, body = Problem)))]
pub async fn list_ca_certificates(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<CaCertificateView>>> {
    caller.require_admin()?;
    let tenant = caller.tenant().to_string();
    let cas = run_blocking(&state.registry, move |r| r.list_ca_certificates(&tenant)).await?;
    Ok(Json(cas.into_iter().map(CaCertificateView::from).collect()))
}

#[utoipa::path(delete, path = "/api/v1/ca-certificates/{ca_id}", tag = "certificates",
    params(("ca_id" = String, Path, description = "CA certificate id")), security(("api_key" = [])),
    responses((status = 204, description = "Removed"), (status = 404, body = Problem)))]
pub async fn delete_ca_certificate(
    State(state): State<AppState>,
    caller: Caller,
    Path(ca_id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let tenant = caller.tenant().to_string();
    let id = ca_id.clone();
    run_blocking(&state.registry, move |r| {
        r.delete_ca_certificate(&tenant, &id)
    })
    .await
    .map_err(|e| match e {
        wulian_registry::Error::NotFound { .. } => ApiError::not_found(
            "ca_certificate_not_found",
            format!("CA certificate {ca_id:?} not found"),
        ),
        other => other.into(),
    })?;
    tracing::info!(tenant = %caller.tenant(), ca_id = %ca_id, "CA certificate removed.");
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/devices/{id}/certificates/revoke", tag = "certificates",
    request_body = RevokeCertificate,
    params(("id" = String, Path, description = "Device id")), security(("api_key" = [])),
    responses((status = 201, body = RevokedView), (status = 404, body = Problem),
        (status = 422, body = Problem)))]
pub async fn revoke_certificate(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<RevokeCertificate>,
) -> ApiResult<(StatusCode, Json<RevokedView>)> {
    caller.require_write()?;
    let tenant = caller.tenant().to_string();
    let device_id = id.clone();
    let revoked = run_blocking(&state.registry, move |r| {
        r.revoke_device_certificate(
            &tenant,
            &device_id,
            body.serial.as_deref(),
            body.fingerprint.as_deref(),
        )
    })
    .await?;
    // The connection the certificate opened may still be up; it must not outlive the revocation.
    crate::routes::devices::disconnect(&state, caller.tenant(), &id, "certificate revoked");
    tracing::info!(tenant = %caller.tenant(), device_id = %id, "Device certificate revoked.");
    Ok((StatusCode::CREATED, Json(revoked.into())))
}

#[cfg(test)]
mod tests {
    #[test]
    fn pem_armour() {
        let text = super::pem("CERTIFICATE", b"hello world");
        assert_eq!(
            text,
            "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n"
        );
        assert!(super::pem("X", b"ab").contains("YWI=\n"));
        assert!(super::pem("X", b"abc").contains("YWJj\n"));
    }
}
