//! CORS: off unless `server.cors_allowed_origins` lists exact origins.
//!
//! SECURITY: the default is no CORS headers at all, so browsers refuse cross-origin
//! reads (API keys do not belong in web pages). When enabled, only exact origin matches
//! (scheme://host[:port], compared byte for byte) get `Access-Control-Allow-Origin`
//! echoing that one origin, never `*`, with `Vary: Origin`. Preflights are answered
//! before authentication (browsers never send credentials on them) and only for the
//! routes that exist.

use hyper::header::{HeaderMap, HeaderValue, ORIGIN, VARY};

/// How long a browser may cache a preflight answer.
const PREFLIGHT_MAX_AGE_SECS: &str = "600";

/// The request's Origin if it is on the allow list.
pub fn allowed_origin<'a>(headers: &'a HeaderMap, allow: &[String]) -> Option<&'a HeaderValue> {
    let origin = headers.get(ORIGIN)?;
    allow
        .iter()
        .any(|a| a.as_bytes() == origin.as_bytes())
        .then_some(origin)
}

/// Headers for an allowed origin on an ordinary response.
pub fn add_response_headers(h: &mut HeaderMap, origin: HeaderValue) {
    h.insert("access-control-allow-origin", origin);
    h.append(VARY, HeaderValue::from_static("Origin"));
    h.insert(
        "access-control-expose-headers",
        HeaderValue::from_static(
            "retry-after, x-ratelimit-limit-requests, x-ratelimit-remaining-requests",
        ),
    );
}

/// Headers for a preflight of `method` from an allowed origin.
pub fn add_preflight_headers(h: &mut HeaderMap, origin: HeaderValue, method: &'static str) {
    add_response_headers(h, origin);
    h.insert(
        "access-control-allow-methods",
        HeaderValue::from_static(method),
    );
    h.insert(
        "access-control-allow-headers",
        HeaderValue::from_static("authorization, content-type"),
    );
    h.insert(
        "access-control-max-age",
        HeaderValue::from_static(PREFLIGHT_MAX_AGE_SECS),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_exact_origins_match() {
        let allow = vec!["https://app.example".to_string()];
        let mut h = HeaderMap::new();
        assert!(allowed_origin(&h, &allow).is_none());
        for bad in [
            "https://app.example.evil",
            "http://app.example",
            "https://APP.example",
            "null",
        ] {
            h.insert(ORIGIN, HeaderValue::from_static(bad));
            assert!(allowed_origin(&h, &allow).is_none(), "{bad}");
        }
        h.insert(ORIGIN, HeaderValue::from_static("https://app.example"));
        assert!(allowed_origin(&h, &allow).is_some());
        assert!(allowed_origin(&h, &[]).is_none());
    }
}
