//! Encryption at rest for config vars: AES-256-GCM with a key kept in
//! `$GANTRY_HOME/secret.key` (mode 0600), made on first use. The database alone
//! never reveals a value; the key file and the database together do.
//!
//! Uses aws-lc-rs, already in the build as russh's crypto provider.

use std::path::Path;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};

const PREFIX: &str = "v1:";

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("cannot read or write the secret key {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("the secret key {0} is not 32 bytes; restore it from a backup (without it, config values cannot be read)")]
    BadKey(String),
    #[error(
        "a sealed value cannot be opened: it is corrupt, or was sealed with another secret key"
    )]
    Open,
    #[error("cannot make random bytes")]
    Random,
}

/// Seals and opens values with gantry's secret key.
pub struct Secrets {
    key: LessSafeKey,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets(..)")
    }
}

impl Secrets {
    /// Loads the key at `path`, creating a random one if the file does not exist.
    pub fn load_or_create(path: &Path) -> Result<Secrets, SecretsError> {
        let io = |source| SecretsError::Io {
            path: path.display().to_string(),
            source,
        };
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                use std::io::Write;
                use std::os::unix::fs::OpenOptionsExt;
                let mut bytes = vec![0u8; 32];
                aws_lc_rs::rand::fill(&mut bytes).map_err(|_| SecretsError::Random)?;
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(io)?;
                file.write_all(&bytes).map_err(io)?;
                bytes
            }
            Err(err) => return Err(io(err)),
        };
        let key = UnboundKey::new(&AES_256_GCM, &bytes)
            .map_err(|_| SecretsError::BadKey(path.display().to_string()))?;
        Ok(Secrets {
            key: LessSafeKey::new(key),
        })
    }

    /// Encrypts `plaintext`; the result is text, safe to store anywhere.
    pub fn seal(&self, plaintext: &[u8]) -> Result<String, SecretsError> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| SecretsError::Random)?;
        let mut data = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut data)
            .map_err(|_| SecretsError::Random)?;
        let mut out = String::with_capacity(PREFIX.len() + 2 * (NONCE_LEN + data.len()));
        out.push_str(PREFIX);
        for byte in nonce.iter().chain(&data) {
            out.push_str(&format!("{byte:02x}"));
        }
        Ok(out)
    }

    /// Decrypts what [`Secrets::seal`] made.
    pub fn open(&self, sealed: &str) -> Result<Vec<u8>, SecretsError> {
        let hex = sealed.strip_prefix(PREFIX).ok_or(SecretsError::Open)?;
        if hex.len() % 2 != 0 || hex.len() < 2 * NONCE_LEN {
            return Err(SecretsError::Open);
        }
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
            .collect::<Result<_, _>>()
            .map_err(|_| SecretsError::Open)?;
        let (nonce, data) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SecretsError::Open)?;
        let mut data = data.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::empty(), &mut data)
            .map_err(|_| SecretsError::Open)?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_tamper_detection() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secret.key");
        let secrets = Secrets::load_or_create(&path).expect("create");
        let sealed = secrets.seal(b"DATABASE_URL=postgres://x").expect("seal");
        assert!(!sealed.contains("postgres"), "{sealed}");
        assert_ne!(
            sealed,
            secrets.seal(b"DATABASE_URL=postgres://x").expect("seal"),
            "nonces repeat"
        );
        assert_eq!(
            secrets.open(&sealed).expect("open"),
            b"DATABASE_URL=postgres://x"
        );

        // The same key file opens it again; another key does not.
        let again = Secrets::load_or_create(&path).expect("load");
        assert_eq!(
            again.open(&sealed).expect("open"),
            b"DATABASE_URL=postgres://x"
        );
        let other = Secrets::load_or_create(&dir.path().join("other.key")).expect("other");
        assert!(matches!(other.open(&sealed), Err(SecretsError::Open)));

        let mut tampered = sealed.clone();
        let last = tampered.pop().expect("char");
        tampered.push(if last == '0' { '1' } else { '0' });
        assert!(matches!(secrets.open(&tampered), Err(SecretsError::Open)));
        assert!(matches!(secrets.open("garbage"), Err(SecretsError::Open)));

        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_short_key_file_is_refused_clearly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secret.key");
        std::fs::write(&path, b"short").expect("write");
        let err = Secrets::load_or_create(&path).expect_err("short key");
        assert!(err.to_string().contains("not 32 bytes"), "{err}");
    }
}
