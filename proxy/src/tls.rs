//! Certificates for HTTPS, picked per connection by SNI and swapped at run
//! time without a restart.
//!
//! The store maps host names to certificates; a name with no certificate of
//! its own falls back to a wildcard one (`*.example.com`), then to the default
//! certificate if one is set. For `*.localhost`, a local development CA
//! signs a certificate per host on first use, so HTTPS works in development
//! out of the box.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use rustls::crypto::aws_lc_rs;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("no certificate in the PEM: {0}")]
    NoCertificate(String),
    #[error("no private key in the PEM: {0}")]
    NoKey(String),
    #[error("the private key is not usable: {0}")]
    BadKey(String),
    #[error("the private key does not belong to the certificate")]
    Mismatch,
    #[error("cannot make a certificate: {0}")]
    Generate(String),
    #[error("TLS setup failed: {0}")]
    Config(String),
}

/// Host name → certificate, read on every handshake.
#[derive(Default)]
pub struct CertStore {
    certs: RwLock<HashMap<String, Arc<CertifiedKey>>>,
    default: RwLock<Option<Arc<CertifiedKey>>>,
    /// Issues certificates on first use for `localhost` and `*.localhost`.
    local: RwLock<Option<LocalCa>>,
    /// TLS-ALPN-01 validation certificates, by host, while an order is open.
    alpn: RwLock<HashMap<String, Arc<CertifiedKey>>>,
    /// Hosts whose certificate the development CA issued (not "their own").
    issued_locally: RwLock<std::collections::HashSet<String>>,
}

/// The ALPN protocol of ACME's TLS-ALPN-01 validation (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// The file stem of the development CA in a certificate directory.
pub const LOCAL_CA_STEM: &str = "_localhost-ca";

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore").finish_non_exhaustive()
    }
}

/// A certificate authority of this machine's own, for development: it signs
/// a certificate per `*.localhost` host on first use (one wildcard would not
/// do: clients refuse `*.localhost`, a wildcard over a single label). Trust
/// its certificate once, as with mkcert or Caddy's local CA.
pub struct LocalCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    der: CertificateDer<'static>,
}

impl LocalCa {
    const NAME: &'static str = "gantry local development CA";

    fn params() -> Result<rcgen::CertificateParams, TlsError> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
            .map_err(|e| TlsError::Generate(e.to_string()))?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, Self::NAME);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        Ok(params)
    }

    /// Reads the CA from `cert`/`key` (PEM), making and writing it the first time.
    pub fn load_or_create(
        cert: &std::path::Path,
        key: &std::path::Path,
    ) -> Result<LocalCa, TlsError> {
        let io = |e: std::io::Error| TlsError::Generate(e.to_string());
        let gen = |e: rcgen::Error| TlsError::Generate(e.to_string());
        if !cert.exists() || !key.exists() {
            let key_pair = rcgen::KeyPair::generate().map_err(gen)?;
            let ca = Self::params()?.self_signed(&key_pair).map_err(gen)?;
            std::fs::write(cert, ca.pem()).map_err(io)?;
            write_private(key, key_pair.serialize_pem().as_bytes()).map_err(io)?;
        }
        let cert_pem = std::fs::read(cert).map_err(io)?;
        let der = CertificateDer::from_pem_slice(&cert_pem)
            .map_err(|e| TlsError::NoCertificate(e.to_string()))?;
        let key_pem = std::fs::read_to_string(key).map_err(io)?;
        let key_pair =
            rcgen::KeyPair::from_pem(&key_pem).map_err(|e| TlsError::NoKey(e.to_string()))?;
        Ok(LocalCa {
            issuer: rcgen::Issuer::new(Self::params()?, key_pair),
            der,
        })
    }

    /// A certificate for `host`, signed by this CA, with the CA in its chain.
    pub fn issue(&self, host: &str) -> Result<CertifiedKey, TlsError> {
        let gen = |e: rcgen::Error| TlsError::Generate(e.to_string());
        let key_pair = rcgen::KeyPair::generate().map_err(gen)?;
        let mut params = rcgen::CertificateParams::new(vec![host.to_owned()]).map_err(gen)?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, host);
        let cert = params.signed_by(&key_pair, &self.issuer).map_err(gen)?;
        let chain = vec![cert.der().clone(), self.der.clone()];
        let key = PrivateKeyDer::from_pem_slice(key_pair.serialize_pem().as_bytes())
            .map_err(|e| TlsError::NoKey(e.to_string()))?;
        CertifiedKey::from_der(chain, key, &aws_lc_rs::default_provider())
            .map_err(|e| TlsError::BadKey(e.to_string()))
    }
}

/// Writes a private key file readable by its owner and its group only.
pub fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    // The owner and its group: an installed proxy runs as a user of its own
    // in the certificate directory's group (setgid), and reads keys by it.
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o640)
        .open(path)?;
    file.write_all(bytes)
}

