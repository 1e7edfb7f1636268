//! Routes an API key may not call.
//!
//! The Armor API refuses a request authenticated with ARMOR-PSK on the account-management
//! routes (the user, key and security endpoints); a user signed in with FH-AUTH may call them.
//! [`RoutePolicy::armor_default`] holds that list; [`RoutePolicy::deny`] and
//! [`RoutePolicy::allow`] change it, and [`RoutePolicy::forbids`] answers for one request.
//!
//! Patterns are absolute paths whose segments are literals, `{name}` (one non-empty segment)
//! or `{name:int}` (an integer as routers parse one: ASCII digits with an optional sign, the
//! white space around them that ASP.NET's `int` constraint skips, and what Spring converts:
//! white space anywhere, hexadecimal after `0x` or `#`). Matching is made to deny
//! rather than to miss: literals match case-insensitively (the Armor API's routes do), the
//! path is percent-decoded segment by segment, a trailing slash is optional on both sides, and
//! a rule matches if it matches the path either as sent (axum routes on that, hands `..` to a
//! handler as a parameter, and gives a capture an empty segment when more path follows) or
//! normalised (empty and `.` segments dropped, `..` resolved, as a backend that resolves paths
//! reads it), each with and without a decoded `%2F` taken for `/` (a proxy may decode it;
//! Kestrel keeps it inside its segment), and each with and without `\` and `%5C` taken for `/`
//! (IIS takes them for `/`; Kestrel alone keeps them inside their segment), and each with and
//! without every segment's `;` parameters (Tomcat and Jetty cut them off). A `GET` rule holds
//! for `HEAD` too. Literals also match the four letters outside ASCII that a Unicode *simple*
//! case mapping turns into ASCII ones (`ſ`, `ı`, `İ` and the Kelvin sign); full case folding
//! (`ß` for `ss`, the `ﬆ` ligature) and compatibility normalisation are not followed. Matching
//! more readings denies more: a capture holding `%2F` (a base64 id) can be read as more
//! segments, and a route that would otherwise be allowed refused.
//!
//! ```
//! use armor_psk::policy::RoutePolicy;
//! use http::Method;
//!
//! let policy = RoutePolicy::armor_default();
//! assert!(policy.forbids(&Method::GET, "/users/42/keys"));
//! assert!(policy.forbids(&Method::PUT, "/users/42"));
//! assert!(!policy.forbids(&Method::PUT, "/users/abc")); // {id:int} takes integers only
//! assert!(policy.forbids(&Method::PUT, "/users/+7")); // as `u64::from_str` does
//! assert!(policy.forbids(&Method::GET, "/users/../keys")); // axum routes it to /users/{id}/keys
//! assert!(!policy.forbids(&Method::GET, "/accounts/2"));
//!
//! let custom = RoutePolicy::empty().deny(Method::DELETE, "/accounts/{id:int}").unwrap();
//! assert!(custom.forbids(&Method::DELETE, "/accounts/7/"));
//! ```

use std::borrow::Cow;
use std::fmt;

use http::{HeaderMap, HeaderName, Method};

/// The headers a backend's method-override middleware may take a request's method from,
/// which [`RoutePolicy::forbids_request`] reads.
pub const METHOD_OVERRIDE_HEADERS: [HeaderName; 3] = [
    HeaderName::from_static("x-http-method-override"),
    HeaderName::from_static("x-http-method"),
    HeaderName::from_static("x-method-override"),
];

