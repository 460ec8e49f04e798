//! Secrets of a tenant: sealed with ChaCha20-Poly1305 under the node's
//! 256-bit key before any store sees them, opened only for the step that
//! lists them, and replaced by `***` wherever a step's logs, errors or
//! output would show them.

use std::path::Path;
use std::sync::Arc;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

use crate::backend::{BackendError, SealedSecret, SecretInfo, StateStore};
use crate::scheduler::clock::Clock;

/// Largest secret value, in bytes.
pub const MAX_SECRET_BYTES: usize = 64 * 1024;
/// Secrets one tenant may keep.
pub const MAX_SECRETS: usize = 1_000;
/// Where the embedded backend keeps a generated key, in its data directory.
pub const KEY_FILE: &str = "secrets-key";
/// What a secret's value is replaced by.
pub const MASK: &str = "***";

const NONCE_BYTES: usize = 12;

/// The node's key for sealing secrets.
#[derive(Clone)]
pub struct SecretsKey(Arc<ChaCha20Poly1305>);

impl std::fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretsKey(***)")
    }
}

impl SecretsKey {
    /// A key from 64 hexadecimal digits (`WEFT_SECRETS_KEY`).
    pub fn from_hex(text: &str) -> Result<Self, String> {
        let bytes = hex::decode(text.trim())
            .ok()
            .filter(|b| b.len() == 32)
            .ok_or("WEFT_SECRETS_KEY must be 64 hexadecimal digits (a 256-bit key), e.g. from `openssl rand -hex 32`")?;
        Ok(Self::from_bytes(&bytes))
    }

    /// A fresh random key, for a node whose secrets live only as long as it does.
    pub fn random() -> Self {
        Self::from_bytes(&rand::random::<[u8; 32]>())
    }

    /// The key in `dir/secrets-key`, generated (mode 0600) when the file does not exist.
    pub fn load_or_create(dir: &Path) -> Result<Self, String> {
        let path = dir.join(KEY_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::from_hex(&text).map_err(|_| {
                format!(
                    "{} is not a secrets key (64 hexadecimal digits); restore it from a backup: \
                     without it the stored secrets cannot be read",
                    path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let bytes = rand::random::<[u8; 32]>();
                write_private(&path, &hex::encode(bytes))
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                Ok(Self::from_bytes(&bytes))
            }
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    fn from_bytes(bytes: &[u8]) -> Self {
        Self(Arc::new(ChaCha20Poly1305::new(Key::from_slice(bytes))))
    }

    /// `nonce || ciphertext` of `value`, bound to the tenant and name so that
    /// a sealed value copied to another slot does not open.
    pub fn seal(&self, tenant: &str, name: &str, value: &str) -> Vec<u8> {
        let nonce = rand::random::<[u8; NONCE_BYTES]>();
        let aad = associated(tenant, name);
        let sealed = self
            .0
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: value.as_bytes(),
                    aad: &aad,
                },
            )
            .expect("sealing into memory does not fail");
        [nonce.as_slice(), &sealed].concat()
    }

    /// The value sealed by [`SecretsKey::seal`]; None when another key sealed it
    /// or the bytes were changed.
    pub fn open(&self, tenant: &str, name: &str, sealed: &[u8]) -> Option<String> {
        if sealed.len() < NONCE_BYTES {
            return None;
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_BYTES);
        let aad = associated(tenant, name);
        let plain = self
            .0
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .ok()?;
        String::from_utf8(plain).ok()
    }
}

fn associated(tenant: &str, name: &str) -> Vec<u8> {
    format!("weft-secret\0{tenant}\0{name}").into_bytes()
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}

/// Why a secret operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error(
        "this node has no secrets key: start every node with WEFT_SECRETS_KEY (64 hexadecimal digits, the same on every node)"
    )]
    NoKey,
    #[error("secret {0:?} cannot be opened with this node's key: set it again")]
    Unreadable(String),
    #[error("secret {0:?} does not exist")]
    Missing(String),
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// A tenant's secrets over a store: values go in sealed and come out only
/// through [`Vault::reveal`].
#[derive(Clone)]
pub struct Vault {
    store: Arc<dyn StateStore>,
    key: Option<SecretsKey>,
    clock: Arc<dyn Clock>,
}

impl Vault {
    /// `key` None: the node refuses secret operations with [`SecretError::NoKey`].
    pub fn new(store: Arc<dyn StateStore>, key: Option<SecretsKey>, clock: Arc<dyn Clock>) -> Self {
        Self { store, key, clock }
    }

    fn key(&self) -> Result<&SecretsKey, SecretError> {
        self.key.as_ref().ok_or(SecretError::NoKey)
    }

