//! `wulian certs ...`: a small certificate authority for trying TLS and mutual TLS — a CA, a
//! server certificate for the MQTT listeners and device certificates whose common name is the
//! device id. Keys are ECDSA P-256, written PEM with mode 0600. Production fleets use their
//! own PKI; wulian only needs its CA certificate (`wulian ca add`).
//!
//! The CA's subject is a single common name, so signing can rebuild the issuer from `ca.pem`
//! and `ca.key` alone; every certificate made is checked against the CA before it is written.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

#[derive(Debug, Args)]
pub struct CertsArgs {
    #[command(subcommand)]
    command: CertsCommand,
}

#[derive(Debug, Subcommand)]
enum CertsCommand {
    /// Create a CA: DIR/ca.pem (register it with `wulian ca add`) and DIR/ca.key.
    Ca {
        #[arg(long)]
        out: PathBuf,
        /// The CA's common name; a random suffix keeps CAs apart.
        #[arg(long, default_value = "wulian test CA")]
        name: String,
        #[arg(long, default_value_t = 3650)]
        days: u32,
    },
    /// Create a server certificate for TLS listeners: OUT/server.pem and OUT/server.key.
    Server {
        /// The directory holding ca.pem and ca.key.
        #[arg(long)]
        ca: PathBuf,
        /// DNS names the server is reached by (repeatable).
        #[arg(long)]
        dns: Vec<String>,
        /// IP addresses the server is reached by (repeatable).
        #[arg(long)]
        ip: Vec<IpAddr>,
        /// Where to write; the CA directory when absent.
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long, default_value_t = 825)]
        days: u32,
    },
    /// Create a device certificate (CN = device id): OUT/ID.pem and OUT/ID.key.
    Device {
        #[arg(long)]
        ca: PathBuf,
        #[arg(long)]
        device_id: String,
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long, default_value_t = 825)]
        days: u32,
    },
}

pub fn run(args: CertsArgs) -> anyhow::Result<()> {
    match args.command {
        CertsCommand::Ca { out, name, days } => create_ca(&out, &name, days),
        CertsCommand::Server {
            ca,
            dns,
            ip,
            out,
            days,
        } => {
            if dns.is_empty() && ip.is_empty() {
                bail!("give at least one --dns or --ip");
            }
            let mut sans: Vec<SanType> = Vec::new();
            for name in &dns {
                sans.push(SanType::DnsName(
                    name.as_str()
                        .try_into()
                        .with_context(|| format!("Invalid DNS name {name:?}"))?,
                ));
            }
            sans.extend(ip.iter().map(|ip| SanType::IpAddress(*ip)));
            let cn = dns
                .first()
                .cloned()
                .or_else(|| ip.first().map(ToString::to_string))
                .unwrap_or_default();
            let out = out.unwrap_or_else(|| ca.clone());
            issue(
                &ca,
                &out,
                "server",
                &cn,
                sans,
                ExtendedKeyUsagePurpose::ServerAuth,
                days,
            )
        }
        CertsCommand::Device {
            ca,
            device_id,
            out,
            days,
        } => {
            if device_id.is_empty()
                || !device_id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c))
            {
                bail!("{device_id:?} is not a device id (A-Z a-z 0-9 _ . : -)");
            }
            let out = out.unwrap_or_else(|| ca.clone());
            issue(
                &ca,
                &out,
                &device_id,
                &device_id,
                Vec::new(),
                ExtendedKeyUsagePurpose::ClientAuth,
                days,
            )
        }
    }
}

fn validity(params: &mut CertificateParams, days: u32) {
    let now = time::OffsetDateTime::now_utc();
    // An hour of slack for clocks that are a little behind.
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(i64::from(days));
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn create_ca(out: &Path, name: &str, days: u32) -> anyhow::Result<()> {
    let (cert_path, key_path) = (out.join("ca.pem"), out.join("ca.key"));
    if cert_path.exists() || key_path.exists() {
        bail!("{} already holds a CA; not overwriting it", out.display());
    }
    std::fs::create_dir_all(out).with_context(|| format!("Create {}", out.display()))?;
    let mut suffix = [0u8; 4];
    getrandom::fill(&mut suffix).map_err(|e| anyhow::anyhow!("No randomness: {e}"))?;
    let cn = format!("{name} {}", hex::encode(suffix));
    let key = KeyPair::generate().context("Generate the CA key")?;
    let mut params = ca_params(&cn);
    validity(&mut params, days);
    let cert = params
        .self_signed(&key)
        .context("Sign the CA certificate")?;
    write(&key_path, &key.serialize_pem(), true)?;
    write(&cert_path, &cert.pem(), false)?;
    println!(
        "CA {cn:?}: {} and {}",
        cert_path.display(),
        key_path.display()
    );
    Ok(())
}

/// Loads the CA of `dir` as an issuer, with the DER of its certificate.
fn load_ca(dir: &Path) -> anyhow::Result<(Issuer<'static, KeyPair>, Vec<u8>)> {
    let cert_path = dir.join("ca.pem");
    let key_path = dir.join("ca.key");
    let cert_pem = std::fs::read(&cert_path).with_context(|| {
        format!(
            "Read {} (create one with `wulian certs ca`)",
            cert_path.display()
        )
    })?;
    let key_pem = std::fs::read_to_string(&key_path)
        .with_context(|| format!("Read {}", key_path.display()))?;
    let der = wulian_broker::certificates_from_pem(&cert_pem, &cert_path.display().to_string())?
        .into_iter()
        .next()
        .map(|c| c.as_ref().to_vec())
        .context("No certificate in ca.pem")?;
    let cn = wulian_broker::x509::parse(&der)?
        .subject_cn
        .context("ca.pem has no common name; `wulian certs` signs only with CAs it made")?;
    let key = KeyPair::from_pem(&key_pem).context("Parse ca.key")?;
    Ok((Issuer::new(ca_params(&cn), key), der))
}

fn issue(
    ca_dir: &Path,
    out: &Path,
    file_stem: &str,
    cn: &str,
    sans: Vec<SanType>,
    usage: ExtendedKeyUsagePurpose,
    days: u32,
) -> anyhow::Result<()> {
    let (issuer, ca_der) = load_ca(ca_dir)?;
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.subject_alt_names = sans;
    params.extended_key_usages = vec![usage.clone()];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, days);
    let key = KeyPair::generate().context("Generate the key")?;
    let cert = params
        .signed_by(&key, &issuer)
        .context("Sign the certificate")?;
    if usage == ExtendedKeyUsagePurpose::ClientAuth
        && !wulian_broker::chain_verifies(&ca_der, &[cert.der().to_vec()])
    {
        bail!(
            "the new certificate does not verify against {}/ca.pem",
            ca_dir.display()
        );
    }
    std::fs::create_dir_all(out).with_context(|| format!("Create {}", out.display()))?;
    let (cert_path, key_path) = (
        out.join(format!("{file_stem}.pem")),
        out.join(format!("{file_stem}.key")),
    );
    write(&key_path, &key.serialize_pem(), true)?;
    write(&cert_path, &cert.pem(), false)?;
    let serial = wulian_broker::x509::parse(cert.der())?.serial;
    println!(
        "{cn:?} (serial {serial}): {} and {}",
        cert_path.display(),
        key_path.display()
    );
    Ok(())
}

fn write(path: &Path, text: &str, secret: bool) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if secret {
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("Write {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("Write {}", path.display()))?;
    Ok(())
}