/// The routes of the Armor API that an API key may not call (protocol notes §4).
pub const ARMOR_FORBIDDEN_FOR_API_KEYS: [(&str, &str); 21] = [
    ("GET", "/users/{id}/keys"),
    ("DELETE", "/users/{id}/keys/{key}"),
    ("POST", "/users/{id}/keys"),
    ("GET", "/users/{id:int}/ActivationCode"),
    ("POST", "/users/resetpassword"),
    ("POST", "/users/setpassword"),
    ("PUT", "/users/{id:int}"),
    ("POST", "/users/status"),
    ("POST", "/users/"),
    ("POST", "/users/{userId:int}/invite"),
    ("GET", "/users/LockedOut/{accountId}/{email}"),
    ("POST", "/users/unlock/{accountId}/{email}"),
    ("DELETE", "/users/softDelete"),
    ("PUT", "/usersecurity/challengephrase"),
    ("GET", "/usersecurity/securityinformation/{referencekey}"),
    ("POST", "/usersecurity/securityinformation/{referencekey}"),
    (
        "POST",
        "/usersecurity/securityinformation/existing/{referencekey}",
    ),
    ("GET", "/usersecurity/challengephrase/{userId}"),
    ("POST", "/usersecurity/validatemfaphone"),
    (
        "POST",
        "/usersecurity/securityinformation/{accountId}/{userId}",
    ),
    ("POST", "/usersecurity/validatephoneapppin"),
];

/// A set of `(method, route pattern)` rules that API keys may not call.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RoutePolicy {
    rules: Vec<Rule>,
}

#[derive(Clone, PartialEq, Eq)]
struct Rule {
    method: Method,
    pattern: String,
    segments: Vec<Segment>,
}

#[derive(Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Any,
    Digits,
}

/// A route pattern that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid route pattern {pattern:?}: {reason}")]
pub struct InvalidPattern {
    pattern: String,
    reason: &'static str,
}

impl RoutePolicy {
    /// No rule: every route is open to API keys.
    pub fn empty() -> Self {
        RoutePolicy::default()
    }

    /// The Armor API's list: [`ARMOR_FORBIDDEN_FOR_API_KEYS`].
    pub fn armor_default() -> Self {
        // Every entry parses (a test holds the list to it); one that did not must stop the
        // program, not leave the policy empty.
        ARMOR_FORBIDDEN_FOR_API_KEYS.iter().fold(
            RoutePolicy::empty(),
            |policy, (method, pattern)| {
                let method = Method::from_bytes(method.as_bytes())
                    .unwrap_or_else(|_| panic!("{method} is a method"));
                policy
                    .deny(method, pattern)
                    .unwrap_or_else(|error| panic!("{pattern}: {error}"))
            },
        )
    }

    /// Adds a rule: API keys may not call `method` on routes matching `pattern`.
    pub fn deny(mut self, method: Method, pattern: &str) -> Result<Self, InvalidPattern> {
        let segments = parse_pattern(pattern)?;
        self.rules
            .retain(|rule| !(same_method(&rule.method, &method) && rule.segments == segments));
        self.rules.push(Rule {
            method,
            pattern: pattern.to_owned(),
            segments,
        });
        Ok(self)
    }

    /// Removes the rule for `method` and `pattern` (spelt as it was added, or as in the default
    /// list), if there is one.
    #[must_use]
    pub fn allow(mut self, method: &Method, pattern: &str) -> Self {
        if let Ok(segments) = parse_pattern(pattern) {
            self.rules
                .retain(|rule| !(same_method(&rule.method, method) && rule.segments == segments));
        }
        self
    }

    /// Whether an API key may not call `method` on `path` (the path only, without the query).
    /// A `GET` rule holds for `HEAD` too (routers answer it with the `GET` handler), and a
    /// method's name is matched without regard to case (`put` as `PUT`: some routers do so).
    pub fn forbids(&self, method: &Method, path: &str) -> bool {
        self.forbids_for(&|rule_method| covers(rule_method, method), path)
    }

    /// Whether a rule for a method that `requested` picks forbids `path` (the path is read
    /// once, for all of them).
    fn forbids_for(&self, requested: &dyn Fn(&Method) -> bool, path: &str) -> bool {
        let mut rules = self
            .rules
            .iter()
            .filter(|rule| requested(&rule.method))
            .peekable();
        // Most requests' methods have no rule: their paths are not read at all.
        if rules.peek().is_none() {
            return false;
        }
        let as_sent = segments_as_sent(path);
        let readings = readings(&as_sent);
        rules.any(|rule| readings.iter().any(|segments| rule.matches(segments)))
    }

