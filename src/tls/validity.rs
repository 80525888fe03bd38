//! An X.509 certificate's validity period (RFC 5280 §4.1.2.5), read from its DER: the
//! one field a certificate reload must judge (refuse an expired renewal) that rustls and
//! webpki parse but do not expose.
//!
//! SECURITY: the input is the operator's certificate file, but it is read as untrusted
//! anyway: every step is bounds-checked slicing (`get`), lengths are DER's definite forms
//! of at most four bytes, and anything unexpected is an error, never a panic.

use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};

/// When a certificate is valid: from `not_before` to `not_after`, inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const VERSION: u8 = 0xA0;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// The validity of the certificate `der`.
pub fn validity(der: &[u8]) -> Result<Validity, &'static str> {
    const BAD: &str = "not an X.509 certificate (DER)";
    let (cert, _) = element(der, SEQUENCE).ok_or(BAD)?;
    let (tbs, _) = element(cert, SEQUENCE).ok_or(BAD)?;
    let mut rest = tbs;
    if rest.first() == Some(&VERSION) {
        rest = element(rest, VERSION).ok_or(BAD)?.1;
    }
    rest = element(rest, INTEGER).ok_or(BAD)?.1; // serialNumber
    rest = element(rest, SEQUENCE).ok_or(BAD)?.1; // signature algorithm
    rest = element(rest, SEQUENCE).ok_or(BAD)?.1; // issuer
    let (period, _) = element(rest, SEQUENCE).ok_or(BAD)?;
    let (not_before, period) = time_of(period).ok_or(BAD)?;
    let (not_after, _) = time_of(period).ok_or(BAD)?;
    Ok(Validity {
        not_before,
        not_after,
    })
}

/// One DER element of tag `tag` at the start of `input`: (its content, what follows).
fn element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    if *input.first()? != tag {
        return None;
    }
    let first = *input.get(1)?;
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        // Long form; 0x80 (indefinite) is not DER, and four bytes are plenty.
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let bytes = input.get(2..2 + n)?;
        let len = bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, 2 + n)
    };
    let end = header.checked_add(len)?;
    Some((input.get(header..end)?, input.get(end..)?))
}

/// A UTCTime (`YYMMDDHHMMSSZ`, years 1950-2049) or GeneralizedTime (`YYYYMMDDHHMMSSZ`).
fn time_of(input: &[u8]) -> Option<(OffsetDateTime, &[u8])> {
    let (text, year) = if input.first() == Some(&UTC_TIME) {
        let (t, rest) = element(input, UTC_TIME)?;
        let yy = digits(t.get(..2)?)?;
        (
            (t.get(2..)?, rest),
            if yy >= 50 { 1900 + yy } else { 2000 + yy },
        )
    } else {
        let (t, rest) = element(input, GENERALIZED_TIME)?;
        ((t.get(4..)?, rest), digits(t.get(..4)?)?)
    };
    let (t, rest) = text;
    // MMDDHHMMSSZ, nothing else (DER: seconds present, UTC, no fraction).
    if t.len() != 11 || t.get(10) != Some(&b'Z') {
        return None;
    }
    let field = |i: usize| t.get(i..i + 2).and_then(digits);
    let month = Month::try_from(u8::try_from(field(0)?).ok()?).ok()?;
    let date = Date::from_calendar_date(
        i32::try_from(year).ok()?,
        month,
        u8::try_from(field(2)?).ok()?,
    )
    .ok()?;
    let time = Time::from_hms(
        u8::try_from(field(4)?).ok()?,
        u8::try_from(field(6)?).ok()?,
        u8::try_from(field(8)?).ok()?,
    )
    .ok()?;
    Some((PrimitiveDateTime::new(date, time).assume_utc(), rest))
}

fn digits(b: &[u8]) -> Option<u32> {
    b.iter().try_fold(0u32, |acc, d| {
        d.is_ascii_digit().then(|| acc * 10 + u32::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(not_before: OffsetDateTime, not_after: OffsetDateTime) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params.not_before = not_before;
        params.not_after = not_after;
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn at(y: i32, m: Month, d: u8) -> OffsetDateTime {
        Date::from_calendar_date(y, m, d)
            .unwrap()
            .with_hms(12, 34, 56)
            .unwrap()
            .assume_utc()
    }

    #[test]
    fn reads_utc_and_generalized_times() {
        // rcgen writes UTCTime up to 2049 and GeneralizedTime from 2050 (RFC 5280).
        let (a, b) = (at(2001, Month::February, 3), at(2049, Month::December, 31));
        let v = validity(&cert(a, b)).unwrap();
        assert_eq!((v.not_before, v.not_after), (a, b));
        let (a, b) = (at(1999, Month::January, 1), at(2107, Month::July, 4));
        let v = validity(&cert(a, b)).unwrap();
        assert_eq!((v.not_before, v.not_after), (a, b));
    }

    #[test]
    fn anything_cut_or_garbled_is_an_error_not_a_panic() {
        let der = cert(at(2020, Month::May, 5), at(2030, Month::May, 5));
        for n in 0..der.len() {
            assert!(validity(&der[..n]).is_err(), "prefix {n}");
        }
        for i in 0..der.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut d = der.clone();
                d[i] ^= flip;
                let _ = validity(&d);
            }
        }
        assert!(validity(b"\x30\x80\x30\x80").is_err());
        assert!(validity(b"\x30\x85\xff\xff\xff\xff\xff").is_err());
    }
}
