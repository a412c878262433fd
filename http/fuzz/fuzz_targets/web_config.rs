//! Arbitrary bytes as a `--web.config.file`, through `web_config::parse` (YAML, keys,
//! TLS settings, bcrypt hashes, headers), which reads no file.
//!
//! - Nothing panics, however deep or large the document (serde_norway's alias and
//!   recursion limits).
//! - An error names the file, and a key.
//! - A file that parses holds what parsing promises: certificate paths resolved
//!   against the file's directory, client certificates verified only against a CA
//!   file, a TLS version range that is not empty, user names without ':', every hash a
//!   bcrypt hash.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use nodewatch_http::web_config::{ClientAuth, parse};

const FILE: &str = "fuzz-web.yml";
const BASE: &str = "/etc/nodewatch";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse(text, Path::new(FILE), Path::new(BASE)) {
        Err(e) => {
            assert_eq!(e.file, FILE);
            assert!(!e.key.is_empty(), "error without a key: {e}");
            assert!(e.to_string().starts_with(FILE), "{e}");
        }
        Ok(settings) => {
            if let Some(tls) = &settings.tls {
                for path in [
                    Some(&tls.cert_file),
                    Some(&tls.key_file),
                    tls.client_ca_file.as_ref(),
                ]
                .into_iter()
                .flatten()
                {
                    assert!(path.starts_with(BASE) || path.is_absolute(), "{path:?}");
                }
                assert!(tls.min_version <= tls.max_version);
                assert_eq!(
                    tls.client_auth != ClientAuth::None,
                    tls.client_ca_file.is_some(),
                    "client certificates and CA file go together"
                );
            }
            for (user, hash) in &settings.users {
                assert!(!user.is_empty() && !user.contains(':'), "{user:?}");
                assert!(hash.parse::<bcrypt::HashParts>().is_ok(), "{hash:?}");
            }
        }
    }
});
