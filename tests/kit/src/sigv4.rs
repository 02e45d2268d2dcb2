//! AWS Signature Version 4 for the S3 clients of tests and benchmarks (shoal-chaos's
//! gateway worker, the hostile harness's gateway client, the gateway's HTTP listing
//! bench): header auth over `host`, `x-amz-content-sha256` and `x-amz-date`, and the
//! UTC dates it needs.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// The region every request is signed for (the gateway takes any).
pub const REGION: &str = "us-east-1";

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC takes a key of any length.
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(key) else {
        return Vec::new();
    };
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// RFC 3986 unreserved characters stay; everything else is `%XX` (`/` too unless
/// `keep_slash`).
pub fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Year, month, day, hour, minute, second of `unix` seconds in UTC (days to civil
/// date: Howard Hinnant's algorithm).
pub fn civil(unix: u64) -> (i64, u32, u32, u64, u64, u64) {
    let (days, rest) = ((unix / 86_400) as i64, unix % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, rest / 3600, rest % 3600 / 60, rest % 60)
}

/// `(YYYYMMDD, YYYYMMDDTHHMMSSZ)` of `unix` seconds (UTC).
pub fn amz_date(unix: u64) -> (String, String) {
    let (y, m, d, h, mi, s) = civil(unix);
    let date = format!("{y:04}{m:02}{d:02}");
    let time = format!("{date}T{h:02}{mi:02}{s:02}Z");
    (date, time)
}

/// An HTTP date (`Mon, 07 Dec 2026 15:00:00 GMT`) of `unix` seconds.
pub fn httpdate(unix: u64) -> String {
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(unix / 86_400 % 7) as usize];
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, mo, d, h, mi, s) = civil(unix);
    format!(
        "{weekday}, {d:02} {} {y:04} {h:02}:{mi:02}:{s:02} GMT",
        months[(mo - 1) as usize]
    )
}

/// The `Authorization` header of a request (SigV4, signed headers host,
/// x-amz-content-sha256, x-amz-date).
#[allow(clippy::too_many_arguments)]
pub fn authorization(
    access_key: &str,
    secret_key: &str,
    method: &str,
    path: &str,
    query: &[(String, String)],
    host: &str,
    payload_hash: &str,
    unix: u64,
) -> (String, String) {
    let (date, stamp) = amz_date(unix);
    let mut q: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| (uri_encode(k, false), uri_encode(v, false)))
        .collect();
    q.sort();
    let query = q
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let canonical = format!(
        "{method}\n{}\n{query}\nhost:{host}\nx-amz-content-sha256:{payload_hash}\nx-amz-date:{stamp}\n\nhost;x-amz-content-sha256;x-amz-date\n{payload_hash}",
        uri_encode(path, true)
    );
    let scope = format!("{date}/{REGION}/s3/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{}",
        hex(&Sha256::digest(canonical.as_bytes()))
    );
    let mut key = hmac(format!("AWS4{secret_key}").as_bytes(), date.as_bytes());
    for part in [REGION, "s3", "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    let signature = hex(&hmac(&key, to_sign.as_bytes()));
    (
        format!(
            "AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={signature}"
        ),
        stamp,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates() {
        assert_eq!(httpdate(1_796_655_600), "Mon, 07 Dec 2026 15:00:00 GMT");
        assert_eq!(amz_date(1_796_655_600).1, "20261207T150000Z");
    }

    #[test]
    fn dates_are_utc_calendar_dates() {
        assert_eq!(amz_date(0).1, "19700101T000000Z");
        // 2013-05-24T00:00:00Z, the date of AWS's SigV4 examples.
        assert_eq!(amz_date(1_369_353_600).1, "20130524T000000Z");
        assert_eq!(amz_date(951_782_400 + 3661).1, "20000229T010101Z");
    }

    #[test]
    fn the_signature_matches_aws_get_object_example() {
        // AWS's documented example (GET /test.txt with a Range header) signs `range`
        // too; this is its variant without it, computed with the same rules by
        // botocore: a regression guard for the canonical form and the key chain.
        let (auth, stamp) = authorization(
            "AKIAIOSFODNN7EXAMPLE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "GET",
            "/test.txt",
            &[],
            "examplebucket.s3.amazonaws.com",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            1_369_353_600,
        );
        assert_eq!(stamp, "20130524T000000Z");
        assert!(auth.starts_with(
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature="
        ));
        assert_eq!(uri_encode("a b/c", true), "a%20b/c");
        assert_eq!(uri_encode("a/b", false), "a%2Fb");
    }
}
