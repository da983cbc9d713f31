//! Development certificates: a throwaway CA and certificates it signs
//! (rcgen). Used by `pgveil demo` and the tests; production deployments bring
//! their own PEM files.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("writing certificate files: {0}")]
    Io(#[from] std::io::Error),
}

/// A development CA that can sign server and client certificates.
pub struct DevCa {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// PEM files of one issued certificate.
#[derive(Debug, Clone)]
pub struct IssuedFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl DevCa {
    pub fn new(common_name: &str) -> Result<Self, CertError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn write_cert(&self, path: &Path) -> Result<(), CertError> {
        std::fs::write(path, &self.cert_pem)?;
        Ok(())
    }

    /// Issues a certificate valid for `names` (DNS names or IP addresses) for
    /// `days` from now, returning `(certificate PEM, private key PEM)`.
    pub fn issue_pem(
        &self,
        common_name: &str,
        names: &[&str],
        client: bool,
        days: i64,
    ) -> Result<(String, String), CertError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.subject_alt_names = names
            .iter()
            .map(|n| match n.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => Ok(SanType::DnsName((*n).try_into()?)),
            })
            .collect::<Result<_, rcgen::Error>>()?;
        params.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let now = std::time::SystemTime::now();
        params.not_before = (now - std::time::Duration::from_secs(3600)).into();
        params.not_after =
            (now + std::time::Duration::from_secs(days.max(1) as u64 * 86_400)).into();
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// [`DevCa::issue_pem`], written to `dir/stem.crt` and `dir/stem.key` (0600).
    pub fn issue(
        &self,
        common_name: &str,
        names: &[&str],
        client: bool,
        days: i64,
        dir: &Path,
        stem: &str,
    ) -> Result<IssuedFiles, CertError> {
        let (cert, key) = self.issue_pem(common_name, names, client, days)?;
        let files = IssuedFiles {
            cert: dir.join(format!("{stem}.crt")),
            key: dir.join(format!("{stem}.key")),
        };
        std::fs::write(&files.cert, cert)?;
        write_private(&files.key, &key)?;
        Ok(files)
    }
}

/// Writes a file readable by its owner only (libpq refuses client keys that
/// are group/world readable).
pub fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    std::io::Write::write_all(&mut f, contents.as_bytes())
}