    /// Sets a secret; true when it is new.
    pub async fn set(&self, tenant: &str, name: &str, value: &str) -> Result<bool, SecretError> {
        let sealed = self.key()?.seal(tenant, name, value);
        let secret = SealedSecret {
            sealed,
            updated_at: self.clock.now(),
        };
        Ok(self.store.put_secret(tenant, name, secret).await?)
    }

    /// The tenant's secret names and when each was set, sorted by name.
    pub async fn list(&self, tenant: &str) -> Result<Vec<SecretInfo>, SecretError> {
        Ok(self.store.secrets(tenant).await?)
    }

    /// Deletes a secret; false when there was none.
    pub async fn delete(&self, tenant: &str, name: &str) -> Result<bool, SecretError> {
        Ok(self.store.delete_secret(tenant, name).await?)
    }

    /// The names of `names` that the tenant has no secret of.
    pub async fn unknown<'a>(
        &self,
        tenant: &str,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<Vec<String>, SecretError> {
        let known = self.list(tenant).await?;
        let mut unknown: Vec<String> = names
            .into_iter()
            .filter(|n| !known.iter().any(|k| k.name == *n))
            .map(str::to_string)
            .collect();
        unknown.sort();
        unknown.dedup();
        Ok(unknown)
    }

    /// The values of `names`, for the step that lists them.
    pub async fn reveal(
        &self,
        tenant: &str,
        names: &[String],
    ) -> Result<Vec<(String, String)>, SecretError> {
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let sealed = self
                .store
                .secret(tenant, name)
                .await?
                .ok_or_else(|| SecretError::Missing(name.clone()))?;
            let value = self
                .key()?
                .open(tenant, name, &sealed.sealed)
                .ok_or_else(|| SecretError::Unreadable(name.clone()))?;
            out.push((name.clone(), value));
        }
        Ok(out)
    }
}

/// Replaces the values of a step's secrets by `***`.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Each value as written and as it appears inside a JSON string, longest first.
    needles: Vec<String>,
}

impl Redactor {
    pub fn new<'a>(values: impl IntoIterator<Item = &'a str>) -> Self {
        let mut needles = Vec::new();
        for value in values.into_iter().filter(|v| !v.is_empty()) {
            needles.push(value.to_string());
            let escaped = serde_json::to_string(value).expect("a string serialises");
            let escaped = &escaped[1..escaped.len() - 1];
            if escaped != value {
                needles.push(escaped.to_string());
            }
        }
        needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        needles.dedup();
        Self { needles }
    }

    /// Is there nothing to hide?
    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    /// `text` with every secret value replaced by `***`.
    pub fn redact(&self, text: &str) -> String {
        let mut text = text.to_string();
        for needle in &self.needles {
            if text.contains(needle.as_str()) {
                text = text.replace(needle.as_str(), MASK);
            }
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_in_their_slot_and_with_their_key() {
        let key = SecretsKey::random();
        let sealed = key.seal("acme", "stripe_key", "sk_live_123");
        assert!(
            !sealed
                .windows(b"sk_live_123".len())
                .any(|w| w == b"sk_live_123")
        );
        assert_eq!(
            key.open("acme", "stripe_key", &sealed).as_deref(),
            Some("sk_live_123")
        );
        assert_eq!(key.open("other", "stripe_key", &sealed), None);
        assert_eq!(key.open("acme", "other", &sealed), None);
        assert_eq!(
            SecretsKey::random().open("acme", "stripe_key", &sealed),
            None
        );
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(key.open("acme", "stripe_key", &flipped), None);
        // A fresh nonce each time: the same value seals differently.
        assert_ne!(sealed, key.seal("acme", "stripe_key", "sk_live_123"));
    }

    #[test]
    fn keys_come_from_64_hex_digits_or_a_private_file() {
        assert!(SecretsKey::from_hex(&"ab".repeat(32)).is_ok());
        for bad in ["", "xyz", &"ab".repeat(31), &"ab".repeat(33)] {
            assert!(SecretsKey::from_hex(bad).is_err(), "{bad}");
        }
        let dir = tempfile::tempdir().unwrap();
        let first = SecretsKey::load_or_create(dir.path()).unwrap();
        let sealed = first.seal("t", "n", "v");
        let again = SecretsKey::load_or_create(dir.path()).unwrap();
        assert_eq!(again.open("t", "n", &sealed).as_deref(), Some("v"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn redaction_hides_values_as_written_and_as_json() {
        let r = Redactor::new(["hunter2", "a\"b", ""]);
        assert_eq!(r.redact("pw=hunter2 and hunter2"), "pw=*** and ***");
        assert_eq!(r.redact(r#"{"v":"a\"b"}"#), r#"{"v":"***"}"#);
        assert_eq!(r.redact("nothing here"), "nothing here");
        assert!(Redactor::new([""]).is_empty());
    }
}