    /// Whether the rules forbid a request of `method` with `headers` to any of `paths` (the
    /// path the routes see and the path as sent, say): [`forbids`] for its method and for
    /// each method a method-override header names
    /// ([`METHOD_OVERRIDE_HEADERS`]; a list is read item by item, and a value that is no
    /// method is none). The headers are not signed, and a backend with method-override
    /// middleware (ASP.NET Core's `UseHttpMethodOverride`, say) routes on them: a key must not
    /// reach `PUT /users/7` as a `POST` that asks to be taken for a `PUT`. An override in the
    /// body or the query (a `_method` form field) is not read.
    ///
    /// ```
    /// use armor_psk::policy::RoutePolicy;
    /// use http::{HeaderMap, HeaderValue, Method};
    ///
    /// let policy = RoutePolicy::armor_default();
    /// let mut headers = HeaderMap::new();
    /// assert!(!policy.forbids_request(&Method::POST, &headers, &["/users/7"]));
    /// headers.insert("x-http-method-override", HeaderValue::from_static("put"));
    /// assert!(policy.forbids_request(&Method::POST, &headers, &["/users/7"]));
    /// ```
    ///
    /// [`forbids`]: RoutePolicy::forbids
    pub fn forbids_request(&self, method: &Method, headers: &HeaderMap, paths: &[&str]) -> bool {
        // Read once for every path; empty (no allocation) for a request without overrides.
        let overrides: Vec<Method> = METHOD_OVERRIDE_HEADERS
            .iter()
            .flat_map(|name| headers.get_all(name))
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .filter_map(|item| Method::from_bytes(item.trim().as_bytes()).ok())
            .collect();
        let requested = |rule_method: &Method| {
            covers(rule_method, method) || overrides.iter().any(|item| covers(rule_method, item))
        };
        paths.iter().any(|path| self.forbids_for(&requested, path))
    }

    /// The rules, as `(method, pattern)`.
    pub fn rules(&self) -> impl Iterator<Item = (&Method, &str)> {
        self.rules
            .iter()
            .map(|rule| (&rule.method, rule.pattern.as_str()))
    }

    /// How many rules there are.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there is no rule.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

impl fmt::Debug for RoutePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(
                self.rules()
                    .map(|(method, pattern)| format!("{method} {pattern}")),
            )
            .finish()
    }
}

impl Rule {
    fn matches(&self, path: &[impl AsRef<str>]) -> bool {
        let last = path.len().saturating_sub(1);
        self.segments.len() == path.len()
            && self
                .segments
                .iter()
                .zip(path)
                .enumerate()
                .all(|(at, (segment, part))| {
                    let part = part.as_ref();
                    match segment {
                        Segment::Literal(literal) => same_literal(literal, part),
                        // axum (matchit) gives a capture an empty segment when more path
                        // follows: `/users//keys` reaches `/users/{id}/keys`.
                        Segment::Any => !part.is_empty() || at < last,
                        Segment::Digits => is_integer(part),
                    }
                })
    }
}

/// A path segment against a pattern's literal (ASCII), without regard to case. `ſ`, `ı`, `İ`
/// and the Kelvin sign are the four letters outside ASCII whose simple upper or lower case is
/// in it, and backends that compare by those mappings take some of them for `s`, `i` and `k`:
/// Java's `equalsIgnoreCase` all four, Go's `EqualFold` `ſ` and the Kelvin sign, .NET Core
/// before 5 on Linux (upper case only) `ſ` and `ı`. `resetpaſsword` would reach the
/// `resetpassword` route there, so all four match here.
fn same_literal(literal: &str, part: &str) -> bool {
    let fold = |c: char| match c {
        '\u{17F}' => 's',
        '\u{130}' | '\u{131}' => 'i',
        '\u{212A}' => 'k',
        c => c.to_ascii_lowercase(),
    };
    literal.chars().map(fold).eq(part.chars().map(fold))
}

