//! A neighbour scheme: the License API's signed `Date` header (HMAC-SHA256).
//!
//! ```text
//! Date: Tue, 07 Jun 2011 20:51:35 GMT
//! Authorization: algorithm="hmac-sha256",headers="date",signature="<base64>",apikey="<key>"
//! signature = base64(HMAC-SHA256(UTF-8(shared key), "licenseSpring\ndate: " + Date))
//! ```
//!
//! [`DateHmac`] runs it on the verifier's shared machinery (key store, clock, body limit,
//! rejection response, [`VerifiedKey`](crate::VerifiedKey) in the extensions), alone or beside
//! ARMOR-PSK with [`OneOf`](crate::verify::OneOf); [`DateHmacSigner`] signs for it.
//!
//! **Its limit**: nothing but the `Date` is signed — no method, path, body or nonce — so a
//! captured request can be replayed, or its path and body changed, while its `Date` is inside
//! the window (15 minutes by default). Offer it only where that is acceptable.

mod credential;
mod scheme;
mod signer;

pub use credential::{
    parse_http_date, signature, DateHmacCredential, DateHmacError, ALGORITHM, SIGNING_PREFIX,
    TAG_LEN,
};
pub use scheme::{DateHmac, DateHmacClaim, DEFAULT_MAX_AGE, DEFAULT_MAX_SKEW, SCHEME_NAME};
pub use signer::{DateHmacSigner, UndatableClock, UnsendableApiKey};
