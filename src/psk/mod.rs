//! The ARMOR-PSK scheme itself: the credential in the `Authorization` header, and the signing
//! string with its body forms.
//!
//! ```text
//! Authorization: ARMOR-PSK {keyId}:{base64 HMAC-SHA512}:{nonce}:{unixTimestamp}
//! signature = base64(HMAC-SHA512(UTF-8(secret), keyId + METHOD + path + nonce + timestamp + bodyPart))
//! ```
//!
//! [`ArmorPsk`] is the scheme as the [`verify`](crate::verify) layer runs it; the
//! [`Signer`](crate::Signer) is built on the same signing string.

/// The scheme's name in keys files, logs and [`VerifiedKey::scheme`](crate::VerifiedKey::scheme).
pub const SCHEME_NAME: &str = "armor-psk";

mod credential;
mod scheme;
mod signing;

pub(crate) use credential::names_scheme;
pub use credential::{
    Credential, MalformedCredential, ENCODED_MAC_LEN, MAC_LEN, MAX_HEADER_LEN, MAX_KEY_ID_LEN,
    MAX_NONCE_LEN, SCHEME,
};
pub(crate) use scheme::signed_path;
pub use scheme::{ArmorPsk, PskClaim, DEFAULT_WINDOW};
pub(crate) use signing::verify_forms;
pub use signing::{
    body_digest, mac_matches, macs_equal, BodyForm, BodyForms, HmacSha512, SigningString,
    UnknownBodyForm,
};