/// Whether a rule for `rule_method` holds for a request of `method` (a `GET` rule for `HEAD`).
fn covers(rule_method: &Method, method: &Method) -> bool {
    same_method(rule_method, method)
        || (same_method(method, &Method::HEAD) && same_method(rule_method, &Method::GET))
}

/// HTTP methods are case-sensitive, but a router that matches them without regard to case
/// (ASP.NET Core does) would hand `put /users/12` to the `PUT` handler: matching errs on the
/// side of denying.
fn same_method(a: &Method, b: &Method) -> bool {
    a.as_str().eq_ignore_ascii_case(b.as_str())
}

fn parse_pattern(pattern: &str) -> Result<Vec<Segment>, InvalidPattern> {
    let invalid = |reason| InvalidPattern {
        pattern: pattern.to_owned(),
        reason,
    };
    let rest = pattern
        .strip_prefix('/')
        .ok_or_else(|| invalid("it must start with '/'"))?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    rest.split('/')
        .map(
            |segment| match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(capture) => match capture.split_once(':') {
                    None if !capture.is_empty() => Ok(Segment::Any),
                    Some((name, "int")) if !name.is_empty() => Ok(Segment::Digits),
                    _ => Err(invalid("a capture is {name} or {name:int}")),
                },
                None if segment.is_empty() => Err(invalid("empty segment")),
                None if segment.contains(['{', '}']) => {
                    Err(invalid("a capture must be a whole segment"))
                }
                None => Ok(Segment::Literal(segment.to_owned())),
            },
        )
        .collect()
}

/// Whether a router's integer parameter takes `part`: Rust's `from_str` takes a sign,
/// ASP.NET's `int` constraint white space around the number as well, and Spring's conversion
/// white space anywhere in it (which it removes), any Unicode decimal digit (Java's
/// `Character.digit`), and hexadecimal after `0x`, `0X` or `#`. Each reading takes more than
/// its router does where that is simpler (any Unicode white space or numeric character): it
/// only denies more.
fn is_integer(part: &str) -> bool {
    // Java's `isWhitespace` also takes the separators U+001C to U+001F.
    let mut chars = part
        .chars()
        .filter(|c| !(c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(c)))
        .peekable();
    chars.next_if(|c| matches!(c, '+' | '-'));
    let hexadecimal = if chars.next_if_eq(&'#').is_some() {
        true
    } else if chars.next_if_eq(&'0').is_some() {
        // A `0` that starts no `0x` is a digit of its own.
        if chars.next_if(|c| matches!(c, 'x' | 'X')).is_none() {
            return chars.all(char::is_numeric);
        }
        true
    } else {
        false
    };
    let digit: fn(char) -> bool = if hexadecimal {
        // Java's `Character.digit(c, 16)` takes the fullwidth letters too.
        |c| c.is_numeric() || c.is_ascii_hexdigit() || matches!(c, 'Ａ'..='Ｆ' | 'ａ'..='ｆ')
    } else {
        char::is_numeric
    };
    chars.peek().is_some() && chars.all(digit)
}

/// The path's segments as sent, each percent-decoded: nothing dropped or resolved but the
/// leading slash and one trailing slash.
fn segments_as_sent(path: &str) -> Vec<Cow<'_, str>> {
    let path = path.strip_prefix('/').unwrap_or(path);
    let path = path.strip_suffix('/').unwrap_or(path);
    if path.is_empty() {
        return Vec::new();
    }
    path.split('/').map(percent_decode).collect()
}

