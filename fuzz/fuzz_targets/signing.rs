//! The signing string and the signer against an independent construction: HMAC-SHA512 of
//! `keyId + METHOD + path + nonce + timestamp + bodyPart` joined in one buffer. Chunking never
//! changes a MAC, `to_text` spells the same bytes, and a signer's header parses back to the
//! MAC of the path without its query.
#![no_main]

use arbitrary::Arbitrary;
use armor_psk::psk::{body_digest, BodyForm, Credential, HmacSha512, SigningString};
use armor_psk::{SignError, Signer};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::Mac as _;
use libfuzzer_sys::fuzz_target;
use sha2::{Digest as _, Sha512};

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    secret: &'a [u8],
    key_id: &'a str,
    method: &'a str,
    path: &'a str,
    nonce: &'a str,
    timestamp: i64,
    form: u8,
    chunks: Vec<&'a [u8]>,
}

fuzz_target!(|input: Input<'_>| {
    let form = BodyForm::ALL[usize::from(input.form) % BodyForm::ALL.len()];
    let keyed = HmacSha512::new_from_slice(input.secret).expect("HMAC takes any key");
    let parts = SigningString {
        key_id: input.key_id,
        method: input.method,
        path: input.path,
        nonce: input.nonce,
        timestamp: input.timestamp,
    };
    let mac = parts.sign(&keyed, form, &input.chunks);

    // The independent construction.
    let body: Vec<u8> = input.chunks.concat();
    let mut message = Vec::new();
    message.extend_from_slice(input.key_id.as_bytes());
    message.extend_from_slice(input.method.as_bytes());
    message.extend_from_slice(input.path.as_bytes());
    message.extend_from_slice(input.nonce.as_bytes());
    message.extend_from_slice(input.timestamp.to_string().as_bytes());
    match form {
        BodyForm::Empty => {}
        BodyForm::Raw => message.extend_from_slice(&body),
        BodyForm::Digest => {
            message.extend_from_slice(STANDARD.encode(Sha512::digest(&body)).as_bytes())
        }
        _ => unreachable!("BodyForm::ALL has three forms"),
    }
    let mut direct = HmacSha512::new_from_slice(input.secret).unwrap();
    direct.update(&message);
    assert_eq!(mac[..], direct.finalize().into_bytes()[..]);

    assert_eq!(mac, parts.sign(&keyed, form, &[&body]));
    assert_eq!(
        body_digest(&input.chunks)[..],
        STANDARD.encode(Sha512::digest(&body)).as_bytes()[..]
    );
    assert_eq!(
        parts.to_text(form, &input.chunks),
        String::from_utf8_lossy(&message)
    );

    // A credential carrying the MAC round-trips through its header spelling.
    if let Ok(credential) = Credential::new(input.key_id, mac, input.nonce, input.timestamp) {
        let header = credential.to_string();
        assert_eq!(Credential::parse(&header), Ok(credential));
    }

    // The signer signs the same bytes (a path without its query or fragment; no body part
    // without a body); of an http(s) URL, the path `http` reads in it; and refuses what is
    // neither.
    let Ok(method) = http::Method::from_bytes(input.method.as_bytes()) else {
        return;
    };
    let Ok(signer) = Signer::new(input.key_id, input.secret.to_vec()) else {
        return;
    };
    let signer = signer.body_form(form);
    let sign = |path: &str| {
        signer.authorization_with(&method, path, &body, input.nonce, input.timestamp)
    };
    let signed = sign(input.path);
    if !input.path.starts_with('/') {
        match http::Uri::try_from(input.path) {
            Ok(url)
                if matches!(url.scheme_str(), Some("http" | "https"))
                    && url.authority().is_some_and(|host| !host.as_str().is_empty()) =>
            {
                assert_eq!(signed.ok(), sign(url.path()).ok(), "{:?}", input.path);
            }
            _ if !input.path.contains("://") => {
                assert!(matches!(signed, Err(SignError::Path(_))), "{:?}", input.path);
            }
            _ => {}
        }
        return;
    }
    let Ok(header) = signed else {
        return;
    };
    assert!(header.is_sensitive());
    let credential =
        Credential::parse_bytes(header.as_bytes()).expect("the signer's header parses");
    let signed_path = input.path.split(['?', '#']).next().unwrap_or_default();
    let signed_form = if body.is_empty() {
        BodyForm::Empty
    } else {
        form
    };
    let expected = SigningString {
        key_id: input.key_id,
        method: method.as_str(),
        path: signed_path,
        nonce: input.nonce,
        timestamp: input.timestamp,
    }
    .sign(&keyed, signed_form, &[&body]);
    assert_eq!(credential.mac(), &expected);
    assert_eq!(credential.key_id(), input.key_id);
    assert_eq!(credential.nonce(), input.nonce);
    assert_eq!(credential.timestamp(), input.timestamp);
});
