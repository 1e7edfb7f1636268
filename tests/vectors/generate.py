#!/usr/bin/env python3
"""Known-answer vectors for ARMOR-PSK request signing, from an independent implementation.

Regenerate (from the crate root) with:

    python3 tests/vectors/generate.py

(`--check` compares instead of writing, and fails if the committed file differs.) It rewrites tests/vectors/armor_psk.json beside this file; tests/vectors.rs checks the crate
against every case. Standard library only.

    signature = base64(HMAC-SHA512(key = UTF-8(secret),
                                   msg = UTF-8(keyId + METHOD + path + nonce + timestamp + bodyPart)))

`path` is the URL path with the query string cut off (percent-encoding kept as sent).
`bodyPart` is "" (form "empty"), the raw body (form "raw"), or base64(SHA-512(body)) (form
"digest"). The header is "ARMOR-PSK {keyId}:{signature}:{nonce}:{timestamp}".
"""

import base64
import hashlib
import hmac
import json
import os
import sys

KEY_ID = "9f1c2b7e-5d3a-4c8e-b6f0-2a4d8e1c7b53"
SECRET = "s3cr3t-Armor-PSK-test-key"
SAMPLE_KEY_ID = "20a37099-4a0b-432f-bf46-5fa690a0405c"
JSON_BODY = '{"name":"web-01","ip":"10.0.0.5","tags":["a","b"]}'


def body_part(form, body):
    if form == "empty":
        return ""
    if form == "raw":
        return body
    if form == "digest":
        return base64.b64encode(hashlib.sha512(body.encode("utf-8")).digest()).decode("ascii")
    raise ValueError("unknown form " + form)


def make_case(name, method, url, nonce, timestamp, body="", form="empty",
              key_id=KEY_ID, secret=SECRET):
    signed_path = url.split("?", 1)[0]
    signing_string = key_id + method + signed_path + nonce + str(timestamp) + body_part(form, body)
    mac = hmac.new(secret.encode("utf-8"), signing_string.encode("utf-8"), hashlib.sha512)
    signature = base64.b64encode(mac.digest()).decode("ascii")
    return {
        "name": name,
        "key_id": key_id,
        "secret": secret,
        "method": method,
        "url": url,
        "signed_path": signed_path,
        "nonce": nonce,
        "timestamp": timestamp,
        "body": body,
        "form": form,
        "signing_string": signing_string,
        "signature": signature,
        "authorization": "ARMOR-PSK %s:%s:%s:%d" % (key_id, signature, nonce, timestamp),
    }


CASES = [
    make_case("post_json_digest", "POST", "/core/avam", "2d7a9c1e-4b3f-4e8a-9c6d-1f0e5b7a3c92",
              1700000000, JSON_BODY, "digest"),
    make_case("post_json_raw", "POST", "/core/avam", "2d7a9c1e-4b3f-4e8a-9c6d-1f0e5b7a3c92",
              1700000000, JSON_BODY, "raw"),
    make_case("post_json_empty_form", "POST", "/core/avam", "2d7a9c1e-4b3f-4e8a-9c6d-1f0e5b7a3c92",
              1700000000, JSON_BODY, "empty"),
    make_case("get_no_body", "GET", "/accounts/2", "6c0f4e9b-8a1d-4f27-b3e5-0d9c2a7f6e41",
              1700000123),
    make_case("get_no_body_raw_form", "GET", "/me", "k3n9x2p7q1", 1700000200, "", "raw"),
    make_case("non_ascii_secret", "PUT", "/accounts/2/users/7", "b5e8a1c4d7",
              1700000300, '{"enabled":true}', "digest", secret="sécret-🔑-ключ"),
    make_case("percent_encoded_path", "GET", "/core/avam/%7Bid%7D/a%20b", "pct-enc-nonce-01",
              1700000400),
    make_case("query_not_signed", "GET", "/accounts/2/vms?page=2&size=50&q=a%20b",
              "query-nonce-7731", 1700000500),
    make_case("query_not_signed_with_body", "POST", "/tickets?notify=true", "q2b-nonce-19",
              1700000550, '{"subject":"hi"}', "digest"),
    make_case("seed_sample_shape", "GET", "/accounts/2", "8jbj872s2h", 1528140529,
              key_id=SAMPLE_KEY_ID, secret="invented-secret-for-the-sample"),
    make_case("nonce_equals_timestamp", "POST", "/accounts/2", "1528140529", 1528140529,
              '{"id":2}', "raw"),
    make_case("non_ascii_body_raw", "POST", "/notes", "utf8-body-nonce", 1700000600,
              '{"note":"naïve café – 東京 🚀"}', "raw"),
    make_case("non_ascii_body_digest", "PATCH", "/notes/3", "utf8-body-nonce-2", 1700000650,
              '{"note":"Grüße, мир"}', "digest"),
    make_case("nonce_128_chars", "DELETE", "/accounts/2/keys/41",
              ("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_." * 2)[:128],
              1700000700),
    make_case("timestamp_zero", "GET", "/", "z", 0),
]


def main():
    for case in CASES:
        assert ":" not in case["key_id"] and ":" not in case["nonce"]
        assert 1 <= len(case["nonce"]) <= 128
        assert len(case["signature"]) == 88
        assert case["body"] or case["form"] != "digest", "an empty body is never signed digest"
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "armor_psk.json")
    text = json.dumps(CASES, ensure_ascii=False, indent=2) + "\n"
    if "--check" in sys.argv[1:]:
        with open(path, encoding="utf-8") as committed:
            if committed.read() != text:
                sys.exit("%s differs from what this script computes: regenerate it" % path)
        print("%s matches: %d cases" % (path, len(CASES)))
        return
    with open(path, "w", encoding="utf-8", newline="\n") as out:
        out.write(text)
    print("wrote %d cases to %s" % (len(CASES), path))


if __name__ == "__main__":
    main()
