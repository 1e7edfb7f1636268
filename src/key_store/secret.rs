use std::fmt;
use std::sync::{Arc, OnceLock};

use hmac::Mac;
use zeroize::Zeroizing;

use crate::psk::HmacSha512;

/// A shared secret: the bytes a key's HMAC is keyed with.
///
/// Cloning is cheap (the bytes are shared). `Debug` prints `[redacted]` and there is no
/// `Display`, so a secret cannot reach a log by accident. The keyed HMAC-SHA512 state is
/// computed on first use and kept beside the bytes, so the key's padded blocks are hashed once
/// per key rather than once per request. The bytes and that state (which signs as the key does)
/// are zeroed when the last clone is dropped.
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
    hmac_sha512: OnceLock<KeyedState>,
}

/// A keyed HMAC state, zeroed when dropped: its inner and outer hash states sign as the key
/// does, so they are as secret as its bytes.
struct KeyedState(HmacSha512);

// What the zeroing below relies on, checked as far as the compiler can: `Hmac<Sha512>` needs no
// drop, and is the size of its two SHA-512 states and its block buffer. Its layout is `hmac`
// 0.12's, `sha2` 0.10's (`Sha512VarCore`) and `block-buffer` 0.10's; a release of one that
// added a field needing drop, or one that did not fit in the padding (15 bytes), would stop
// the build here. A small field that all zeros would not be a valid value of (a reference, a
// `NonZero`) would not: that is what the SAFETY argument below takes from those versions.
const _: () = assert!(
    !std::mem::needs_drop::<HmacSha512>()
        && std::mem::size_of::<HmacSha512>()
            == std::mem::size_of::<(([u64; 8], u128), ([u64; 8], u128), ([u8; 128], u8))>()
);

impl Drop for KeyedState {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        // SAFETY: `self.0` is exclusively borrowed, sized, and nothing reads it after this.
        // `Hmac<Sha512>` (hmac 0.12) is two SHA-512 states (`[u64; 8]` and a `u128` counter
        // each) and a block buffer (`[u8; 128]` and a `u8` position): plain integers, no
        // pointers, no `Drop`, and all zeros is a valid value of each.
        unsafe { zeroize::zeroize_flat_type(&mut self.0) }
    }
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
        let keyed = self.0.hmac_sha512.get_or_init(|| {
            // HMAC takes keys of any length; this cannot fail.
            KeyedState(
                <HmacSha512 as Mac>::new_from_slice(&self.0.bytes)
                    .unwrap_or_else(|_| unreachable!("HMAC accepts keys of every length")),
            )
        });
        &keyed.0
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

#[cfg(test)]
mod tests {
    use std::mem::{size_of, ManuallyDrop};

    use hmac::Mac;

    use super::{HmacSha512, KeyedState};

    #[test]
    #[allow(unsafe_code)]
    fn keyed_state_is_zeroed_when_dropped() {
        let keyed = HmacSha512::new_from_slice(b"secret").expect("any key length");
        let mut state = ManuallyDrop::new(KeyedState(keyed));
        // SAFETY: dropped once, and not used as a `KeyedState` after.
        unsafe { ManuallyDrop::drop(&mut state) };
        // SAFETY: the memory is still the local's, and every byte of it (padding too) has been
        // written with zeros by the drop.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                std::ptr::from_ref(&state).cast::<u8>(),
                size_of::<KeyedState>(),
            )
        };
        assert!(bytes.iter().all(|&b| b == 0));
    }
}
