use std::fmt;
use std::sync::{Arc, OnceLock};

use hmac::Mac;
use zeroize::Zeroizing;

use crate::psk::HmacSha512;

/// A shared secret: the bytes a key's HMAC is keyed with.
///
/// Cloning is cheap (the bytes are shared). The bytes are zeroed when the last clone is dropped;
/// `Debug` prints `[redacted]` and there is no `Display`, so a secret cannot reach a log by
/// accident. The keyed HMAC-SHA512 state is computed on first use and kept beside the bytes, so
/// the key's padded blocks are hashed once per key rather than once per request.
///
/// ```
/// use armor_psk::Secret;
///
/// let secret = Secret::from("correct horse battery staple");
/// assert_eq!(format!("{secret:?}"), "Secret([redacted])");
/// ```
#[derive(Clone)]
pub struct Secret(Arc<SecretInner>);

struct SecretInner {
    bytes: Zeroizing<Vec<u8>>,
    hmac_sha512: OnceLock<HmacSha512>,
}

impl Secret {
    /// Wraps the secret's bytes. For ARMOR-PSK these are the UTF-8 bytes of the secret as the
    /// portal shows it (it is not base64-decoded).
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Secret(Arc::new(SecretInner {
            bytes: Zeroizing::new(bytes.into()),
            hmac_sha512: OnceLock::new(),
        }))
    }

    /// The secret's bytes. Handle with care: whatever copies them must keep them out of logs.
    pub fn expose_bytes(&self) -> &[u8] {
        &self.0.bytes
    }

    /// The HMAC-SHA512 state keyed by this secret.
    pub(crate) fn hmac_sha512(&self) -> &HmacSha512 {
        self.0.hmac_sha512.get_or_init(|| {
            // HMAC takes keys of any length; this cannot fail.
            <HmacSha512 as Mac>::new_from_slice(&self.0.bytes)
                .unwrap_or_else(|_| unreachable!("HMAC accepts keys of every length"))
        })
    }
}

impl From<&str> for Secret {
    fn from(secret: &str) -> Self {
        Secret::new(secret.as_bytes())
    }
}

impl From<String> for Secret {
    fn from(secret: String) -> Self {
        Secret::new(secret.into_bytes())
    }
}

impl From<Vec<u8>> for Secret {
    fn from(secret: Vec<u8>) -> Self {
        Secret::new(secret)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// Constant-time: comparing secrets must not tell how much of one matched.
impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq;
        self.expose_bytes().ct_eq(other.expose_bytes()).into()
    }
}

impl Eq for Secret {}
