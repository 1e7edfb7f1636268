//! The ARMOR-PSK scheme itself: the credential in the `Authorization` header, and the signing
//! string with its body forms.
//!
//! ```text
//! Authorization: ARMOR-PSK {keyId}:{base64 HMAC-SHA512}:{nonce}:{unixTimestamp}
//! signature = base64(HMAC-SHA512(UTF-8(secret), keyId + METHOD + path + nonce + timestamp + bodyPart))
//! ```
//!
//! Nothing here does I/O or keeps state; the [`verify`](crate::verify) layer and the
//! [`Signer`](crate::Signer) are built on it.

mod credential;
mod signing;

pub(crate) use credential::names_scheme;
pub use credential::{
    Credential, MalformedCredential, ENCODED_MAC_LEN, MAC_LEN, MAX_HEADER_LEN, MAX_KEY_ID_LEN,
    MAX_NONCE_LEN, SCHEME,
};
pub(crate) use signing::verify_forms;
pub use signing::{body_digest, BodyForm, BodyForms, HmacSha512, SigningString, UnknownBodyForm};