impl CertStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves `host` (or `*.domain`) with `key` from now on.
    pub fn set(&self, host: &str, key: Arc<CertifiedKey>) {
        self.certs
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(host.to_ascii_lowercase(), key);
    }

    /// The certificate for names nothing else matches.
    pub fn set_default(&self, key: Arc<CertifiedKey>) {
        *self.default.write().unwrap_or_else(|e| e.into_inner()) = Some(key);
    }

    /// Lets `ca` sign certificates for `localhost` and `*.localhost` on first use.
    pub fn set_local_ca(&self, ca: LocalCa) {
        *self.local.write().unwrap_or_else(|e| e.into_inner()) = Some(ca);
    }

    fn issue_local(&self, host: &str) -> Option<Arc<CertifiedKey>> {
        if host != "localhost" && !host.ends_with(".localhost") {
            return None;
        }
        let local = self.local.read().unwrap_or_else(|e| e.into_inner());
        let key = match local.as_ref()?.issue(host) {
            Ok(key) => Arc::new(key),
            Err(err) => {
                tracing::warn!(%host, error = %err, "cannot issue a development certificate");
                return None;
            }
        };
        self.set(host, key.clone());
        self.issued_locally
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(host.to_owned());
        Some(key)
    }

    /// Whether `host` has a certificate of its own (its own name or a
    /// wildcard over it), not one the development CA made up.
    pub fn has_own(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        if self
            .issued_locally
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&host)
        {
            return false;
        }
        let certs = self.certs.read().unwrap_or_else(|e| e.into_inner());
        certs.contains_key(&host)
            || host
                .split_once('.')
                .is_some_and(|(_, parent)| certs.contains_key(&format!("*.{parent}")))
    }

    /// Answers TLS-ALPN-01 for `host` with a certificate carrying the ACME
    /// identifier extension over `digest` (SHA-256 of the key authorization).
    pub fn set_alpn_challenge(&self, host: &str, digest: &[u8]) -> Result<(), TlsError> {
        let gen = |e: rcgen::Error| TlsError::Generate(e.to_string());
        let key_pair = rcgen::KeyPair::generate().map_err(gen)?;
        let mut params = rcgen::CertificateParams::new(vec![host.to_owned()]).map_err(gen)?;
        params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
        let cert = params.self_signed(&key_pair).map_err(gen)?;
        let key = PrivateKeyDer::from_pem_slice(key_pair.serialize_pem().as_bytes())
            .map_err(|e| TlsError::NoKey(e.to_string()))?;
        // Not `from_der`: its consistency check parses the certificate with
        // webpki, which refuses the critical acmeIdentifier extension.
        let signing = aws_lc_rs::default_provider()
            .key_provider
            .load_private_key(key)
            .map_err(|e| TlsError::BadKey(e.to_string()))?;
        let certified = CertifiedKey::new(vec![cert.der().clone()], signing);
        self.alpn
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(host.to_ascii_lowercase(), Arc::new(certified));
        Ok(())
    }

    pub fn remove_alpn_challenge(&self, host: &str) {
        self.alpn
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&host.to_ascii_lowercase());
    }

    /// Makes the store exactly what `dir` holds: `HOST.pem` (chain) with
    /// `HOST.key`, `_wildcard.DOMAIN.pem` for `*.DOMAIN`, and the development
    /// CA (`_localhost-ca.pem`/`.key`) if it is there. Returns the files that
    /// could not be loaded, with why.
    pub fn load_dir(&self, dir: &std::path::Path) -> Vec<(std::path::PathBuf, TlsError)> {
        let mut failed = Vec::new();
        let mut loaded = HashMap::new();
        let (ca_cert, ca_key) = (
            dir.join(format!("{LOCAL_CA_STEM}.pem")),
            dir.join(format!("{LOCAL_CA_STEM}.key")),
        );
        let local = if ca_cert.exists() && ca_key.exists() {
            match LocalCa::load_or_create(&ca_cert, &ca_key) {
                Ok(ca) => Some(ca),
                Err(err) => {
                    failed.push((ca_cert.clone(), err));
                    None
                }
            }
        } else {
            None
        };
        if let Ok(entries) = std::fs::read_dir(dir) {
            for path in entries.flatten().map(|e| e.path()) {
                let Some(stem) = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(".pem"))
                    .filter(|s| *s != LOCAL_CA_STEM)
                    .map(str::to_owned)
                else {
                    continue;
                };
                let read = std::fs::read(&path).and_then(|chain| {
                    std::fs::read(path.with_extension("key")).map(|key| (chain, key))
                });
                match read {
                    Ok((chain, key)) => match certified_key(&chain, &key) {
                        Ok(key) => {
                            loaded.insert(stem.replace("_wildcard", "*"), Arc::new(key));
                        }
                        Err(err) => failed.push((path, err)),
                    },
                    Err(err) => failed.push((path, TlsError::Generate(err.to_string()))),
                }
            }
        }
        let default = local
            .as_ref()
            .and_then(|ca| ca.issue("localhost").ok())
            .map(Arc::new);
        *self.certs.write().unwrap_or_else(|e| e.into_inner()) = loaded;
        self.issued_locally
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        *self.default.write().unwrap_or_else(|e| e.into_inner()) = default;
        *self.local.write().unwrap_or_else(|e| e.into_inner()) = local;
        failed
    }

    /// The certificate a handshake for `host` gets.
    pub fn find(&self, host: Option<&str>) -> Option<Arc<CertifiedKey>> {
        if let Some(host) = host.map(str::to_ascii_lowercase) {
            let certs = self.certs.read().unwrap_or_else(|e| e.into_inner());
            if let Some(key) = certs.get(&host) {
                return Some(key.clone());
            }
            if let Some((_, parent)) = host.split_once('.') {
                if let Some(key) = certs.get(&format!("*.{parent}")) {
                    return Some(key.clone());
                }
            }
            drop(certs);
            if let Some(key) = self.issue_local(&host) {
                return Some(key);
            }
        }
        self.default
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let acme = hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
        if acme {
            // Only a validation certificate answers acme-tls/1 (RFC 8737 §3).
            let host = hello.server_name()?.to_ascii_lowercase();
            return self
                .alpn
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(&host)
                .cloned();
        }
        self.find(hello.server_name())
    }
}