/// The readings of the decoded segments a backend may route on: every combination of
/// - resolved or not (axum routes on the segments as they are, `..` and empty ones included;
///   a backend that resolves paths reads them [`normalised`]);
/// - `\` (sent as is or as `%5C`) taken for `/` or kept inside its segment (IIS takes it for
///   `/` in front of an ASP.NET API; Kestrel alone keeps it);
/// - a decoded `/` taken for `/` or kept inside its segment (a proxy may decode `%2F`; Kestrel
///   keeps it);
/// - each segment's `;` parameters kept or cut off (Tomcat and Jetty, in front of Spring, cut
///   them, before they resolve `..;`).
///
/// A way of splitting that would split on a character the path does not hold is left out, and
/// so is a resolved reading of segments with nothing to resolve: each reads the path as another
/// reading does.
fn readings<'s>(as_sent: &'s [Cow<'_, str>]) -> Vec<Vec<&'s str>> {
    const SEPARATORS: [&[char]; 4] = [&[], &['\\'], &['/'], &['\\', '/']];
    // Each character looked for once, for all four ways of splitting.
    let holds = |separator| as_sent.iter().any(|segment| segment.contains(separator));
    let (backslash, slash, parameters) = (holds('\\'), holds('/'), holds(';'));
    SEPARATORS
        .iter()
        .filter(|separators| {
            separators
                .iter()
                .all(|separator| if *separator == '/' { slash } else { backslash })
        })
        .flat_map(|separators| {
            let split: Vec<&'s str> = as_sent
                .iter()
                .flat_map(|segment| segment.split(*separators))
                .collect();
            let unparametered = parameters.then(|| {
                split
                    .iter()
                    .map(|segment| segment.split(';').next().unwrap_or_default())
                    .collect()
            });
            [Some(split), unparametered].into_iter().flatten()
        })
        .flat_map(|split: Vec<&'s str>| {
            let resolves = split
                .iter()
                .any(|segment| matches!(*segment, "" | "." | ".."));
            let resolved = resolves.then(|| normalised(&split));
            resolved.into_iter().chain([split])
        })
        .collect()
}

/// `segments` as a backend that resolves paths reads them: empty and `.` segments dropped,
/// `..` taking the segment before it away.
fn normalised<'s>(segments: &[&'s str]) -> Vec<&'s str> {
    let mut resolved = Vec::with_capacity(segments.len());
    for &segment in segments {
        match segment {
            "" | "." => {}
            ".." => {
                resolved.pop();
            }
            _ => resolved.push(segment),
        }
    }
    resolved
}

