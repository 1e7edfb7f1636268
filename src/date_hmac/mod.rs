//! A neighbour scheme: the License API's signed `Date` header (HMAC-SHA256).
//!
//! ```text
//! Date: Tue, 07 Jun 2011 20:51:35 GMT
//! Authorization: algorithm="hmac-sha256",headers="date",signature="<base64>",apikey="<key>"
//! signature = base64(HMAC-SHA256(UTF-8(shared key), "licenseSpring\ndate: " + Date))
//! ```
//!
//! **Its limit**: nothing but the `Date` is signed — no method, path, body or nonce — so a
//! captured request can be replayed, or its path and body changed, while its `Date` is inside
//! the window (15 minutes by default). Offer it only where that is acceptable.

mod credential;
mod signer;

pub use credential::{
    parse_http_date, signature, DateHmacCredential, DateHmacError, ALGORITHM, SIGNING_PREFIX,
    TAG_LEN,
};
pub use signer::DateHmacSigner;