/// A certificate chain and its private key, from PEM text, checked to match.
pub fn certified_key(chain_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::NoCertificate(e.to_string()))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate("it holds none".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::NoKey(e.to_string()))?;
    let provider = aws_lc_rs::default_provider();
    let certified = CertifiedKey::from_der(chain, key, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => TlsError::Mismatch,
        other => TlsError::BadKey(other.to_string()),
    })?;
    Ok(certified)
}

/// A self-signed certificate for `names`, as (chain PEM, key PEM).
pub fn self_signed(names: &[String]) -> Result<(String, String), TlsError> {
    let generated = rcgen::generate_simple_self_signed(names.to_vec())
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    Ok((generated.cert.pem(), generated.signing_key.serialize_pem()))
}

/// rustls server settings: TLS 1.2 and 1.3 only (rustls has nothing older),
/// its default modern cipher suites, certificates from `certs`, and ALPN for
/// HTTP/2 and HTTP/1.1.
pub fn server_config(certs: Arc<CertStore>) -> Result<rustls::ServerConfig, TlsError> {
    let provider = Arc::new(aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec(), ACME_TLS_ALPN.to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_find_their_own_then_wildcard_then_default_certificate() {
        let store = CertStore::new();
        assert!(store.find(Some("a.example.com")).is_none());
        let (chain, key) = self_signed(&["a.example.com".into()]).expect("cert");
        let a = Arc::new(certified_key(chain.as_bytes(), key.as_bytes()).expect("key"));
        let (chain, key) = self_signed(&["*.example.com".into()]).expect("cert");
        let wild = Arc::new(certified_key(chain.as_bytes(), key.as_bytes()).expect("key"));
        let (chain, key) = self_signed(&["localhost".into()]).expect("cert");
        let fallback = Arc::new(certified_key(chain.as_bytes(), key.as_bytes()).expect("key"));
        store.set("a.example.com", a.clone());
        store.set("*.example.com", wild.clone());
        assert!(Arc::ptr_eq(
            &store.find(Some("A.example.com")).expect("a"),
            &a
        ));
        assert!(Arc::ptr_eq(
            &store.find(Some("b.example.com")).expect("b"),
            &wild
        ));
        assert!(store.find(Some("other.test")).is_none());
        store.set_default(fallback.clone());
        assert!(Arc::ptr_eq(
            &store.find(Some("other.test")).expect("d"),
            &fallback
        ));
        assert!(Arc::ptr_eq(&store.find(None).expect("no sni"), &fallback));
    }

    #[test]
    fn a_key_must_match_its_certificate() {
        let (chain, _) = self_signed(&["a.test".into()]).expect("cert");
        let (_, other_key) = self_signed(&["b.test".into()]).expect("cert");
        assert!(matches!(
            certified_key(chain.as_bytes(), other_key.as_bytes()),
            Err(TlsError::Mismatch)
        ));
        assert!(matches!(
            certified_key(b"not pem", other_key.as_bytes()),
            Err(TlsError::NoCertificate(_))
        ));
    }
}

#[cfg(test)]
mod local_ca_tests {
    use super::*;

    #[test]
    fn the_local_ca_signs_localhost_names_on_first_use() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = (dir.path().join("ca.pem"), dir.path().join("ca.key"));
        let ca = LocalCa::load_or_create(&cert, &key).expect("ca");
        let again = LocalCa::load_or_create(&cert, &key).expect("reload");
        assert_eq!(ca.der, again.der, "the CA is kept, not remade");
        let store = CertStore::new();
        store.set_local_ca(again);
        let first = store.find(Some("shop.localhost")).expect("issued");
        let second = store.find(Some("shop.localhost")).expect("cached");
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(first.cert.len(), 2, "leaf and CA");
        assert!(store.find(Some("shop.example.com")).is_none());
    }
}
