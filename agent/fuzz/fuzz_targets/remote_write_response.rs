//! Arbitrary answers of a remote-write receiver through the agent's classification
//! (`remote_write::sender::classify`): what the queue does with a batch after a
//! status, headers and body.
//!
//! Input layout: two bytes of status (big endian), then header lines `name: value`
//! up to an empty line, then the body. Headers that are not valid HTTP are left out,
//! as hyper would refuse them.
//!
//! - Nothing panics.
//! - 2xx is accepted; 429 and 5xx are retried, never after more than the cap;
//!   everything else is refused (the batch dropped and counted), as Prometheus does.
//! - The message for logs and health is one line of bounded length.

#![no_main]

use std::time::{Duration, SystemTime};

use hyper::HeaderMap;
use hyper::header::{HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use nodewatch_agent::remote_write::sender::{MAX_RETRY_AFTER, Outcome, classify};

fn split_input(data: &[u8]) -> Option<(u16, HeaderMap, &[u8])> {
    let (status, rest) = data.split_first_chunk::<2>()?;
    let status = u16::from_be_bytes(*status);
    let (head, body) = match rest.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&rest[..i], &rest[i + 2..]),
        None => (rest, &[][..]),
    };
    let mut headers = HeaderMap::new();
    for line in head.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    Some((status, headers, body))
}

fuzz_target!(|data: &[u8]| {
    let Some((status, headers, body)) = split_input(data) else {
        return;
    };
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let outcome = classify(status, &headers, body, now);
    let message = match &outcome {
        Outcome::Accepted => {
            assert!((200..300).contains(&status), "{status} accepted");
            return;
        }
        Outcome::Retry {
            reason,
            after,
            message,
        } => {
            assert!(
                status == 429 || (500..600).contains(&status),
                "{status} retried"
            );
            assert!(matches!(*reason, "http_429" | "http_5xx"), "{reason}");
            assert!(after.is_none_or(|d| d <= MAX_RETRY_AFTER), "{after:?}");
            message
        }
        Outcome::Reject { reason, message } => {
            assert!(
                !(200..300).contains(&status) && status != 429 && !(500..600).contains(&status),
                "{status} refused"
            );
            assert_eq!(*reason, "http_4xx");
            message
        }
    };
    assert!(!message.contains(['\n', '\r']), "{message:?}");
    assert!(
        message.chars().count() <= 260,
        "{} chars",
        message.chars().count()
    );
    assert!(message.contains(&status.to_string()), "{message}");
});
