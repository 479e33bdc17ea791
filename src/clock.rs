//! Wall-clock times as text: the one RFC 3339 formatter (the agent's `Expiration`, the
//! `restartedAt` annotation `migrate apply` writes).

use std::time::SystemTime;

use aws_smithy_types::DateTime;
use aws_smithy_types::date_time::Format;

/// `2026-12-03T04:05:06Z`: UTC, whole seconds (what the AWS SDKs and `kubectl rollout restart`
/// write). A time outside RFC 3339's range reads as the epoch rather than failing.
pub fn rfc3339(t: SystemTime) -> String {
    // Whole seconds: the formatter would write a fraction when the time has one.
    DateTime::from_secs(DateTime::from(t).secs())
        .fmt(Format::DateTime)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

#[cfg(test)]
mod tests {
    use super::rfc3339;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn utc_to_the_second() {
        let t = UNIX_EPOCH + Duration::from_secs(1_796_270_706);
        assert_eq!(rfc3339(t), "2026-12-03T04:05:06Z");
        assert_eq!(
            rfc3339(t + Duration::from_millis(999)),
            "2026-12-03T04:05:06Z"
        );
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00Z");
    }
}