fn percent_decode(segment: &str) -> Cow<'_, str> {
    percent_encoding::percent_decode_str(segment).decode_utf8_lossy()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_list_has_all_21_routes() {
        assert_eq!(RoutePolicy::armor_default().len(), 21);
    }

    #[test]
    fn default_rules_match_as_documented() {
        let policy = RoutePolicy::armor_default();
        let cases = [
            ("GET", "/users/7/keys", true),
            ("GET", "/users/abc/keys", true),
            ("GET", "/users//keys", true),
            ("GET", "/users/7/keys/", true),
            // axum routes these to /users/{id}/keys, with `..` or `.` as the id.
            ("GET", "/users/%2e%2e/keys", true),
            ("GET", "/users/../keys", true),
            ("GET", "/users/./keys", true),
            ("POST", "/users/unlock/../a@b.c", true),
            ("POST", "/users/7/keys", true),
            ("DELETE", "/users/7/keys/k-1", true),
            ("GET", "/users/7/ActivationCode", true),
            ("GET", "/users/x7/ActivationCode", false),
            ("GET", "/users/7/activationcode", true),
            ("PUT", "/users/12", true),
            ("PUT", "/users/12a", false),
            // Integers as routers parse them: a sign, white space around.
            ("PUT", "/users/+12", true),
            ("PUT", "/users/%2B12", true),
            ("PUT", "/users/-12", true),
            ("PUT", "/users/%2012%20", true),
            ("PUT", "/users/%0B12", true),
            ("PUT", "/users/", false),
            ("GET", "/users/LockedOut/3/", false),
            ("GET", "/users/LockedOut//a@b.c", true),
            ("PUT", "/users/+", false),
            ("PUT", "/users/1+2", false),
            ("POST", "/users/+9/invite", true),
            ("GET", "/users/12", false),
            ("POST", "/users/", true),
            ("POST", "/users", true),
            ("POST", "/Users", true),
            ("GET", "/users", false),
            ("POST", "/users/resetpassword", true),
            ("POST", "/users/resetpa%73sword", true),
            ("POST", "/users/9/invite", true),
            ("POST", "/users/me/invite", false),
            ("GET", "/users/LockedOut/3/a@b.c", true),
            ("POST", "/users/unlock/3/a@b.c", true),
            ("DELETE", "/users/softDelete", true),
            ("PUT", "/usersecurity/challengephrase", true),
            ("GET", "/usersecurity/challengephrase/5", true),
            ("POST", "/usersecurity/securityinformation/ref", true),
            ("GET", "/usersecurity/securityinformation/ref", true),
            (
                "POST",
                "/usersecurity/securityinformation/existing/ref",
                true,
            ),
            ("POST", "/usersecurity/securityinformation/1/2", true),
            ("POST", "/usersecurity/validatemfaphone", true),
            ("POST", "/usersecurity/validatephoneapppin", true),
            ("GET", "/accounts/2", false),
            ("GET", "/", false),
            ("HEAD", "/users/7/keys", true),
            ("GET", "/users//7/keys", true),
            ("GET", "//users/7/keys", true),
            ("GET", "/users/./7/keys", true),
            ("GET", "/users/7/x/../keys", true),
            ("GET", "/users/7/keys//", true),
            ("GET", "/users/7/%2e/keys", true),
            ("GET", "/users/7/keys/..", false),
            // A Windows backend takes `\` for `/`.
            ("GET", "/users\\7\\keys", true),
            ("GET", "/users%5C7%5Ckeys", true),
            ("GET", "/users/7\\x\\..\\keys", true),
            // Or keeps it inside its segment (Kestrel alone), while it resolves `..`; or takes
            // it for `/` and resolves nothing (axum behind a proxy that turns it into `/`).
            ("GET", "/users/7/x%5Cy/../keys", true),
            ("GET", "/users/7/x\\y/../keys", true),
            ("GET", "/users\\..\\keys", true),
            ("GET", "/users%5C%5Ckeys", true),
            // A `%` that starts no escape is kept as it is (were it dropped, each of these
            // would read `keys`); bytes that are not UTF-8 are a segment still (replaced), which
            // a capture takes.
            ("GET", "/users/7/key%73", true),
            ("GET", "/users/7/keys%", false),
            ("GET", "/users/7/keys%2", false),
            ("GET", "/users/7/keys%zz", false),
            ("GET", "/users/%ff/keys", true),
            // `%2F` decoded to `/` by a proxy in front of the backend, which resolves the path
            // or does not (axum then routes `..` and empty segments as they are).
            ("GET", "/users/7%2Fkeys", true),
            ("GET", "/users%2f7%2Fkeys", true),
            ("GET", "/users/7%2Fx%2F..%2Fkeys", true),
            ("GET", "/users%2F..%2Fkeys", true),
            ("GET", "/users%2F%2Fkeys", true),
            ("GET", "/users%2F.%2Fkeys", true),
            // Or kept inside its segment while `.` and `..` are resolved, as Kestrel does.
            ("GET", "/users/7%2Fx/./keys", true),
            ("GET", "/users/%2F/./keys", true),
            ("DELETE", "/users/7/keys/a%2Fb/./", true),
            ("GET", "/users/LockedOut/3/a%2Fb@c.d/.", true),
            // Letters outside ASCII that Unicode's case mappings turn into `s`, `i` and `k`.
            ("POST", "/users/resetpa%C5%BFsword", true),
            ("GET", "/usersecurity/security%C4%B1nformation/r", true),
            ("GET", "/usersecurity/security%C4%B0nformation/r", true),
            ("GET", "/users/7/%E2%84%AAeys", true),
            ("GET", "/users/7/%C4%B8eys", false),
            // Path parameters, which Tomcat and Jetty cut off (`..;` is then `..`), and
            // integers as Spring converts them (white space anywhere, hexadecimal).
            ("POST", "/users;x/resetpassword", true),
            ("POST", "/users/resetpassword;", true),
            ("POST", "/users/resetpassword;jsessionid=1", true),
            ("GET", "/users/7/x/..;/keys", true),
            ("GET", "/users/7;a=b/keys;c", true),
            ("PUT", "/users/0x1F", true),
            ("PUT", "/users/-0X1f", true),
            ("PUT", "/users/%231F", true),
            ("PUT", "/users/1%202", true),
            ("PUT", "/users/%1F12", true),
            ("PUT", "/users/%EF%BC%91%EF%BC%92", true),
            ("PUT", "/users/%E3%80%8012", true),
            ("PUT", "/users/0", true),
            ("PUT", "/users/-0", true),
            ("PUT", "/users/0x%EF%BC%A6", true),
            ("PUT", "/users/0x", false),
            ("PUT", "/users/-", false),
            ("PUT", "/users/%20", false),
            ("PUT", "/users/0xG", false),
            ("PUT", "/users/abc", false),
            // A method is signed as sent; routers may match it without regard to case.
            ("put", "/users/12", true),
            ("Post", "/users/resetpassword", true),
            ("head", "/users/7/keys", true),
            ("get", "/accounts/2", false),
        ];
        for (method, path, forbidden) in cases {
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            assert_eq!(policy.forbids(&method, path), forbidden, "{method} {path}");
        }
    }

    #[test]
    fn rules_can_be_added_and_removed() {
        let policy = RoutePolicy::armor_default()
            .allow(&Method::PUT, "/users/{id:int}")
            .deny(Method::GET, "/billing/{account:int}/invoices")
            .unwrap();
        assert_eq!(policy.len(), 21);
        assert!(!policy.forbids(&Method::PUT, "/users/12"));
        assert!(policy.forbids(&Method::GET, "/billing/3/invoices"));
        let again = policy
            .clone()
            .deny(Method::GET, "/billing/{n:int}/invoices")
            .unwrap();
        assert_eq!(again.len(), 21, "the same rule is not added twice");
        // A method named in another case is the same method, here as in `forbids`.
        let lower = |name: &str| Method::from_bytes(name.as_bytes()).unwrap();
        let lifted = RoutePolicy::armor_default().allow(&lower("put"), "/users/{id:int}");
        assert!(!lifted.forbids(&Method::PUT, "/users/12"));
        assert_eq!(lifted.len(), 20);
        let replaced = lifted
            .deny(lower("get"), "/billing/{n:int}")
            .unwrap()
            .deny(Method::GET, "/billing/{n:int}")
            .unwrap();
        assert_eq!(replaced.len(), 21, "one rule for get and GET");
        // A rule for HEAD holds for HEAD alone; one for GET, for both.
        let head = RoutePolicy::empty().deny(Method::HEAD, "/x").unwrap();
        assert!(head.forbids(&Method::HEAD, "/x"));
        assert!(head.forbids(&lower("head"), "/x"));
        assert!(!head.forbids(&Method::GET, "/x"));
        let get = RoutePolicy::empty().deny(Method::GET, "/x").unwrap();
        assert!(get.forbids(&Method::HEAD, "/x"));
    }

    #[test]
    fn a_path_is_read_once_for_each_way_of_splitting_it_holds() {
        let count = |path| readings(&segments_as_sent(path)).len();
        assert_eq!(count("/users/7/keys"), 1);
        assert_eq!(count("/users/./keys"), 2);
        assert_eq!(count("/users/7%5Ckeys"), 2);
        assert_eq!(count("/users/7%2Fkeys"), 2);
        assert_eq!(count("/users\\7%2Fkeys"), 4);
        assert_eq!(count("/users\\..%2Fkeys"), 5);
        assert_eq!(count("/./users\\7%2Fkeys"), 8);
        assert_eq!(count("/users;x/keys"), 2);
        assert_eq!(count("/users/..;/keys"), 3);
    }

    #[test]
    fn bad_patterns_are_refused() {
        for pattern in [
            "users",
            "/users//x",
            "/users/{}",
            "/users/{id:uuid}",
            "/a{b}",
        ] {
            assert!(
                RoutePolicy::empty().deny(Method::GET, pattern).is_err(),
                "{pattern}"
            );
        }
    }
}
